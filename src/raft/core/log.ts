/**
 * The Raft log as the core sees it: what the caller has persisted (LogStorage) plus what
 * has not been persisted yet (Unstable), with the commit and applied indexes.
 * Pure: every read of storage goes through the LogStorage interface.
 */
import { CompactedError, EntryType, UnavailableError, type Entry, type LogStorage, type Snapshot } from '../types.js';
import { assert } from '../../common/errors.js';
import { Unstable } from './unstable.js';

/** Bytes an entry counts for in message and Ready size limits. */
export function entrySizeBytes(e: Entry): number {
  return e.data.byteLength + 16;
}

/** Keep a prefix of `ents` whose total size stays within maxBytes (always at least one entry). */
export function limitSize(ents: Entry[], maxBytes: number): Entry[] {
  if (ents.length <= 1) return ents;
  let size = entrySizeBytes(ents[0]!);
  let n = 1;
  for (; n < ents.length; n++) {
    size += entrySizeBytes(ents[n]!);
    if (size > maxBytes) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

export class RaftLog {
  readonly storage: LogStorage;
  readonly unstable: Unstable;
  committed: number;
  applied: number;

  constructor(storage: LogStorage) {
    this.storage = storage;
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    this.committed = first - 1;
    this.applied = first - 1;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /** Term of entry i; i may be firstIndex()-1 (the snapshot's). Throws Compacted/Unavailable. */
  term(i: number): number {
    const dummy = this.firstIndex() - 1;
    if (i < dummy) throw new CompactedError(i);
    if (i > this.lastIndex()) throw new UnavailableError(i);
    const t = this.unstable.maybeTerm(i);
    if (t !== undefined) return t;
    return this.storage.term(i);
  }

  /** Term of entry i, or 0 when it is compacted or beyond the log. */
  termOrZero(i: number): number {
    if (i < this.firstIndex() - 1 || i > this.lastIndex()) return 0;
    try {
      return this.term(i);
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return 0;
      throw err;
    }
  }

  lastTerm(): number {
    return this.term(this.lastIndex());
  }

  matchTerm(i: number, t: number): boolean {
    if (i < this.firstIndex() - 1 || i > this.lastIndex()) return false; // without throwing: this is hot
    try {
      return this.term(i) === t;
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return false;
      throw err;
    }
  }

  /** Is a log ending at (lastIndex, term) at least as up to date as ours? (§5.4.1) */
  isUpToDate(lastIndex: number, term: number): boolean {
    const ourTerm = this.lastTerm();
    return term > ourTerm || (term === ourTerm && lastIndex >= this.lastIndex());
  }

  /** First index whose entry conflicts with ours (or is new); 0 when all match. */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * Largest index <= `index` whose term is <= `term` (or the first index we cannot look
   * at). Used for fast backtracking on both sides of a rejected append.
   */
  findConflictByTerm(index: number, term: number): number {
    for (let i = index; i >= 0; i--) {
      let t: number;
      try {
        t = this.term(i);
      } catch (err) {
        if (err instanceof CompactedError || err instanceof UnavailableError) return i;
        throw err;
      }
      if (t <= term) return i;
    }
    return 0;
  }

  /**
   * Follower side of App: if our entry at `index` has `logTerm`, append `ents` (dropping
   * what conflicts) and advance commit. Returns the index of the last new entry, or
   * undefined when the previous entry does not match.
   */
  maybeAppend(index: number, logTerm: number, committed: number, ents: Entry[]): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) {
      assert(ci > this.committed, `entry ${ci} conflicts with committed entry (committed ${this.committed})`);
      this.append(ents.slice(ci - index - 1));
    }
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }

  append(ents: Entry[]): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0]!.index - 1;
    assert(after >= this.committed, `append after ${after} is below committed ${this.committed}`);
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries;
  }

  /** Committed entries not yet applied, within maxBytes (at least one when there are any). */
  nextCommittedEntries(maxBytes: number): Entry[] {
    const off = Math.max(this.applied + 1, this.firstIndex());
    if (this.committed + 1 <= off) return [];
    return this.slice(off, this.committed + 1, maxBytes);
  }

  hasNextCommittedEntries(): boolean {
    const off = Math.max(this.applied + 1, this.firstIndex());
    return this.committed + 1 > off;
  }

  commitTo(n: number): void {
    if (this.committed >= n) return;
    assert(n <= this.lastIndex(), `commit ${n} is beyond the last index ${this.lastIndex()}`);
    this.committed = n;
  }

  appliedTo(i: number): void {
    if (i === 0) return;
    assert(i <= this.committed && i >= this.applied, `applied ${i} outside [${this.applied}, ${this.committed}]`);
    this.applied = i;
  }

  stableTo(i: number, t: number): void {
    this.unstable.stableTo(i, t);
  }

  stableSnapTo(i: number): void {
    this.unstable.stableSnapTo(i);
  }

  /** Commit up to maxIndex if that entry is of `term` (a leader commits only its own term, §5.4.2). */
  maybeCommit(maxIndex: number, term: number): boolean {
    if (maxIndex > this.committed && this.termOrZero(maxIndex) === term) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  restore(s: Snapshot): void {
    this.committed = s.metadata.index;
    this.unstable.restore(s);
  }

  /** The snapshot to send or install: the unstable one if any, else storage's. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  /** Entries from i to the end, within maxBytes. */
  entries(i: number, maxBytes: number): Entry[] {
    if (i > this.lastIndex()) return [];
    return this.slice(i, this.lastIndex() + 1, maxBytes);
  }

  /** Entries [lo, hi) within maxBytes; throws CompactedError when lo is compacted. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo === hi) return [];
    assert(lo < hi, `slice(${lo}, ${hi}) is inverted`);
    if (lo < this.firstIndex()) throw new CompactedError(lo);
    assert(hi <= this.lastIndex() + 1, `slice(${lo}, ${hi}) is beyond the last index ${this.lastIndex()}`);
    let ents: Entry[] = [];
    const uoff = this.unstable.offset;
    if (lo < uoff) {
      const storedHi = Math.min(hi, uoff);
      const stored = this.storage.entries(lo, storedHi, maxBytes);
      if (stored.length < storedHi - lo) return stored; // size limit reached
      ents = stored;
    }
    if (hi > uoff) {
      const u = this.unstable.slice(Math.max(lo, uoff), hi);
      ents = ents.length > 0 ? ents.concat(u) : u;
    }
    return limitSize(ents, maxBytes);
  }

  /** Any ConfChange entry among the committed but not applied ones? */
  hasUnappliedConfChanges(): boolean {
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (this.committed < lo) return false;
    for (const e of this.slice(lo, this.committed + 1, Number.MAX_SAFE_INTEGER)) {
      if (e.type === EntryType.ConfChange) return true;
    }
    return false;
  }
}
