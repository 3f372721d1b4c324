/**
 * GC safety with the real services: the chunk GC (collectGarbage over the chunk servers' stores,
 * with what the daemon's GC pass asks of the metadata — current layouts, layouts retained for
 * pins, the safe point of live write leases) never deletes a chunk that an open handle on an
 * older version can still read, nor one a commit in flight under a live lease stored, even with a
 * grace period of zero; once the handle closes (unpin) and the lease is gone, the old chunks go.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CairnFs } from '../../src/client/index.js';
import { collectGarbage } from '../../src/chunk/gc.js';
import type { MetaStateMachine } from '../../src/meta/state-machine.js';
import { eventually, tempDir } from '../helpers/env.js';
import { startRealServices, type RealServices } from './helpers/real-services.js';

const CHUNK = 64 * 1024;

let base: { path: string; remove: () => Promise<void> };
let svc: RealServices;
const started: CairnFs[] = [];

/** No read cache: every read fetches its chunks from the chunk servers (what GC could have deleted). */
async function client(cache: string): Promise<CairnFs> {
  const fs = await CairnFs.start(
    { cacheDir: join(base.path, cache), mode: 'strong', chunker: { kind: 'fixed', sizeBytes: CHUNK }, retryBaseMs: 20, durableTimeoutMs: 30_000, readCacheMaxBytes: 0 },
    { meta: svc.meta, chunks: svc.chunks },
  );
  started.push(fs);
  return fs;
}

function leaderSm(): MetaStateMachine {
  const n = svc.nodes.find((x) => x.raft.isLeader());
  if (n === undefined) throw new Error('no leader');
  return n.meta;
}

/** One GC pass over every chunk store, as the daemon runs it, with a grace period of zero. */
async function gcPass(): Promise<number> {
  const sm = leaderSm();
  const referenced = new Set<string>();
  for (const r of await sm.scanLayouts(0, 10_000)) for (const e of r.extents) referenced.add(e.chunkHash);
  for (const r of await sm.retainedLayouts()) for (const e of r.extents) referenced.add(e.chunkHash);
  const safe = await sm.gcSafePointMs(Date.now());
  let deleted = 0;
  for (const n of svc.chunkCluster.nodes) {
    const rep = await collectGarbage(n.store, {
      graceMs: 0,
      ...(safe !== undefined ? { keepNewerThanMs: safe } : {}),
      isReferenced: async (hs) => new Set(hs.filter((h) => referenced.has(h))),
    });
    deleted += rep.deleted;
  }
  return deleted;
}

async function read(fs: CairnFs, fd: number, n: number): Promise<Buffer> {
  return fs.read(fd, n, 0);
}

beforeAll(async () => {
  base = await tempDir('cairn-client-gc-pin-');
  svc = await startRealServices(base.path);
}, 60_000);

afterAll(async () => {
  for (const fs of started.splice(0)) await fs.shutdown();
  await svc?.close();
  await base?.remove();
});

describe('GC never deletes a chunk an open handle or a commit in flight can reach', () => {
  it('keeps a pinned old version (superseded, then unlinked) until its handle closes', async () => {
    const writer = await client('w');
    const reader = await client('r');
    const v1 = randomBytes(3 * CHUNK);
    let fd = await writer.open('/pinned', { create: true });
    await writer.write(fd, v1, 0);
    await writer.close(fd);
    // Let the writer's lease go (its cached file is dropped after the close), so only pins protect.
    await eventually(async () => (await leaderSm().lease((await svc.metaClient.stat('/pinned')).ino)) === undefined, 20_000);

    const rfd = await reader.open('/pinned'); // pins version 1
    const v2 = randomBytes(3 * CHUNK);
    fd = await writer.open('/pinned', { write: true });
    await writer.write(fd, v2, 0);
    await writer.close(fd);
    await eventually(async () => (await leaderSm().lease((await svc.metaClient.stat('/pinned')).ino)) === undefined, 20_000);
    expect((await leaderSm().retainedLayouts()).length).toBe(1);
    await gcPass();
    expect((await read(reader, rfd, v1.length)).equals(v1)).toBe(true);
    // Unlinked while open: still readable after GC.
    await svc.metaClient.unlink('/pinned');
    await gcPass();
    expect((await read(reader, rfd, v1.length)).equals(v1)).toBe(true);
    // Closed: the pin goes, and with it the old chunks (v2's too: the file is gone).
    await reader.close(rfd);
    await eventually(async () => (await leaderSm().retainedLayouts()).length === 0, 20_000);
    expect(await gcPass()).toBeGreaterThan(0);
  });

  it('keeps the chunks of a commit in flight under a live lease, whatever the grace period', async () => {
    const writer = await client('inflight');
    const fd = await writer.open('/inflight', { create: true });
    const data = randomBytes(2 * CHUNK);
    // Stored by another path (as a commit's storeChunks does) but not yet in any layout:
    const h = (await import('node:crypto')).createHash('sha256').update(data.subarray(0, CHUNK)).digest('hex');
    await svc.chunks.putChunk(h, data.subarray(0, CHUNK));
    expect(await leaderSm().gcSafePointMs(Date.now())).toBeDefined();
    await gcPass();
    const found = await svc.chunks.health({ chunkHash: h, length: CHUNK, scheme: 'ec2+1', pg: 0 });
    expect(found.stored).toBe(3);
    await writer.write(fd, data, 0);
    await writer.close(fd);
    const fd2 = await writer.open('/inflight');
    expect((await writer.read(fd2, data.length, 0)).equals(data)).toBe(true);
    await writer.close(fd2);
  });
});
