/** Property: with any m shards of an EC chunk (or n-1 replicas) gone, the chunk still reads back exactly. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { startCluster, nodeOf, type TestCluster } from './cluster.js';
import { writeChunk } from '../../src/chunk/writer.js';
import { readChunkDetailed } from '../../src/chunk/reader.js';
import { formatBucketId } from '../../src/diskmap/bucket-id.js';
import { shardCount, type Scheme } from '../../src/chunk/types.js';
import { CairnError } from '../../src/common/errors.js';

let cl: TestCluster;
beforeAll(async () => {
  cl = await startCluster(3, 4);
});
afterAll(async () => {
  await cl?.close();
});

const schemes: Scheme[] = [
  { kind: 'ec', k: 2, m: 1 },
  { kind: 'ec', k: 4, m: 2 },
  { kind: 'ec', k: 8, m: 3 },
  { kind: 'replica', n: 3 },
];

async function removeShards(hash: string, scheme: Scheme, targets: ReturnType<TestCluster['targets']>, indexes: number[]): Promise<void> {
  for (const i of indexes) {
    const t = targets[i]!;
    const deleted = await nodeOf(cl, t).store.deleteShard({ bucket: formatBucketId(t.bucketId), hash, scheme, index: i });
    expect(deleted).toBe(true);
  }
}

describe('degraded reads', () => {
  for (const scheme of schemes) {
    const n = shardCount(scheme);
    const tolerated = scheme.kind === 'ec' ? scheme.m : scheme.n - 1;
    it(`${scheme.kind === 'ec' ? `EC ${scheme.k}+${scheme.m}` : `replica ${scheme.n}`}: any ${tolerated} missing shards`, async () => {
      let bucket = 100;
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 300_000 }),
          fc.uniqueArray(fc.integer({ min: 0, max: n - 1 }), { minLength: 0, maxLength: tolerated }),
          async (size, missing) => {
            const targets = cl.targets(n, bucket++);
            const data = randomBytes(size);
            const w = await writeChunk(cl.clients, data, scheme, targets);
            expect(w.failed).toEqual([]);
            await removeShards(w.hash, scheme, targets, missing);
            const r = await readChunkDetailed(cl.clients, w.hash, scheme, targets);
            expect(r.data.equals(data)).toBe(true);
            // Exactly the removed shards among those the reader needed are reported.
            for (const p of r.problems) expect(missing).toContain(p.index);
          },
        ),
        { numRuns: 12 },
      );
    });
  }

  it('one shard more than tolerated is ECORRUPT, never data', async () => {
    const scheme: Scheme = { kind: 'ec', k: 4, m: 2 };
    const targets = cl.targets(6, 999);
    const w = await writeChunk(cl.clients, randomBytes(50_000), scheme, targets);
    await removeShards(w.hash, scheme, targets, [0, 3, 5]);
    const err = await readChunkDetailed(cl.clients, w.hash, scheme, targets).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ECORRUPT');
  });
});

describe('a paused node', () => {
  it('reads hedge around a target that accepts connections but never answers', async () => {
    // A "paused" node: TCP accepts, nothing else. Without hedging the read would wait for the
    // (2-minute) shard deadline and this test would hit its own timeout.
    const { createServer } = await import('node:net');
    const sockets: import('node:net').Socket[] = [];
    const hung = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    const port = (hung.address() as import('node:net').AddressInfo).port;
    try {
      for (const scheme of [{ kind: 'ec', k: 2, m: 1 }, { kind: 'replica', n: 3 }] as Scheme[]) {
        const targets = cl.targets(3, 777);
        const data = randomBytes(70_000);
        const w = await writeChunk(cl.clients, data, scheme, targets);
        expect(w.failed).toEqual([]);
        const withHung = [{ ...targets[0]!, address: `127.0.0.1:${port}` }, targets[1]!, targets[2]!];
        const r = await readChunkDetailed(cl.clients, w.hash, scheme, withHung, { timeoutMs: 120_000, hedgeAfterMs: 300 });
        expect(r.data.equals(data)).toBe(true);
      }
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => hung.close(r));
    }
  });
});
