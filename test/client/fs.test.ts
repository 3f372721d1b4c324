/**
 * The file API over the write cache, with real files in temp dirs and the directory-backed
 * stand-ins for metadata and chunks (test/client/helpers/stub-ports.ts): every call with
 * offsets, sparse writes, truncation, appends, both modes, recovery after a restart, dedup,
 * partial health, conflicts. These prove the client; the pipeline against the real services is
 * tested separately once they are wired in.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { readdir, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { tempDir, eventually } from '../helpers/env.js';
import { CairnFs, type CairnFsOptions } from '../../src/client/index.js';
import { CairnError } from '../../src/common/errors.js';
import { StubMeta, StubChunks } from './helpers/stub-ports.js';

const KIB = 1024;
const CHUNK = 64 * KIB;

let dir: { path: string; remove: () => Promise<void> };
let meta: StubMeta;
let chunks: StubChunks;
const opened: CairnFs[] = [];

async function start(extra: Partial<CairnFsOptions> = {}, cache = 'cache'): Promise<CairnFs> {
  const fs = await CairnFs.start(
    {
      cacheDir: join(dir.path, cache),
      chunker: { kind: 'fixed', sizeBytes: CHUNK },
      idleCommitDelayMs: 60_000,
      retryBaseMs: 5,
      durableTimeoutMs: 20_000,
      ...extra,
    },
    { meta, chunks },
  );
  opened.push(fs);
  return fs;
}

async function cachedFileDirs(cache = 'cache'): Promise<string[]> {
  return readdir(join(dir.path, cache, 'files'));
}

beforeEach(async () => {
  dir = await tempDir('cairn-client-');
  meta = new StubMeta(join(dir.path, 'meta'));
  chunks = new StubChunks(join(dir.path, 'store'));
});

afterEach(async () => {
  for (const fs of opened.splice(0)) await fs.shutdown();
  await dir.remove();
});

describe('open', () => {
  it('refuses a missing file without create, and an existing one with exclusive', async () => {
    const fs = await start();
    await expect(fs.open('/a')).rejects.toMatchObject({ code: 'ENOENT' });
    const fd = await fs.open('/a', { create: true, exclusive: true });
    await expect(fs.open('/a', { create: true, exclusive: true })).rejects.toMatchObject({ code: 'EEXIST' });
    await fs.close(fd);
  });

  it('shares one cached file between handles (find_opened): a write is seen by another handle at once', async () => {
    const fs = await start();
    const w = await fs.open('/shared', { create: true });
    const r = await fs.open('/shared');
    await fs.write(w, Buffer.from('hello'));
    expect((await fs.read(r, 100, 0)).toString()).toBe('hello');
    await expect(fs.write(r, Buffer.from('x'))).rejects.toMatchObject({ code: 'EACCES' });
    await fs.close(w);
    await fs.close(r);
  });
});

describe('reads and writes in the cache', () => {
  it('writes at offsets, reads back, advances the position, and reads zeros in holes', async () => {
    const fs = await start();
    const fd = await fs.open('/f', { create: true });
    await fs.write(fd, Buffer.from('abc'));
    await fs.write(fd, Buffer.from('def'));
    await fs.write(fd, Buffer.from('XY'), 1);
    await fs.write(fd, Buffer.from('end'), 100); // sparse: 6..99 is a hole
    const all = await fs.read(fd, 1000, 0);
    expect(all.length).toBe(103);
    expect(all.subarray(0, 6).toString()).toBe('aXYdef');
    expect(all.subarray(6, 100).equals(Buffer.alloc(94))).toBe(true);
    expect(all.subarray(100).toString()).toBe('end');
    expect((await fs.read(fd, 10, 103)).length).toBe(0);
    expect((await fs.stat('/f')).size).toBe(103);
    await fs.close(fd);
  });

  it('append writes at the end whatever the position', async () => {
    const fs = await start();
    const fd = await fs.open('/log', { create: true });
    await fs.write(fd, Buffer.from('0123456789'));
    expect(await fs.append(fd, Buffer.from('A'))).toBe(10);
    const ap = await fs.open('/log', { append: true });
    await fs.write(ap, Buffer.from('B'), 0); // append handle ignores the position
    expect((await fs.read(fd, 100, 0)).toString()).toBe('0123456789AB');
    await fs.close(fd);
    await fs.close(ap);
  });

  it('truncate down hides old bytes, and growing again reads zeros there, before and after commit', async () => {
    const fs = await start();
    const fd = await fs.open('/t', { create: true });
    const data = randomBytes(3 * CHUNK + 100);
    await fs.write(fd, data, 0);
    await fs.commit(fd, 'durable');
    await fs.truncate(fd, CHUNK + 10);
    await fs.truncate(fd, 3 * CHUNK);
    const expected = Buffer.concat([data.subarray(0, CHUNK + 10), Buffer.alloc(2 * CHUNK - 10)]);
    expect((await fs.read(fd, 10 * CHUNK, 0)).equals(expected)).toBe(true);
    await fs.commit(fd, 'durable');
    expect((await fs.read(fd, 10 * CHUNK, 0)).equals(expected)).toBe(true);
    const attr = await meta.lookup('/t');
    expect(attr!.size).toBe(3 * CHUNK);
    // [C, 2C) is rewritten (10 bytes of data, then zeros); [2C, 3C) became all zeros: a hole, no chunk.
    expect(attr!.extents.map((e) => [e.offset, e.length])).toEqual([
      [0, CHUNK],
      [CHUNK, CHUNK],
    ]);
    await fs.truncate('/t', 5);
    expect((await fs.stat('/t')).size).toBe(5);
    await fs.close(fd);
  });

  it('sequential reads fetch the next chunk ahead; random reads fetch only what they read', async () => {
    const writer = await start({ mode: 'strong' });
    const body = randomBytes(4 * CHUNK);
    const w = await writer.open('/seq', { create: true });
    await writer.write(w, body);
    await writer.close(w); // strong: committed and durable, the cache dropped
    const reader = await start({}, 'reader-cache'); // the default: one chunk ahead
    const fd = await reader.open('/seq');
    // The first read has no predecessor: it fetches the first chunk only.
    const before = chunks.gets;
    expect((await reader.read(fd, CHUNK / 2)).equals(body.subarray(0, CHUNK / 2))).toBe(true);
    expect(chunks.gets - before).toBe(1);
    // A read that continues it starts fetching chunk 1 while it copies from chunk 0.
    expect((await reader.read(fd, CHUNK / 2)).equals(body.subarray(CHUNK / 2, CHUNK))).toBe(true);
    await eventually(() => expect(chunks.gets - before).toBe(2));
    expect((await reader.read(fd, CHUNK)).equals(body.subarray(CHUNK, 2 * CHUNK))).toBe(true);
    await eventually(() => expect(chunks.gets - before).toBe(3)); // chunk 2, ahead of the reader
    // A random read elsewhere (chunk 3 at an offset) is no continuation: nothing fetched ahead of it,
    // and once it is done, re-reading chunk 2 costs no fetch.
    expect((await reader.read(fd, 100, 3 * CHUNK + 5)).equals(body.subarray(3 * CHUNK + 5, 3 * CHUNK + 105))).toBe(true);
    expect((await reader.read(fd, 100, 2 * CHUNK)).equals(body.subarray(2 * CHUNK, 2 * CHUNK + 100))).toBe(true);
    expect(chunks.gets - before).toBe(4);
    await reader.close(fd);
  });

  it('reads ahead readAheadChunks chunks of a sequential reader, none with 0', async () => {
    const writer = await start({ mode: 'strong' });
    const body = randomBytes(8 * CHUNK);
    const w = await writer.open('/deep', { create: true });
    await writer.write(w, body);
    await writer.close(w);
    const reader = await start({ readAheadChunks: 4 }, 'reader-cache');
    const fd = await reader.open('/deep');
    const before = chunks.gets;
    expect((await reader.read(fd, CHUNK / 2)).equals(body.subarray(0, CHUNK / 2))).toBe(true);
    expect(chunks.gets - before).toBe(1);
    // The continuation fetches chunks 1-4 while it copies from chunk 0.
    expect((await reader.read(fd, CHUNK / 2)).equals(body.subarray(CHUNK / 2, CHUNK))).toBe(true);
    await eventually(() => expect(chunks.gets - before).toBe(5));
    // Reading chunk 1 keeps four ahead: only chunk 5 is new.
    expect((await reader.read(fd, CHUNK)).equals(body.subarray(CHUNK, 2 * CHUNK))).toBe(true);
    await eventually(() => expect(chunks.gets - before).toBe(6));
    // A random read of chunk 7 fetches it alone.
    expect((await reader.read(fd, 10, 7 * CHUNK)).equals(body.subarray(7 * CHUNK, 7 * CHUNK + 10))).toBe(true);
    expect(chunks.gets - before).toBe(7);
    await reader.close(fd);

    const none = await start({ readAheadChunks: 0 }, 'no-read-ahead');
    const fd2 = await none.open('/deep');
    const before2 = chunks.gets;
    for (let i = 0; i < 3; i++) expect((await none.read(fd2, CHUNK)).equals(body.subarray(i * CHUNK, (i + 1) * CHUNK))).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(chunks.gets - before2).toBe(3);
    await none.close(fd2);
  });

  it('rejects bad offsets with EINVAL', async () => {
    const fs = await start();
    const fd = await fs.open('/e', { create: true });
    await expect(fs.write(fd, Buffer.from('x'), -1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(fs.read(fd, 1, 2 ** 60)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(fs.read(999, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    await fs.close(fd);
  });
});

describe('commit', () => {
  it('strong mode: close returns once durable; readers on another node see it; the cache is dropped', async () => {
    const fs = await start({ mode: 'strong' });
    const fd = await fs.open('/s', { create: true });
    const data = randomBytes(2 * CHUNK + 5);
    await fs.write(fd, data);
    await fs.close(fd);
    expect((await fs.commitStatus('/s')).state).toBe('durable');
    const attr = await meta.lookup('/s');
    expect(attr!.version).toBe(1);
    expect(attr!.size).toBe(data.length);
    expect(attr!.extents.map((e) => e.length)).toEqual([CHUNK, CHUNK, 5]);
    expect((await meta.commitStatus(attr!.fileId, attr!.version))!.state).toBe('durable');
    await eventually(async () => (await cachedFileDirs()).length === 0);
    // Another node (own cache dir) reads through the chunk store.
    const other = await start({}, 'cache-2');
    const r = await other.open('/s');
    expect((await other.read(r, data.length + 10, 0)).equals(data)).toBe(true);
    await other.close(r);
  });

  it('weak mode: close returns with the data dirty; the idle commit makes it durable', async () => {
    const fs = await start({ idleCommitDelayMs: 50 });
    const fd = await fs.open('/w', { create: true });
    await fs.write(fd, Buffer.from('weak data'));
    await fs.close(fd);
    const st = await fs.commitStatus('/w');
    expect(['dirty', 'committing', 'visible', 'durable']).toContain(st.state);
    await eventually(async () => (await meta.lookup('/w'))!.version === 1);
    await eventually(async () => (await fs.commitStatus('/w')).pendingBytes === 0);
    // The lease goes back once the clean file is dropped from the cache (in the background).
    await eventually(() => meta.calls.includes('releaseLease'));
  });

  it('weak mode: passing the dirty threshold commits while the file stays open', async () => {
    const fs = await start({ dirtyThresholdBytes: 2 * CHUNK });
    const fd = await fs.open('/big', { create: true });
    await fs.write(fd, randomBytes(3 * CHUNK));
    await eventually(async () => (await meta.lookup('/big'))!.version >= 1);
    await fs.close(fd);
  });

  it('per-open strong mode on a weak file system', async () => {
    const fs = await start();
    const fd = await fs.open('/po', { create: true, mode: 'strong' });
    await fs.write(fd, Buffer.from('x'));
    await fs.flush(fd);
    expect((await meta.lookup('/po'))!.version).toBe(1);
    await fs.close(fd);
  });

  it('writes during a commit land in the next version, and commitStatus counts pending bytes', async () => {
    const fs = await start();
    const fd = await fs.open('/c', { create: true });
    await fs.write(fd, Buffer.alloc(1000, 1));
    expect((await fs.commitStatus('/c')).pendingBytes).toBe(1000);
    let release!: () => void;
    chunks.gate = new Promise((r) => (release = r));
    const first = fs.commit(fd, 'durable');
    await eventually(() => fs.cachedFiles()[0]!.state === 'committing');
    await fs.write(fd, Buffer.alloc(10, 2), 1000);
    expect((await fs.commitStatus('/c')).pendingBytes).toBe(1010);
    chunks.gate = null;
    release();
    await first;
    expect((await meta.lookup('/c'))!.size).toBe(1000);
    await fs.commit(fd, 'durable');
    expect((await meta.lookup('/c'))!.size).toBe(1010);
    expect((await fs.read(fd, 2000, 0)).equals(Buffer.concat([Buffer.alloc(1000, 1), Buffer.alloc(10, 2)]))).toBe(true);
    await fs.close(fd);
  });

  it('a 4 KiB rewrite inside a committed file stores one new chunk; an append stores only new chunks', async () => {
    const fs = await start();
    const fd = await fs.open('/r', { create: true });
    await fs.write(fd, randomBytes(8 * CHUNK));
    await fs.commit(fd);
    const before = (await meta.lookup('/r'))!.extents;
    chunks.puts = [];
    await fs.write(fd, randomBytes(4 * KIB), 3 * CHUNK + 8 * KIB);
    await fs.commit(fd);
    expect(chunks.puts.length).toBe(1);
    const mid = (await meta.lookup('/r'))!.extents;
    expect(mid.filter((e, i) => e.chunkHash !== before[i]!.chunkHash).map((e) => e.offset)).toEqual([3 * CHUNK]);
    chunks.puts = [];
    await fs.append(fd, randomBytes(100));
    await fs.commit(fd);
    const after = (await meta.lookup('/r'))!.extents;
    expect(after.slice(0, mid.length)).toEqual(mid);
    expect(after.length).toBe(mid.length + 1);
    expect(chunks.puts.length).toBe(1);
    await fs.close(fd);
  });

  it('identical content is stored once (dedup by SHA-256)', async () => {
    const fs = await start();
    const data = Buffer.concat([randomBytes(CHUNK), randomBytes(CHUNK)]);
    const doubled = Buffer.concat([data, data]); // 4 chunks, 2 distinct
    for (const p of ['/d1', '/d2']) {
      const fd = await fs.open(p, { create: true });
      await fs.write(fd, doubled);
      await fs.commit(fd);
      await fs.close(fd);
    }
    const a = (await meta.lookup('/d1'))!.extents.map((e) => e.chunkHash);
    const b = (await meta.lookup('/d2'))!.extents.map((e) => e.chunkHash);
    expect(a).toEqual(b);
    expect(new Set(a).size).toBe(2);
    expect((await chunks.storedHashes()).length).toBe(2);
    // Within one commit a repeated chunk is sent once.
    expect(chunks.puts.filter((h) => h === a[0]).length).toBe(2); // once per file commit, not once per extent
  });

  it('stays visible, not durable, until every shard is stored; then durable', async () => {
    const fs = await start();
    chunks.partialPuts = 3;
    const fd = await fs.open('/h', { create: true });
    await fs.write(fd, randomBytes(CHUNK));
    const st = await fs.commit(fd, 'visible');
    expect(['visible', 'durable']).toContain(st.state);
    expect((await meta.lookup('/h'))!.version).toBe(1);
    await fs.commit(fd, 'durable');
    expect((await fs.commitStatus('/h')).state).toBe('durable');
    const attr = await meta.lookup('/h');
    expect((await meta.commitStatus(attr!.fileId, attr!.version))!.state).toBe('durable');
    expect(meta.calls).toContain('markDurable');
    await fs.close(fd);
  });

  it('a file this node creates comes with its write lease: no separate acquire', async () => {
    const fs = await start();
    meta.calls.length = 0;
    const fd = await fs.open('/leased', { create: true });
    await fs.write(fd, Buffer.from('x'));
    expect(meta.calls).toContain('create');
    expect(meta.calls).not.toContain('acquireLease');
    expect((await fs.commit(fd, 'durable')).state).toBe('durable');
    await fs.close(fd);
  });

  it('a commit whose new chunks all have every shard records the version durable in the compare-and-set (no markDurable)', async () => {
    const fs = await start();
    const fd = await fs.open('/whole', { create: true });
    await fs.write(fd, randomBytes(2 * CHUNK + 3));
    meta.calls.length = 0;
    expect((await fs.commit(fd, 'durable')).state).toBe('durable');
    const attr = await meta.lookup('/whole');
    expect((await meta.commitStatus(attr!.fileId, attr!.version))!.state).toBe('durable');
    expect(meta.calls).toContain('commitVersion');
    expect(meta.calls).not.toContain('markDurable');
    await fs.close(fd);
  });

  it('a version installed by someone else is a conflict: the commit stops and the cached data is kept', async () => {
    const fs = await start();
    const fd = await fs.open('/x', { create: true });
    await fs.write(fd, Buffer.from('mine'));
    await meta.forceCommit('/x', 3);
    await expect(fs.commit(fd, 'durable')).rejects.toMatchObject({ code: 'ECONFLICT' });
    expect((await fs.commitStatus('/x')).state).toBe('conflict');
    expect((await fs.read(fd, 10, 0)).toString()).toBe('mine');
    await expect(fs.write(fd, Buffer.from('more'))).rejects.toBeInstanceOf(CairnError);
    expect((await cachedFileDirs()).length).toBe(1);
  });
});

describe('recovery', () => {
  it('cached writes survive a restart of the daemon and are committed after it', async () => {
    const fs1 = await start();
    const fd = await fs1.open('/rec', { create: true });
    const data = randomBytes(3 * CHUNK + 7);
    await fs1.write(fd, data);
    await fs1.truncate(fd, 2 * CHUNK);
    await fs1.write(fd, Buffer.from('tail'), 2 * CHUNK + 100);
    await fs1.flush(fd);
    await fs1.shutdown();
    const expected = Buffer.concat([data.subarray(0, 2 * CHUNK), Buffer.alloc(100), Buffer.from('tail')]);
    const fs2 = await start();
    await eventually(async () => (await meta.lookup('/rec'))!.version === 1);
    await eventually(async () => (await fs2.commitStatus('/rec')).pendingBytes === 0);
    const other = await start({}, 'cache-other');
    const r = await other.open('/rec');
    expect((await other.read(r, 10 * CHUNK, 0)).equals(expected)).toBe(true);
    await other.close(r);
  });

  it('a volatile upload: strong close returns durable, its cache lives under volatile/ and no other writer gets in meanwhile', async () => {
    const fs = await start();
    const data = randomBytes(2 * CHUNK + 5);
    await expect(fs.open('/v0', { create: true, volatile: true })).rejects.toMatchObject({ code: 'EINVAL' }); // weak file system
    await expect(fs.open('/v0', { create: true, mode: 'strong', volatile: true })).rejects.toMatchObject({ code: 'EINVAL' }); // not exclusive
    const fd = await fs.open('/v', { create: true, exclusive: true, mode: 'strong', volatile: true });
    await fs.write(fd, data);
    expect(await readdir(join(dir.path, 'cache', 'volatile'))).toHaveLength(1);
    expect(await cachedFileDirs()).toEqual([]);
    await expect(fs.open('/v', { write: true })).rejects.toMatchObject({ code: 'EBUSY' });
    const r = await fs.open('/v'); // readers are welcome
    expect((await fs.read(r, 10, 0)).equals(data.subarray(0, 10))).toBe(true);
    await fs.close(r);
    await fs.close(fd); // strong: durable when it returns
    expect((await fs.commitStatus('/v')).state).toBe('durable');
    const other = await start({}, 'cache-other');
    const o = await other.open('/v');
    expect((await other.read(o, 10 * CHUNK, 0)).equals(data)).toBe(true);
    await other.close(o);
    await eventually(async () => expect(await readdir(join(dir.path, 'cache', 'volatile'))).toEqual([]));
  });

  it('a volatile upload cut short by a restart is discarded, not recovered', async () => {
    const fs1 = await start();
    const fd = await fs1.open('/cut', { create: true, exclusive: true, mode: 'strong', volatile: true });
    await fs1.write(fd, randomBytes(CHUNK));
    // The daemon stops before the upload's close (its writer never got an answer).
    await fs1.shutdown();
    expect(await readdir(join(dir.path, 'cache', 'volatile'))).toHaveLength(1);
    const fs2 = await start();
    expect(await readdir(join(dir.path, 'cache', 'volatile'))).toEqual([]);
    expect(fs2.cachedFiles()).toEqual([]);
    // The created file is empty and version 0: nothing of the upload was committed.
    const attr = await meta.lookup('/cut');
    expect(attr?.size).toBe(0);
    expect(attr?.version).toBe(0);
  });

  it('a torn record at the end of the journal is cut off; the records before it survive', async () => {
    const fs1 = await start();
    const fd = await fs1.open('/torn', { create: true });
    await fs1.write(fd, Buffer.from('good'));
    await fs1.flush(fd);
    await fs1.shutdown();
    const [fileDir] = await cachedFileDirs();
    const segDir = join(dir.path, 'cache', 'files', fileDir!);
    const seg = (await readdir(segDir)).find((n) => n.startsWith('seg-'))!;
    await appendFile(join(segDir, seg), Buffer.from([0x43, 0x4a, 0x52, 0x31, 1, 0, 0, 0, 9, 9, 9]));
    const fs2 = await start();
    const r = await fs2.open('/torn');
    expect((await fs2.read(r, 100, 0)).toString()).toBe('good');
    await fs2.close(r);
  });
});

describe('recovery of damaged state', () => {
  it('a cached file whose state.json is not valid is left in place and the rest starts', async () => {
    const fs1 = await start();
    for (const p of ['/ok', '/bad']) {
      const fd = await fs1.open(p, { create: true });
      await fs1.write(fd, Buffer.from(p));
      await fs1.flush(fd);
    }
    await fs1.shutdown();
    const dirs = await cachedFileDirs();
    expect(dirs.length).toBe(2);
    const { readFile, writeFile } = await import('node:fs/promises');
    let damaged = '';
    for (const d of dirs) {
      const sp = join(dir.path, 'cache', 'files', d, 'state.json');
      const st = JSON.parse(await readFile(sp, 'utf8')) as { path: string };
      if (st.path === '/bad') {
        await writeFile(sp, JSON.stringify({ ...st, base: { version: -1 } }));
        damaged = d;
      }
    }
    const fs2 = await start();
    expect(fs2.cachedFiles().map((c) => c.path)).toEqual(['/ok']);
    await fs2.commit('/ok', 'durable');
    expect((await cachedFileDirs()).includes(damaged)).toBe(true);
  });
});

describe('leases', () => {
  it('a second writer on another node gets EBUSY while the first holds the write lease; a reader does not', async () => {
    const a = await start();
    const b = await start({}, 'cache-b');
    const fd = await a.open('/lease', { create: true });
    await expect(b.open('/lease', { write: true })).rejects.toMatchObject({ code: 'EBUSY' });
    const r = await b.open('/lease');
    await b.close(r);
    await a.write(fd, Buffer.from('x'));
    await a.close(fd);
    await a.commit('/lease', 'durable');
    await eventually(async () => {
      try {
        await b.close(await b.open('/lease', { write: true }));
        return true;
      } catch {
        return false;
      }
    });
  });
});

describe('cache space', () => {
  it('a writer waits while the cache is full and gets ENOSPC after the timeout; space comes back after commit', async () => {
    // The timeout must outlast a commit on a loaded machine (the third write waits through one).
    const fs = await start({ cacheMaxBytes: 64 * KIB, cacheFullTimeoutMs: 2_000 });
    let release!: () => void;
    chunks.gate = new Promise((r) => (release = r));
    const fd = await fs.open('/full', { create: true });
    await fs.write(fd, randomBytes(40 * KIB));
    // The second write does not fit: it waits (and starts a commit that is stuck on the gate)...
    await expect(fs.write(fd, randomBytes(40 * KIB))).rejects.toMatchObject({ code: 'ENOSPC' });
    // ...a write that waits while the commit drains succeeds.
    const pending = fs.write(fd, randomBytes(40 * KIB), 40 * KIB);
    chunks.gate = null;
    release();
    await expect(pending).resolves.toBe(40 * KIB);
    expect(fs.cacheUsedBytes).toBeLessThanOrEqual(64 * KIB);
    await expect(fs.write(fd, Buffer.alloc(128 * KIB))).rejects.toMatchObject({ code: 'ENOSPC' });
    await fs.close(fd);
  });
});
