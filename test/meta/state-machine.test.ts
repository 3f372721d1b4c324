/**
 * The metadata state machine on a real LevelDB: namespace semantics (rename corner cases,
 * hard links, unlink of open files, a 100k-entry directory listed in pages), compare-and-set
 * commits and fencing, the watch log, determinism, snapshot/restore and persistence.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MetaStateMachine, LEASE_SAFETY_MARGIN_MS, type ApplyResult, type Inode } from '../../src/meta/state-machine.js';
import type { Op } from '../../src/meta/ops.js';
import { encodeEntry } from '../../src/meta/entry.js';
import { EntryType, type Entry } from '../../src/raft/types.js';
import { tempDir } from '../helpers/env.js';
import { cp, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function openSm(maxEvents?: number): Promise<{ sm: MetaStateMachine; dir: string; log: Entry[] }> {
  const d = await tempDir('cairn-meta-sm-');
  const sm = await MetaStateMachine.open({ dataDir: d.path, ...(maxEvents ? { maxEvents } : {}) });
  cleanups.push(async () => {
    await sm.close();
    await d.remove();
  });
  return { sm, dir: d.path, log: [] };
}

/** Apply ops as consecutive entries; returns the results. The log is kept for replay. */
async function applyOps(h: { sm: MetaStateMachine; log: Entry[] }, ops: Op[], nowMs = 1_000): Promise<ApplyResult[]> {
  const first = (await h.sm.appliedIndex()) + 1;
  const entries = ops.map((op, i) => ({ term: 1, index: first + i, type: EntryType.Normal, data: encodeEntry(op, nowMs) }));
  h.log.push(...entries);
  // One operation per entry: each entry's result is a list of one.
  return ((await h.sm.apply(entries)) as ApplyResult[][]).map((r) => r[0]!);
}

async function ok(h: { sm: MetaStateMachine; log: Entry[] }, op: Op, nowMs = 1_000): Promise<Record<string, unknown>> {
  const [r] = await applyOps(h, [op], nowMs);
  if (!r?.ok) throw new Error(`expected success of ${op.op}, got ${JSON.stringify(r)}`);
  return r.value;
}

async function err(h: { sm: MetaStateMachine; log: Entry[] }, op: Op, nowMs = 1_000): Promise<string> {
  const [r] = await applyOps(h, [op], nowMs);
  if (r === undefined || r.ok) throw new Error(`expected failure of ${op.op}, got ${JSON.stringify(r)}`);
  return r.code;
}

const own = { mode: 0o755, uid: 1, gid: 1 };
const mkdir = (path: string): Op => ({ op: 'mkdir', at: { path }, ...own });
const create = (path: string): Op => ({ op: 'create', at: { path }, ...own, mode: 0o644, exclusive: true });
const rename = (from: string, to: string): Op => ({ op: 'rename', from: { path: from }, to: { path: to }, noReplace: false });

describe('namespace', () => {
  it('creates, looks up and lists, with POSIX errors', async () => {
    const h = await openSm();
    await ok(h, mkdir('/a'));
    await ok(h, create('/a/f'));
    expect(await err(h, create('/a/f'))).toBe('EEXIST');
    expect(await err(h, mkdir('/a/f/x'))).toBe('ENOTDIR');
    expect(await err(h, create('/nope/f'))).toBe('ENOENT');
    expect(await err(h, { op: 'unlink', at: { path: '/a' } })).toBe('EISDIR');
    expect(await err(h, { op: 'rmdir', at: { path: '/a/f' } })).toBe('ENOTDIR');
    expect(await err(h, { op: 'rmdir', at: { path: '/a' } })).toBe('ENOTEMPTY');
    const f = await h.sm.getattr({ path: '/a/f' });
    expect(f.type).toBe('file');
    expect(f.nlink).toBe(1);
    const a = await h.sm.getattr({ path: '/a' });
    expect(a.nlink).toBe(2);
    expect((await h.sm.readdir({ path: '/a' }, '', 10)).entries.map((e) => e.name)).toEqual(['f']);
    expect((await h.sm.getattr({ parent: a.ino, name: 'f' })).ino).toBe(f.ino);
    await ok(h, { op: 'unlink', at: { path: '/a/f' } });
    await expect(h.sm.getattr({ ino: f.ino })).rejects.toMatchObject({ code: 'ESTALE' });
    await ok(h, { op: 'rmdir', at: { path: '/a' } });
    expect((await h.sm.getattr({ path: '/' })).nlink).toBe(2);
    await ok(h, { op: 'symlink', at: { path: '/l' }, target: '../x', uid: 0, gid: 0 });
    expect(await h.sm.readlink({ path: '/l' })).toBe('../x');
  });

  it('renames: onto itself, over an empty dir, over a non-empty dir, into its own subtree', async () => {
    const h = await openSm();
    for (const p of ['/a', '/a/b', '/a/b/c', '/e', '/full', '/full/x']) await ok(h, mkdir(p));
    await ok(h, create('/f'));
    const f = await h.sm.getattr({ path: '/f' });
    // onto itself: nothing changes
    expect(await ok(h, rename('/f', '/f'))).toMatchObject({ renamed: false });
    expect((await h.sm.getattr({ path: '/f' })).ino).toBe(f.ino);
    // into own subtree
    expect(await err(h, rename('/a', '/a/b/c/a2'))).toBe('EINVAL');
    expect(await err(h, rename('/a', '/a/a'))).toBe('EINVAL');
    // over a non-empty dir, over a file, file over a dir
    expect(await err(h, rename('/a', '/full'))).toBe('ENOTEMPTY');
    expect(await err(h, rename('/a', '/f'))).toBe('ENOTDIR');
    expect(await err(h, rename('/f', '/e'))).toBe('EISDIR');
    // over an empty dir: the empty one is gone, the subtree moved with its links counted right
    const e = await h.sm.getattr({ path: '/e' });
    await ok(h, rename('/a', '/e'));
    await expect(h.sm.getattr({ ino: e.ino })).rejects.toMatchObject({ code: 'ESTALE' });
    expect((await h.sm.getattr({ path: '/e/b/c' })).type).toBe('dir');
    await expect(h.sm.getattr({ path: '/a' })).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await h.sm.getattr({ path: '/' })).nlink).toBe(2 + 2); // /e and /full
    // across directories, and the moved dir knows its new path
    await ok(h, rename('/e/b', '/full/b'));
    expect(await h.sm.pathOf((await h.sm.getattr({ path: '/full/b/c' })).ino)).toBe('/full/b/c');
    expect((await h.sm.getattr({ path: '/e' })).nlink).toBe(2);
    expect((await h.sm.getattr({ path: '/full' })).nlink).toBe(4);
    // a file over a file replaces it
    await ok(h, create('/g'));
    const g = await h.sm.getattr({ path: '/g' });
    await ok(h, rename('/f', '/g'));
    expect((await h.sm.getattr({ path: '/g' })).ino).toBe(f.ino);
    await expect(h.sm.getattr({ ino: g.ino })).rejects.toMatchObject({ code: 'ESTALE' });
    expect(await err(h, { op: 'rename', from: { path: '/g' }, to: { path: '/full/x' }, noReplace: true })).toBe('EEXIST');
  });

  it('keeps hard links and an unlinked file that is still open (leased)', async () => {
    const h = await openSm();
    await ok(h, create('/f'));
    const f = await h.sm.getattr({ path: '/f' });
    await ok(h, { op: 'link', node: { path: '/f' }, at: { path: '/g' } });
    expect((await h.sm.getattr({ path: '/g' })).nlink).toBe(2);
    expect(await err(h, { op: 'link', node: { path: '/' }, at: { path: '/r' } })).toBe('EPERM');
    // rename of one link onto the other link of the same file does nothing
    expect(await ok(h, rename('/f', '/g'))).toMatchObject({ renamed: false });
    await ok(h, { op: 'unlink', at: { path: '/f' } });
    expect((await h.sm.getattr({ ino: f.ino })).nlink).toBe(1);
    // open the file (write lease), unlink its last name: it lives on as an orphan
    const lease = (await ok(h, { op: 'leaseAcquire', ino: f.ino, holder: 'w1', ttlMs: 10_000 }, 1_000)).lease as { token: number };
    await ok(h, { op: 'unlink', at: { path: '/g' } }, 2_000);
    expect((await h.sm.readdir({ path: '/' }, '', 10)).entries).toEqual([]);
    const orphan = await h.sm.getattr({ ino: f.ino });
    expect(orphan.nlink).toBe(0);
    // the open writer can still commit to it
    await ok(h, { op: 'commit', ino: f.ino, expectedVersion: 0, fence: lease.token, size: 10, extents: [] }, 3_000);
    // closing it (release) frees it
    await ok(h, { op: 'leaseRelease', ino: f.ino, holder: 'w1', token: lease.token }, 4_000);
    await expect(h.sm.getattr({ ino: f.ino })).rejects.toMatchObject({ code: 'ESTALE' });
  });

  it('lists a 100k-entry directory in pages', async () => {
    const h = await openSm();
    await ok(h, mkdir('/big'));
    const dir = await h.sm.getattr({ path: '/big' });
    const n = 100_000;
    const batch = 5_000;
    for (let s = 0; s < n; s += batch) {
      const ops: Op[] = [];
      for (let i = s; i < s + batch; i++) ops.push({ op: 'create', at: { parent: dir.ino, name: `f${i}` }, ...own, exclusive: true });
      const rs = await applyOps(h, ops);
      expect(rs.every((r) => r.ok)).toBe(true);
    }
    expect((await h.sm.getattr({ ino: dir.ino })).size).toBe(n);
    const seen = new Set<string>();
    let after = '';
    let pages = 0;
    let prev = '';
    for (;;) {
      const page = await h.sm.readdir({ ino: dir.ino }, after, 10_000);
      pages++;
      for (const e of page.entries) {
        expect(e.name > prev).toBe(true); // strictly ordered, no repeats
        prev = e.name;
        seen.add(e.name);
      }
      if (!page.more) break;
      after = page.entries[page.entries.length - 1]!.name;
    }
    expect(seen.size).toBe(n);
    expect(pages).toBe(10);
  });
});

describe('commits and leases', () => {
  it('installs versions by compare-and-set and fences expired or stale leases', async () => {
    const h = await openSm();
    await ok(h, create('/f'));
    const ino = (await h.sm.getattr({ path: '/f' })).ino;
    const ext = [{ offset: 0, length: 4, chunkHash: 'ab'.repeat(16), scheme: 'rep3', pg: 7 }];
    // without a lease: fenced
    expect(await err(h, { op: 'commit', ino, expectedVersion: 0, fence: 1, size: 4, extents: ext })).toBe('EFENCED');
    const a = (await ok(h, { op: 'leaseAcquire', ino, holder: 'A', ttlMs: 1_000 }, 10_000)).lease as { token: number; expiresAtMs: number };
    expect(a.expiresAtMs).toBe(11_000);
    // another writer cannot take a live lease
    expect(await err(h, { op: 'leaseAcquire', ino, holder: 'B', ttlMs: 1_000 }, 10_500)).toBe('EBUSY');
    const c1 = await ok(h, { op: 'commit', ino, expectedVersion: 0, fence: a.token, size: 4, extents: ext }, 10_600);
    expect((c1.record as { version: number; state: string })).toMatchObject({ version: 1, state: 'visible' });
    // CAS: a commit based on an old version loses
    expect(await err(h, { op: 'commit', ino, expectedVersion: 0, fence: a.token, size: 4, extents: ext }, 10_700)).toBe('ECONFLICT');
    expect(await h.sm.layout({ ino })).toEqual({ version: 1, extents: ext });
    expect((await h.sm.commitStatus(ino, 1)).state).toBe('visible');
    await ok(h, { op: 'markDurable', ino, version: 1 }, 10_800);
    expect((await h.sm.commitStatus(ino, 1)).state).toBe('durable');
    // the lease expires: A can neither commit nor renew
    expect(await err(h, { op: 'commit', ino, expectedVersion: 1, fence: a.token, size: 4, extents: ext }, 11_000)).toBe('EFENCED');
    expect(await err(h, { op: 'leaseRenew', ino, holder: 'A', token: a.token, ttlMs: 1_000 }, 11_001)).toBe('EFENCED');
    // B must wait for the safety margin, then gets a new, larger token
    expect(await err(h, { op: 'leaseAcquire', ino, holder: 'B', ttlMs: 1_000 }, 11_000 + LEASE_SAFETY_MARGIN_MS - 1)).toBe('EBUSY');
    const b = (await ok(h, { op: 'leaseAcquire', ino, holder: 'B', ttlMs: 5_000 }, 11_000 + LEASE_SAFETY_MARGIN_MS)).lease as { token: number };
    expect(b.token).toBeGreaterThan(a.token);
    // A's token is dead forever, even inside B's lease
    expect(await err(h, { op: 'commit', ino, expectedVersion: 1, fence: a.token, size: 4, extents: ext }, 12_100)).toBe('EFENCED');
    await ok(h, { op: 'commit', ino, expectedVersion: 1, fence: b.token, size: 8, extents: [...ext, { ...ext[0]!, offset: 4 }] }, 12_100);
    // overlapping extents are refused
    expect(await err(h, { op: 'commit', ino, expectedVersion: 2, fence: b.token, size: 8, extents: [ext[0]!, ext[0]!] }, 12_200)).toBe('EINVAL');
    // truncate with the lease's token trims the layout
    await ok(h, { op: 'truncate', node: { ino }, size: 6, expectedVersion: 2, fence: b.token }, 12_300);
    expect((await h.sm.layout({ ino })).extents.map((e) => e.length)).toEqual([4, 2]);
    // the leader's sweep lists the lease once expired + margin, and expires it
    expect(await h.sm.expiredLeases(17_100 + LEASE_SAFETY_MARGIN_MS, 10)).toEqual([ino]);
    await ok(h, { op: 'leaseExpire', inos: [ino] }, 17_100 + LEASE_SAFETY_MARGIN_MS);
    expect(await h.sm.lease(ino)).toBeUndefined();
  });

  it('a create with a lease grants it in the same operation, with the next fencing token', async () => {
    const h = await openSm();
    await ok(h, create('/a'));
    const a = (await h.sm.getattr({ path: '/a' })).ino;
    const before = (await ok(h, { op: 'leaseAcquire', ino: a, holder: 'A', ttlMs: 1_000 }, 10_000)).lease as { token: number };
    const r = await ok(h, { ...create('/b'), lease: { holder: 'B', ttlMs: 2_000 } } as Op, 10_100);
    const lease = r.lease as { ino: number; holder: string; token: number; expiresAtMs: number };
    const ino = (await h.sm.getattr({ path: '/b' })).ino;
    expect(lease).toMatchObject({ ino, holder: 'B', expiresAtMs: 12_100 });
    expect(lease.token).toBe(before.token + 1);
    expect(await h.sm.lease(ino)).toMatchObject({ holder: 'B', token: lease.token });
    expect(await err(h, { op: 'leaseAcquire', ino, holder: 'C', ttlMs: 1_000 }, 10_200)).toBe('EBUSY');
  });

  it('a commit that says durable records the version durable at once, with the same events as commit + markDurable', async () => {
    const h = await openSm();
    await ok(h, create('/f'));
    const ino = (await h.sm.getattr({ path: '/f' })).ino;
    const ext = [{ offset: 0, length: 4, chunkHash: 'cd'.repeat(16), scheme: 'rep3', pg: 1 }];
    const a = (await ok(h, { op: 'leaseAcquire', ino, holder: 'A', ttlMs: 1_000 }, 10_000)).lease as { token: number };
    const from = h.sm.revision() + 1;
    const c = await ok(h, { op: 'commit', ino, expectedVersion: 0, fence: a.token, size: 4, extents: ext, durable: true }, 10_100);
    expect(c.record as { version: number; state: string }).toMatchObject({ version: 1, state: 'durable' });
    expect((await h.sm.commitStatus(ino, 1)).state).toBe('durable');
    expect((await h.sm.events(from, 10)).map((e) => [e.kind, e.path])).toEqual([
      ['commit', '/f'],
      ['durable', '/f'],
    ]);
    // A later markDurable of it is a no-op, and a commit without the flag is visible as before.
    await ok(h, { op: 'markDurable', ino, version: 1 }, 10_200);
    const c2 = await ok(h, { op: 'commit', ino, expectedVersion: 1, fence: a.token, size: 4, extents: ext }, 10_300);
    expect(c2.record as { state: string }).toMatchObject({ state: 'visible' });
  });

  it('changes the diskmap by compare-and-set on its epoch and records the diff', async () => {
    const h = await openSm();
    expect((await h.sm.diskmap()).epoch).toBe(0);
    await ok(h, { op: 'diskmapPropose', expectedEpoch: 0, documentJson: '{"epoch":1,"disks":[]}', diffJson: '{"added":[]}' });
    expect(await err(h, { op: 'diskmapPropose', expectedEpoch: 0, documentJson: '{"epoch":1}', diffJson: '{}' })).toBe('ECONFLICT');
    expect(await err(h, { op: 'diskmapPropose', expectedEpoch: 1, documentJson: '{"epoch":7}', diffJson: '{}' })).toBe('EINVAL');
    expect((await h.sm.diskmap()).epoch).toBe(1);
    expect((await h.sm.diskmapChange(1))?.diffJson).toBe('{"added":[]}');
  });
});

describe('watch log', () => {
  it('numbers every change and compacts the oldest with a clear error', async () => {
    const h = await openSm(5);
    await ok(h, mkdir('/d'));
    await ok(h, create('/d/f'));
    await ok(h, rename('/d/f', '/d/g'));
    const evs = await h.sm.events(1, 100);
    expect(evs.map((e) => [e.revision, e.kind, e.path, e.newPath])).toEqual([
      [1, 'mkdir', '/d', undefined],
      [2, 'create', '/d/f', undefined],
      [3, 'rename', '/d/f', '/d/g'],
    ]);
    // a failed operation makes no event
    await err(h, mkdir('/d'));
    expect(h.sm.revision()).toBe(3);
    for (let i = 0; i < 5; i++) await ok(h, mkdir(`/x${i}`));
    expect(h.sm.revision()).toBe(8);
    expect(h.sm.firstRevision()).toBe(4);
    await expect(h.sm.events(2, 10)).rejects.toMatchObject({ code: 'ECOMPACTED' });
    expect((await h.sm.events(4, 10)).map((e) => e.revision)).toEqual([4, 5, 6, 7, 8]);
  });
});

describe('durability and determinism', () => {
  async function workload(h: { sm: MetaStateMachine; log: Entry[] }): Promise<void> {
    await ok(h, mkdir('/a'));
    await ok(h, mkdir('/a/b'));
    for (let i = 0; i < 50; i++) await applyOps(h, [create(`/a/f${i}`), create(`/a/b/g${i}`)], 1_000 + i);
    await ok(h, rename('/a/b', '/b'));
    await ok(h, { op: 'setxattr', node: { path: '/b' }, name: 'user.k', valueB64: Buffer.from('v').toString('base64'), flag: 'any' });
    await ok(h, { op: 'link', node: { path: '/a/f1' }, at: { path: '/b/h' } });
    await err(h, mkdir('/a'));
  }

  it('two state machines fed the same entries hold identical databases', async () => {
    const h1 = await openSm();
    const h2 = await openSm();
    await workload(h1);
    // feed h2 the same log in different batch sizes
    for (let i = 0; i < h1.log.length; i += 7) await h2.sm.apply(h1.log.slice(i, i + 7));
    expect(await h2.sm.dump()).toEqual(await h1.sm.dump());
    expect(await h2.sm.appliedIndex()).toBe(h1.log.length);
  });

  it('survives reopening and never applies an entry twice', async () => {
    const h = await openSm();
    await workload(h);
    const before = await h.sm.dump();
    await h.sm.close();
    const sm2 = await MetaStateMachine.open({ dataDir: h.dir });
    cleanups.push(() => sm2.close());
    expect(await sm2.dump()).toEqual(before);
    // the driver re-delivers the last entries after a restart: skipped
    const rs = await sm2.apply(h.log.slice(-3));
    expect(rs).toEqual([null, null, null]);
    expect(await sm2.dump()).toEqual(before);
    expect((await sm2.getattr({ path: '/b/h' })).nlink).toBe(2);
  });

  it('round-trips a snapshot into a fresh node and rejects a damaged one', async () => {
    const h1 = await openSm();
    await workload(h1);
    const h2 = await openSm();
    await ok(h2, mkdir('/stale'));
    const snap = await h1.sm.snapshot();
    const chunks: Uint8Array[] = [];
    for await (const c of snap.chunks) chunks.push(c);
    // a flipped byte is caught and leaves the target untouched
    const bad = chunks.map((c) => Buffer.from(c));
    const b0 = bad[0]!;
    b0[40] = (b0[40] ?? 0) ^ 1;
    await expect(h2.sm.restore({ index: snap.index, term: snap.term, conf: { voters: [1], learners: [] } }, toIter(bad))).rejects.toMatchObject({ code: 'ECORRUPT' });
    expect((await h2.sm.getattr({ path: '/stale' })).type).toBe('dir');
    await h2.sm.restore({ index: snap.index, term: snap.term, conf: { voters: [1], learners: [] } }, toIter(chunks));
    expect(await h2.sm.dump()).toEqual(await h1.sm.dump());
    expect(await h2.sm.appliedIndex()).toBe(snap.index);
    // and it goes on from there like the original
    await ok(h1, create('/after'));
    await h2.sm.apply(h1.log.slice(-1));
    expect(await h2.sm.dump()).toEqual(await h1.sm.dump());
    const after: Inode = await h2.sm.getattr({ path: '/after' });
    expect(after.type).toBe('file');
  });
});

describe('entries of several operations', () => {
  it('applies them in order, each atomically, each with its own result', async () => {
    const h = await openSm();
    await ok(h, mkdir('/d'));
    const before = await h.sm.dump();
    const ops: Op[] = [
      mkdir('/a'),
      mkdir('/a/b'), // needs the previous operation of the same entry
      create('/a/b/f'),
      mkdir('/a'), // EEXIST: leaves no trace
      { op: 'rename', from: { path: '/a/b/f' }, to: { path: '/d/g' }, noReplace: false },
      create('/a/b/f'), // the name is free again
      { op: 'rmdir', at: { path: '/d' } }, // ENOTEMPTY
    ];
    const index = (await h.sm.appliedIndex()) + 1;
    const [rs] = (await h.sm.apply([{ term: 1, index, type: EntryType.Normal, data: encodeEntry(ops, 5_000) }])) as ApplyResult[][];
    expect(rs!.map((r) => (r.ok ? 'ok' : r.code))).toEqual(['ok', 'ok', 'ok', 'EEXIST', 'ok', 'ok', 'ENOTEMPTY']);
    const attr = (i: number): Inode => (rs![i] as unknown as { value: { attr: Inode } }).value.attr;
    expect(attr(0)).toMatchObject({ name: 'a', parent: 1, type: 'dir' });
    expect(attr(1)).toMatchObject({ name: 'b', parent: attr(0).ino, type: 'dir' });
    expect(attr(2)).toMatchObject({ name: 'f', parent: attr(1).ino, type: 'file', mtimeMs: 5_000 });
    expect(attr(5)).toMatchObject({ name: 'f', parent: attr(1).ino, type: 'file' });
    expect(attr(5).ino).not.toBe(attr(2).ino);
    expect((await h.sm.getattr({ path: '/d/g' })).ino).toBe(attr(2).ino);
    // the same operations one per entry, with the same clock: the same results and the same
    // database (but for the applied index)
    const h2 = await openSm();
    await ok(h2, mkdir('/d'));
    const one = await applyOps(h2, ops, 5_000);
    expect(one).toEqual(rs);
    const strip = (d: Array<[string, string]>): Array<[string, string]> => d.filter(([k]) => k !== 'm:applied');
    expect(strip(await h2.sm.dump())).toEqual(strip(await h.sm.dump()));
    expect(strip(await h.sm.dump())).not.toEqual(strip(before));
  });

  it('applies format-1 JSON entries already in a log, and refuses a damaged entry without a change', async () => {
    const h = await openSm();
    const legacy = Buffer.from(JSON.stringify({ v: 1, nowMs: 9, op: mkdir('/old') }));
    const [r] = await h.sm.apply([{ term: 1, index: 1, type: EntryType.Normal, data: legacy }]);
    expect(r).toMatchObject({ ok: true, value: { attr: { name: 'old', mtimeMs: 9 } } }); // one result, not a list
    const before = await h.sm.dump();
    const bad = encodeEntry([mkdir('/new')], 10);
    bad[bad.length - 1]! ^= 0x20;
    const [r2] = await h.sm.apply([{ term: 1, index: 2, type: EntryType.Normal, data: bad }]);
    expect(r2).toMatchObject({ ok: false, code: 'ECORRUPT' });
    expect(await h.sm.appliedIndex()).toBe(2);
    expect((await h.sm.dump()).filter(([k]) => k !== 'm:applied')).toEqual(before.filter(([k]) => k !== 'm:applied'));
  });
});

describe('restore after a crash', () => {
  it('finishes a swap that was marked ready and drops one that was not', async () => {
    const src = await openSm();
    await ok(src, mkdir('/from-snapshot'));
    const want = await src.sm.dump();
    await src.sm.close();
    // a crash after the new database was written and marked ready, before the swap
    const dst = await tempDir('cairn-meta-swap-');
    cleanups.push(dst.remove);
    await cp(join(src.dir, 'meta'), join(dst.path, 'meta.new'), { recursive: true });
    await writeFile(join(dst.path, 'RESTORE_READY'), '3');
    const sm = await MetaStateMachine.open({ dataDir: dst.path });
    expect(await sm.dump()).toEqual(want);
    await sm.close();
    // a crash while the new database was still being written (no marker): it is discarded
    await cp(join(src.dir, 'meta'), join(dst.path, 'meta.new'), { recursive: true });
    await rm(join(dst.path, 'meta'), { recursive: true });
    const fresh = await MetaStateMachine.open({ dataDir: dst.path });
    cleanups.push(() => fresh.close());
    await expect(fresh.getattr({ path: '/from-snapshot' })).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(join(dst.path, 'meta.new'))).rejects.toThrow();
  });
});

async function* toIter(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}
