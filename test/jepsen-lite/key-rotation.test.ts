/** KeyRotation (workloads/common.ts): every key's history stays bounded in size, unknown outcomes and concurrency. */
import { describe, expect, it } from 'vitest';
import { KeyRotation } from './workloads/common.js';

function seq(): () => number {
  let i = 0;
  return () => ((i++ * 0.37) % 1);
}

describe('KeyRotation', () => {
  it('retires a key after maxOps operations and hands out fresh, numbered keys', () => {
    const r = new KeyRotation({ atOnce: 2, maxOps: 5, maxUnknown: 100, maxInFlight: 100, rand: seq() });
    const perKey = new Map<number, number>();
    for (let i = 0; i < 40; i++) {
      const k = r.acquire()!;
      perKey.set(k, (perKey.get(k) ?? 0) + 1);
      r.release(k, false);
    }
    expect([...perKey.values()].every((n) => n <= 5)).toBe(true);
    expect(Math.max(...perKey.keys()) + 1).toBeLessThanOrEqual(r.keysUsed);
    expect(perKey.size).toBeGreaterThanOrEqual(8);
  });

  it('retires a key as soon as it collected maxUnknown unknown outcomes', () => {
    const r = new KeyRotation({ atOnce: 1, maxOps: 1000, maxUnknown: 3, maxInFlight: 100, rand: seq() });
    const unknownPerKey = new Map<number, number>();
    for (let i = 0; i < 30; i++) {
      const k = r.acquire()!;
      r.release(k, true);
      unknownPerKey.set(k, (unknownPerKey.get(k) ?? 0) + 1);
    }
    expect([...unknownPerKey.values()]).toEqual(Array(10).fill(3));
  });

  it('never lets more than maxInFlight operations run on one key', async () => {
    const r = new KeyRotation({ atOnce: 2, maxOps: 1000, maxUnknown: 1000, maxInFlight: 2, rand: seq() });
    const held = [r.acquire(), r.acquire(), r.acquire(), r.acquire()];
    expect(held.every((k) => k !== undefined)).toBe(true);
    expect(r.acquire()).toBeUndefined();
    const counts = new Map<number, number>();
    for (const k of held) counts.set(k!, (counts.get(k!) ?? 0) + 1);
    expect([...counts.values()]).toEqual([2, 2]);
    // A waiting client gets the slot that a release frees.
    const waiting = r.next(new AbortController().signal, 1);
    r.release(held[0]!, false);
    expect(await waiting).toBe(held[0]);
  });

  it('next() returns undefined once the run is stopped', async () => {
    const r = new KeyRotation({ atOnce: 1, maxOps: 1000, maxUnknown: 1000, maxInFlight: 1, rand: seq() });
    r.acquire();
    const ac = new AbortController();
    const waiting = r.next(ac.signal, 1);
    ac.abort();
    expect(await waiting).toBeUndefined();
  });
});
