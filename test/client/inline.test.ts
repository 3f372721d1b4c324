/**
 * Inline small files through the client against the REAL services (3-node metadata cluster,
 * three chunk servers, EC 2+1): a small version is committed inline (no chunk stored, one
 * metadata write), read back by another node's client; a file crosses the threshold in both
 * directions, strong and weak, each commit atomic (readers on another node see the old or the new
 * content, never a mix); putSmall replaces a file in one write and declines what it must not take;
 * and when the metadata's inline budget is full, puts and commits fall back to chunks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CairnFs } from '../../src/client/index.js';
import type { ChunkPort } from '../../src/client/ports.js';
import { tempDir } from '../helpers/env.js';
import { startRealServices, type RealServices } from './helpers/real-services.js';

const CHUNK = 256 * 1024;
const INLINE = 16 * 1024;
/** The cluster's inline budget: small, so that the last test can fill it. */
const BUDGET = 1024 * 1024;

let base: { path: string; remove: () => Promise<void> };
let svc: RealServices;
const started: CairnFs[] = [];
/** Chunk puts made through the counting port. */
let chunkPuts = 0;

/** Bytes given to putChunk through the counting port. */
let chunkBytes = 0;

async function client(cache: string, mode: 'weak' | 'strong' = 'weak', slices = false): Promise<CairnFs> {
  const counting: ChunkPort = {
    putChunk: (h, b) => {
      chunkPuts++;
      chunkBytes += b.length;
      return svc.chunks.putChunk(h, b);
    },
    getChunk: (r) => svc.chunks.getChunk(r),
    health: (r) => svc.chunks.health(r),
  };
  const fs = await CairnFs.start(
    {
      cacheDir: join(base.path, cache), mode, chunker: { kind: 'fixed', sizeBytes: CHUNK }, retryBaseMs: 20, idleCommitDelayMs: 100,
      durableTimeoutMs: 30_000, inlineMaxBytes: INLINE, slices, maxPiecesPerWindow: 4,
    },
    { meta: svc.meta, chunks: counting },
  );
  started.push(fs);
  return fs;
}

async function readAll(fs: CairnFs, path: string): Promise<Buffer> {
  const fd = await fs.open(path);
  try {
    const st = await fs.stat(path);
    return await fs.read(fd, st.size, 0);
  } finally {
    await fs.close(fd);
  }
}

beforeAll(async () => {
  base = await tempDir('cairn-client-inline-');
  svc = await startRealServices(base.path, { inlineBudgetBytes: BUDGET });
}, 60_000);

afterAll(async () => {
  for (const fs of started.splice(0)) await fs.shutdown();
  await svc?.close();
  await base?.remove();
});

describe('inline small files through the client', () => {
  it('strong: a small file is one inline commit with no chunk; it grows into chunks and shrinks back, read by another node', async () => {
    const fs = await client('s1', 'strong');
    const reader = await client('s2');
    const small = randomBytes(4000);
    const puts0 = chunkPuts;
    const fd = await fs.open('/inl-strong', { create: true });
    await fs.write(fd, small);
    await fs.close(fd);
    expect(chunkPuts).toBe(puts0);
    let l = await svc.metaClient.layout('/inl-strong');
    expect(l.extents).toEqual([]);
    expect(l.inline?.equals(small)).toBe(true);
    expect((await svc.metaClient.commitStatus(l.attr.ino, l.attr.version)).state).toBe('durable');
    expect((await readAll(reader, '/inl-strong')).equals(small)).toBe(true);

    // Past the threshold: one commit moves the whole file (the inline part rewritten) to chunks.
    const tail = randomBytes(CHUNK + 1000);
    const fd2 = await fs.open('/inl-strong', { write: true });
    await fs.write(fd2, tail, small.length);
    await fs.close(fd2);
    l = await svc.metaClient.layout('/inl-strong');
    expect(l.inline).toBeUndefined();
    expect(l.extents.length).toBeGreaterThan(0);
    expect(chunkPuts).toBeGreaterThan(puts0);
    const big = Buffer.concat([small, tail]);
    expect((await readAll(reader, '/inl-strong')).equals(big)).toBe(true);

    // Back under it: truncate and rewrite a page; the version goes inline again, no new chunk.
    const puts1 = chunkPuts;
    const fd3 = await fs.open('/inl-strong', { write: true });
    await fs.truncate(fd3, 3000);
    await fs.write(fd3, Buffer.from('rewritten'), 100);
    await fs.close(fd3);
    expect(chunkPuts).toBe(puts1);
    l = await svc.metaClient.layout('/inl-strong');
    expect(l.extents).toEqual([]);
    const want = Buffer.from(big.subarray(0, 3000));
    want.write('rewritten', 100);
    expect(l.inline?.equals(want)).toBe(true);
    expect((await readAll(reader, '/inl-strong')).equals(want)).toBe(true);
  });

  it('weak: crosses the threshold both ways; readers on another node see whole versions only', async () => {
    const fs = await client('w1', 'weak');
    const reader = await client('w2');
    const versions: Buffer[] = [randomBytes(INLINE), randomBytes(INLINE + 1), randomBytes(100), randomBytes(3 * CHUNK), randomBytes(1)];
    const seen = new Set<string>();
    const fd = await fs.open('/inl-weak', { create: true });
    let stop = false;
    const known = new Map<string, number>();
    versions.forEach((v, i) => known.set(v.toString('hex'), i));
    const readLoop = (async () => {
      while (!stop) {
        const got = await readAll(reader, '/inl-weak').catch(() => null);
        if (got === null || got.length === 0) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        const i = known.get(got.toString('hex'));
        if (i === undefined) throw new Error(`a reader saw ${got.length} bytes that are no whole version`);
        seen.add(String(i));
        // Reads served from this node's memory never leave the microtask queue: yield, or the
        // writer (and every timer) would starve.
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (const v of versions) {
      await fs.truncate(fd, 0);
      await fs.write(fd, v, 0);
      await fs.commit(fd, 'durable');
      const l = await svc.metaClient.layout('/inl-weak');
      expect(l.attr.size).toBe(v.length);
      expect(l.inline !== undefined).toBe(v.length <= INLINE);
      expect((await readAll(reader, '/inl-weak')).equals(v)).toBe(true);
    }
    stop = true;
    await readLoop;
    await fs.close(fd);
    expect(seen.size).toBeGreaterThan(0);
  });

  it('putSmall: one metadata write replaces a file (making parents); declines large data and paths cached here', async () => {
    const fs = await client('p1', 'strong');
    const reader = await client('p2');
    const rev0 = (await svc.metaClient.status()).revision;
    const a = await fs.putSmall('/put/a/b/f', Buffer.from('one'), { mkdirs: true });
    expect(a).toMatchObject({ version: 1, size: 3 });
    expect((await readAll(reader, '/put/a/b/f')).toString()).toBe('one');
    const b = await fs.putSmall('/put/a/b/f', Buffer.from('two!'));
    expect(b?.fileId).not.toBe(a?.fileId);
    expect((await readAll(reader, '/put/a/b/f')).toString()).toBe('two!');
    // The watch feed: mkdir, mkdir, mkdir, create/commit/durable, then unlink/create/commit/durable.
    const evs: string[] = [];
    const ac = new AbortController();
    for await (const e of svc.metaClient.watch('/put', { fromRevision: rev0 + 1, signal: ac.signal })) {
      evs.push(e.kind);
      if (evs.length >= 10) ac.abort();
    }
    expect(evs).toEqual(['mkdir', 'mkdir', 'mkdir', 'create', 'commit', 'durable', 'unlink', 'create', 'commit', 'durable']);
    expect(await fs.putSmall('/put/big', randomBytes(INLINE + 1))).toBeNull();
    const fd = await fs.open('/put/open', { create: true });
    expect(await fs.putSmall('/put/open', Buffer.from('x'))).toBeNull();
    await fs.close(fd);
    await expect(fs.putSmall('/put/a', Buffer.from('x'))).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(fs.putSmall('/nope/x', Buffer.from('x'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('slices: a 4 KiB overwrite of a large file stores 4 KiB (a whole chunk without slices), and reads back right elsewhere', async () => {
    const reader = await client('sl-r');
    const stored: Record<string, number> = {};
    for (const slices of [false, true]) {
      const fs = await client(`sl-${slices}`, 'strong', slices);
      const path = `/slices-${slices}`;
      const model = randomBytes(3 * CHUNK + 500);
      const fd = await fs.open(path, { create: true });
      await fs.write(fd, model, 0);
      await fs.fsync(fd);
      const bytes0 = chunkBytes;
      const page = randomBytes(4096);
      await fs.write(fd, page, CHUNK + 8192);
      await fs.fsync(fd);
      stored[String(slices)] = chunkBytes - bytes0;
      page.copy(model, CHUNK + 8192);
      expect((await readAll(reader, path)).equals(model)).toBe(true);
      // Many scattered pages: the window is compacted (a whole chunk again), never more than the bound.
      for (let i = 0; i < 6; i++) {
        const p = randomBytes(100);
        await fs.write(fd, p, 2 * CHUNK + i * 9000);
        await fs.fsync(fd);
        p.copy(model, 2 * CHUNK + i * 9000);
      }
      await fs.close(fd);
      const l = await svc.metaClient.layout(path);
      const inWindow = l.extents.filter((e) => e.offset >= 2 * CHUNK && e.offset < 3 * CHUNK).length;
      expect(inWindow).toBeLessThanOrEqual(5);
      expect((await readAll(reader, path)).equals(model)).toBe(true);
    }
    expect(stored.true).toBe(4096);
    expect(stored.false).toBe(CHUNK);
  });

  it('delta commits: a small change to a many-chunk file sends only the changed extents', async () => {
    const sent: Array<{ extents: number; splice: boolean }> = [];
    const spying = new Proxy(svc.meta, {
      get(target, prop, recv) {
        if (prop === 'commitVersion') {
          return (req: Parameters<typeof target.commitVersion>[0]) => {
            sent.push({ extents: req.extents.length, splice: req.splice !== undefined });
            return target.commitVersion(req);
          };
        }
        return Reflect.get(target, prop, recv) as unknown;
      },
    });
    const fs = await CairnFs.start(
      { cacheDir: join(base.path, 'delta'), mode: 'strong', chunker: { kind: 'fixed', sizeBytes: CHUNK }, retryBaseMs: 20, durableTimeoutMs: 30_000, slices: true },
      { meta: spying, chunks: svc.chunks },
    );
    started.push(fs);
    const reader = await client('delta-r');
    const model = randomBytes(20 * CHUNK);
    const fd = await fs.open('/delta', { create: true });
    await fs.write(fd, model, 0);
    await fs.fsync(fd);
    expect(sent.at(-1)).toEqual({ extents: 20, splice: false });
    const page = randomBytes(4096);
    await fs.write(fd, page, 7 * CHUNK + 4096);
    await fs.fsync(fd);
    page.copy(model, 7 * CHUNK + 4096);
    // The 8th chunk becomes three pieces (slice, new 4 KiB chunk, slice): three extents sent, not 22.
    expect(sent.at(-1)).toEqual({ extents: 3, splice: true });
    await fs.truncate(fd, 15 * CHUNK + 10);
    await fs.fsync(fd);
    await fs.close(fd);
    const cut = model.subarray(0, 15 * CHUNK + 10);
    expect(sent.at(-1)?.splice).toBe(true);
    expect((await svc.metaClient.layout('/delta')).extents).toHaveLength(18);
    expect((await readAll(reader, '/delta')).equals(cut)).toBe(true);
  });

  it('falls back to chunks when the inline budget is full, and inlines again once there is room', async () => {
    const fs = await client('b1', 'strong');
    const reader = await client('b2');
    const made: string[] = [];
    for (let i = 0; ; i++) {
      const r = await fs.putSmall(`/budget/f${i}`, randomBytes(INLINE), { mkdirs: true });
      if (r === null) break;
      made.push(`/budget/f${i}`);
      if (i > BUDGET / INLINE + 2) throw new Error('the inline budget never filled');
    }
    expect(made.length).toBeGreaterThan(BUDGET / INLINE - 10);
    // A commit of a small version now goes to chunks (the metadata said ENOSPC); content is right.
    const puts0 = chunkPuts;
    const data = randomBytes(INLINE); // as large as the put that did not fit
    const fd = await fs.open('/budget/committed', { create: true });
    await fs.write(fd, data);
    await fs.close(fd);
    expect(chunkPuts).toBeGreaterThan(puts0);
    const l = await svc.metaClient.layout('/budget/committed');
    expect(l.inline).toBeUndefined();
    expect((await readAll(reader, '/budget/committed')).equals(data)).toBe(true);
    // Room again: unlinks free their inline bytes.
    for (const p of made.slice(0, 4)) await svc.metaClient.unlink(p);
    expect(await fs.putSmall('/budget/again', randomBytes(INLINE))).not.toBeNull();
  });
});
