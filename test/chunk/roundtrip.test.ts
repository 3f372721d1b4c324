/** Write and read chunks through real chunk servers for every scheme the planner can choose. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startCluster, type TestCluster } from './cluster.js';
import { writeChunk, chunkHash } from '../../src/chunk/writer.js';
import { readChunk, readChunkDetailed } from '../../src/chunk/reader.js';
import type { Scheme } from '../../src/chunk/types.js';
import { CairnError } from '../../src/common/errors.js';

let cl: TestCluster;
beforeAll(async () => {
  cl = await startCluster(3, 4);
});
afterAll(async () => {
  await cl?.close();
});

const schemes: Scheme[] = [
  { kind: 'replica', n: 2 },
  { kind: 'replica', n: 3 },
  { kind: 'ec', k: 2, m: 1 },
  { kind: 'ec', k: 4, m: 2 },
  { kind: 'ec', k: 8, m: 3 },
];

describe('chunk round trips', () => {
  for (const scheme of schemes) {
    for (const size of [0, 1, 1000, 3 * 1024 * 1024 + 7]) {
      it(`${JSON.stringify(scheme)} size ${size}`, async () => {
        const data = randomBytes(size);
        const n = scheme.kind === 'ec' ? scheme.k + scheme.m : scheme.n;
        const targets = cl.targets(n);
        const w = await writeChunk(cl.clients, data, scheme, targets);
        expect(w.failed).toEqual([]);
        expect(w.stored).toBe(n);
        expect(w.health).toBe(1);
        expect(w.readable).toBe(true);
        expect(w.hash).toBe(chunkHash(data));
        const back = await readChunk(cl.clients, w.hash, scheme, targets);
        expect(back.equals(data)).toBe(true);
        if (size > 10) {
          const part = await readChunk(cl.clients, w.hash, scheme, targets, { range: { offset: 3, length: size - 5 } });
          expect(part.equals(data.subarray(3, size - 2))).toBe(true);
        }
        // Writing the same chunk again is a no-op.
        const again = await writeChunk(cl.clients, data, scheme, targets);
        expect(again.alreadyPresent).toBe(n);
      });
    }
  }

  it('reports failed targets and health when a node is down, and reads degraded', async () => {
    const scheme: Scheme = { kind: 'ec', k: 2, m: 1 };
    const targets = cl.targets(3, 7);
    await cl.stopNode(1);
    try {
      const data = randomBytes(100_000);
      const w = await writeChunk(cl.clients, data, scheme, targets, { timeoutMs: 5000 });
      expect(w.stored).toBe(2);
      expect(w.readable).toBe(true);
      expect(w.health).toBeCloseTo(2 / 3);
      expect(w.failed.map((f) => f.index)).toEqual([1]);
      const r = await readChunkDetailed(cl.clients, w.hash, scheme, targets, { timeoutMs: 5000 });
      expect(r.data.equals(data)).toBe(true);
      expect(r.degraded).toBe(true);
      expect(r.problems.map((p) => p.index)).toEqual([1]);
    } finally {
      await cl.startNode(1);
    }
  });

  it('a chunk that is not there is an error, not data', async () => {
    const scheme: Scheme = { kind: 'ec', k: 2, m: 1 };
    const err = await readChunk(cl.clients, chunkHash(Buffer.from('never written')), scheme, cl.targets(3)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ECORRUPT');
  });
});
