import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { LOCK_EOF, applyLock, conflictOf, releaseOwner, releaseSession, type HeldLock, type LockRequest } from '../../src/meta/lock-table.js';

/**
 * The model: per owner, the mode it holds on each byte of [0, N), plus one cell for all bytes from
 * N on (only a lock to LOCK_EOF reaches there: every generated start is below N, every finite end
 * at most N).
 */
const N = 24;
type Mode = 'read' | 'write' | undefined;
type Model = Map<string, Mode[]>;

const OWNERS = [
  { session: 'a', owner: '1' },
  { session: 'a', owner: '2' },
  { session: 'b', owner: '1' },
];

const request = fc.record({
  who: fc.integer({ min: 0, max: OWNERS.length - 1 }),
  kind: fc.constantFrom('posix' as const, 'posix' as const, 'flock' as const),
  mode: fc.constantFrom('read' as const, 'write' as const, 'unlock' as const),
  start: fc.integer({ min: 0, max: N - 1 }),
  len: fc.integer({ min: 1, max: N }),
  eof: fc.boolean(),
});

type Req = typeof request extends fc.Arbitrary<infer T> ? T : never;

function toReq(r: Req): LockRequest {
  const o = OWNERS[r.who]!;
  const end = r.eof ? LOCK_EOF : Math.min(N, r.start + r.len);
  return { kind: r.kind, session: o.session, owner: o.owner, mode: r.mode, start: r.start, end, pid: 100 + r.who, ...(r.kind === 'flock' ? { start: 0, end: LOCK_EOF } : {}) };
}

const key = (kind: string, session: string, owner: string): string => `${kind}/${session}/${owner}`;

function bytesOf(start: number, end: number): number[] {
  const out: number[] = [];
  for (let b = start; b < Math.min(end, N); b++) out.push(b);
  // Byte N stands for every byte past N-1: only a lock to LOCK_EOF reaches it.
  if (end > N) out.push(N);
  return out;
}

function modelConflict(m: Model, req: LockRequest): boolean {
  if (req.mode === 'unlock') return false;
  for (const [k, bytes] of m) {
    if (!k.startsWith(`${req.kind}/`) || k === key(req.kind, req.session, req.owner)) continue;
    for (const b of bytesOf(req.start, req.end)) {
      const held = bytes[b];
      if (held !== undefined && (held === 'write' || req.mode === 'write')) return true;
    }
  }
  return false;
}

function modelApply(m: Model, req: LockRequest): void {
  const k = key(req.kind, req.session, req.owner);
  const bytes = m.get(k) ?? new Array<Mode>(N + 1).fill(undefined);
  for (const b of bytesOf(req.start, req.end)) bytes[b] = req.mode === 'unlock' ? undefined : req.mode;
  m.set(k, bytes);
}

function expand(locks: readonly HeldLock[]): Model {
  const m: Model = new Map();
  for (const l of locks) {
    const k = key(l.kind, l.session, l.owner);
    const bytes = m.get(k) ?? new Array<Mode>(N + 1).fill(undefined);
    for (const b of bytesOf(l.start, l.end)) {
      expect(bytes[b], `owner ${k} holds byte ${b} twice`).toBeUndefined();
      bytes[b] = l.mode;
    }
    m.set(k, bytes);
  }
  return m;
}

function sameModel(a: Model, b: Model): void {
  const keys = new Set([...a.keys(), ...b.keys()]);
  for (const k of keys) {
    const x = a.get(k) ?? new Array<Mode>(N + 1).fill(undefined);
    const y = b.get(k) ?? new Array<Mode>(N + 1).fill(undefined);
    expect(x, k).toEqual(y);
  }
}

/** Canonical: one owner's posix locks are sorted, disjoint, and touching ones differ in mode. */
function checkCanonical(locks: readonly HeldLock[]): void {
  const byOwner = new Map<string, HeldLock[]>();
  for (const l of locks) {
    expect(l.end).toBeGreaterThan(l.start);
    const k = key(l.kind, l.session, l.owner);
    byOwner.set(k, [...(byOwner.get(k) ?? []), l]);
  }
  for (const [k, ls] of byOwner) {
    if (k.startsWith('flock/')) {
      expect(ls.length).toBe(1);
      continue;
    }
    for (let i = 1; i < ls.length; i++) {
      const a = ls[i - 1]!;
      const b = ls[i]!;
      expect(a.end <= b.start, `${k}: overlap`).toBe(true);
      if (a.end === b.start) expect(a.mode, `${k}: touching locks of one mode not merged`).not.toBe(b.mode);
    }
  }
}

/** No byte is held by two owners of one kind unless both hold it for reading. */
function checkExclusion(locks: readonly HeldLock[]): void {
  for (const a of locks) {
    for (const b of locks) {
      if (a === b || a.kind !== b.kind || (a.session === b.session && a.owner === b.owner)) continue;
      const overlap = a.start < b.end && b.start < a.end;
      if (overlap) expect(a.mode === 'read' && b.mode === 'read', `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(true);
    }
  }
}

describe('the lock table (POSIX fcntl and flock rules)', () => {
  it('agrees with a byte-by-byte model over any sequence of requests; conflicts exactly when the model says', () => {
    fc.assert(
      fc.property(fc.array(request, { maxLength: 40 }), (reqs) => {
        let table: HeldLock[] = [];
        const model: Model = new Map();
        for (const r of reqs) {
          const req = toReq(r);
          const c = conflictOf(table, req);
          expect(c !== undefined, `conflict of ${JSON.stringify(req)}`).toBe(modelConflict(model, req));
          if (c !== undefined) {
            expect(c.kind).toBe(req.kind);
            expect(c.session === req.session && c.owner === req.owner).toBe(false);
            continue;
          }
          table = applyLock(table, req);
          modelApply(model, req);
          checkCanonical(table);
          checkExclusion(table);
          sameModel(expand(table), model);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('releasing an owner or a session drops exactly its locks', () => {
    fc.assert(
      fc.property(fc.array(request, { maxLength: 30 }), fc.integer({ min: 0, max: OWNERS.length - 1 }), (reqs, who) => {
        let table: HeldLock[] = [];
        for (const r of reqs) {
          const req = toReq(r);
          if (conflictOf(table, req) === undefined) table = applyLock(table, req);
        }
        const o = OWNERS[who]!;
        const afterOwner = releaseOwner(table, o.session, o.owner);
        expect(afterOwner.some((l) => l.session === o.session && l.owner === o.owner)).toBe(false);
        expect(afterOwner.length).toBe(table.filter((l) => !(l.session === o.session && l.owner === o.owner)).length);
        const afterSession = releaseSession(table, o.session);
        expect(afterSession.every((l) => l.session !== o.session)).toBe(true);
        expect(afterSession.length).toBe(table.filter((l) => l.session !== o.session).length);
      }),
    );
  });

  it('splits a lock that an unlock cuts, and merges touching locks of one mode', () => {
    const me = { kind: 'posix' as const, session: 's', owner: 'o', pid: 1 };
    let t = applyLock([], { ...me, mode: 'write', start: 0, end: 100 });
    t = applyLock(t, { ...me, mode: 'unlock', start: 40, end: 60 });
    expect(t.map((l) => [l.start, l.end, l.mode])).toEqual([[0, 40, 'write'], [60, 100, 'write']]);
    t = applyLock(t, { ...me, mode: 'read', start: 40, end: 60 });
    expect(t.map((l) => [l.start, l.end, l.mode])).toEqual([[0, 40, 'write'], [40, 60, 'read'], [60, 100, 'write']]);
    t = applyLock(t, { ...me, mode: 'write', start: 40, end: 60 });
    expect(t.map((l) => [l.start, l.end, l.mode])).toEqual([[0, 100, 'write']]);
    // Another owner's read overlapping a write conflicts; flock locks never meet POSIX ones.
    expect(conflictOf(t, { ...me, owner: 'x', mode: 'read', start: 99, end: 200 })).toBeDefined();
    expect(conflictOf(t, { ...me, owner: 'x', mode: 'read', start: 100, end: 200 })).toBeUndefined();
    expect(conflictOf(t, { ...me, kind: 'flock', owner: 'x', mode: 'write', start: 0, end: LOCK_EOF })).toBeUndefined();
  });
});
