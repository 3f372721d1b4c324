/**
 * The replicated metadata state machine: the namespace (inodes, directory entries, symlinks,
 * hard links, xattrs, versioned file layouts), commit records, write leases with fencing,
 * the diskmap document and the watch log — all in classic-level on disk under
 * <dataDir>/meta, never held in the heap.
 *
 * Raft hands committed entries to apply() in order. One apply() call is one atomic LevelDB
 * batch holding the effects of all its entries plus the applied index, so a crash never
 * applies an entry twice or skips one (see syncApply for when it is fsynced). Entries are deterministic (see ops.ts): two
 * state machines fed the same entries end with byte-identical databases.
 *
 * A failed operation (ENOENT, ECONFLICT, …) is a result, not an exception: it is applied as
 * "nothing changed" on every node and its error goes back to the proposer.
 */
import { ClassicLevel } from 'classic-level';
import { createHash } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, assert, fail, type ErrorCode } from '../common/errors.js';
import { fsyncDir, mkdirDurable, unlinkDurable, pathExists } from '../common/durable.js';
import { logger } from '../common/log.js';
import type { Entry, SnapshotMetadata, StateMachine } from '../raft/types.js';
import { EntryType } from '../raft/types.js';
import { K, hex, prefixEnd } from './keys.js';
import { EXTENTS_MAX, ROOT_INO, cutAt, spliceExtents, splitPath, type EntryRef, type Extent, type Op, type Ref } from './ops.js';
import { decodeEntry, type DecodedEntry } from './entry.js';
import { BASE_VERSION, compareVersions, type ClusterVersionSource } from '../common/version.js';
import { applyLock, conflictOf, releaseOwner, releaseSession, validRange, LOCK_EOF, type HeldLock, type LockRequest } from './lock-table.js';

export type InodeType = 'file' | 'dir' | 'symlink';

export interface Inode {
  ino: number;
  type: InodeType;
  mode: number;
  uid: number;
  gid: number;
  /** Files: bytes. Directories: number of entries. Symlinks: target length. */
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  atimeMs: number;
  nlink: number;
  /** Layout version of a file (0 = never committed); bumped by setattr/xattr on others too. */
  version: number;
  /** Directories: the parent directory. Files: the directory of the latest link (0 = unknown). */
  parent: number;
  /** The name under `parent`. */
  name: string;
  /** Symlink target. */
  target?: string;
  /** Number of extended attributes. */
  xattrs: number;
}

export interface DirEntry {
  name: string;
  ino: number;
  type: InodeType;
}

/** Where a version's content is stored inline (in the metadata, key b:<ino>): its length and SHA-256. */
export interface InlineRef {
  length: number;
  sha256: string;
}

export interface Layout {
  version: number;
  extents: Extent[];
  /** Set when the content is stored inline (then `extents` is empty): bytes [0, length), zeros after. */
  inline?: InlineRef;
}

export type CommitState = 'visible' | 'durable';

export interface CommitRecord {
  ino: number;
  version: number;
  state: CommitState;
  fence: number;
  size: number;
  extents: number;
  revision: number;
  committedAtMs: number;
}

export interface Lease {
  ino: number;
  holder: string;
  token: number;
  /** Leader clock reading after which the lease no longer admits commits. */
  expiresAtMs: number;
  /** When the lease was granted (leader clock): chunks its commits store are no older (GC safe point). */
  grantedAtMs?: number;
  /** Where the holder node serves its peer port (src/peer); absent in leases granted before it existed. */
  addr?: string;
}

/** A version pin: an open handle's version, whose chunks GC keeps (docs/meta.md, "GC safety"). */
export interface Pin {
  ino: number;
  version: number;
  holder: string;
  expiresAtMs: number;
}

/** A node's lock session (one per mount): its locks live while it is renewed (docs/mount.md, "Locks"). */
export interface LockSession {
  session: string;
  /** Leader clock reading after which the session is dead (its locks are dropped by the sweep). */
  expiresAtMs: number;
}

export type EventKind =
  | 'create' | 'mkdir' | 'symlink' | 'link' | 'unlink' | 'rmdir' | 'rename' | 'setattr'
  | 'truncate' | 'xattr' | 'commit' | 'durable' | 'diskmap';

export interface WatchEvent {
  revision: number;
  kind: EventKind;
  /** Path the change happened at ("" when the file has no known path, e.g. an orphan). */
  path: string;
  /** For rename: the new path. */
  newPath?: string;
  ino: number;
  /** File version after the change, diskmap epoch for diskmap events. */
  version: number;
  nowMs: number;
}

export interface DiskmapRecord {
  epoch: number;
  documentJson: string;
}

export interface DiskmapChange {
  epoch: number;
  diffJson: string;
  revision: number;
  nowMs: number;
}

export type ApplyResult =
  | { ok: true; value: Record<string, unknown> }
  | { ok: false; code: ErrorCode; message: string; details?: Record<string, unknown> };

/**
 * apply()'s result for one entry: one ApplyResult per operation of a format-2 entry (in the
 * entry's order), a single ApplyResult for a format-1 entry or for an entry that does not
 * decode at all, null for Raft's own entries.
 */
export type EntryResult = ApplyResult | ApplyResult[] | null;

export interface MetaStateMachineOptions {
  /** Directory under which the database lives (<dataDir>/meta). */
  dataDir: string;
  /** Watch events kept before the oldest are compacted away. Must be equal on every node. */
  maxEvents?: number;
  /**
   * fsync every apply batch. Off by default: the Raft log already holds every committed entry
   * durably, a batch lost in a power cut is lost together with its applied index (so Raft
   * re-applies it), and snapshot() syncs before Raft may compact the log behind it.
   */
  syncApply?: boolean;
}

/** Commit records kept per file (older ones are dropped as new versions land). */
export const COMMIT_RECORDS_KEPT = 16;
/** A lease's holder may be replaced only this long after its expiry (clock steps between leaders). */
export const LEASE_SAFETY_MARGIN_MS = 1_000;
export const DEFAULT_MAX_EVENTS = 100_000;
/** Bytes per snapshot chunk. */
export const SNAPSHOT_CHUNK_BYTES = 1 << 20;
export const READDIR_MAX_LIMIT = 10_000;
const XATTRS_PER_INODE_MAX = 1024;
const PATH_DEPTH_MAX = 2048;
const SNAPSHOT_MAGIC = 'CAIRNMETA1';

type Db = ClassicLevel<string, string>;

/**
 * A pending JSON value: kept as an object until the batch is written, so that a key written by
 * many operations of one apply batch (a directory's inode, by every create in it) is
 * serialized once, not once per operation, and read back without a parse. Stored and handed
 * out as shallow copies, so that a caller mutating what it put or got changes nothing pending
 * (the values are flat records; the one array, a layout's extents, is never mutated in place).
 */
class JsonValue {
  constructor(readonly value: object) {}
}

type Pending = string | JsonValue | null;

/**
 * Reads through pending writes (its own, then its parent's, then the database); writes stay
 * in memory until the whole apply batch is written. A child Tx per operation lets a failed
 * operation leave no trace.
 */
class Tx {
  readonly writes = new Map<string, Pending>();
  /**
   * An apply batch's database reads (root Tx only, `cacheReads`): the database does not change
   * while a batch applies (its writes stay pending until the end), so the operations of one entry
   * that read the same keys — the root, a shared parent directory and its entries — read LevelDB
   * once. Pending writes are looked at first, so a key written in the batch is never read here.
   */
  private readonly readCache: Map<string, string | undefined> | undefined;
  constructor(
    private readonly db: Db,
    private readonly parent?: Tx,
    private readonly snapshot?: ReturnType<Db['snapshot']>,
    cacheReads = false,
  ) {
    this.readCache = cacheReads && parent === undefined ? new Map() : undefined;
  }

  private pending(key: string): Pending | undefined {
    const w = this.writes.get(key);
    if (w !== undefined) return w;
    return this.parent?.pending(key);
  }

  private read(key: string): string | undefined {
    if (this.parent !== undefined) return this.parent.read(key);
    // getSync: a LevelDB read from the block cache takes microseconds; a thread-pool hop costs more.
    if (this.snapshot !== undefined) return this.db.getSync(key, { snapshot: this.snapshot });
    const c = this.readCache;
    if (c === undefined) return this.db.getSync(key);
    if (c.has(key)) return c.get(key);
    const v = this.db.getSync(key);
    c.set(key, v);
    return v;
  }

  async get(key: string): Promise<string | undefined> {
    const w = this.pending(key);
    if (w !== undefined) return w === null ? undefined : w instanceof JsonValue ? JSON.stringify(w.value) : w;
    return this.read(key);
  }
  async getJson<T>(key: string): Promise<T | undefined> {
    const w = this.pending(key);
    if (w === null) return undefined;
    if (w instanceof JsonValue) return { ...w.value } as T;
    const v = w ?? this.read(key);
    return v === undefined ? undefined : (JSON.parse(v) as T);
  }
  put(key: string, value: string): void {
    this.writes.set(key, value);
  }
  putJson(key: string, value: object): void {
    this.writes.set(key, new JsonValue({ ...value }));
  }
  del(key: string): void {
    this.writes.set(key, null);
  }
  /** Move this Tx's writes into its parent (the operation succeeded). */
  commitToParent(): void {
    assert(this.parent !== undefined, 'commitToParent needs a parent');
    for (const [k, v] of this.writes) this.parent.writes.set(k, v);
  }
  private overlay(prefix: string, out: Set<string>): void {
    this.parent?.overlay(prefix, out);
    for (const [k, v] of this.writes) {
      if (!k.startsWith(prefix)) continue;
      if (v === null) out.delete(k);
      else out.add(k);
    }
  }
  /** Keys with a prefix, merging the database with pending writes (small ranges only). */
  async keys(prefix: string): Promise<string[]> {
    const out = new Set<string>();
    for await (const k of this.db.keys({ gte: prefix, lt: prefixEnd(prefix) })) out.add(k);
    this.overlay(prefix, out);
    return [...out].sort();
  }
}

class OpError extends CairnError {}
function opFail(code: ErrorCode, message: string, details?: Record<string, unknown>): never {
  throw new OpError(code, message, details);
}

export class MetaStateMachine implements StateMachine, ClusterVersionSource {
  private db: Db;
  private readonly dbPath: string;
  private readonly maxEvents: number;
  private readonly syncApply: boolean;
  private applied = { index: 0, term: 0 };
  private lastRev = 0;
  private firstRev = 1;
  /** Total bytes of inline content (m:inlineBytes), for the budget metric. */
  private inlineTotal = 0;
  /** The cluster version as applied (m:clusterVersion; BASE_VERSION until the leader first wrote it). */
  private cv = BASE_VERSION;
  private lock: Promise<void> = Promise.resolve();
  private readonly revListeners = new Set<() => void>();
  private readonly log = logger('meta-sm');
  private closed = false;
  /** True while restore() swaps the database: local reads answer EUNAVAIL (clients go elsewhere). */
  private restoring = false;
  /**
   * The last apply batch's LevelDB write. apply() returns its results as soon as the batch is
   * handed to LevelDB (the reply to the proposer need not wait for a write that is not fsynced
   * anyway: the committed Raft entry is the durable record, and it is re-applied after a crash);
   * every local read and the next apply, snapshot, restore or close wait for it first, so no
   * reader on this node ever sees a state older than what apply() reported. A failed write
   * fails every later call (the node then stops, as before).
   */
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly dataDir: string, opts: MetaStateMachineOptions) {
    this.dbPath = join(dataDir, 'meta');
    this.maxEvents = opts.maxEvents ?? DEFAULT_MAX_EVENTS;
    this.syncApply = opts.syncApply ?? false;
    assert(this.maxEvents >= 1, 'maxEvents >= 1');
    this.db = new ClassicLevel<string, string>(this.dbPath, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  }

  /** Open (or create) the database, finishing an interrupted snapshot restore first. */
  static async open(opts: MetaStateMachineOptions): Promise<MetaStateMachine> {
    await mkdirDurable(opts.dataDir);
    await finishRestore(opts.dataDir);
    const sm = new MetaStateMachine(opts.dataDir, opts);
    await sm.openDb();
    return sm;
  }

  private async openDb(): Promise<void> {
    await this.db.open();
    const root = await this.db.get(K.inode(ROOT_INO));
    if (root === undefined) {
      // Initial state, identical on every node: the root directory with times 0.
      const r: Inode = {
        ino: ROOT_INO, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtimeMs: 0, ctimeMs: 0,
        atimeMs: 0, nlink: 2, version: 0, parent: ROOT_INO, name: '', xattrs: 0,
      };
      await this.db.batch(
        [
          { type: 'put', key: K.inode(ROOT_INO), value: JSON.stringify(r) },
          { type: 'put', key: K.nextIno, value: String(ROOT_INO + 1) },
          { type: 'put', key: K.fence, value: '0' },
          { type: 'put', key: K.rev, value: '0' },
          { type: 'put', key: K.firstRev, value: '1' },
          { type: 'put', key: K.applied, value: JSON.stringify({ index: 0, term: 0 }) },
        ],
        { sync: true },
      );
    }
    const applied = await this.db.get(K.applied);
    this.applied = applied === undefined ? { index: 0, term: 0 } : (JSON.parse(applied) as { index: number; term: number });
    this.lastRev = Number((await this.db.get(K.rev)) ?? '0');
    this.firstRev = Number((await this.db.get(K.firstRev)) ?? '1');
    this.inlineTotal = Number((await this.db.get(K.inlineBytes)) ?? '0');
    this.cv = (await this.db.get(K.clusterVersion)) ?? BASE_VERSION;
  }

  /** The cluster version as this node applied it (docs/upgrade.md): gate features with clusterSupports(sm, …). */
  clusterVersion(): string {
    return this.cv;
  }

  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.lock;
    let release!: () => void;
    this.lock = new Promise<void>((r) => (release = r));
    await prev;
    try {
      await this.writing;
      return await fn();
    } finally {
      release();
    }
  }

  // ---------------------------------------------------------------- StateMachine

  async appliedIndex(): Promise<number> {
    return this.applied.index;
  }

  appliedTerm(): number {
    return this.applied.term;
  }

  async apply(entries: Entry[]): Promise<unknown[]> {
    if (entries.length === 0) return [];
    return this.exclusive(async () => {
      this.checkOpen();
      const tx = new Tx(this.db, undefined, undefined, true);
      const results: unknown[] = [];
      let rev = this.lastRev;
      let firstRev = this.firstRev;
      let last = this.applied;
      for (const e of entries) {
        if (e.index <= last.index) {
          // Already applied (the driver re-delivers after a restart): skip, never twice.
          results.push(null);
          continue;
        }
        // Indexes only grow; a gap is legal (entries covered by Raft's bootstrap snapshot).
        last = { index: e.index, term: e.term };
        if (e.type !== EntryType.Normal || e.data.length === 0) {
          results.push(null);
          continue;
        }
        let entry: DecodedEntry;
        try {
          entry = decodeEntry(e.data);
        } catch (err) {
          results.push(errResult(err));
          continue;
        }
        // The operations of one entry run in order, each against a child view so that a
        // failed one leaves no trace; each has its own result.
        const opResults: ApplyResult[] = [];
        for (const op of entry.ops) {
          if (op instanceof CairnError) {
            opResults.push(errResult(op));
            continue;
          }
          const child = new Tx(this.db, tx);
          const ctx = new ApplyCtx(child, entry.nowMs, rev);
          try {
            const value = await ctx.run(op);
            rev = ctx.rev;
            child.commitToParent();
            opResults.push({ ok: true, value });
          } catch (err) {
            if (!(err instanceof CairnError)) throw err;
            opResults.push(errResult(err));
          }
          // Bounded watch log: drop the oldest events beyond maxEvents.
          while (rev - firstRev + 1 > this.maxEvents) {
            tx.del(K.event(firstRev));
            firstRev++;
          }
        }
        // A format-1 entry's proposer expects one result; a format-2 entry's, one per operation.
        results.push(entry.format === 1 ? opResults[0] : opResults);
      }
      tx.put(K.applied, JSON.stringify(last));
      tx.put(K.rev, String(rev));
      tx.put(K.firstRev, String(firstRev));
      const batch = this.db.batch();
      for (const [key, value] of tx.writes) {
        if (value === null) batch.del(key);
        else batch.put(key, value instanceof JsonValue ? JSON.stringify(value.value) : value);
      }
      const ib = tx.writes.get(K.inlineBytes);
      if (typeof ib === 'string') this.inlineTotal = Number(ib);
      const cv = tx.writes.get(K.clusterVersion);
      if (typeof cv === 'string') this.cv = cv;
      const written = batch.write({ sync: this.syncApply });
      written.catch(() => undefined); // observed by whoever awaits this.writing next
      this.writing = written;
      this.applied = last;
      const grew = rev !== this.lastRev;
      this.lastRev = rev;
      this.firstRev = firstRev;
      if (grew) for (const l of [...this.revListeners]) l();
      return results;
    });
  }

  /**
   * The state as a stream. The LevelDB snapshot is taken when the stream is first read, so
   * the stream may hold a later state than `index` (never an earlier one): it carries its own
   * applied index, and restore() accepts any snapshot at or past the one Raft asked for.
   */
  async snapshot(): Promise<{ index: number; term: number; chunks: AsyncIterable<Uint8Array> }> {
    return this.exclusive(async () => {
      this.checkOpen();
      const { index, term } = this.applied;
      // Raft compacts its log up to a snapshot's index: make everything applied durable first
      // (one synced write flushes LevelDB's sequential log, and every batch before it).
      await this.db.put(K.applied, JSON.stringify(this.applied), { sync: true });
      return { index, term, chunks: this.snapshotChunks() };
    });
  }

  private async *snapshotChunks(): AsyncGenerator<Uint8Array> {
    this.checkOpen();
    const snap = this.db.snapshot();
    const hash = createHash('sha256');
    let count = 0;
    let parts: Buffer[] = [Buffer.from(SNAPSHOT_MAGIC)];
    let size = SNAPSHOT_MAGIC.length;
    const flush = (): Buffer => {
      const b = Buffer.concat(parts);
      hash.update(b);
      parts = [];
      size = 0;
      return b;
    };
    try {
      const it = this.db.iterator({ snapshot: snap });
      try {
        for (;;) {
          const batch = await it.nextv(1000);
          if (batch.length === 0) break;
          for (const [k, v] of batch) {
            const kb = Buffer.from(k, 'utf8');
            const vb = Buffer.from(v, 'utf8');
            const head = Buffer.alloc(8);
            head.writeUInt32BE(kb.length, 0);
            head.writeUInt32BE(vb.length, 4);
            parts.push(head, kb, vb);
            size += 8 + kb.length + vb.length;
            count++;
          }
          if (size >= SNAPSHOT_CHUNK_BYTES) yield flush();
        }
      } finally {
        await it.close();
      }
      // Trailer: a zero-length key marks the end, followed by the count and a SHA-256 of all before.
      const body = flush();
      const trailer = Buffer.alloc(8 + 8);
      trailer.writeUInt32BE(0xffffffff, 0);
      trailer.writeUInt32BE(0, 4);
      trailer.writeBigUInt64BE(BigInt(count), 8);
      hash.update(trailer);
      yield Buffer.concat([body, trailer, hash.digest()]);
    } finally {
      await snap.close();
    }
  }

  /**
   * Replace the whole state: write the snapshot into a new database beside the current one,
   * mark it ready durably, then swap directories (finishRestore also completes a swap that a
   * crash interrupted).
   */
  async restore(meta: SnapshotMetadata, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    await this.exclusive(async () => {
      this.checkOpen();
      const newPath = join(this.dataDir, 'meta.new');
      await rm(newPath, { recursive: true, force: true });
      const fresh = new ClassicLevel<string, string>(newPath, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
      await fresh.open();
      try {
        await readSnapshotInto(fresh, chunks);
        const applied = await fresh.get(K.applied);
        const a = applied === undefined ? undefined : (JSON.parse(applied) as { index: number; term: number });
        if (a === undefined || a.index < meta.index) {
          throw new CairnError('ECORRUPT', `snapshot holds applied index ${a?.index}, older than the ${meta.index} Raft sent`);
        }
      } catch (err) {
        await fresh.close();
        await rm(newPath, { recursive: true, force: true });
        throw err;
      }
      await fresh.close();
      this.restoring = true;
      try {
        await this.swapIn(meta.index);
      } finally {
        this.restoring = false;
      }
      this.log.info({ index: meta.index, revision: this.lastRev }, 'restored metadata snapshot');
      for (const l of [...this.revListeners]) l();
    });
  }

  /** Mark the new database ready (durably), then swap it in place of the current one. */
  private async swapIn(index: number): Promise<void> {
    await writeFile(join(this.dataDir, 'RESTORE_READY'), String(index));
    await fsyncDir(this.dataDir);
    await this.db.close();
    await finishRestore(this.dataDir);
    this.db = new ClassicLevel<string, string>(this.dbPath, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    await this.openDb();
  }

  async close(): Promise<void> {
    // A failed last write must not keep the database open (later calls get EUNAVAIL instead).
    this.writing = this.writing.catch(() => undefined);
    await this.exclusive(async () => {
      if (this.closed) return;
      this.closed = true;
      await this.db.close();
    });
    for (const l of [...this.revListeners]) l();
  }

  private checkOpen(): void {
    if (this.closed) fail('EUNAVAIL', 'metadata state machine is closed');
    if (this.restoring) fail('EUNAVAIL', 'this node is installing a metadata snapshot; retry on another node or shortly');
  }

  // ---------------------------------------------------------------- reads (local state)

  /** Wait until the last applied batch is in the database (reads call this first). */
  private async settled(): Promise<void> {
    await this.writing;
  }

  private reader(): ApplyCtx {
    this.checkOpen();
    return new ApplyCtx(new Tx(this.db), 0, this.lastRev);
  }

  /** Revision of the last change applied here. */
  revision(): number {
    return this.lastRev;
  }

  /** Oldest revision still in the watch log. */
  firstRevision(): number {
    return this.firstRev;
  }

  async getattr(ref: Ref): Promise<Inode> {
    await this.settled();
    return this.reader().resolve(ref);
  }

  async pathOf(ino: number): Promise<string> {
    await this.settled();
    const r = this.reader();
    return r.pathOfInode(await r.resolve({ ino }));
  }

  /** Directory listing in name order, starting after `after` (exclusive), at most `limit` entries. */
  /**
   * Directory listing in name order, starting after `after` (exclusive), at most `limit`
   * entries; with `withAttrs` each entry carries its inode's attributes, read from the same
   * database snapshot as the listing (readdirplus).
   */
  async readdir(
    ref: Ref,
    after: string,
    limit: number,
    withAttrs = false,
  ): Promise<{ entries: Array<DirEntry & { attr?: Inode }>; more: boolean; revision: number }> {
    await this.settled();
    this.checkOpen();
    const snap = this.db.snapshot();
    try {
      const r = new ApplyCtx(new Tx(this.db, undefined, snap), 0, this.lastRev);
      const dir = await r.resolve(ref);
      if (dir.type !== 'dir') fail('ENOTDIR', `inode ${dir.ino} is not a directory`);
      const n = Math.max(1, Math.min(limit, READDIR_MAX_LIMIT));
      const prefix = K.direntPrefix(dir.ino);
      const rows = await this.db.iterator({ gt: prefix + after, lt: prefixEnd(prefix), limit: n + 1, snapshot: snap }).all();
      const entries: Array<DirEntry & { attr?: Inode }> = [];
      for (const [k, v] of rows.slice(0, n)) {
        const d = JSON.parse(v) as { ino: number; type: InodeType };
        const e: DirEntry & { attr?: Inode } = { name: k.slice(prefix.length), ino: d.ino, type: d.type };
        if (withAttrs) {
          const a = await r.inode(d.ino);
          if (a !== undefined) e.attr = a;
        }
        entries.push(e);
      }
      // The revision of the same snapshot: list, then watch from revision + 1, and miss nothing.
      const revision = Number((await r.tx.get(K.rev)) ?? '0');
      return { entries, more: rows.length > n, revision };
    } finally {
      await snap.close();
    }
  }

  async readlink(ref: Ref): Promise<string> {
    await this.settled();
    const i = await this.reader().resolve(ref);
    if (i.type !== 'symlink') fail('EINVAL', `inode ${i.ino} is not a symbolic link`);
    return i.target ?? '';
  }

  /**
   * The current layout of a file; with inline content, `data` holds it, checked against its
   * SHA-256 (ECORRUPT, never wrong bytes).
   */
  async layout(ref: Ref): Promise<Layout & { data?: Buffer }> {
    await this.settled();
    const r = this.reader();
    const i = await r.resolve(ref);
    if (i.type !== 'file') fail(i.type === 'dir' ? 'EISDIR' : 'EINVAL', `inode ${i.ino} is not a regular file`);
    const l = (await r.tx.getJson<Layout>(K.layout(i.ino))) ?? { version: i.version, extents: [] };
    if (l.inline === undefined) return l;
    return { ...l, data: checkedInline(i.ino, l.inline, await r.tx.get(K.inline(i.ino))) };
  }

  /** Total bytes of inline content held (what the inline budget counts). */
  inlineBytes(): number {
    return this.inlineTotal;
  }

  /**
   * Scrub of inline content: every inline blob read and checked against its layout's length and
   * SHA-256. Returns how many were checked and the inodes whose content does not match.
   */
  async scrubInline(): Promise<{ checked: number; bytes: number; bad: number[] }> {
    await this.settled();
    this.checkOpen();
    const snap = this.db.snapshot();
    const out = { checked: 0, bytes: 0, bad: [] as number[] };
    try {
      for await (const [k, v] of this.db.iterator({ gte: 'f:', lt: prefixEnd('f:'), snapshot: snap })) {
        const l = JSON.parse(v) as Layout;
        if (l.inline === undefined) continue;
        const ino = parseInt(k.slice(2), 16);
        out.checked++;
        out.bytes += l.inline.length;
        try {
          checkedInline(ino, l.inline, await this.db.get(K.inline(ino), { snapshot: snap }));
        } catch {
          out.bad.push(ino);
        }
      }
    } finally {
      await snap.close();
    }
    return out;
  }

  /**
   * Current layouts of files in inode order after `afterIno`, at most `limit`: what the chunk
   * garbage collector must keep (older versions are not listed; GC keeps a grace period).
   */
  async scanLayouts(afterIno: number, limit: number): Promise<Array<{ ino: number } & Layout>> {
    await this.settled();
    this.checkOpen();
    const n = Math.max(1, Math.min(limit, READDIR_MAX_LIMIT));
    const rows = await this.db.iterator({ gt: K.layout(afterIno), lt: prefixEnd('f:'), limit: n }).all();
    return rows.map(([k, v]) => ({ ino: parseInt(k.slice(2), 16), ...(JSON.parse(v) as Layout) }));
  }

  /** Layouts of superseded or removed versions that pins still hold (GC keeps their chunks). */
  async retainedLayouts(): Promise<Array<{ ino: number } & Layout>> {
    await this.settled();
    this.checkOpen();
    const rows = await this.db.iterator({ gte: K.retainedPrefix, lt: prefixEnd(K.retainedPrefix), limit: 1_000_000 }).all();
    return rows.map(([k, v]) => ({ ino: parseInt(k.slice(2, 18), 16), ...(JSON.parse(v) as Layout) }));
  }

  /**
   * GC's safe point: the grant time of the oldest live write lease (a commit in flight stores its
   * chunks under a lease, so they are no older), or undefined when no lease is live.
   */
  async gcSafePointMs(nowMs: number): Promise<number | undefined> {
    await this.settled();
    let oldest: number | undefined;
    for await (const v of this.db.values({ gte: K.leasePrefix, lt: prefixEnd(K.leasePrefix) })) {
      const l = JSON.parse(v) as Lease;
      if (nowMs >= l.expiresAtMs + LEASE_SAFETY_MARGIN_MS) continue;
      const g = l.grantedAtMs ?? 0;
      oldest = oldest === undefined ? g : Math.min(oldest, g);
    }
    return oldest;
  }

  /** Pins past their expiry (plus the margin) at nowMs: for the leader's sweep. */
  async expiredPins(nowMs: number, limit: number): Promise<Array<{ ino: number; holder: string }>> {
    await this.settled();
    const out: Array<{ ino: number; holder: string }> = [];
    for await (const v of this.db.values({ gte: K.pinsPrefix, lt: prefixEnd(K.pinsPrefix) })) {
      const p = JSON.parse(v) as Pin;
      if (nowMs >= p.expiresAtMs + LEASE_SAFETY_MARGIN_MS) out.push({ ino: p.ino, holder: p.holder });
      if (out.length >= limit) break;
    }
    return out;
  }

  async getxattr(ref: Ref, name: string): Promise<Buffer> {
    await this.settled();
    const r = this.reader();
    const i = await r.resolve(ref);
    const v = await r.tx.get(K.xattr(i.ino, name));
    if (v === undefined) fail('ENOENT', `inode ${i.ino} has no extended attribute ${JSON.stringify(name)}`);
    return Buffer.from(v, 'base64');
  }

  async listxattr(ref: Ref): Promise<string[]> {
    await this.settled();
    const r = this.reader();
    const i = await r.resolve(ref);
    const prefix = K.xattrPrefix(i.ino);
    return (await r.tx.keys(prefix)).map((k) => k.slice(prefix.length));
  }

  async commitStatus(ino: number, version: number): Promise<CommitRecord> {
    await this.settled();
    const r = this.reader();
    const i = await r.tx.getJson<Inode>(K.inode(ino));
    if (i === undefined) fail('ESTALE', `inode ${ino} does not exist (removed?)`);
    const c = await r.tx.getJson<CommitRecord>(K.commit(ino, version));
    if (c === undefined) {
      if (version > 0 && version <= i.version) {
        // Older than the records kept: superseded by a later version, hence visible.
        fail('ENOENT', `commit record of inode ${ino} version ${version} was dropped (current version ${i.version})`, {
          currentVersion: i.version,
        });
      }
      fail('ENOENT', `inode ${ino} has no commit of version ${version} (current version ${i.version})`, {
        currentVersion: i.version,
      });
    }
    return c;
  }

  async lease(ino: number): Promise<Lease | undefined> {
    await this.settled();
    return this.reader().tx.getJson<Lease>(K.lease(ino));
  }

  /** Leases whose expiry (plus the safety margin) has passed at nowMs: for the leader's sweep. */
  async expiredLeases(nowMs: number, limit: number): Promise<number[]> {
    await this.settled();
    const out: number[] = [];
    for await (const v of this.db.values({ gte: K.leasePrefix, lt: prefixEnd(K.leasePrefix) })) {
      const l = JSON.parse(v) as Lease;
      if (nowMs >= l.expiresAtMs + LEASE_SAFETY_MARGIN_MS) out.push(l.ino);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** The lock table of an inode (empty when nothing is locked). */
  async locks(ino: number): Promise<HeldLock[]> {
    await this.settled();
    return (await this.reader().tx.getJson<{ locks: HeldLock[] }>(K.locks(ino)))?.locks ?? [];
  }

  /** Lock sessions whose expiry (plus the safety margin) has passed at nowMs: for the leader's sweep. */
  async expiredLockSessions(nowMs: number, limit: number): Promise<string[]> {
    await this.settled();
    const out: string[] = [];
    for await (const v of this.db.values({ gte: K.lockSessionPrefix, lt: prefixEnd(K.lockSessionPrefix) })) {
      const l = JSON.parse(v) as LockSession;
      if (nowMs >= l.expiresAtMs + LEASE_SAFETY_MARGIN_MS) out.push(l.session);
      if (out.length >= limit) break;
    }
    return out;
  }

  async diskmap(): Promise<DiskmapRecord> {
    await this.settled();
    return (await this.reader().tx.getJson<DiskmapRecord>(K.diskmap)) ?? { epoch: 0, documentJson: '' };
  }

  /** Every node registry record (opaque JSON, validated by its reader), in node id order. */
  async nodeRecords(): Promise<Array<{ nodeId: number; recordJson: string }>> {
    await this.settled();
    this.checkOpen();
    const rows = await this.db.iterator({ gt: K.nodePrefix, lt: prefixEnd(K.nodePrefix), limit: 65_536 }).all();
    return rows.map(([k, v]) => ({ nodeId: parseInt(k.slice(K.nodePrefix.length), 16), recordJson: v }));
  }

  async diskmapChange(epoch: number): Promise<DiskmapChange | undefined> {
    await this.settled();
    return this.reader().tx.getJson<DiskmapChange>(K.diskmapHistory(epoch));
  }

  /** Watch events with revision >= fromRev, in order, at most `limit`. ECOMPACTED if fromRev is gone. */
  async events(fromRev: number, limit: number): Promise<WatchEvent[]> {
    await this.settled();
    this.checkOpen();
    const from = Math.max(1, fromRev);
    if (from < this.firstRev) {
      fail('ECOMPACTED', `revision ${from} has been compacted; the oldest revision kept is ${this.firstRev}. ` +
        'Re-read the current state and watch from the revision it reports.', { firstRevision: this.firstRev, revision: this.lastRev });
    }
    const it = this.db.values({ gte: K.event(from), lt: prefixEnd(K.eventPrefix), limit });
    return (await it.all()).map((v) => JSON.parse(v) as WatchEvent);
  }

  /** Resolve when the revision grows past `rev`, the state machine closes, or the signal aborts. */
  waitForRevision(rev: number, signal?: AbortSignal): Promise<void> {
    if (this.lastRev > rev || this.closed || signal?.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        if (this.lastRev > rev || this.closed || signal?.aborted) {
          this.revListeners.delete(done);
          signal?.removeEventListener('abort', done);
          resolve();
        }
      };
      this.revListeners.add(done);
      signal?.addEventListener('abort', done);
    });
  }

  /** Every key and value, for tests that compare two state machines. */
  async dump(): Promise<Array<[string, string]>> {
    await this.settled();
    return this.db.iterator().all();
  }
}

/** Inline content checked against its length and SHA-256: ECORRUPT, never wrong bytes. */
function checkedInline(ino: number, ref: InlineRef, b64: string | undefined): Buffer {
  const data = b64 === undefined ? undefined : Buffer.from(b64, 'base64');
  if (data === undefined || data.length !== ref.length || createHash('sha256').update(data).digest('hex') !== ref.sha256) {
    fail('ECORRUPT', `inline content of inode ${ino} does not match its checksum (${data === undefined ? 'missing' : `${data.length} bytes`}); restore it from another node's snapshot`);
  }
  return data;
}

function errResult(err: unknown): ApplyResult {
  if (err instanceof CairnError) {
    return { ok: false, code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) };
  }
  return { ok: false, code: 'EIO', message: String(err) };
}

/** Complete a restore whose new database was marked ready (after a crash, or right now). */
async function finishRestore(dataDir: string): Promise<void> {
  const marker = join(dataDir, 'RESTORE_READY');
  const cur = join(dataDir, 'meta');
  const next = join(dataDir, 'meta.new');
  const old = join(dataDir, 'meta.old');
  if (!(await pathExists(marker))) {
    // A restore that never reached its marker: the half-written copy is garbage.
    await rm(next, { recursive: true, force: true });
    return;
  }
  if (await pathExists(next)) {
    await rm(old, { recursive: true, force: true });
    if (await pathExists(cur)) await rename(cur, old);
    await rename(next, cur);
    await fsyncDir(dataDir);
  }
  await unlinkDurable(marker);
  await rm(old, { recursive: true, force: true });
}


async function readSnapshotInto(db: Db, chunks: AsyncIterable<Uint8Array>): Promise<void> {
  const hash = createHash('sha256');
  let buf: Buffer = Buffer.alloc(0);
  let sawMagic = false;
  let count = 0;
  let batch: Array<{ type: 'put'; key: string; value: string }> = [];
  let done = false;
  const bad = (why: string): never => fail('ECORRUPT', `metadata snapshot is damaged: ${why}`);
  for await (const chunk of chunks) {
    if (done) bad('data after the trailer');
    buf = buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([buf, chunk]);
    let pos = 0;
    if (!sawMagic) {
      if (buf.length < SNAPSHOT_MAGIC.length) continue;
      if (buf.subarray(0, SNAPSHOT_MAGIC.length).toString() !== SNAPSHOT_MAGIC) bad('wrong magic');
      pos = SNAPSHOT_MAGIC.length;
      sawMagic = true;
    }
    while (buf.length - pos >= 8) {
      const kl = buf.readUInt32BE(pos);
      const vl = buf.readUInt32BE(pos + 4);
      if (kl === 0xffffffff) {
        if (buf.length - pos < 16 + 32) break;
        hash.update(buf.subarray(0, pos + 16));
        const n = Number(buf.readBigUInt64BE(pos + 8));
        const digest = buf.subarray(pos + 16, pos + 48);
        if (n !== count) bad(`${count} records, trailer says ${n}`);
        if (!hash.digest().equals(digest)) bad('checksum mismatch');
        if (buf.length !== pos + 48) bad('data after the trailer');
        done = true;
        pos = buf.length;
        break;
      }
      if (kl > 1 << 20 || vl > 64 << 20) bad('record too large');
      if (buf.length - pos < 8 + kl + vl) break;
      const key = buf.toString('utf8', pos + 8, pos + 8 + kl);
      const value = buf.toString('utf8', pos + 8 + kl, pos + 8 + kl + vl);
      batch.push({ type: 'put', key, value });
      count++;
      pos += 8 + kl + vl;
    }
    if (!done) hash.update(buf.subarray(0, pos));
    buf = buf.subarray(pos);
    if (batch.length >= 1000) {
      await db.batch(batch);
      batch = [];
    }
  }
  if (!done) bad('ended before its trailer');
  if (batch.length > 0) await db.batch(batch);
  // One synced write makes everything before it durable (LevelDB's log is sequential).
  await db.batch([{ type: 'put', key: 'm:restored', value: '1' }, { type: 'del', key: 'm:restored' }], { sync: true });
}

// ---------------------------------------------------------------- applying one operation

class ApplyCtx {
  constructor(readonly tx: Tx, readonly nowMs: number, public rev: number) {}

  async inode(ino: number): Promise<Inode | undefined> {
    return this.tx.getJson<Inode>(K.inode(ino));
  }

  async mustInode(ino: number): Promise<Inode> {
    const i = await this.inode(ino);
    if (i === undefined) opFail('ESTALE', `inode ${ino} does not exist (it was removed)`);
    return i;
  }

  putInode(i: Inode): void {
    this.tx.putJson(K.inode(i.ino), i);
  }

  async lookup(dir: number, name: string): Promise<{ ino: number; type: InodeType } | undefined> {
    return this.tx.getJson(K.dirent(dir, name));
  }

  /** Resolve a reference to an inode (symlinks are not followed). */
  async resolve(ref: Ref): Promise<Inode> {
    if ('ino' in ref) return this.mustInode(ref.ino);
    if ('parent' in ref) {
      const dir = await this.mustInode(ref.parent);
      if (dir.type !== 'dir') opFail('ENOTDIR', `inode ${ref.parent} is not a directory`);
      const d = await this.lookup(dir.ino, ref.name);
      if (d === undefined) opFail('ENOENT', `no entry ${JSON.stringify(ref.name)} in directory ${ref.parent}`);
      return this.mustInode(d.ino);
    }
    let cur = await this.mustInode(ROOT_INO);
    const parts = splitPath(ref.path);
    let walked = '';
    for (const p of parts) {
      if (cur.type !== 'dir') opFail('ENOTDIR', `${walked || '/'} is not a directory`);
      walked += `/${p}`;
      const d = await this.lookup(cur.ino, p);
      if (d === undefined) opFail('ENOENT', `${walked}: no such file or directory`);
      cur = await this.mustInode(d.ino);
    }
    return cur;
  }

  /** Resolve the directory and name an entry reference designates (the entry may not exist). */
  async resolveEntry(ref: EntryRef): Promise<{ dir: Inode; name: string }> {
    if ('parent' in ref) {
      const dir = await this.mustInode(ref.parent);
      if (dir.type !== 'dir') opFail('ENOTDIR', `inode ${ref.parent} is not a directory`);
      return { dir, name: ref.name };
    }
    const parts = splitPath(ref.path);
    const name = parts.pop();
    assert(name !== undefined, 'entry path has a name');
    const dir = await this.resolve({ path: `/${parts.join('/')}` });
    if (dir.type !== 'dir') opFail('ENOTDIR', `/${parts.join('/')} is not a directory`);
    return { dir, name };
  }

  /** Path of an inode through its parent chain ("" if unknown). */
  async pathOfInode(i: Inode): Promise<string> {
    if (i.ino === ROOT_INO) return '/';
    if (i.parent === 0) return '';
    const names: string[] = [i.name];
    let cur = i.parent;
    for (let depth = 0; cur !== ROOT_INO; depth++) {
      if (depth > PATH_DEPTH_MAX) return '';
      const p = await this.inode(cur);
      if (p === undefined) return '';
      names.push(p.name);
      cur = p.parent;
    }
    return `/${names.reverse().join('/')}`;
  }

  async childPath(dir: Inode, name: string): Promise<string> {
    const p = await this.pathOfInode(dir);
    return p === '/' ? `/${name}` : p === '' ? '' : `${p}/${name}`;
  }

  emit(kind: EventKind, path: string, ino: number, version: number, newPath?: string): void {
    this.rev++;
    const ev: WatchEvent = { revision: this.rev, kind, path, ino, version, nowMs: this.nowMs };
    if (newPath !== undefined) ev.newPath = newPath;
    this.tx.putJson(K.event(this.rev), ev);
  }

  async allocIno(): Promise<number> {
    const n = Number((await this.tx.get(K.nextIno)) ?? '2');
    this.tx.put(K.nextIno, String(n + 1));
    return n;
  }

  touchDir(dir: Inode, entriesDelta: number, nlinkDelta: number): void {
    dir.size += entriesDelta;
    dir.nlink += nlinkDelta;
    dir.mtimeMs = this.nowMs;
    dir.ctimeMs = this.nowMs;
    this.putInode(dir);
  }

  async liveLease(ino: number): Promise<Lease | undefined> {
    const l = await this.tx.getJson<Lease>(K.lease(ino));
    return l !== undefined && this.nowMs < l.expiresAtMs ? l : undefined;
  }

  /** Remove an inode and everything hanging off it. */
  async deleteInode(i: Inode): Promise<void> {
    if (i.type === 'file') {
      await this.retainIfPinned(i.ino, i.version);
      await this.setInline(i.ino, undefined);
    }
    this.tx.del(K.inode(i.ino));
    this.tx.del(K.layout(i.ino));
    this.tx.del(K.lease(i.ino));
    this.tx.del(K.orphan(i.ino));
    await this.putLocks(i.ino, []);
    if (i.xattrs > 0) for (const k of await this.tx.keys(K.xattrPrefix(i.ino))) this.tx.del(k);
    if (i.type === 'file' && i.version > 0) {
      for (let v = Math.max(1, i.version - COMMIT_RECORDS_KEPT + 1); v <= i.version; v++) this.tx.del(K.commit(i.ino, v));
    }
  }

  /** Drop one link of a non-directory; the inode goes when its last link goes and no lease holds it open. */
  async dropLink(ino: number, fromDir: number, name: string): Promise<void> {
    const i = await this.mustInode(ino);
    i.nlink -= 1;
    i.ctimeMs = this.nowMs;
    if (i.parent === fromDir && i.name === name) {
      i.parent = 0;
      i.name = '';
    }
    if (i.nlink > 0) {
      this.putInode(i);
      return;
    }
    if (await this.liveLease(ino)) {
      this.putInode(i);
      this.tx.put(K.orphan(ino), '1');
      return;
    }
    await this.deleteInode(i);
  }

  newInode(ino: number, type: InodeType, dir: Inode, name: string, mode: number, uid: number, gid: number): Inode {
    return {
      ino, type, mode, uid, gid, size: 0, mtimeMs: this.nowMs, ctimeMs: this.nowMs, atimeMs: this.nowMs,
      nlink: type === 'dir' ? 2 : 1, version: 0, parent: dir.ino, name, xattrs: 0,
    };
  }

  async run(op: Op): Promise<Record<string, unknown>> {
    switch (op.op) {
      case 'mkdir':
      case 'create':
      case 'symlink': {
        const { dir, name } = await this.resolveEntry(op.at);
        const existing = await this.lookup(dir.ino, name);
        const path = await this.childPath(dir, name);
        if (existing !== undefined) {
          if (op.op === 'create' && !op.exclusive) {
            const i = await this.mustInode(existing.ino);
            if (i.type === 'dir') opFail('EISDIR', `${path || name} is a directory`);
            return { attr: i, created: false };
          }
          opFail('EEXIST', `${path || name} already exists`);
        }
        const ino = await this.allocIno();
        const type: InodeType = op.op === 'mkdir' ? 'dir' : op.op === 'create' ? 'file' : 'symlink';
        const mode = op.op === 'symlink' ? 0o777 : op.mode;
        const i = this.newInode(ino, type, dir, name, mode, op.uid, op.gid);
        if (op.op === 'symlink') {
          i.target = op.target;
          i.size = Buffer.byteLength(op.target);
        }
        this.putInode(i);
        this.tx.putJson(K.dirent(dir.ino, name), { ino, type });
        this.touchDir(dir, 1, type === 'dir' ? 1 : 0);
        this.emit(op.op, path, ino, 0);
        if (op.op === 'create' && op.lease !== undefined) {
          // A new inode has no lease yet: grant it as leaseAcquire would.
          return { attr: i, created: true, lease: await this.grantLease(ino, op.lease.holder, op.lease.ttlMs, op.lease.addr), ttlMs: op.lease.ttlMs };
        }
        return { attr: i, created: true };
      }
      case 'link': {
        const i = await this.resolve(op.node);
        if (i.type === 'dir') opFail('EPERM', `inode ${i.ino} is a directory; directories cannot be hard-linked`);
        if (i.nlink === 0) opFail('ENOENT', `inode ${i.ino} has been unlinked`);
        const { dir, name } = await this.resolveEntry(op.at);
        const path = await this.childPath(dir, name);
        if ((await this.lookup(dir.ino, name)) !== undefined) opFail('EEXIST', `${path || name} already exists`);
        i.nlink += 1;
        i.ctimeMs = this.nowMs;
        i.parent = dir.ino;
        i.name = name;
        this.putInode(i);
        this.tx.putJson(K.dirent(dir.ino, name), { ino: i.ino, type: i.type });
        this.touchDir(dir, 1, 0);
        this.emit('link', path, i.ino, i.version);
        return { attr: i };
      }
      case 'unlink':
      case 'rmdir': {
        const { dir, name } = await this.resolveEntry(op.at);
        const path = await this.childPath(dir, name);
        const d = await this.lookup(dir.ino, name);
        if (d === undefined) opFail('ENOENT', `${path || name}: no such file or directory`);
        if (op.op === 'unlink') {
          if (d.type === 'dir') opFail('EISDIR', `${path || name} is a directory (use rmdir)`);
          this.tx.del(K.dirent(dir.ino, name));
          this.touchDir(dir, -1, 0);
          await this.dropLink(d.ino, dir.ino, name);
          this.emit('unlink', path, d.ino, 0);
        } else {
          if (d.type !== 'dir') opFail('ENOTDIR', `${path || name} is not a directory`);
          const victim = await this.mustInode(d.ino);
          if (victim.size > 0) opFail('ENOTEMPTY', `${path || name} is not empty (${victim.size} entries)`);
          this.tx.del(K.dirent(dir.ino, name));
          this.touchDir(dir, -1, -1);
          await this.deleteInode(victim);
          this.emit('rmdir', path, d.ino, 0);
        }
        return {};
      }
      case 'rename':
        return this.rename(op);
      case 'setattr': {
        const i = await this.resolve(op.node);
        if (op.mode !== undefined) i.mode = op.mode;
        if (op.uid !== undefined) i.uid = op.uid;
        if (op.gid !== undefined) i.gid = op.gid;
        if (op.mtimeMs !== undefined) i.mtimeMs = op.mtimeMs;
        if (op.atimeMs !== undefined) i.atimeMs = op.atimeMs;
        i.ctimeMs = this.nowMs;
        this.putInode(i);
        this.emit('setattr', await this.pathOfInode(i), i.ino, i.version);
        return { attr: i };
      }
      case 'truncate': {
        const i = await this.resolve(op.node);
        if (i.type !== 'file') opFail(i.type === 'dir' ? 'EISDIR' : 'EINVAL', `inode ${i.ino} is not a regular file`);
        await this.checkFence(i.ino, op.fence, true);
        if (i.version !== op.expectedVersion) {
          opFail('ECONFLICT', `inode ${i.ino} is at version ${i.version}, not ${op.expectedVersion}`, { currentVersion: i.version });
        }
        const layout = (await this.tx.getJson<Layout>(K.layout(i.ino))) ?? { version: i.version, extents: [] };
        // A cut extent becomes a slice of its chunk (readers fetch and check the whole chunk).
        const extents = layout.extents.flatMap((e) => cutAt(e, op.size));
        // Inline content is cut with the file (never grown: the bytes past it read as zeros).
        const data = layout.inline === undefined ? undefined : checkedInline(i.ino, layout.inline, await this.tx.get(K.inline(i.ino))).subarray(0, op.size);
        return this.installVersion(i, op.fence, op.size, extents, this.nowMs, 'durable', 'truncate', data);
      }
      case 'setxattr': {
        const i = await this.resolve(op.node);
        const value = Buffer.from(op.valueB64, 'base64');
        if (value.toString('base64') !== op.valueB64) opFail('EINVAL', 'xattr value is not canonical base64');
        const key = K.xattr(i.ino, op.name);
        const had = (await this.tx.get(key)) !== undefined;
        if (op.flag === 'create' && had) opFail('EEXIST', `extended attribute ${op.name} exists`);
        if (op.flag === 'replace' && !had) opFail('ENOENT', `no extended attribute ${op.name}`);
        if (!had && i.xattrs >= XATTRS_PER_INODE_MAX) opFail('ENOSPC', `inode ${i.ino} has ${i.xattrs} extended attributes (the limit)`);
        this.tx.put(key, op.valueB64);
        if (!had) i.xattrs += 1;
        i.ctimeMs = this.nowMs;
        this.putInode(i);
        this.emit('xattr', await this.pathOfInode(i), i.ino, i.version);
        return {};
      }
      case 'removexattr': {
        const i = await this.resolve(op.node);
        const key = K.xattr(i.ino, op.name);
        if ((await this.tx.get(key)) === undefined) opFail('ENOENT', `no extended attribute ${op.name}`);
        this.tx.del(key);
        i.xattrs -= 1;
        i.ctimeMs = this.nowMs;
        this.putInode(i);
        this.emit('xattr', await this.pathOfInode(i), i.ino, i.version);
        return {};
      }
      case 'commit': {
        const i = await this.mustInode(op.ino);
        if (i.type !== 'file') opFail(i.type === 'dir' ? 'EISDIR' : 'EINVAL', `inode ${i.ino} is not a regular file`);
        await this.checkFence(i.ino, op.fence, false);
        if (i.version !== op.expectedVersion) {
          opFail('ECONFLICT', `inode ${i.ino} is at version ${i.version}, not ${op.expectedVersion}: another commit won`, {
            currentVersion: i.version,
          });
        }
        let extents = op.extents;
        if (op.spliceFrom !== undefined || op.spliceTo !== undefined) {
          if (op.spliceFrom === undefined || op.spliceTo === undefined) opFail('EINVAL', 'a delta commit needs spliceFrom and spliceTo');
          if (op.inlineB64 !== undefined) opFail('EINVAL', 'a commit with inline content is not a delta');
          const cur = (await this.tx.getJson<Layout>(K.layout(i.ino))) ?? { version: i.version, extents: [] };
          if (cur.inline !== undefined) opFail('EINVAL', `inode ${i.ino} is stored inline; commit its whole layout`);
          try {
            extents = spliceExtents(cur.extents, op.spliceFrom, op.spliceTo, op.size, op.extents);
          } catch (err) {
            opFail('EINVAL', (err as Error).message);
          }
        }
        let end = 0;
        for (const e of extents) {
          if (e.offset < end) opFail('EINVAL', `extents overlap or are out of order at offset ${e.offset}`);
          end = e.offset + e.length;
          if (end > op.size) opFail('EINVAL', `extent at ${e.offset} ends at ${end}, past the file size ${op.size}`);
        }
        if (op.inlineB64 !== undefined) {
          // Inline content: the whole version lives in the metadata, durable once this entry is.
          const data = Buffer.from(op.inlineB64, 'base64');
          if (op.extents.length > 0) opFail('EINVAL', 'a commit with inline content has no extents');
          if (data.length > op.size) opFail('EINVAL', `inline content of ${data.length} bytes is longer than the file size ${op.size}`);
          const before = await this.inlineTotal();
          const r = await this.installVersion(i, op.fence, op.size, [], op.mtimeMs ?? this.nowMs, 'durable', 'commit', data, false, op.inlineB64);
          await this.checkBudget(before, op.inlineBudget);
          return r;
        }
        if (extents.length > EXTENTS_MAX) opFail('EINVAL', `the new layout has ${extents.length} extents, more than ${EXTENTS_MAX}`);
        return this.installVersion(i, op.fence, op.size, extents, op.mtimeMs ?? this.nowMs, op.durable === true ? 'durable' : 'visible', 'commit');
      }
      case 'putFile': {
        const data = Buffer.from(op.dataB64, 'base64');
        const before = await this.inlineTotal();
        const { dir, name } = op.mkdirs ? await this.resolveEntryMaking(op.at, op.uid, op.gid) : await this.resolveEntry(op.at);
        const path = await this.childPath(dir, name);
        const existing = await this.lookup(dir.ino, name);
        if (existing !== undefined && existing.type !== 'file') {
          opFail(existing.type === 'dir' ? 'EISDIR' : 'EINVAL', `${path || name} exists and is not a regular file`);
        }
        const ino = await this.allocIno();
        const i = this.newInode(ino, 'file', dir, name, op.mode, op.uid, op.gid);
        if (existing !== undefined) {
          // As a rename over it: the old file loses this link (kept as an orphan while leased).
          this.touchDir(dir, -1, 0);
          await this.dropLink(existing.ino, dir.ino, name);
          this.emit('unlink', path, existing.ino, 0);
        }
        this.putInode(i);
        this.tx.putJson(K.dirent(dir.ino, name), { ino, type: 'file' });
        this.touchDir(dir, 1, 0);
        this.emit('create', path, ino, 0);
        const r = await this.installVersion(i, 0, data.length, [], op.mtimeMs ?? this.nowMs, 'durable', 'commit', data, true, op.dataB64);
        await this.checkBudget(before, op.inlineBudget);
        return r;
      }
      case 'markDurable': {
        const i = await this.mustInode(op.ino);
        const key = K.commit(op.ino, op.version);
        const c = await this.tx.getJson<CommitRecord>(key);
        if (c === undefined) opFail('ENOENT', `inode ${op.ino} has no commit record of version ${op.version}`);
        if (c.state !== 'durable') {
          c.state = 'durable';
          this.tx.putJson(key, c);
          this.emit('durable', await this.pathOfInode(i), i.ino, op.version);
        }
        return { record: c };
      }
      case 'pin': {
        const i = await this.mustInode(op.ino);
        const key = K.pin(op.ino, op.holder);
        const cur = await this.tx.getJson<Pin>(key);
        if (cur?.version !== op.version && i.version !== op.version) {
          opFail('ECONFLICT', `inode ${op.ino} is at version ${i.version}, not ${op.version}; open it again`, { currentVersion: i.version });
        }
        if (cur !== undefined && cur.version !== op.version) await this.endPin(cur);
        const pin: Pin = { ino: op.ino, version: op.version, holder: op.holder, expiresAtMs: this.nowMs + op.ttlMs };
        this.tx.putJson(key, pin);
        return { pin };
      }
      case 'unpin': {
        const cur = await this.tx.getJson<Pin>(K.pin(op.ino, op.holder));
        if (cur !== undefined) await this.endPin(cur);
        return { unpinned: cur !== undefined };
      }
      case 'pinExpire': {
        let n = 0;
        for (const p of op.pins) {
          const cur = await this.tx.getJson<Pin>(K.pin(p.ino, p.holder));
          if (cur === undefined || this.nowMs < cur.expiresAtMs + LEASE_SAFETY_MARGIN_MS) continue;
          await this.endPin(cur);
          n++;
        }
        return { expired: n };
      }
      case 'leaseAcquire': {
        const i = await this.mustInode(op.ino);
        if (i.type !== 'file') opFail(i.type === 'dir' ? 'EISDIR' : 'EINVAL', `inode ${i.ino} is not a regular file`);
        const cur = await this.tx.getJson<Lease>(K.lease(op.ino));
        if (cur !== undefined && this.nowMs < cur.expiresAtMs + LEASE_SAFETY_MARGIN_MS) {
          if (cur.holder === op.holder && this.nowMs < cur.expiresAtMs) {
            // A retried acquire by the same holder: extend, keep the token.
            cur.expiresAtMs = this.nowMs + op.ttlMs;
            if (op.addr !== undefined) cur.addr = op.addr;
            this.tx.putJson(K.lease(op.ino), cur);
            return { lease: cur, ttlMs: op.ttlMs };
          }
          opFail('EBUSY', `inode ${op.ino} is leased to ${cur.holder}${cur.addr !== undefined ? ` at ${cur.addr}` : ''} (token ${cur.token}); retry after it expires or is released`, {
            holder: cur.holder,
            ...(cur.addr !== undefined ? { addr: cur.addr, token: cur.token } : {}),
            retryAfterMs: cur.expiresAtMs + LEASE_SAFETY_MARGIN_MS - this.nowMs,
          });
        }
        return { lease: await this.grantLease(op.ino, op.holder, op.ttlMs, op.addr), ttlMs: op.ttlMs };
      }
      case 'leaseRenew': {
        const cur = await this.tx.getJson<Lease>(K.lease(op.ino));
        if (cur === undefined || cur.token !== op.token || cur.holder !== op.holder) {
          opFail('EFENCED', `lease token ${op.token} on inode ${op.ino} is no longer valid; acquire a new lease`);
        }
        if (this.nowMs >= cur.expiresAtMs) opFail('EFENCED', `lease token ${op.token} on inode ${op.ino} expired; acquire a new lease`);
        cur.expiresAtMs = this.nowMs + op.ttlMs;
        this.tx.putJson(K.lease(op.ino), cur);
        return { lease: cur, ttlMs: op.ttlMs };
      }
      case 'leaseRelease': {
        const cur = await this.tx.getJson<Lease>(K.lease(op.ino));
        if (cur === undefined || cur.token !== op.token) return { released: false };
        await this.endLease(cur);
        return { released: true };
      }
      case 'leaseExpire': {
        let n = 0;
        for (const ino of op.inos) {
          const cur = await this.tx.getJson<Lease>(K.lease(ino));
          if (cur === undefined || this.nowMs < cur.expiresAtMs + LEASE_SAFETY_MARGIN_MS) continue;
          await this.endLease(cur);
          n++;
        }
        return { expired: n };
      }
      case 'diskmapPropose': {
        const cur = (await this.tx.getJson<DiskmapRecord>(K.diskmap)) ?? { epoch: 0, documentJson: '' };
        if (cur.epoch !== op.expectedEpoch) {
          opFail('ECONFLICT', `the diskmap is at epoch ${cur.epoch}, not ${op.expectedEpoch}; re-read it and plan again`, {
            currentEpoch: cur.epoch,
          });
        }
        const epoch = op.expectedEpoch + 1;
        let doc: unknown;
        try {
          doc = JSON.parse(op.documentJson);
        } catch {
          opFail('EINVAL', 'diskmap document is not JSON');
        }
        if (typeof doc !== 'object' || doc === null || (doc as { epoch?: unknown }).epoch !== epoch) {
          opFail('EINVAL', `diskmap document must be an object with epoch ${epoch}`);
        }
        this.tx.putJson(K.diskmap, { epoch, documentJson: op.documentJson } satisfies DiskmapRecord);
        this.emit('diskmap', '', 0, epoch);
        this.tx.putJson(K.diskmapHistory(epoch), { epoch, diffJson: op.diffJson, revision: this.rev, nowMs: this.nowMs } satisfies DiskmapChange);
        return { epoch, revision: this.rev };
      }
      case 'nodeRegister': {
        this.tx.put(K.node(op.nodeId), op.recordJson);
        return {};
      }
      case 'clusterVersion': {
        // Only up: a late or repeated proposal of a lower version changes nothing.
        const cur = (await this.tx.get(K.clusterVersion)) ?? BASE_VERSION;
        if (compareVersions(op.version, cur) <= 0) return { version: cur };
        this.tx.put(K.clusterVersion, op.version);
        return { version: op.version };
      }
      case 'lockSession': {
        const key = K.lockSession(op.session);
        const cur = await this.tx.getJson<LockSession>(key);
        if (cur === undefined && !op.create) {
          opFail('EFENCED', `lock session ${op.session} is gone (it expired and its locks were dropped); start a new one`);
        }
        if (cur !== undefined && this.nowMs >= cur.expiresAtMs) {
          opFail('EFENCED', `lock session ${op.session} expired ${this.nowMs - cur.expiresAtMs} ms ago; its locks are being dropped; start a new one`);
        }
        const s: LockSession = { session: op.session, expiresAtMs: this.nowMs + op.ttlMs };
        this.tx.putJson(key, s);
        return { session: s };
      }
      case 'lockSet': {
        await this.liveLockSession(op.session);
        const i = await this.mustInode(op.ino);
        if (i.type === 'symlink') opFail('EINVAL', `inode ${op.ino} is a symbolic link`);
        const start = op.kind === 'flock' ? 0 : op.start;
        const end = op.kind === 'flock' ? LOCK_EOF : op.end;
        if (!validRange(start, end)) opFail('EINVAL', `lock range [${start}, ${end}) is empty or out of range`);
        const req: LockRequest = { kind: op.kind, session: op.session, owner: op.owner, mode: op.mode, start, end, pid: op.pid };
        const table = await this.locksOf(op.ino);
        const c = conflictOf(table, req);
        // A conflict is an answer, not a failure: nothing changes, the holder is named.
        if (c !== undefined) return { granted: false, conflict: c };
        await this.putLocks(op.ino, applyLock(table, req), table);
        return { granted: true };
      }
      case 'lockRelease': {
        const table = await this.locksOf(op.ino);
        const next = releaseOwner(table, op.session, op.owner, op.kind);
        if (next.length !== table.length) await this.putLocks(op.ino, next, table);
        return { released: table.length - next.length };
      }
      case 'lockSessionEnd': {
        const n = await this.endLockSession(op.session);
        return { released: n };
      }
      case 'lockExpire': {
        let n = 0;
        for (const session of op.sessions) {
          const cur = await this.tx.getJson<LockSession>(K.lockSession(session));
          if (cur === undefined || this.nowMs < cur.expiresAtMs + LEASE_SAFETY_MARGIN_MS) continue;
          await this.endLockSession(session);
          n++;
        }
        return { expired: n };
      }
    }
  }

  /** EFENCED unless the lock session exists and has not expired (at the proposer's clock). */
  private async liveLockSession(session: string): Promise<void> {
    const cur = await this.tx.getJson<LockSession>(K.lockSession(session));
    if (cur === undefined || this.nowMs >= cur.expiresAtMs) {
      opFail('EFENCED', `lock session ${session} ${cur === undefined ? 'does not exist' : 'has expired'}; its locks are gone; start a new session`);
    }
  }

  async locksOf(ino: number): Promise<HeldLock[]> {
    return (await this.tx.getJson<{ locks: HeldLock[] }>(K.locks(ino)))?.locks ?? [];
  }

  /** Store an inode's lock table, keeping the session → inode index in step with it. */
  async putLocks(ino: number, next: HeldLock[], before?: HeldLock[]): Promise<void> {
    const prev = before ?? (await this.locksOf(ino));
    if (prev.length === 0 && next.length === 0) return;
    if (next.length === 0) this.tx.del(K.locks(ino));
    else this.tx.putJson(K.locks(ino), { locks: next });
    const had = new Set(prev.map((l) => l.session));
    const has = new Set(next.map((l) => l.session));
    for (const s of had) if (!has.has(s)) this.tx.del(K.lockIndex(s, ino));
    for (const s of has) if (!had.has(s)) this.tx.put(K.lockIndex(s, ino), '1');
  }

  /** Drop a session and every lock it holds; returns the number of inodes it held locks on. */
  private async endLockSession(session: string): Promise<number> {
    const prefix = K.lockIndexPrefix(session);
    const keys = await this.tx.keys(prefix);
    for (const k of keys) {
      const ino = parseInt(k.slice(prefix.length), 16);
      const table = await this.locksOf(ino);
      await this.putLocks(ino, releaseSession(table, session), table);
      this.tx.del(k);
    }
    this.tx.del(K.lockSession(session));
    return keys.length;
  }

  /** Is some pin holding this version of the inode? */
  private async pinned(ino: number, version: number, except?: string): Promise<boolean> {
    for (const k of await this.tx.keys(K.pinPrefix(ino))) {
      if (except !== undefined && k === except) continue;
      const p = await this.tx.getJson<Pin>(k);
      if (p?.version === version) return true;
    }
    return false;
  }

  /** Keep a version's layout for its pins (it is being superseded or its inode removed). */
  async retainIfPinned(ino: number, version: number): Promise<void> {
    if (version === 0 || !(await this.pinned(ino, version))) return;
    const l = await this.tx.getJson<Layout>(K.layout(ino));
    if (l !== undefined && l.extents.length > 0) this.tx.putJson(K.retained(ino, version), { version, extents: l.extents } satisfies Layout);
  }

  /** A pin ends: the retained layout of its version goes when no other pin holds it. */
  private async endPin(p: Pin): Promise<void> {
    const key = K.pin(p.ino, p.holder);
    this.tx.del(key);
    if (!(await this.pinned(p.ino, p.version, key))) this.tx.del(K.retained(p.ino, p.version));
  }

  private async endLease(l: Lease): Promise<void> {
    this.tx.del(K.lease(l.ino));
    if ((await this.tx.get(K.orphan(l.ino))) !== undefined) {
      const i = await this.inode(l.ino);
      if (i !== undefined && i.nlink === 0) await this.deleteInode(i);
      this.tx.del(K.orphan(l.ino));
    }
  }

  /**
   * Fencing: a commit must present the token of the file's current, unexpired lease.
   * With `optional`, token 0 is accepted when no live lease exists (truncate by a tool).
   */
  private async checkFence(ino: number, fence: number, optional: boolean): Promise<void> {
    const cur = await this.tx.getJson<Lease>(K.lease(ino));
    if (optional && fence === 0 && (cur === undefined || this.nowMs >= cur.expiresAtMs)) return;
    if (cur === undefined || cur.token !== fence) {
      opFail('EFENCED', `fencing token ${fence} is not the current write lease of inode ${ino}${cur ? ` (token ${cur.token} is)` : ' (no lease)'}`);
    }
    if (this.nowMs >= cur.expiresAtMs) opFail('EFENCED', `write lease ${fence} on inode ${ino} has expired; acquire a new lease`);
  }

  /** A new write lease with the next fencing token (the caller checked that none is live). */
  private async grantLease(ino: number, holder: string, ttlMs: number, addr?: string): Promise<Lease> {
    const token = Number((await this.tx.get(K.fence)) ?? '0') + 1;
    this.tx.put(K.fence, String(token));
    const lease: Lease = { ino, holder, token, expiresAtMs: this.nowMs + ttlMs, grantedAtMs: this.nowMs, ...(addr !== undefined ? { addr } : {}) };
    this.tx.putJson(K.lease(ino), lease);
    return lease;
  }

  async inlineTotal(): Promise<number> {
    return Number((await this.tx.get(K.inlineBytes)) ?? '0');
  }

  /**
   * The inline budget, checked once an operation's effects are known: ENOSPC (and nothing
   * changes) when it grew the total of inline bytes past `budget`. An operation that shrinks
   * the total (or leaves it) always passes, even over a lowered budget.
   */
  async checkBudget(before: number, budget: number | undefined): Promise<void> {
    const after = await this.inlineTotal();
    if (budget !== undefined && after > before && after > budget) {
      opFail('ENOSPC', `the metadata's inline budget is full (${before} bytes held, this needs ${after - before} more, budget ${budget}); store this file in chunks`, {
        inlineBytes: before,
        budget,
      });
    }
  }

  /** Set (data) or drop (undefined) a file's inline content, keeping the total in m:inlineBytes. */
  async setInline(ino: number, data: Buffer | undefined, fresh = false, dataB64?: string): Promise<InlineRef | undefined> {
    // A fresh inode (putFile's, version 0) has no layout yet: nothing to read.
    const old = fresh ? undefined : (await this.tx.getJson<Layout>(K.layout(ino)))?.inline;
    const oldLen = old?.length ?? 0;
    const newLen = data?.length ?? 0;
    if (old === undefined && data === undefined) return undefined;
    const total = await this.inlineTotal();
    if (newLen !== oldLen) this.tx.put(K.inlineBytes, String(total - oldLen + newLen));
    if (data === undefined) {
      this.tx.del(K.inline(ino));
      return undefined;
    }
    this.tx.put(K.inline(ino), dataB64 ?? data.toString('base64'));
    return { length: data.length, sha256: createHash('sha256').update(data).digest('hex') };
  }

  /** resolveEntry, making every missing directory of a path on the way (mkdir -p; 0755). */
  async resolveEntryMaking(ref: EntryRef, uid: number, gid: number): Promise<{ dir: Inode; name: string }> {
    if ('parent' in ref) return this.resolveEntry(ref);
    const parts = splitPath(ref.path);
    const name = parts.pop();
    assert(name !== undefined, 'entry path has a name');
    let cur = await this.mustInode(ROOT_INO);
    let walked = '';
    for (const p of parts) {
      walked += `/${p}`;
      const d = await this.lookup(cur.ino, p);
      if (d !== undefined) {
        if (d.type !== 'dir') opFail('ENOTDIR', `${walked} is not a directory`);
        cur = await this.mustInode(d.ino);
        continue;
      }
      const ino = await this.allocIno();
      const made = this.newInode(ino, 'dir', cur, p, 0o755, uid, gid);
      this.putInode(made);
      this.tx.putJson(K.dirent(cur.ino, p), { ino, type: 'dir' });
      this.touchDir(cur, 1, 1);
      this.emit('mkdir', walked, ino, 0);
      cur = made;
    }
    return { dir: cur, name };
  }

  private async installVersion(
    i: Inode, fence: number, size: number, extents: Extent[], mtimeMs: number, state: CommitState, kind: 'commit' | 'truncate',
    data?: Buffer,
    fresh = false,
    /** `data` as the operation carried it (canonical base64, as decoding guarantees): stored as is, not encoded again. */
    dataB64?: string,
  ): Promise<Record<string, unknown>> {
    await this.retainIfPinned(i.ino, i.version);
    const inline = await this.setInline(i.ino, data, i.version === 0 && kind === 'commit' && fresh, dataB64);
    const version = i.version + 1;
    i.version = version;
    i.size = size;
    i.mtimeMs = mtimeMs;
    // A commit's data changed when it was written (mtimeMs, the writer's clock), not when the
    // commit landed: ctime does not move under a reader who saw the cached write (tar's "file
    // changed as we read it"). A metadata truncate changes it now.
    i.ctimeMs = kind === 'commit' ? Math.max(i.ctimeMs, mtimeMs) : this.nowMs;
    this.putInode(i);
    this.tx.putJson(K.layout(i.ino), (inline === undefined ? { version, extents } : { version, extents, inline }) satisfies Layout);
    const path = await this.pathOfInode(i);
    this.emit(kind, path, i.ino, version);
    // A commit recorded durable at once: the watch feed says what commit + markDurable would.
    if (kind === 'commit' && state === 'durable') this.emit('durable', path, i.ino, version);
    const record: CommitRecord = {
      ino: i.ino, version, state, fence, size, extents: extents.length, revision: this.rev, committedAtMs: this.nowMs,
    };
    this.tx.putJson(K.commit(i.ino, version), record);
    if (version > COMMIT_RECORDS_KEPT) this.tx.del(K.commit(i.ino, version - COMMIT_RECORDS_KEPT));
    return { attr: i, record };
  }

  private async rename(op: Extract<Op, { op: 'rename' }>): Promise<Record<string, unknown>> {
    const src = await this.resolveEntry(op.from);
    const dst = await this.resolveEntry(op.to);
    const srcPath = await this.childPath(src.dir, src.name);
    const dstPath = await this.childPath(dst.dir, dst.name);
    const s = await this.lookup(src.dir.ino, src.name);
    if (s === undefined) opFail('ENOENT', `${srcPath || src.name}: no such file or directory`);
    if (src.dir.ino === dst.dir.ino && src.name === dst.name) return { renamed: false };
    const d = await this.lookup(dst.dir.ino, dst.name);
    if (d !== undefined && d.ino === s.ino) return { renamed: false }; // two links to one file: nothing to do
    if (s.type === 'dir') {
      // No directory may move into its own subtree.
      let cur = dst.dir.ino;
      for (let depth = 0; ; depth++) {
        if (cur === s.ino) opFail('EINVAL', `cannot move ${srcPath} into its own subtree (${dstPath})`);
        if (cur === ROOT_INO || depth > PATH_DEPTH_MAX) break;
        cur = (await this.mustInode(cur)).parent;
      }
    }
    if (d !== undefined) {
      if (op.noReplace) opFail('EEXIST', `${dstPath || dst.name} already exists`);
      if (s.type === 'dir' && d.type !== 'dir') opFail('ENOTDIR', `${dstPath} is not a directory`);
      if (s.type !== 'dir' && d.type === 'dir') opFail('EISDIR', `${dstPath} is a directory`);
      if (d.type === 'dir') {
        const victim = await this.mustInode(d.ino);
        if (victim.size > 0) opFail('ENOTEMPTY', `${dstPath} is not empty`);
        await this.deleteInode(victim);
        const dd = await this.mustInode(dst.dir.ino);
        this.touchDir(dd, -1, -1);
      } else {
        const dd = await this.mustInode(dst.dir.ino);
        this.touchDir(dd, -1, 0);
        await this.dropLink(d.ino, dst.dir.ino, dst.name);
      }
    }
    this.tx.del(K.dirent(src.dir.ino, src.name));
    this.tx.putJson(K.dirent(dst.dir.ino, dst.name), s);
    const isDir = s.type === 'dir';
    const sd = await this.mustInode(src.dir.ino);
    this.touchDir(sd, -1, isDir ? -1 : 0);
    const dd = await this.mustInode(dst.dir.ino);
    this.touchDir(dd, 1, isDir ? 1 : 0);
    const moved = await this.mustInode(s.ino);
    if (isDir || (moved.parent === src.dir.ino && moved.name === src.name) || moved.parent === 0) {
      moved.parent = dst.dir.ino;
      moved.name = dst.name;
    }
    moved.ctimeMs = this.nowMs;
    this.putInode(moved);
    this.emit('rename', srcPath, s.ino, moved.version, dstPath);
    return { renamed: true, replaced: d?.ino ?? 0 };
  }
}

export { hex };
