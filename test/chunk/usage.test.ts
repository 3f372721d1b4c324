/**
 * How full a disk is (src/chunk/usage.ts): a folder disk's bytes are walked once and then kept
 * current by puts and deletes; the chunk service's DiskStatus carries the figures over the wire.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startCluster, type TestCluster } from './cluster.js';
import { grpc, serviceOf, call, CLIENT_OPTIONS } from '../../src/rpc/grpc.js';
import { CHUNK_PROTO, CHUNK_SERVICE, fastChunkDefinition } from '../../src/chunk/wire.js';
import { payloadCrc, SHARD_HEADER_BYTES } from '../../src/chunk/format.js';
import { formatBucketId } from '../../src/diskmap/bucket-id.js';
import { DiskUsage, folderBytes } from '../../src/chunk/usage.js';

let cl: TestCluster;
let raw: grpc.Client;
beforeAll(async () => {
  cl = await startCluster(1, 1);
  const def = fastChunkDefinition(serviceOf(CHUNK_PROTO, CHUNK_SERVICE).service as unknown as Record<string, unknown>) as unknown as grpc.ServiceDefinition;
  raw = new (grpc.makeGenericClientConstructor(def, 'Chunk'))(cl.nodes[0]!.address, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
});
afterAll(async () => {
  raw?.close();
  await cl?.close();
});

type WireDisk = { path: string; fs_total_bytes: number; fs_avail_bytes: number; stored_bytes: number; own_fs: boolean };

describe('disk usage', () => {
  it('a folder is walked: its files add up', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-usage-'));
    try {
      await mkdir(join(dir, 'a', 'b'), { recursive: true });
      await writeFile(join(dir, 'a', 'x'), Buffer.alloc(1000));
      await writeFile(join(dir, 'a', 'b', 'y'), Buffer.alloc(2345));
      expect(await folderBytes(dir)).toBe(3345);
      const u = new DiskUsage();
      const s = await u.of(dir, 5_000);
      expect(s?.ownFs).toBe(false);
      expect(s?.storedBytes).toBe(3345);
      expect(s!.fsTotalBytes).toBeGreaterThan(0);
      u.adjust(dir, 655);
      expect((await u.of(dir))?.storedBytes).toBe(4000);
      // A folder that does not exist has no figure.
      expect(await u.of(join(dir, 'nope'))).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('DiskStatus over the wire says what a disk holds, and a put and a delete move the figure', async () => {
    const before = ((await call(raw, 'DiskStatus', {})) as { disks: WireDisk[] }).disks[0]!;
    expect(before.fs_total_bytes).toBeGreaterThan(0);
    expect(before.stored_bytes).toBeGreaterThanOrEqual(0);
    const c = cl.clients.get(cl.nodes[0]!.address);
    const payload = randomBytes(256 * 1024);
    const key = { bucket: formatBucketId(cl.targets(1, 1)[0]!.bucketId), hash: 'cd'.repeat(32), scheme: { kind: 'replica' as const, n: 1 }, index: 0 };
    await c.putShard({ key, payloadLength: payload.length, chunkLength: payload.length, payloadCrc32: payloadCrc(payload), diskmapEpoch: 1 }, payload);
    const after = ((await call(raw, 'DiskStatus', {})) as { disks: WireDisk[] }).disks[0]!;
    expect(after.stored_bytes - before.stored_bytes).toBe(SHARD_HEADER_BYTES + payload.length);
    // The client's view (in process or over the wire) carries the same figure.
    const viaClient = (await c.diskStatus())[0]!;
    expect(viaClient.space?.storedBytes).toBe(after.stored_bytes);
    expect(await c.deleteShard(key)).toBe(true);
    const gone = ((await call(raw, 'DiskStatus', {})) as { disks: WireDisk[] }).disks[0]!;
    expect(gone.stored_bytes).toBe(before.stored_bytes);
  });
});
