/**
 * Write leases name their holder's peer address (docs/dfs-cache.md): the optional `addr` of
 * leaseAcquire and of create's lease is kept with the lease and named by an EBUSY; an entry
 * without it (as written before the field existed) still decodes and grants a lease with none.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MetaStateMachine, type ApplyResult } from '../../src/meta/state-machine.js';
import type { Op } from '../../src/meta/ops.js';
import { decodeEntry, encodeEntry } from '../../src/meta/entry.js';
import { EntryType } from '../../src/raft/types.js';
import { tempDir } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function openSm(): Promise<MetaStateMachine> {
  const d = await tempDir('cairn-meta-lease-');
  const sm = await MetaStateMachine.open({ dataDir: d.path });
  cleanups.push(async () => {
    await sm.close();
    await d.remove();
  });
  return sm;
}

async function apply(sm: MetaStateMachine, op: Op, nowMs = 1_000): Promise<ApplyResult> {
  const index = (await sm.appliedIndex()) + 1;
  const [r] = (await sm.apply([{ term: 1, index, type: EntryType.Normal, data: encodeEntry(op, nowMs) }])) as ApplyResult[][];
  return r![0]!;
}

const own = { mode: 0o644, uid: 1, gid: 1 };

describe('lease addresses', () => {
  it('are kept with the lease, returned, and named by an EBUSY; a lease without one still works', async () => {
    const sm = await openSm();
    const made = await apply(sm, { op: 'create', at: { path: '/f' }, ...own, exclusive: true, lease: { holder: 'A', ttlMs: 10_000, addr: '127.0.0.1:7001' } });
    expect(made.ok && (made.value.lease as { addr?: string }).addr).toBe('127.0.0.1:7001');
    const ino = (await sm.getattr({ path: '/f' })).ino;
    expect((await sm.lease(ino))?.addr).toBe('127.0.0.1:7001');
    const busy = await apply(sm, { op: 'leaseAcquire', ino, holder: 'B', ttlMs: 1_000, addr: '127.0.0.1:7002' }, 2_000);
    expect(busy.ok).toBe(false);
    if (!busy.ok) {
      expect(busy.code).toBe('EBUSY');
      expect(busy.details).toMatchObject({ holder: 'A', addr: '127.0.0.1:7001' });
      expect(busy.message).toContain('127.0.0.1:7001');
    }
    // An entry of the old shape (no addr) decodes and grants a lease that names no address.
    await apply(sm, { op: 'create', at: { path: '/g' }, ...own, exclusive: true });
    const g = (await sm.getattr({ path: '/g' })).ino;
    const old: Op = { op: 'leaseAcquire', ino: g, holder: 'C', ttlMs: 5_000 };
    expect(decodeEntry(encodeEntry(old, 1_000)).ops[0]).toEqual(old);
    const r = await apply(sm, old);
    expect(r.ok).toBe(true);
    expect((await sm.lease(g))?.addr).toBeUndefined();
    // A bad address is refused by the schema (host:port).
    const bad = await apply(sm, { op: 'leaseAcquire', ino: g, holder: 'C', ttlMs: 5_000, addr: 'no port' } as Op).catch((e: Error) => e);
    expect(bad instanceof Error || (bad as ApplyResult).ok === false).toBe(true);
  });
});
