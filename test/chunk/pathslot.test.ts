/**
 * Path slots: versioned, quorum-replicated, linearizable, with compare-and-set — checked against a
 * versioned-register model with concurrent writers and readers while one replica is down.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type TestCluster } from './cluster.js';
import { PathSlots, pathHash } from '../../src/chunk/pathslot.js';
import { ChunkClients } from '../../src/chunk/client.js';
import { CairnError } from '../../src/common/errors.js';
import type { ShardTarget } from '../../src/chunk/types.js';

let cl: TestCluster;
let replicas: ShardTarget[];
beforeAll(async () => {
  cl = await startCluster(3, 1);
  replicas = cl.targets(3, 9);
});
afterAll(async () => {
  await cl?.close();
});

interface Op {
  kind: 'read' | 'write';
  startMs: number;
  endMs: number;
  ok: boolean;
  version: number;
  data: string | null;
}

/**
 * Model check for a register whose writes each produce version = previous + 1: versions give the
 * linearization order. Requires: (1) a version is produced by at most one completed write;
 * (2) a read at version v returns what the write of v wrote (or, if that write's outcome is
 * unknown, one of the values someone tried to write); (3) real time: if A ended before B began,
 * B's version ≥ A's, and > A's when B is a write.
 */
function checkLinearizable(ops: Op[], attempted: Set<string>): string[] {
  const problems: string[] = [];
  const byVersion = new Map<number, Op>();
  for (const o of ops) {
    if (o.kind !== 'write' || !o.ok) continue;
    if (byVersion.has(o.version)) problems.push(`version ${o.version} written twice`);
    byVersion.set(o.version, o);
  }
  for (const r of ops) {
    if (r.kind !== 'read' || !r.ok) continue;
    const w = byVersion.get(r.version);
    if (r.version === 0) {
      if (r.data !== null) problems.push('version 0 with data');
    } else if (w !== undefined) {
      if (w.data !== r.data) problems.push(`read v${r.version} saw ${r.data}, the write of v${r.version} wrote ${w.data}`);
    } else if (r.data === null || !attempted.has(r.data)) problems.push(`read v${r.version} saw a value nobody wrote: ${r.data}`);
  }
  const done = ops.filter((o) => o.ok);
  for (const a of done) {
    for (const b of done) {
      if (a.endMs >= b.startMs) continue;
      if (b.version < a.version) problems.push(`${b.kind} v${b.version} began after ${a.kind} v${a.version} ended (stale)`);
      if (b.kind === 'write' && b.version === a.version) problems.push(`write v${b.version} began after ${a.kind} v${a.version} ended but did not advance`);
    }
  }
  return problems;
}

describe('path slots', () => {
  it('the model checker catches a stale read and a lost write (it can fail)', () => {
    const w1: Op = { kind: 'write', startMs: 0, endMs: 1, ok: true, version: 1, data: 'a' };
    const w2: Op = { kind: 'write', startMs: 2, endMs: 3, ok: true, version: 2, data: 'b' };
    const stale: Op = { kind: 'read', startMs: 4, endMs: 5, ok: true, version: 1, data: 'a' };
    const dup: Op = { kind: 'write', startMs: 6, endMs: 7, ok: true, version: 2, data: 'c' };
    expect(checkLinearizable([w1, w2], new Set(['a', 'b']))).toEqual([]);
    expect(checkLinearizable([w1, w2, stale], new Set(['a', 'b'])).length).toBeGreaterThan(0);
    expect(checkLinearizable([w1, w2, dup], new Set(['a', 'b', 'c'])).length).toBeGreaterThan(0);
  });

  it('a fresh slot reads as version 0; writes advance the version; CAS refuses a stale version', async () => {
    const s = new PathSlots(cl.clients);
    expect(await s.read('/cluster/config', replicas)).toEqual({ version: 0, data: null });
    expect((await s.write('/cluster/config', replicas, Buffer.from('a'), { expectedVersion: 0 })).version).toBe(1);
    expect((await s.write('/cluster/config', replicas, Buffer.from('b'))).version).toBe(2);
    const err = await s.write('/cluster/config', replicas, Buffer.from('c'), { expectedVersion: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ECONFLICT');
    const r = await new PathSlots(cl.clients).read('/cluster/config', replicas);
    expect(r.version).toBe(2);
    expect(r.data?.toString()).toBe('b');
    expect((await s.write('/cluster/config', replicas, null, { expectedVersion: 2 })).version).toBe(3);
    expect(await s.read('/cluster/config', replicas)).toEqual({ version: 3, data: null });
    expect(pathHash('/cluster/config')).toMatch(/^[0-9a-f]{64}$/);
  });

  it('stays linearizable with one replica down (concurrent writers and readers, own clients each)', async () => {
    const path = '/locks/leader';
    await cl.stopNode(2);
    const ops: Op[] = [];
    const attempted = new Set<string>();
    const clientsList: ChunkClients[] = [];
    try {
      const t0 = performance.now();
      const worker = async (w: number): Promise<void> => {
        const clients = new ChunkClients();
        clientsList.push(clients);
        const slots = new PathSlots(clients, { proposerId: `p${w}`, timeoutMs: 15_000, maxAttempts: 100 });
        for (let i = 0; i < 12; i++) {
          const startMs = performance.now() - t0;
          if ((i + w) % 3 === 0) {
            const value = `w${w}-${i}`;
            attempted.add(value);
            try {
              const r = await slots.write(path, replicas, Buffer.from(value));
              ops.push({ kind: 'write', startMs, endMs: performance.now() - t0, ok: true, version: r.version, data: value });
            } catch {
              ops.push({ kind: 'write', startMs, endMs: Infinity, ok: false, version: -1, data: value });
            }
          } else {
            try {
              const r = await slots.read(path, replicas);
              ops.push({ kind: 'read', startMs, endMs: performance.now() - t0, ok: true, version: r.version, data: r.data === null ? null : r.data.toString() });
            } catch {
              ops.push({ kind: 'read', startMs, endMs: Infinity, ok: false, version: -1, data: null });
            }
          }
        }
      };
      await Promise.all([0, 1, 2, 3].map(worker));
    } finally {
      for (const c of clientsList) c.close();
      await cl.startNode(2);
    }
    const writes = ops.filter((o) => o.kind === 'write' && o.ok);
    const reads = ops.filter((o) => o.kind === 'read' && o.ok);
    expect(writes.length).toBeGreaterThanOrEqual(4);
    expect(reads.length).toBeGreaterThanOrEqual(8);
    expect(checkLinearizable(ops, attempted)).toEqual([]);
    // After the replica is back, the latest write is what everyone reads.
    const last = Math.max(...writes.map((w) => w.version));
    const r = await new PathSlots(cl.clients).read(path, replicas);
    expect(r.version).toBeGreaterThanOrEqual(last);
  });

  it('compare-and-set is atomic: concurrent increments with one replica down lose nothing', async () => {
    const path = '/counters/c';
    await cl.stopNode(0);
    let succeeded = 0;
    const clientsList: ChunkClients[] = [];
    try {
      await Promise.all(
        [0, 1, 2].map(async (w) => {
          const clients = new ChunkClients();
          clientsList.push(clients);
          const slots = new PathSlots(clients, { proposerId: `c${w}`, timeoutMs: 15_000, maxAttempts: 200 });
          for (let i = 0; i < 5; i++) {
            for (;;) {
              const cur = await slots.read(path, replicas);
              const n = cur.data === null ? 0 : Number(cur.data.toString());
              try {
                await slots.write(path, replicas, Buffer.from(String(n + 1)), { expectedVersion: cur.version });
                succeeded++;
                break;
              } catch (err) {
                if (!(err instanceof CairnError) || err.code !== 'ECONFLICT') throw err;
              }
            }
          }
        }),
      );
    } finally {
      for (const c of clientsList) c.close();
      await cl.startNode(0);
    }
    const r = await new PathSlots(cl.clients).read(path, replicas);
    expect(succeeded).toBe(15);
    expect(Number(r.data?.toString())).toBe(15);
  });

  it('without a majority, operations fail (EAGAIN/EUNAVAIL) instead of answering stale', async () => {
    const s = new PathSlots(cl.clients, { maxAttempts: 2, timeoutMs: 1000 });
    await s.write('/x', replicas, Buffer.from('1'));
    await cl.stopNode(0);
    await cl.stopNode(1);
    try {
      const err = await s.read('/x', replicas).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CairnError);
      expect(['EAGAIN', 'EUNAVAIL']).toContain((err as CairnError).code);
    } finally {
      await cl.startNode(0);
      await cl.startNode(1);
    }
  });
});
