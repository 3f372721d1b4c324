/** GC deletes only shards that are unreferenced AND older than the grace period. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { utimes } from 'node:fs/promises';
import { startCluster, type TestCluster } from './cluster.js';
import { writeChunk } from '../../src/chunk/writer.js';
import { readChunk } from '../../src/chunk/reader.js';
import { collectGarbage } from '../../src/chunk/gc.js';
import type { Scheme } from '../../src/chunk/types.js';

let cl: TestCluster;
beforeAll(async () => {
  cl = await startCluster(3, 1);
});
afterAll(async () => {
  await cl?.close();
});

const HOUR_MS = 3_600_000;

async function age(ms: number): Promise<void> {
  // Make every shard on every node look `ms` old.
  const t = new Date(Date.now() - ms);
  for (const n of cl.nodes) for await (const s of n.store.walkShards()) await utimes(s.path, t, t);
}

describe('garbage collection', () => {
  it('keeps referenced and young shards, deletes old unreferenced ones, and a dedup put renews a shard', async () => {
    const scheme: Scheme = { kind: 'ec', k: 2, m: 1 };
    const targets = cl.targets(3, 1);
    const chunks = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const data = randomBytes(5000);
        const w = await writeChunk(cl.clients, data, scheme, targets);
        return { hash: w.hash, data };
      }),
    );
    const referenced = new Set([chunks[0]!.hash, chunks[1]!.hash]);
    const asked: string[][] = [];
    const isReferenced = async (hs: string[]): Promise<ReadonlySet<string>> => {
      asked.push(hs);
      return new Set(hs.filter((h) => referenced.has(h)));
    };

    // Everything is young: nothing goes, whatever the references say.
    for (const n of cl.nodes) {
      const r = await collectGarbage(n.store, { graceMs: HOUR_MS, isReferenced });
      expect(r.deleted).toBe(0);
      expect(r.keptYoung).toBe(6);
    }
    await age(2 * HOUR_MS);
    // A commit in flight re-puts chunk 2 (dedup): its shards become young again.
    const again = await writeChunk(cl.clients, chunks[2]!.data, scheme, targets);
    expect(again.alreadyPresent).toBe(3);

    for (const n of cl.nodes) {
      const r = await collectGarbage(n.store, { graceMs: HOUR_MS, isReferenced, batchSize: 2 });
      expect(r.deleted).toBe(3);
      expect(r.keptReferenced).toBe(2);
      expect(r.keptYoung).toBe(1);
      expect(new Set(r.deletedKeys.map((k) => k.hash))).toEqual(new Set([chunks[3]!.hash, chunks[4]!.hash, chunks[5]!.hash]));
    }
    expect(asked.every((b) => b.length <= 2)).toBe(true);
    for (const c of chunks.slice(0, 3)) expect((await readChunk(cl.clients, c.hash, scheme, targets)).equals(c.data)).toBe(true);
    for (const c of chunks.slice(3)) await expect(readChunk(cl.clients, c.hash, scheme, targets)).rejects.toMatchObject({ code: 'ECORRUPT' });
  });

  it('never deletes a referenced shard, however old (property over random reference sets)', async () => {
    const scheme: Scheme = { kind: 'replica', n: 3 };
    const targets = cl.targets(3, 2);
    const hashes: string[] = [];
    for (let i = 0; i < 20; i++) hashes.push((await writeChunk(cl.clients, randomBytes(100 + i), scheme, targets)).hash);
    await age(10 * HOUR_MS);
    const referenced = new Set(hashes.filter(() => Math.random() < 0.5));
    const dry = await collectGarbage(cl.nodes[0]!.store, { graceMs: HOUR_MS, isReferenced: async (hs) => new Set(hs.filter((h) => referenced.has(h))), dryRun: true });
    expect(dry.deletedKeys.some((k) => referenced.has(k.hash))).toBe(false);
    for (const n of cl.nodes) {
      const r = await collectGarbage(n.store, { graceMs: HOUR_MS, isReferenced: async (hs) => new Set(hs.filter((h) => referenced.has(h))) });
      expect(r.deletedKeys.some((k) => referenced.has(k.hash))).toBe(false);
    }
    for (const h of hashes) {
      const ok = await readChunk(cl.clients, h, scheme, targets).then(
        () => true,
        () => false,
      );
      expect(ok).toBe(referenced.has(h));
    }
  });
});
