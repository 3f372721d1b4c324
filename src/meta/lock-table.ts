/**
 * The lock table's rules, as pure functions (no I/O, no clock): the byte-range locks of POSIX
 * fcntl and the whole-file locks of flock(2), for one inode. The metadata state machine keeps one
 * table per inode (key lock:<ino>) and applies these rules inside Raft-replicated operations; the
 * node side (src/vfs/locks.ts) uses the same rules to answer F_GETLK.
 *
 * Owners: a lock belongs to (session, owner, kind). The session is one node's lock session (a
 * mount's VFS); the owner is what the kernel names the holder — the lock owner of a POSIX lock
 * (one per process's file table), the open file description of a flock. POSIX and flock locks
 * never conflict with each other (as on Linux).
 *
 * POSIX rules (fcntl(2)): a request by an owner replaces that owner's locks on the range it
 * covers — splitting a lock that the range cuts, upgrading or downgrading the part it covers —
 * and adjacent or overlapping locks of one owner and one mode merge. A request conflicts with a
 * lock of another owner that overlaps it when either is a write lock. flock rules: one lock per
 * owner over the whole file; a request replaces the owner's lock (a conversion is atomic here,
 * which Linux does not promise).
 *
 * Ranges are [start, end): end exclusive, LOCK_EOF meaning "to the end of the file, however it
 * grows" (l_len 0).
 */

/** The end of a lock that reaches the end of the file (and past it). */
export const LOCK_EOF = Number.MAX_SAFE_INTEGER;

export type LockKind = 'posix' | 'flock';
export type LockMode = 'read' | 'write';

export interface HeldLock {
  kind: LockKind;
  /** The lock session (one per mount) of the node that holds it. */
  session: string;
  /** The holder within the session (the kernel's lock owner, or the file description for flock). */
  owner: string;
  mode: LockMode;
  start: number;
  /** Exclusive; LOCK_EOF for "to the end of the file". */
  end: number;
  /** Process id of the holder on its node (F_GETLK reports it). */
  pid: number;
}

export interface LockRequest {
  kind: LockKind;
  session: string;
  owner: string;
  mode: LockMode | 'unlock';
  start: number;
  end: number;
  pid: number;
}

export function sameOwner(a: { kind: LockKind; session: string; owner: string }, b: { kind: LockKind; session: string; owner: string }): boolean {
  return a.kind === b.kind && a.session === b.session && a.owner === b.owner;
}

function overlaps(a: { start: number; end: number }, b: { start: number; end: number }): boolean {
  return a.start < b.end && b.start < a.end;
}

/** Is a range well formed ([start, end), non-empty, safe integers)? */
export function validRange(start: number, end: number): boolean {
  return Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && end > start;
}

/** The first lock of another owner that keeps `req` from being granted (undefined: none; an unlock never conflicts). */
export function conflictOf(locks: readonly HeldLock[], req: LockRequest): HeldLock | undefined {
  if (req.mode === 'unlock') return undefined;
  const range = req.kind === 'flock' ? { start: 0, end: LOCK_EOF } : req;
  for (const l of locks) {
    if (l.kind !== req.kind || sameOwner(l, req)) continue;
    if (!overlaps(l, range)) continue;
    if (l.mode === 'write' || req.mode === 'write') return l;
  }
  return undefined;
}

/** Canonical order: by kind, session, owner, start (tables compare equal when their locks do). */
function order(a: HeldLock, b: HeldLock): number {
  if (a.kind !== b.kind) return a.kind < b.kind ? -1 : 1;
  if (a.session !== b.session) return a.session < b.session ? -1 : 1;
  if (a.owner !== b.owner) return a.owner < b.owner ? -1 : 1;
  return a.start - b.start;
}

/**
 * The table after `req` is granted (the caller checked conflictOf first). Pure: `locks` is not
 * changed. The result is canonical: one owner's POSIX locks never overlap, adjacent ones of one
 * mode are merged, and the list is sorted.
 */
export function applyLock(locks: readonly HeldLock[], req: LockRequest): HeldLock[] {
  const others: HeldLock[] = [];
  const own: HeldLock[] = [];
  for (const l of locks) (sameOwner(l, req) ? own : others).push(l);
  if (req.kind === 'flock') {
    if (req.mode !== 'unlock') others.push({ kind: 'flock', session: req.session, owner: req.owner, mode: req.mode, start: 0, end: LOCK_EOF, pid: req.pid });
    return others.sort(order);
  }
  // The owner's locks outside the request's range stay; the parts inside it go.
  const kept: HeldLock[] = [];
  for (const l of own) {
    if (!overlaps(l, req)) {
      kept.push(l);
      continue;
    }
    if (l.start < req.start) kept.push({ ...l, end: req.start });
    if (l.end > req.end) kept.push({ ...l, start: req.end });
  }
  if (req.mode !== 'unlock') kept.push({ kind: 'posix', session: req.session, owner: req.owner, mode: req.mode, start: req.start, end: req.end, pid: req.pid });
  kept.sort((a, b) => a.start - b.start);
  // Merge touching locks of one mode (they no longer overlap: the request's range was cut out).
  const merged: HeldLock[] = [];
  for (const l of kept) {
    const last = merged[merged.length - 1];
    if (last !== undefined && last.mode === l.mode && last.end >= l.start) {
      merged[merged.length - 1] = { ...last, end: Math.max(last.end, l.end), pid: l.pid };
      continue;
    }
    merged.push(l);
  }
  return [...others, ...merged].sort(order);
}

/** The table without the locks of one owner (of either kind when `kind` is not given). */
export function releaseOwner(locks: readonly HeldLock[], session: string, owner: string, kind?: LockKind): HeldLock[] {
  return locks.filter((l) => !(l.session === session && l.owner === owner && (kind === undefined || l.kind === kind)));
}

/** The table without any lock of a session (the session ended or expired). */
export function releaseSession(locks: readonly HeldLock[], session: string): HeldLock[] {
  return locks.filter((l) => l.session !== session);
}
