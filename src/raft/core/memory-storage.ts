/**
 * An in-memory LogStorage: the simulator's "disk" and the pattern for the durable one.
 * The entry at the snapshot index is kept as a dummy so that term(firstIndex()-1) answers.
 */
import { CairnError } from '../../common/errors.js';
import {
  CompactedError,
  EntryType,
  UnavailableError,
  type ConfState,
  type Entry,
  type HardState,
  type LogStorage,
  type Snapshot,
} from '../types.js';
import { entrySizeBytes } from './log.js';
import { cloneConf } from './confchange.js';

export interface MemoryStorageInit {
  /** Configuration at the initial snapshot (empty for a node that will join). */
  conf?: ConfState;
  /** Index and term of the initial snapshot (0/0 by default). */
  index?: number;
  term?: number;
  data?: Uint8Array;
}

export class MemoryStorage implements LogStorage {
  private hs: HardState;
  private snap: Snapshot;
  /** ents[0] is a dummy entry at the snapshot's index and term. */
  private ents: Entry[];

  constructor(init: MemoryStorageInit = {}) {
    const index = init.index ?? 0;
    const term = init.term ?? 0;
    this.snap = {
      metadata: { index, term, conf: cloneConf(init.conf ?? { voters: [], learners: [] }) },
      data: init.data ?? new Uint8Array(0),
    };
    this.ents = [{ index, term, type: EntryType.Normal, data: new Uint8Array(0) }];
    this.hs = { term, vote: 0, commit: index };
  }

  initialState(): { hardState: HardState; conf: ConfState } {
    return { hardState: { ...this.hs }, conf: cloneConf(this.snap.metadata.conf) };
  }

  hardState(): HardState {
    return { ...this.hs };
  }

  setHardState(hs: HardState): void {
    this.hs = { ...hs };
  }

  private offset(): number {
    return this.ents[0]!.index;
  }

  firstIndex(): number {
    return this.offset() + 1;
  }

  lastIndex(): number {
    return this.offset() + this.ents.length - 1;
  }

  term(i: number): number {
    const off = this.offset();
    if (i < off) throw new CompactedError(i);
    if (i - off >= this.ents.length) throw new UnavailableError(i);
    return this.ents[i - off]!.term;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const off = this.offset();
    if (lo <= off) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1);
    if (lo >= hi) return [];
    // Walk only as far as the size limit allows (at least one entry).
    let end = lo - off + 1;
    let size = entrySizeBytes(this.ents[lo - off]!);
    while (end < hi - off) {
      size += entrySizeBytes(this.ents[end]!);
      if (size > maxBytes) break;
      end++;
    }
    return this.ents.slice(lo - off, end);
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Every entry from firstIndex() to lastIndex() (tests and the simulator's checks). */
  allEntries(): Entry[] {
    return this.ents.slice(1);
  }

  /** Replace the whole log by a snapshot received from the leader. */
  applySnapshot(snap: Snapshot): void {
    if (snap.metadata.index <= this.snap.metadata.index) {
      throw new CairnError('ECOMPACTED', `raft storage: snapshot ${snap.metadata.index} is not newer than ${this.snap.metadata.index}`);
    }
    this.snap = { metadata: { ...snap.metadata, conf: cloneConf(snap.metadata.conf) }, data: snap.data };
    this.ents = [{ index: snap.metadata.index, term: snap.metadata.term, type: EntryType.Normal, data: new Uint8Array(0) }];
  }

  /** Record a snapshot of the state machine at `index` (<= applied). Entries stay until compact(). */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.metadata.index) {
      throw new CairnError('ECOMPACTED', `raft storage: snapshot at ${index} is not newer than ${this.snap.metadata.index}`);
    }
    if (index > this.lastIndex()) {
      throw new CairnError('EINVAL', `raft storage: snapshot at ${index} is beyond the last index ${this.lastIndex()}`);
    }
    this.snap = { metadata: { index, term: this.term(index), conf: cloneConf(conf) }, data };
    return this.snap;
  }

  /** Drop entries up to and including `index` (which must be applied and snapshotted by the caller). */
  compact(index: number): void {
    const off = this.offset();
    if (index <= off) return;
    if (index > this.lastIndex()) {
      throw new CairnError('EINVAL', `raft storage: compact(${index}) is beyond the last index ${this.lastIndex()}`);
    }
    const i = index - off;
    const dummy = this.ents[i]!;
    const head: Entry = { index: dummy.index, term: dummy.term, type: EntryType.Normal, data: new Uint8Array(0) };
    this.ents = [head, ...this.ents.slice(i + 1)];
  }

  /** Append entries, replacing any from the first new index on. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[0]!.index + entries.length - 1;
    if (last < first) return; // all compacted already
    let es = entries;
    if (first > es[0]!.index) es = es.slice(first - es[0]!.index);
    const off = es[0]!.index - this.offset();
    if (off > this.ents.length) {
      throw new CairnError('EINVAL', `raft storage: missing log entries [last ${this.lastIndex()}, append at ${es[0]!.index}]`);
    }
    // In place: appending at the end is the common case and must not copy the log.
    if (off < this.ents.length) this.ents.length = off;
    for (const e of es) this.ents.push(e);
  }
}
