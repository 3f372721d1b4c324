/**
 * Inline small files in the metadata state machine (real LevelDB): putFile (create + content +
 * rename over in one operation, parents made), commits that move a file between inline and
 * chunks in both directions, truncate of inline content, the inline budget (ENOSPC, shrinking
 * always allowed, the total kept exact through replace/unlink/orphans), the watch feed, the
 * checksum checked on read and by scrubInline, snapshot/restore carrying inline data, and
 * determinism (replaying the log gives the same database).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { join } from 'node:path';
import { MetaStateMachine, type ApplyResult } from '../../src/meta/state-machine.js';
import type { Op } from '../../src/meta/ops.js';
import { encodeEntry } from '../../src/meta/entry.js';
import { K } from '../../src/meta/keys.js';
import { EntryType, type Entry } from '../../src/raft/types.js';
import { tempDir } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

interface H {
  sm: MetaStateMachine;
  dir: string;
  log: Entry[];
}

async function openSm(): Promise<H> {
  const d = await tempDir('cairn-meta-inline-');
  const h: H = { sm: await MetaStateMachine.open({ dataDir: d.path }), dir: d.path, log: [] };
  cleanups.push(async () => {
    await h.sm.close();
    await d.remove();
  });
  return h;
}

async function apply(h: H, op: Op, nowMs = 5_000): Promise<ApplyResult> {
  const index = (await h.sm.appliedIndex()) + 1;
  const e: Entry = { term: 1, index, type: EntryType.Normal, data: encodeEntry(op, nowMs) };
  h.log.push(e);
  return ((await h.sm.apply([e])) as ApplyResult[][])[0]![0]!;
}

async function ok(h: H, op: Op, nowMs?: number): Promise<Record<string, unknown>> {
  const r = await apply(h, op, nowMs);
  if (!r.ok) throw new Error(`expected success of ${op.op}, got ${r.code}: ${r.message}`);
  return r.value;
}

async function code(h: H, op: Op): Promise<string> {
  const r = await apply(h, op);
  if (r.ok) throw new Error(`expected failure of ${op.op}`);
  return r.code;
}

const B = 1 << 20;
const put = (path: string, data: Buffer, opts: { mkdirs?: boolean; budget?: number } = {}): Op => ({
  op: 'putFile', at: { path }, mode: 0o644, uid: 0, gid: 0, dataB64: data.toString('base64'), mkdirs: opts.mkdirs ?? false, inlineBudget: opts.budget ?? B,
});
const hash = 'ab'.repeat(32);

describe('inline small files', () => {
  it('puts a whole file in one operation, making parents and replacing the old file', async () => {
    const h = await openSm();
    const rev0 = h.sm.revision();
    const v1 = await ok(h, put('/a/b/f', Buffer.from('hello'), { mkdirs: true }));
    const a1 = v1.attr as { ino: number; version: number; size: number };
    expect(a1).toMatchObject({ version: 1, size: 5 });
    const l = await h.sm.layout({ path: '/a/b/f' });
    expect(l.extents).toEqual([]);
    expect(l.data?.toString()).toBe('hello');
    expect((await h.sm.commitStatus(a1.ino, 1)).state).toBe('durable');
    expect(h.sm.inlineBytes()).toBe(5);
    expect((await h.sm.events(rev0 + 1, 100)).map((e) => `${e.kind} ${e.path}`)).toEqual([
      'mkdir /a', 'mkdir /a/b', 'create /a/b/f', 'commit /a/b/f', 'durable /a/b/f',
    ]);
    // Replace: a new inode takes the name; the old one is gone with its inline bytes.
    const rev1 = h.sm.revision();
    const a2 = (await ok(h, put('/a/b/f', Buffer.from('hi!')))).attr as { ino: number };
    expect(a2.ino).not.toBe(a1.ino);
    expect((await h.sm.layout({ path: '/a/b/f' })).data?.toString()).toBe('hi!');
    await expect(h.sm.getattr({ ino: a1.ino })).rejects.toMatchObject({ code: 'ESTALE' });
    expect(h.sm.inlineBytes()).toBe(3);
    expect((await h.sm.events(rev1 + 1, 100)).map((e) => e.kind)).toEqual(['unlink', 'create', 'commit', 'durable']);
    expect((await h.sm.getattr({ path: '/a/b' })).size).toBe(1);
    // Not over a directory or a symlink; not without mkdirs into a missing directory.
    expect(await code(h, put('/a/b', Buffer.from('x')))).toBe('EISDIR');
    await ok(h, { op: 'symlink', at: { path: '/a/s' }, target: '/a/b/f', uid: 0, gid: 0 });
    expect(await code(h, put('/a/s', Buffer.from('x')))).toBe('EINVAL');
    expect(await code(h, put('/nope/f', Buffer.from('x')))).toBe('ENOENT');
    expect(await code(h, put('/a/b/f/x', Buffer.from('x'), { mkdirs: true }))).toBe('ENOTDIR');
    // An empty file is inline too.
    await ok(h, put('/a/empty', Buffer.alloc(0)));
    expect((await h.sm.layout({ path: '/a/empty' })).data?.length).toBe(0);
  });

  it('moves a file from inline to chunks and back by commits, and cuts it by truncate', async () => {
    const h = await openSm();
    const { attr } = (await ok(h, { op: 'create', at: { path: '/f' }, mode: 0o644, uid: 0, gid: 0, exclusive: true, lease: { holder: 'c', ttlMs: 60_000 } })) as {
      attr: { ino: number };
    };
    const ino = attr.ino;
    const token = Number(((await h.sm.lease(ino)) as { token: number }).token);
    const small = Buffer.from('x'.repeat(1000));
    await ok(h, { op: 'commit', ino, expectedVersion: 0, fence: token, size: 1000, extents: [], inlineB64: small.toString('base64'), inlineBudget: B });
    expect(h.sm.inlineBytes()).toBe(1000);
    expect((await h.sm.commitStatus(ino, 1)).state).toBe('durable');
    // Inline content with extents, or longer than the size, is refused.
    expect(await code(h, { op: 'commit', ino, expectedVersion: 1, fence: token, size: 1000, extents: [{ offset: 0, length: 10, chunkHash: hash, scheme: 'rs-2+1', pg: 0 }], inlineB64: small.toString('base64'), inlineBudget: B })).toBe('EINVAL');
    expect(await code(h, { op: 'commit', ino, expectedVersion: 1, fence: token, size: 10, extents: [], inlineB64: small.toString('base64'), inlineBudget: B })).toBe('EINVAL');
    // Grows past the threshold: a chunk commit drops the inline bytes atomically.
    await ok(h, { op: 'commit', ino, expectedVersion: 1, fence: token, size: 200_000, extents: [{ offset: 0, length: 200_000, chunkHash: hash, scheme: 'rs-2+1', pg: 0 }] });
    let l = await h.sm.layout({ ino });
    expect(l.data).toBeUndefined();
    expect(l.inline).toBeUndefined();
    expect(l.extents).toHaveLength(1);
    expect(h.sm.inlineBytes()).toBe(0);
    // Shrinks back: inline again.
    await ok(h, { op: 'commit', ino, expectedVersion: 2, fence: token, size: 3, extents: [], inlineB64: Buffer.from('abc').toString('base64'), inlineBudget: B });
    l = await h.sm.layout({ ino });
    expect(l.extents).toEqual([]);
    expect(l.data?.toString()).toBe('abc');
    // Truncate cuts inline content; truncating up leaves zeros past it (the size says how far).
    await ok(h, { op: 'truncate', node: { ino }, size: 2, expectedVersion: 3, fence: token });
    expect((await h.sm.layout({ ino })).data?.toString()).toBe('ab');
    await ok(h, { op: 'truncate', node: { ino }, size: 10, expectedVersion: 4, fence: token });
    expect((await h.sm.layout({ ino })).data?.toString()).toBe('ab');
    expect((await h.sm.getattr({ ino })).size).toBe(10);
    expect(h.sm.inlineBytes()).toBe(2);
    // Unlink while leased keeps it (orphan) with its bytes; the lease's end removes both.
    await ok(h, { op: 'unlink', at: { path: '/f' } });
    expect(h.sm.inlineBytes()).toBe(2);
    await ok(h, { op: 'leaseRelease', ino, holder: 'c', token });
    expect(h.sm.inlineBytes()).toBe(0);
    expect((await h.sm.dump()).filter(([k]) => k.startsWith('b:'))).toEqual([]);
  });

  it('a delta commit (splice) keeps the layout outside its range and checks its bounds', async () => {
    const h = await openSm();
    const { attr } = (await ok(h, { op: 'create', at: { path: '/big' }, mode: 0o644, uid: 0, gid: 0, exclusive: true, lease: { holder: 'c', ttlMs: 60_000 } })) as { attr: { ino: number } };
    const ino = attr.ino;
    const token = Number(((await h.sm.lease(ino)) as { token: number }).token);
    const ext = (i: number, off = i * 100, len = 100) => ({ offset: off, length: len, chunkHash: (i + 16).toString(16).padStart(64, '0'), scheme: 'rs-2+1', pg: 0 });
    const all = Array.from({ length: 10 }, (_, i) => ext(i));
    await ok(h, { op: 'commit', ino, expectedVersion: 0, fence: token, size: 1000, extents: all });
    // Replace [300, 400) by two slices of a new chunk; everything else stays.
    const add = [{ ...ext(50, 300, 50), chunkOffset: 0, chunkLength: 100 }, { ...ext(50, 350, 50), chunkOffset: 50, chunkLength: 100 }];
    await ok(h, { op: 'commit', ino, expectedVersion: 1, fence: token, size: 1000, extents: add, spliceFrom: 300, spliceTo: 400 });
    expect((await h.sm.layout({ ino })).extents).toEqual([...all.slice(0, 3), ...add, ...all.slice(4)]);
    // Truncating in the same delta cuts the tail (the cut extent becomes a slice).
    await ok(h, { op: 'commit', ino, expectedVersion: 2, fence: token, size: 950, extents: [], spliceFrom: 300, spliceTo: 300 });
    const l = await h.sm.layout({ ino });
    expect(l.extents.at(-1)).toEqual({ ...ext(9), length: 50, chunkOffset: 0, chunkLength: 100 });
    // Bounds: an added extent outside the range, a range that cuts a stored extent.
    expect(await code(h, { op: 'commit', ino, expectedVersion: 3, fence: token, size: 950, extents: [ext(60, 500)], spliceFrom: 300, spliceTo: 400 })).toBe('EINVAL');
    expect(await code(h, { op: 'commit', ino, expectedVersion: 3, fence: token, size: 950, extents: [], spliceFrom: 250, spliceTo: 400 })).toBe('EINVAL');
    expect(await code(h, { op: 'commit', ino, expectedVersion: 3, fence: token, size: 950, extents: [{ ...ext(1), chunkOffset: 50, chunkLength: 120 }], spliceFrom: 100, spliceTo: 200 })).toBe('EINVAL');
  });

  it('pins keep a superseded or unlinked version\'s layout until they end; leases give GC its safe point', async () => {
    const h = await openSm();
    const { attr } = (await ok(h, { op: 'create', at: { path: '/p' }, mode: 0o644, uid: 0, gid: 0, exclusive: true, lease: { holder: 'w', ttlMs: 60_000 } }, 1_000)) as { attr: { ino: number } };
    const ino = attr.ino;
    expect(await h.sm.gcSafePointMs(2_000)).toBe(1_000);
    const token = Number(((await h.sm.lease(ino)) as { token: number }).token);
    const ext = (i: number) => [{ offset: 0, length: 100, chunkHash: (i + 16).toString(16).padStart(64, '0'), scheme: 'rs', pg: 0 }];
    await ok(h, { op: 'commit', ino, expectedVersion: 0, fence: token, size: 100, extents: ext(1) });
    await ok(h, { op: 'pin', ino, version: 1, holder: 'r1', ttlMs: 10_000 }, 5_000);
    await ok(h, { op: 'pin', ino, version: 1, holder: 'r2', ttlMs: 10_000 }, 5_000);
    expect(await code(h, { op: 'pin', ino, version: 7, holder: 'r3', ttlMs: 10_000 })).toBe('ECONFLICT');
    await ok(h, { op: 'commit', ino, expectedVersion: 1, fence: token, size: 100, extents: ext(2) });
    expect((await h.sm.retainedLayouts()).map((r) => [r.ino, r.version, r.extents[0]!.chunkHash])).toEqual([[ino, 1, ext(1)[0]!.chunkHash]]);
    // One pin ends: the other still holds version 1. Renewing keeps it; the holder may move on to v2.
    await ok(h, { op: 'unpin', ino, holder: 'r1' });
    expect(await h.sm.retainedLayouts()).toHaveLength(1);
    await ok(h, { op: 'pin', ino, version: 1, holder: 'r2', ttlMs: 10_000 }, 6_000);
    await ok(h, { op: 'pin', ino, version: 2, holder: 'r2', ttlMs: 10_000 }, 6_000);
    expect(await h.sm.retainedLayouts()).toEqual([]);
    // Unlinked (the lease released) while pinned: the inode goes, its layout stays for the pin.
    await ok(h, { op: 'leaseRelease', ino, holder: 'w', token });
    expect(await h.sm.gcSafePointMs(7_000)).toBeUndefined();
    await ok(h, { op: 'unlink', at: { path: '/p' } });
    await expect(h.sm.getattr({ ino })).rejects.toMatchObject({ code: 'ESTALE' });
    expect((await h.sm.retainedLayouts()).map((r) => r.version)).toEqual([2]);
    // The pin expires (swept past its margin): the layout goes.
    expect(await h.sm.expiredPins(10_000, 10)).toEqual([]);
    expect(await h.sm.expiredPins(20_000, 10)).toEqual([{ ino, holder: 'r2' }]);
    await ok(h, { op: 'pinExpire', pins: [{ ino, holder: 'r2' }] }, 20_000);
    expect(await h.sm.retainedLayouts()).toEqual([]);
    expect((await h.sm.dump()).filter(([k]) => k.startsWith('p:') || k.startsWith('r:'))).toEqual([]);
  });

  it('refuses inline writes past the budget with ENOSPC, and always lets a file shrink', async () => {
    const h = await openSm();
    await ok(h, put('/a', Buffer.alloc(600, 1), { budget: 1000 }));
    expect(await code(h, put('/b', Buffer.alloc(600, 2), { budget: 1000 }))).toBe('ENOSPC');
    await expect(h.sm.getattr({ path: '/b' })).rejects.toMatchObject({ code: 'ENOENT' });
    await ok(h, put('/b', Buffer.alloc(400, 2), { budget: 1000 }));
    expect(h.sm.inlineBytes()).toBe(1000);
    // Replacing /a with a smaller file frees room (the old inode's bytes leave in the same op).
    await ok(h, put('/a', Buffer.alloc(100, 3), { budget: 1000 }));
    expect(h.sm.inlineBytes()).toBe(500);
    // A budget lowered below what is held: nothing grows, everything may shrink.
    await ok(h, put('/a', Buffer.alloc(50, 3), { budget: 10 }));
    expect(await code(h, put('/c', Buffer.alloc(1), { budget: 10 }))).toBe('ENOSPC');
  });

  it('checks inline content on read and by scrub, and carries it through snapshot and restore', async () => {
    const h1 = await openSm();
    for (let i = 0; i < 50; i++) await ok(h1, put(`/d/f${i}`, Buffer.alloc(100 + i, i), { mkdirs: true }));
    expect(await h1.sm.scrubInline()).toEqual({ checked: 50, bytes: 50 * 100 + (49 * 50) / 2, bad: [] });
    // Snapshot into a fresh node: identical database, content readable there.
    const snap = await h1.sm.snapshot();
    const chunks: Uint8Array[] = [];
    for await (const c of snap.chunks) chunks.push(c);
    const h2 = await openSm();
    await h2.sm.restore({ index: snap.index, term: snap.term, conf: { voters: [1], learners: [] } }, (async function* () {
      yield* chunks;
    })());
    expect(await h2.sm.dump()).toEqual(await h1.sm.dump());
    expect(h2.sm.inlineBytes()).toBe(h1.sm.inlineBytes());
    expect((await h2.sm.layout({ path: '/d/f7' })).data).toEqual(Buffer.alloc(107, 7));
    // Replaying the same log on a third node gives the same database (apply is deterministic).
    const h3 = await openSm();
    await h3.sm.apply(h1.log);
    expect(await h3.sm.dump()).toEqual(await h1.sm.dump());
    // A flipped byte in a stored blob: ECORRUPT on read (never wrong bytes), found by scrub.
    const ino = (await h2.sm.getattr({ path: '/d/f7' })).ino;
    await h2.sm.close();
    const db = new ClassicLevel<string, string>(join(h2.dir, 'meta'), { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    const bad = Buffer.from((await db.get(K.inline(ino)))!, 'base64');
    bad[3] = bad[3]! ^ 0xff;
    await db.put(K.inline(ino), bad.toString('base64'));
    await db.close();
    h2.sm = await MetaStateMachine.open({ dataDir: h2.dir });
    await expect(h2.sm.layout({ path: '/d/f7' })).rejects.toMatchObject({ code: 'ECORRUPT' });
    expect((await h2.sm.scrubInline()).bad).toEqual([ino]);
    expect((await h2.sm.layout({ path: '/d/f8' })).data).toEqual(Buffer.alloc(108, 8));
  });
});
