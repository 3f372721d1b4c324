/**
 * The data mover (src/server/mover.ts) on real chunk stores and servers: a slot move copies the
 * shards written before the change to the slot's new bucket and drops them from the old one,
 * and leaves alone the shards written into the old bucket for its new owner (a bucket a slot
 * left may be handed to another group in the same change).
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { formatBucketId } from '../../src/diskmap/index.js';
import { executeMoves } from '../../src/server/mover.js';
import { logger } from '../../src/common/log.js';
import type { Scheme } from '../../src/chunk/types.js';
import { startCluster, type TestCluster } from '../chunk/cluster.js';

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

const scheme: Scheme = { kind: 'ec', k: 2, m: 1 };

async function put(c: TestCluster, bucket: string, seed: number, epoch: number): Promise<string> {
  const payload = Buffer.alloc(4096, seed);
  const hash = createHash('sha256').update(`chunk ${seed}`).digest('hex');
  await c.nodes[0]!.store.putShard(
    { key: { bucket, hash, scheme, index: 2 }, payloadLength: payload.length, chunkLength: 8192, payloadCrc32: crc32(payload), diskmapEpoch: epoch },
    (async function* () {
      yield payload;
    })(),
  );
  return hash;
}

async function has(c: TestCluster, node: number, bucket: string, hash: string): Promise<boolean> {
  return c.nodes[node]!.store.statShard({ bucket, hash, scheme, index: 2 }).then(
    () => true,
    () => false,
  );
}

describe('data mover', () => {
  it('moves the shards written before the change and keeps those written for the new owner of the bucket', async () => {
    cluster = await startCluster(2);
    const c = cluster;
    const from = formatBucketId(c.nodes[0]!.store.bucketIdOn(c.nodes[0]!.diskPaths[0]!, 4));
    const to = formatBucketId(c.nodes[1]!.store.bucketIdOn(c.nodes[1]!.diskPaths[0]!, 9));
    // Epoch 3 moved slot (group 5, index 2) from `from` to `to`, and gave `from` to another group.
    const old1 = await put(c, from, 1, 1);
    const old2 = await put(c, from, 2, 2);
    const mine = await put(c, from, 3, 3); // written at epoch 3 for the new owner of `from`
    const later = await put(c, from, 4, 4);
    const pass = () =>
      executeMoves(
        [{ kind: 'move', group: 5, index: 2, from, to }],
        { change: 3, current: 4 },
        c.nodes[0]!.store,
        c.clients,
        () => c.nodes[1]!.address,
        (g, i) => (g === 5 && i === 2 ? to : undefined),
        logger('test'),
      );
    const r = await pass();
    expect(r).toEqual({ moved: 2, failed: 0, kept: 2 });
    for (const h of [old1, old2]) {
      expect(await has(c, 0, from, h)).toBe(false);
      expect(await has(c, 1, to, h)).toBe(true);
    }
    for (const h of [mine, later]) {
      expect(await has(c, 0, from, h)).toBe(true);
      expect(await has(c, 1, to, h)).toBe(false);
    }
    // Idempotent: a second pass changes nothing.
    const again = await pass();
    expect(again).toEqual({ moved: 0, failed: 0, kept: 2 });
  });
});
