/**
 * Damage on disk — flipped bytes, truncated files, wrong headers, a vanished disk directory — is
 * detected, never returned as data, and repaired by scrub.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open, readdir, rm, truncate, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { startCluster, nodeOf, type TestCluster } from './cluster.js';
import { writeChunk } from '../../src/chunk/writer.js';
import { readChunk, readChunkDetailed } from '../../src/chunk/reader.js';
import { Scrubber, type ChunkLocation } from '../../src/chunk/scrub.js';
import { ChunkStore, shardFileName } from '../../src/chunk/store.js';
import { encodeShardHeader, decodeShardHeader, SHARD_HEADER_BYTES } from '../../src/chunk/format.js';
import { formatBucketId } from '../../src/diskmap/bucket-id.js';
import type { Scheme, ShardKey, ShardTarget } from '../../src/chunk/types.js';
import { CairnError } from '../../src/common/errors.js';
import { registry } from '../../src/common/metrics.js';

let cl: TestCluster;
const where = new Map<string, ChunkLocation>();
beforeAll(async () => {
  cl = await startCluster(3, 2);
});
afterAll(async () => {
  await cl?.close();
});

let nextBucket = 1;
async function put(scheme: Scheme, size = 200_000): Promise<{ hash: string; data: Buffer; targets: ShardTarget[] }> {
  const n = scheme.kind === 'ec' ? scheme.k + scheme.m : scheme.n;
  const targets = cl.targets(n, nextBucket++);
  const data = randomBytes(size);
  const w = await writeChunk(cl.clients, data, scheme, targets);
  expect(w.failed).toEqual([]);
  where.set(w.hash, { scheme, targets });
  return { hash: w.hash, data, targets };
}

function keyOf(hash: string, scheme: Scheme, targets: ShardTarget[], index: number): ShardKey {
  return { bucket: formatBucketId(targets[index]!.bucketId), hash, scheme, index };
}

function fileOf(hash: string, scheme: Scheme, targets: ShardTarget[], index: number): string {
  const t = targets[index]!;
  const node = nodeOf(cl, t);
  const key = keyOf(hash, scheme, targets, index);
  const disk = node.diskPaths.find((p) => formatBucketId(node.store.bucketIdOn(p, t.bucketId.bucket)) === key.bucket)!;
  return join(disk, key.bucket, 'shards', hash.slice(0, 2), shardFileName(key));
}

async function flipByte(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] = b[0]! ^ 0x01;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

function scrubberFor(nodeIndex: number, checkPeers = false): Scrubber {
  return new Scrubber(cl.nodes[nodeIndex]!.store, {
    rateBytesPerSec: 1e9,
    clients: cl.clients,
    checkPeers,
    locate: async (hash) => where.get(hash),
  });
}

async function expectUnreadable(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CairnError);
  expect((err as CairnError).code).toBe(code);
}

async function quarantined(nodeIndex: number): Promise<string[]> {
  const out: string[] = [];
  for (const d of cl.nodes[nodeIndex]!.diskPaths) {
    const q = join(d, 'quarantine');
    for (const b of await readdir(q).catch(() => [] as string[])) out.push(...(await readdir(join(q, b))));
  }
  return out;
}

describe('damage is detected and repaired', () => {
  const ec: Scheme = { kind: 'ec', k: 2, m: 1 };
  const rep: Scheme = { kind: 'replica', n: 3 };

  it('a flipped payload bit: shard refused, chunk read from the others, scrub quarantines and rebuilds', async () => {
    const c = await put(ec);
    const path = fileOf(c.hash, ec, c.targets, 0);
    await flipByte(path, SHARD_HEADER_BYTES + 12345);
    const client = cl.clients.get(c.targets[0]!.address);
    // Whole read: the receiver's CRC check refuses it; range read: the server refuses it.
    await expectUnreadable(client.getShard(keyOf(c.hash, ec, c.targets, 0)), 'ECORRUPT');
    await expectUnreadable(client.getShard(keyOf(c.hash, ec, c.targets, 0), { offset: 10, length: 100 }), 'ECORRUPT');
    const r = await readChunkDetailed(cl.clients, c.hash, ec, c.targets);
    expect(r.data.equals(c.data)).toBe(true);
    expect(r.degraded).toBe(true);
    expect(r.problems.map((p) => [p.index, p.error.code])).toEqual([[0, 'ECORRUPT']]);

    const before = (await registry.getSingleMetric('cairn_chunk_scrub_quarantined_total')?.get())?.values[0]?.value ?? 0;
    const rep0 = await scrubberFor(0).runOnce();
    expect(rep0.bad).toBe(1);
    expect(rep0.quarantined).toBe(1);
    expect(rep0.rebuilt).toBe(1);
    const after = (await registry.getSingleMetric('cairn_chunk_scrub_quarantined_total')?.get())?.values[0]?.value ?? 0;
    expect(after).toBe(before + 1);
    expect((await quarantined(0)).some((f) => f.startsWith(shardFileName(keyOf(c.hash, ec, c.targets, 0))))).toBe(true);
    // The rebuilt shard is good again, and a second pass finds nothing.
    const again = await client.getShard(keyOf(c.hash, ec, c.targets, 0));
    expect(again.data.equals(c.data.subarray(0, again.data.length))).toBe(true);
    expect((await scrubberFor(0).runOnce()).bad).toBe(0);
  });

  it('a truncated file is ECORRUPT and rebuilt by scrub', async () => {
    const c = await put(rep);
    const path = fileOf(c.hash, rep, c.targets, 1);
    await truncate(path, SHARD_HEADER_BYTES + 1000);
    await expectUnreadable(cl.clients.get(c.targets[1]!.address).getShard(keyOf(c.hash, rep, c.targets, 1)), 'ECORRUPT');
    expect((await readChunk(cl.clients, c.hash, rep, c.targets)).equals(c.data)).toBe(true);
    const r = await scrubberFor(1).runOnce();
    expect(r.bad).toBe(1);
    expect(r.rebuilt).toBe(1);
    expect((await stat(path)).size).toBe(SHARD_HEADER_BYTES + c.data.length);
    const back = await cl.clients.get(c.targets[1]!.address).getShard(keyOf(c.hash, rep, c.targets, 1));
    expect(back.data.equals(c.data)).toBe(true);
  });

  it('a wrong header (valid, but for another shard; or garbage) is ECORRUPT and rebuilt', async () => {
    const c = await put(ec);
    // Header of shard 1 claims to be another chunk's shard, with a correct header checksum.
    const p1 = fileOf(c.hash, ec, c.targets, 1);
    const fh = await open(p1, 'r+');
    const hb = Buffer.alloc(SHARD_HEADER_BYTES);
    await fh.read(hb, 0, SHARD_HEADER_BYTES, 0);
    const info = decodeShardHeader(hb, p1);
    await fh.write(encodeShardHeader({ ...info, hash: randomBytes(32).toString('hex') }), 0, SHARD_HEADER_BYTES, 0);
    await fh.close();
    await expectUnreadable(cl.clients.get(c.targets[1]!.address).getShard(keyOf(c.hash, ec, c.targets, 1)), 'ECORRUPT');
    // Shard 2 (parity): garbage in the header.
    const p2 = fileOf(c.hash, ec, c.targets, 2);
    await flipByte(p2, 20);
    await expectUnreadable(cl.clients.get(c.targets[2]!.address).getShard(keyOf(c.hash, ec, c.targets, 2)), 'ECORRUPT');
    // Two of three shards are bad: this chunk cannot be verified, so it is an error, not data.
    await expectUnreadable(readChunk(cl.clients, c.hash, ec, c.targets), 'ECORRUPT');
    // One shard of a 2+1 chunk cannot rebuild the others: scrub quarantines both and says so.
    const r1 = await scrubberFor(1).runOnce();
    expect(r1.bad).toBe(1);
    expect(r1.rebuildFailed).toBeGreaterThan(0);
    expect((await quarantined(1)).some((f) => f.startsWith(shardFileName(keyOf(c.hash, ec, c.targets, 1))))).toBe(true);

    // Now a chunk with only one wrong header: rebuilt.
    const d = await put(ec);
    await flipByte(fileOf(d.hash, ec, d.targets, 2), 30);
    const r2 = await scrubberFor(2).runOnce();
    expect(r2.rebuilt).toBe(1);
    expect((await readChunkDetailed(cl.clients, d.hash, ec, d.targets)).problems).toEqual([]);
    expect((await cl.clients.get(d.targets[2]!.address).statShard(keyOf(d.hash, ec, d.targets, 2), { verify: true })).index).toBe(2);
  });

  it('a vanished disk directory: disk marked failed, other disks keep serving, scrub rebuilds onto a replacement', async () => {
    // Chunk A on node 1 disk 0 (bucket 1 of disk 0), chunk B uses node 1's disk 1.
    const a = await put(ec);
    const node1 = cl.nodes[1]!;
    const lostDisk = fileOf(a.hash, ec, a.targets, 1).split('/').slice(0, -4).join('/');
    const otherDisk = node1.diskPaths.find((p) => p !== lostDisk)!;
    const bTargets = [cl.targets(3, 500)[0]!, { bucketId: node1.store.bucketIdOn(otherDisk, 500), address: node1.address }, cl.targets(3, 500)[2]!];
    const bData = randomBytes(10_000);
    const b = await writeChunk(cl.clients, bData, ec, bTargets);
    expect(b.failed).toEqual([]);

    await rm(lostDisk, { recursive: true, force: true });
    // Reads of A degrade (shard 1 unavailable) and stay correct.
    const r = await readChunkDetailed(cl.clients, a.hash, ec, a.targets);
    expect(r.data.equals(a.data)).toBe(true);
    expect(r.problems.map((p) => p.index)).toEqual([1]);
    const disks = await cl.clients.get(node1.address).diskStatus();
    expect(disks.find((d) => d.path === lostDisk)?.state).toBe('failed');
    expect(disks.find((d) => d.path === otherDisk)?.state).toBe('ok');
    // The node still serves its other disk.
    const bRead = await readChunkDetailed(cl.clients, b.hash, ec, bTargets);
    expect(bRead.data.equals(bData)).toBe(true);
    expect(bRead.problems).toEqual([]);
    expect((await registry.getSingleMetric('cairn_chunk_disk_failed')?.get())?.values.find((v) => v.labels.disk === lostDisk)?.value).toBe(1);

    // Replace the disk (new incarnation, so new bucket ids), point the chunk's placement at it,
    // and let scrub on a healthy holder rebuild the missing shard there.
    await ChunkStore.formatDisk(lostDisk, { dc: 0, row: 0, rack: 0, machine: 2, disk: 0 });
    await node1.store.addDisk(lostDisk);
    const newTargets = [...a.targets];
    newTargets[1] = { bucketId: node1.store.bucketIdOn(lostDisk, a.targets[1]!.bucketId.bucket), address: node1.address };
    where.set(a.hash, { scheme: ec, targets: newTargets });
    const rep0 = await scrubberFor(0, true).runOnce();
    expect(rep0.rebuilt).toBeGreaterThanOrEqual(1);
    const healed = await readChunkDetailed(cl.clients, a.hash, ec, newTargets);
    expect(healed.data.equals(a.data)).toBe(true);
    expect(healed.problems).toEqual([]);
  });

  it('a throttled scrub without a locator verifies every shard and changes nothing when all is well', async () => {
    const c = await put(rep, 1000);
    const s = new Scrubber(cl.nodes[0]!.store, { rateBytesPerSec: 10_000_000 });
    const r = await s.runOnce();
    expect(r.shardsChecked).toBeGreaterThan(0);
    expect(r.bad).toBe(0);
    expect((await readChunk(cl.clients, c.hash, rep, c.targets)).equals(c.data)).toBe(true);
  });
});
