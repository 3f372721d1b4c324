/**
 * The durable Raft log: hard state, entries, snapshot metadata and the membership, kept in
 * one LevelDB (classic-level) under <dataDir>/raft.
 *
 * The core reads the log synchronously (LogStorage), so the terms of every live entry and a
 * bounded tail of recent entries stay in memory; older entries are read with getSync. LevelDB
 * is the durable truth: every Ready is written as ONE batch, fsynced when the Ready says so,
 * before any message that depends on it goes out (group commit).
 *
 * Layout (keys are bytes):
 *   'h'            hard state (JSON)        'c'  conf state as of the last applied conf change (JSON)
 *   's'            snapshot metadata (JSON) 'm'  compaction mark: {index, term} of the last compacted entry
 *   'p'            peer address book (JSON)
 *   'v'            format of this database {format, writtenBy} (JSON; absent in v0.1.0's, which ignores it)
 *   'e' + u64 BE   entry: crc32 u32 | term u64 | type u8 | data
 */
import { ClassicLevel } from 'classic-level';
import { crc32 } from '../common/crc32.js';
import { z } from 'zod';
import { CairnError, assert } from '../common/errors.js';
import { mkdirDurable } from '../common/durable.js';
import { CAIRN_VERSION } from '../common/version.js';
import {
  CompactedError,
  EntryType,
  UnavailableError,
  type ConfState,
  type Entry,
  type HardState,
  type LogStorage,
  type Snapshot,
  type SnapshotMetadata,
} from './types.js';

const K_HARD = Buffer.from('h');
const K_CONF = Buffer.from('c');
const K_SNAP = Buffer.from('s');
const K_MARK = Buffer.from('m');
const K_PEERS = Buffer.from('p');
const K_FORMAT = Buffer.from('v');
/** The layout above. A release that changes it bumps this; an older release refuses a newer log (docs/upgrade.md). */
export const LOG_FORMAT = 1;
const ENTRY_PREFIX = 0x65; // 'e'
const ENTRY_HEADER_BYTES = 13;

/** Entries kept in memory beyond what LevelDB holds: a bounded tail of the log. */
export const DEFAULT_CACHE_ENTRIES = 16_384;
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;

const hardStateSchema = z.object({
  term: z.number().int().min(0),
  vote: z.number().int().min(0),
  commit: z.number().int().min(0),
});
const confStateSchema = z.object({
  voters: z.array(z.number().int().min(1)),
  learners: z.array(z.number().int().min(1)),
});
const markSchema = z.object({ index: z.number().int().min(0), term: z.number().int().min(0) });
const snapMetaSchema = z.object({ index: z.number().int().min(0), term: z.number().int().min(0), conf: confStateSchema });
const peersSchema = z.record(z.string().regex(/^\d+$/), z.string().min(1));
const formatSchema = z.object({ format: z.number().int().min(1), writtenBy: z.string().max(40) });

/**
 * The core probes past the end of the log on every append (matchTerm); building a stack trace
 * for each of those expected errors is costly, so they are made without one.
 */
function cheap<E extends Error>(make: () => E): E {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export function entryKey(index: number): Buffer {
  const k = Buffer.allocUnsafe(9);
  k[0] = ENTRY_PREFIX;
  k.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 1);
  k.writeUInt32BE(index >>> 0, 5);
  return k;
}

export function encodeEntry(e: Entry): Buffer {
  const buf = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + e.data.length);
  buf.writeUInt32BE(Math.floor(e.term / 0x1_0000_0000), 4);
  buf.writeUInt32BE(e.term >>> 0, 8);
  buf[12] = e.type;
  buf.set(e.data, ENTRY_HEADER_BYTES);
  buf.writeUInt32BE(crc32(buf.subarray(4)), 0);
  return buf;
}

export function decodeEntry(index: number, buf: Uint8Array | undefined, where: string): Entry {
  if (buf === undefined) throw new CairnError('ECORRUPT', `${where}: raft log entry ${index} is missing from the database`);
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < ENTRY_HEADER_BYTES) {
    throw new CairnError('ECORRUPT', `${where}: raft log entry ${index} is truncated (${b.length} bytes); the log is damaged, restore this node from a snapshot`);
  }
  if (crc32(b.subarray(4)) !== b.readUInt32BE(0)) {
    throw new CairnError('ECORRUPT', `${where}: raft log entry ${index} fails its checksum; the log is damaged, restore this node from a snapshot`);
  }
  const type = b[12];
  if (type !== EntryType.Normal && type !== EntryType.ConfChange) {
    throw new CairnError('ECORRUPT', `${where}: raft log entry ${index} has unknown type ${String(type)}`);
  }
  const term = b.readUInt32BE(4) * 0x1_0000_0000 + b.readUInt32BE(8);
  return { index, term, type, data: b.subarray(ENTRY_HEADER_BYTES) };
}

function readJson<S extends z.ZodType>(db: ClassicLevel<Buffer, Buffer>, key: Buffer, schema: S, where: string): z.infer<S> | undefined {
  const raw = db.getSync(key);
  if (raw === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new CairnError('ECORRUPT', `${where}: record '${key.toString()}' is not valid JSON; the raft state is damaged`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new CairnError('ECORRUPT', `${where}: record '${key.toString()}' is malformed: ${r.error.issues[0]?.message ?? ''}`);
  return r.data;
}

const jsonBuf = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

export interface DiskStorageOptions {
  cacheEntries?: number;
  cacheBytes?: number;
}

/** What one Ready asks to persist; written as one LevelDB batch. */
export interface PersistRequest {
  hardState?: HardState | undefined;
  entries: Entry[];
  snapshot?: SnapshotMetadata | undefined;
  conf?: ConfState | undefined;
  sync: boolean;
}

export class DiskStorage implements LogStorage {
  private hard: HardState = { term: 0, vote: 0, commit: 0 };
  private conf: ConfState = { voters: [], learners: [] };
  private snap: SnapshotMetadata = { index: 0, term: 0, conf: { voters: [], learners: [] } };
  /** The last compacted entry (index, term): entries start at mark.index + 1. */
  private mark = { index: 0, term: 0 };
  /** terms[i] is the term of entry mark.index + 1 + i. */
  private terms: number[] = [];
  /** A bounded tail of entries: cache[i] is entry cacheFirst + i. */
  private cache: Entry[] = [];
  private cacheFirst = 1;
  private cacheBytes = 0;
  private peers = new Map<number, string>();
  private closed = false;
  private readonly maxCacheEntries: number;
  private readonly maxCacheBytes: number;

  private constructor(
    private readonly db: ClassicLevel<Buffer, Buffer>,
    readonly dir: string,
    opts: DiskStorageOptions,
  ) {
    this.maxCacheEntries = opts.cacheEntries ?? DEFAULT_CACHE_ENTRIES;
    this.maxCacheBytes = opts.cacheBytes ?? DEFAULT_CACHE_BYTES;
  }

  /** Open (or create) the log in dir and load the state the core needs into memory. */
  static async open(dir: string, opts: DiskStorageOptions = {}): Promise<DiskStorage> {
    await mkdirDurable(dir);
    const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    try {
      await db.open();
    } catch (err) {
      throw new CairnError('EIO', `${dir}: cannot open the raft log database (${(err as Error).message}); is another node using this dataDir?`);
    }
    const s = new DiskStorage(db, dir, opts);
    try {
      await s.load();
    } catch (err) {
      await db.close().catch(() => undefined);
      throw err;
    }
    return s;
  }

  private async load(): Promise<void> {
    const where = this.dir;
    const fmt = readJson(this.db, K_FORMAT, formatSchema, where);
    if (fmt !== undefined && fmt.format > LOG_FORMAT) {
      throw new CairnError('EINVAL', `${where}: the raft log is in format ${fmt.format} (written by release ${fmt.writtenBy}); this release (${CAIRN_VERSION}) reads format ${LOG_FORMAT}: run release ${fmt.writtenBy} or newer`);
    }
    if (fmt === undefined) await this.db.put(K_FORMAT, jsonBuf({ format: LOG_FORMAT, writtenBy: CAIRN_VERSION }), { sync: true });
    this.hard = readJson(this.db, K_HARD, hardStateSchema, where) ?? this.hard;
    this.conf = readJson(this.db, K_CONF, confStateSchema, where) ?? this.conf;
    this.snap = readJson(this.db, K_SNAP, snapMetaSchema, where) ?? this.snap;
    this.mark = readJson(this.db, K_MARK, markSchema, where) ?? this.mark;
    const peers = readJson(this.db, K_PEERS, peersSchema, where) ?? {};
    for (const [id, addr] of Object.entries(peers)) this.peers.set(Number(id), addr);
    // Walk the entries once: terms of all, bodies of the tail.
    let expect = this.mark.index + 1;
    this.cacheFirst = expect;
    for await (const [k, v] of this.db.iterator({ gte: entryKey(0), lt: Buffer.from([ENTRY_PREFIX + 1]) })) {
      if (k.length !== 9) throw new CairnError('ECORRUPT', `${where}: malformed raft log key of ${k.length} bytes`);
      const index = k.readUInt32BE(1) * 0x1_0000_0000 + k.readUInt32BE(5);
      if (index <= this.mark.index) continue; // left behind by an interrupted compaction
      if (index !== expect) throw new CairnError('ECORRUPT', `${where}: raft log has a gap: expected entry ${expect}, found ${index}`);
      const e = decodeEntry(index, v, where);
      this.terms.push(e.term);
      this.cachePush(e);
      expect++;
    }
    if (this.hard.commit > this.lastIndex()) {
      throw new CairnError('ECORRUPT', `${where}: hard state commit ${this.hard.commit} is beyond the last log entry ${this.lastIndex()}`);
    }
  }

  private cachePush(e: Entry): void {
    if (this.cache.length === 0) this.cacheFirst = e.index;
    assert(e.index === this.cacheFirst + this.cache.length, 'raft log cache must stay contiguous');
    this.cache.push(e);
    this.cacheBytes += e.data.length + 32;
    while (this.cache.length > this.maxCacheEntries || (this.cacheBytes > this.maxCacheBytes && this.cache.length > 1)) {
      const old = this.cache.shift()!;
      this.cacheBytes -= old.data.length + 32;
      this.cacheFirst++;
    }
  }

  private cacheTruncateFrom(index: number): void {
    if (index < this.cacheFirst) {
      this.cache = [];
      this.cacheBytes = 0;
      this.cacheFirst = index;
      return;
    }
    while (this.cacheFirst + this.cache.length > index) {
      const e = this.cache.pop()!;
      this.cacheBytes -= e.data.length + 32;
    }
  }

  // ---- LogStorage (synchronous, for the core) ----

  initialState(): { hardState: HardState; conf: ConfState } {
    return { hardState: { ...this.hard }, conf: { voters: [...this.conf.voters], learners: [...this.conf.learners] } };
  }

  firstIndex(): number {
    return this.mark.index + 1;
  }

  lastIndex(): number {
    return this.mark.index + this.terms.length;
  }

  term(i: number): number {
    if (i < this.mark.index) throw cheap(() => new CompactedError(i));
    if (i === this.mark.index) return this.mark.term;
    if (i > this.lastIndex()) throw cheap(() => new UnavailableError(i));
    return this.terms[i - this.mark.index - 1]!;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo <= this.mark.index) throw cheap(() => new CompactedError(lo));
    if (hi > this.lastIndex() + 1) throw cheap(() => new UnavailableError(hi - 1));
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entryAt(i);
      bytes += e.data.length;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  private entryAt(i: number): Entry {
    if (i >= this.cacheFirst && i < this.cacheFirst + this.cache.length) return this.cache[i - this.cacheFirst]!;
    return decodeEntry(i, this.db.getSync(entryKey(i)), this.dir);
  }

  snapshot(): Snapshot {
    return { metadata: { index: this.snap.index, term: this.snap.term, conf: this.snap.conf }, data: new Uint8Array(0) };
  }

  // ---- for the driver ----

  hardState(): HardState {
    return { ...this.hard };
  }

  snapshotMetadata(): SnapshotMetadata {
    return this.snap;
  }

  /** Is this a brand-new log (nothing ever persisted)? */
  isEmpty(): boolean {
    return this.hard.term === 0 && this.lastIndex() === 0 && this.snap.index === 0 && this.conf.voters.length === 0;
  }

  peerAddresses(): Map<number, string> {
    return new Map(this.peers);
  }

  /**
   * Persist one Ready in one LevelDB batch: an installed snapshot (which replaces the whole
   * log), new entries (overwriting any conflicting suffix), the hard state and membership.
   * Memory is updated only after the write succeeded.
   */
  async persist(req: PersistRequest): Promise<void> {
    this.checkOpen();
    const batch = this.db.batch();
    let mark = this.mark;
    let termsBase = this.terms;
    let dropFrom = -1; // first index whose memory copy is discarded
    if (req.snapshot !== undefined) {
      const s = req.snapshot;
      for (let i = this.mark.index + 1; i <= this.lastIndex(); i++) batch.del(entryKey(i));
      mark = { index: s.index, term: s.term };
      termsBase = [];
      batch.put(K_SNAP, jsonBuf(s));
      batch.put(K_MARK, jsonBuf(mark));
      batch.put(K_CONF, jsonBuf(s.conf));
    }
    const last = mark.index + termsBase.length;
    let newTerms = termsBase;
    if (req.entries.length > 0) {
      const first = req.entries[0]!.index;
      if (first <= mark.index) throw new CairnError('EINVAL', `raft log: cannot append entry ${first} at or below the compacted index ${mark.index}`);
      if (first > last + 1) throw new CairnError('EINVAL', `raft log: append of entry ${first} would leave a gap after ${last}`);
      const newLast = req.entries[req.entries.length - 1]!.index;
      for (const e of req.entries) batch.put(entryKey(e.index), encodeEntry(e));
      for (let i = newLast + 1; i <= last; i++) batch.del(entryKey(i));
      newTerms = termsBase === this.terms ? this.terms.slice(0, first - mark.index - 1) : termsBase.slice(0, first - mark.index - 1);
      for (const e of req.entries) newTerms.push(e.term);
      dropFrom = first;
    }
    if (req.hardState !== undefined) batch.put(K_HARD, jsonBuf(req.hardState));
    if (req.conf !== undefined) batch.put(K_CONF, jsonBuf(req.conf));
    if (batch.length > 0) await batch.write({ sync: req.sync });
    else await batch.close();
    // Commit to memory.
    if (req.snapshot !== undefined) {
      this.snap = req.snapshot;
      this.conf = req.snapshot.conf;
      this.mark = mark;
      this.terms = [];
      this.cache = [];
      this.cacheBytes = 0;
      this.cacheFirst = mark.index + 1;
    }
    if (req.entries.length > 0) {
      this.terms = newTerms;
      this.cacheTruncateFrom(dropFrom);
      if (this.cache.length === 0) this.cacheFirst = dropFrom;
      for (const e of req.entries) this.cachePush(e);
    }
    if (req.hardState !== undefined) this.hard = { ...req.hardState };
    if (req.conf !== undefined) this.conf = req.conf;
  }

  /** Record the membership as of the last applied conf change (durably). */
  async setConf(conf: ConfState): Promise<void> {
    await this.persist({ entries: [], conf, sync: true });
  }

  async setPeers(peers: Map<number, string>): Promise<void> {
    this.checkOpen();
    await this.db.put(K_PEERS, jsonBuf(Object.fromEntries(peers)), { sync: true });
    this.peers = new Map(peers);
  }

  /**
   * Record a snapshot of the state machine taken at meta.index (the state machine must have
   * made that state durable first) and compact the log: entries up to compactTo are deleted.
   */
  async createSnapshot(meta: SnapshotMetadata, compactTo: number): Promise<void> {
    this.checkOpen();
    assert(meta.index <= this.lastIndex(), 'snapshot beyond the log');
    if (meta.index <= this.snap.index) return;
    const batch = this.db.batch();
    batch.put(K_SNAP, jsonBuf(meta));
    const to = Math.min(compactTo, meta.index);
    let newMark = this.mark;
    if (to > this.mark.index) {
      newMark = { index: to, term: this.term(to) };
      batch.put(K_MARK, jsonBuf(newMark));
      for (let i = this.mark.index + 1; i <= to; i++) batch.del(entryKey(i));
    }
    await batch.write({ sync: true });
    this.snap = meta;
    if (newMark !== this.mark) {
      this.terms = this.terms.slice(newMark.index - this.mark.index);
      this.mark = newMark;
      if (this.cacheFirst <= newMark.index) {
        const drop = Math.min(this.cache.length, newMark.index + 1 - this.cacheFirst);
        for (const e of this.cache.splice(0, drop)) this.cacheBytes -= e.data.length + 32;
        this.cacheFirst = newMark.index + 1;
      }
    }
  }

  /**
   * First start of a member of the initial cluster: a snapshot at index 1, term 1 that holds
   * the initial voters (the empty state machine). Every member bootstraps the same way, so
   * nodes added later learn the membership from a snapshot.
   */
  async bootstrap(voters: number[]): Promise<void> {
    assert(this.isEmpty(), 'bootstrap of a non-empty raft log');
    const conf = { voters: [...voters].sort((a, b) => a - b), learners: [] };
    await this.persist({
      snapshot: { index: 1, term: 1, conf },
      hardState: { term: 1, vote: 0, commit: 1 },
      entries: [],
      sync: true,
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new CairnError('EIO', `${this.dir}: the raft log is closed`);
  }
}
