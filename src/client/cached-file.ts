/**
 * One file in the node's write cache: its base version (the committed layout the cache
 * sits on), the dirty layers on top (the one being committed, and the live one), the
 * journal segments holding their bytes, and the durable state.json that makes it all
 * recoverable after kill -9.
 *
 * Layers, top first:  live  →  frozen (being committed, may be absent)  →  base extents.
 * Mutations hold `lock`; reads do not (journal records never move, and segments are deleted
 * only once no read is in flight), so a slow chunk fetch does not hold up writers.
 * Journal segments [firstSegment .. frozenThrough] belong to the frozen layer, later ones
 * to the live layer; a commit that becomes durable deletes its segments and moves the
 * base up to the new version.
 */
import { mkdir, readdir, unlink, rm, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CairnError, errnoCode } from '../common/errors.js';
import { writeFileDurable, fsyncDir } from '../common/durable.js';
import { parseWith } from '../common/config.js';
import { DirtyLayer } from './extent-map.js';
import { SegmentWriter, replaySegment, REC_TRUNCATE, REC_WRITE, MAX_RECORD_PAYLOAD_BYTES } from './journal.js';
import type { CacheStore } from './cache-store.js';
import { chunkOf, type Extent } from './ports.js';
import type { ReadCache } from './read-cache.js';

const HASH_RE = /^[0-9a-f]{64}$/;
/** Inline content (a small file's whole version, stored in the metadata) as base64. */
const InlineSchema = z.string().max(512 * 1024).regex(/^[A-Za-z0-9+/]*={0,2}$/);

export const ExtentSchema = z.object({
  offset: z.number().int().nonnegative(),
  length: z.number().int().positive(),
  chunkHash: z.string().regex(HASH_RE),
  scheme: z.string().min(1).max(64),
  pg: z.number().int().nonnegative().max(0xffff_ffff),
  chunkOffset: z.number().int().nonnegative().optional(),
  chunkLength: z.number().int().positive().optional(),
});

export const CommitIntentSchema = z.object({
  commitId: z.string().regex(/^[0-9a-f]{32}$/),
  /** Last journal segment the commit covers. */
  sealedThrough: z.number().int().positive(),
  state: z.enum(['committing', 'visible']),
  baseVersion: z.number().int().nonnegative(),
  newVersion: z.number().int().nonnegative().nullable(),
  newSize: z.number().int().nonnegative(),
  extents: z.array(ExtentSchema),
  /** Hashes of the chunks this commit stored (the ones whose health it must wait for). */
  fresh: z.array(z.string().regex(HASH_RE)),
  mtimeMs: z.number().nonnegative(),
  /** The new version's whole content when it is committed inline (extents and fresh empty). */
  inline: InlineSchema.optional(),
});
export type CommitIntent = z.infer<typeof CommitIntentSchema>;

export const FileStateSchema = z.object({
  format: z.literal(1),
  fileId: z.string().min(1).max(256),
  path: z.string().min(1).max(4096),
  mode: z.number().int().nonnegative(),
  base: z.object({
    version: z.number().int().nonnegative(),
    size: z.number().int().nonnegative(),
    extents: z.array(ExtentSchema),
    /** The base version's content when it is stored inline in the metadata (extents empty). */
    inline: InlineSchema.optional(),
  }),
  firstSegment: z.number().int().positive(),
  leaseToken: z.string().max(512).nullable(),
  commit: CommitIntentSchema.nullable(),
});
export type FileState = z.infer<typeof FileStateSchema>;

/** The base version as a read sees it (captured when the read starts). */
export interface BaseView {
  extents: readonly Extent[];
  inline?: Buffer;
}

export type CommitState = 'clean' | 'dirty' | 'committing' | 'visible' | 'durable' | 'conflict';

function segName(n: number): string {
  return `seg-${String(n).padStart(8, '0')}.log`;
}

/** A tiny FIFO mutex: journal appends and state changes of one file run one at a time. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

export class CachedFile {
  st: FileState;
  /** The layer being committed (null when no commit is in flight). */
  frozen: DirtyLayer | null = null;
  live: DirtyLayer;
  /** Segment that new records go to. */
  activeSegment: number;
  /** Last segment of the frozen layer (0 when there is none). */
  frozenThrough = 0;
  private readonly segments = new Map<number, SegmentWriter>();
  /** state.json exists on disk (a file only read so far has no directory). */
  persisted = false;
  /**
   * The file's cache directory and first state.json were made without fsyncs (a new file's first
   * write: kill -9 loses nothing, the page cache keeps them); the first fsync of the journal, or
   * the first later state change, makes them durable first (settle). Nothing of the file was
   * promised durable against a power cut before that fsync, so none of it may be lost by a power
   * cut that it could not survive anyway. Saves 4 fsyncs on every new file's first write.
   */
  private unsettled = false;
  readonly lock = new Mutex();
  openCount = 0;
  state: CommitState = 'clean';
  lastError: CairnError | null = null;
  /** The commit currently running (pipeline.ts); at most one per file. */
  running: Promise<void> | null = null;
  mtimeMs = Date.now();
  /** Sequence numbers of mutations: the latest, the latest in the running commit, the latest visible, the latest durable. */
  writeSeq = 0;
  sealedSeq = 0;
  visibleSeq = 0;
  durableSeq = 0;
  /** Bytes written since the last seal (drives the weak-mode dirty threshold). */
  liveWrittenBytes = 0;
  /** Another commit run was asked for while one was running. */
  commitRequested = false;
  /** Commit runs that failed in a row (drives the retry back-off). */
  commitFailures = 0;
  /** Another node changed the file since its base was read (docs/dfs-cache.md): read the base again before serving it. */
  stale = false;
  /** The version this node pins in the metadata for its open handles (GC keeps its chunks); null: none. */
  pinnedVersion: number | null = null;
  /** Reads in flight (they run without the lock; segments are deleted only when none is). */
  private readers = 0;
  private readersGone: Array<() => void> = [];
  /** Listeners woken on every state change (commit waiters). */
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly dir: string,
    st: FileState,
    private readonly store: CacheStore,
    /**
     * A volatile file's cache need not survive a crash: it holds an upload that is acknowledged
     * only once committed durably to the chunk store (a strong-mode exclusive create), so nothing
     * of it is fsynced, it lives under the store's volatile/ directory, and a restart discards it
     * (the upload was not acknowledged; its writer gets an error and tries again). The fsyncs a
     * durable cache needs (the directory, state.json at every step, the journal's segments and
     * their directory entries) were most of a small file's put.
     */
    readonly volatile = false,
  ) {
    this.st = st;
    this.live = new DirtyLayer(st.base.size);
    this.activeSegment = st.firstSegment;
  }

  get fileId(): string {
    return this.st.fileId;
  }

  get size(): number {
    return this.live.size;
  }

  /** Bytes written but not yet durable in the chunk store. */
  pendingBytes(): number {
    return this.live.dataBytes() + (this.frozen?.dataBytes() ?? 0);
  }

  hasDirty(): boolean {
    return this.frozen !== null || !this.live.isEmpty() || this.live.size !== this.st.base.size;
  }

  setState(s: CommitState, err: CairnError | null = null): void {
    this.state = s;
    this.lastError = err;
    for (const l of [...this.listeners]) l();
  }

  /** Resolve when pred() holds, re-checked on every state change. */
  waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred()) {
          this.listeners.delete(check);
          clearTimeout(timer);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.listeners.delete(check);
        reject(new CairnError('ETIMEDOUT', `${this.st.path}: ${what} did not happen within ${timeoutMs} ms; the data stays in the write cache and the commit goes on in the background`));
      }, timeoutMs);
      this.listeners.add(check);
    });
  }

  async saveState(): Promise<void> {
    if (this.volatile) {
      if (!this.persisted) {
        await mkdir(this.dir, { recursive: true });
        this.persisted = true;
      }
      await writeFile(join(this.dir, 'state.json'), JSON.stringify(this.st));
      return;
    }
    if (!this.persisted) {
      // A brand-new directory: no older state to protect, so a plain write suffices until settle().
      await mkdir(this.dir, { recursive: true });
      await writeFile(join(this.dir, 'state.json'), JSON.stringify(this.st));
      this.persisted = true;
      this.unsettled = true;
      return;
    }
    await this.settle();
    await writeFileDurable(join(this.dir, 'state.json'), JSON.stringify(this.st));
  }

  /** Make a lazily made cache directory durable: its state.json, its entries, its own entry. */
  private async settle(): Promise<void> {
    if (!this.unsettled) return;
    await writeFileDurable(join(this.dir, 'state.json'), JSON.stringify(this.st));
    await fsyncDir(this.store.filesDir);
    this.unsettled = false;
  }

  private async segment(n: number): Promise<SegmentWriter> {
    let s = this.segments.get(n);
    if (s === undefined) {
      if (!this.persisted) await this.saveState();
      const path = join(this.dir, segName(n));
      let size = 0;
      try {
        size = (await stat(path)).size;
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
      s = await SegmentWriter.open(path, size);
      // An unsettled directory's entries are fsynced by settle(), before any fsync of the journal.
      if (size === 0 && !this.volatile && !this.unsettled) await fsyncDir(this.dir);
      this.segments.set(n, s);
    }
    return s;
  }

  /** Journal a write and apply it to the live layer. Caller holds `lock` and has reserved the space. */
  async appendWrite(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const piece = data.subarray(done, done + MAX_RECORD_PAYLOAD_BYTES);
      const seg = await this.segment(this.activeSegment);
      const pos = await seg.append(REC_WRITE, offset + done, piece);
      this.live.write(offset + done, piece.length, this.activeSegment, pos);
      done += piece.length;
    }
    this.writeSeq += 1;
    this.liveWrittenBytes += data.length;
    this.mtimeMs = Date.now();
  }

  async appendTruncate(size: number): Promise<void> {
    const seg = await this.segment(this.activeSegment);
    await seg.append(REC_TRUNCATE, size, new Uint8Array(0));
    this.live.truncate(size);
    this.writeSeq += 1;
    this.mtimeMs = Date.now();
  }

  /** Make every record written so far durable on the cache disk. */
  async syncJournal(): Promise<void> {
    if (this.volatile) return;
    await this.settle();
    for (const s of this.segments.values()) await s.sync();
  }

  /** Start a commit epoch: the live layer becomes the frozen one, new writes go to a new segment. */
  seal(): number {
    if (this.frozen !== null) throw new Error('invariant violated: seal() while a commit is in flight');
    this.frozen = this.live;
    this.live = new DirtyLayer(this.frozen.size);
    const sealedThrough = this.activeSegment;
    this.activeSegment += 1;
    this.sealedSeq = this.writeSeq;
    this.liveWrittenBytes = 0;
    this.frozenThrough = sealedThrough;
    return sealedThrough;
  }

  /** A durable commit: move the base up, drop the frozen layer and its segments. Caller holds `lock`. */
  async dropCommitted(intent: CommitIntent, newVersion: number): Promise<void> {
    this.st = {
      ...this.st,
      base: { version: newVersion, size: intent.newSize, extents: intent.extents, ...(intent.inline !== undefined ? { inline: intent.inline } : {}) },
      firstSegment: intent.sealedThrough + 1,
      commit: null,
    };
    await this.saveState();
    this.frozen = null;
    this.frozenThrough = 0;
    // Reads that started before the base moved may still use the old segments.
    await this.noReaders();
    let freed = 0;
    for (const [n, s] of [...this.segments]) {
      if (n > intent.sealedThrough) continue;
      freed += s.sizeBytes;
      await s.close();
      this.segments.delete(n);
      await unlink(s.path).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
    }
    if (this.persisted && !this.volatile) await fsyncDir(this.dir);
    this.store.release(freed);
  }

  /** Remove the whole cache directory (nothing dirty, no handle open). */
  async removeFromDisk(): Promise<void> {
    await this.noReaders();
    let freed = 0;
    for (const s of this.segments.values()) {
      freed += s.sizeBytes;
      await s.close();
    }
    this.segments.clear();
    if (this.persisted) {
      await rm(this.dir, { recursive: true, force: true });
      // A directory that was never made durable needs no durable removal either.
      if (!this.volatile && !this.unsettled) await fsyncDir(this.store.filesDir);
      this.unsettled = false;
      this.persisted = false;
    }
    this.store.release(freed);
  }

  async closeSegments(): Promise<void> {
    for (const s of this.segments.values()) await s.close();
    this.segments.clear();
  }

  /**
   * Bytes [start, end) of the file as this node sees it: live, then frozen, then base.
   * `end` must not pass the size.
   */
  async read(start: number, end: number, readCache: ReadCache, opts: { readAheadChunks?: number } = {}): Promise<Buffer> {
    const out = Buffer.alloc(end - start);
    const layers = this.frozen ? [this.live, this.frozen] : [this.live];
    this.readers += 1;
    try {
      const ahead = opts.readAheadChunks ?? 0;
      if (ahead > 0) {
        // The next stored chunks after this read, fetched while the caller consumes this one.
        const first = this.st.base.extents.findIndex((e) => e.offset >= end);
        if (first >= 0) for (const e of this.st.base.extents.slice(first, first + ahead)) readCache.prefetch(chunkOf(e));
      }
      await this.fill(out, start, start, end, layers, 0, this.baseView(), readCache);
    } finally {
      this.readers -= 1;
      if (this.readers === 0) for (const wake of this.readersGone.splice(0)) wake();
    }
    return out;
  }

  private async noReaders(): Promise<void> {
    while (this.readers > 0) await new Promise<void>((r) => this.readersGone.push(r));
  }

  /** Bytes [start, end) as the frozen layer over the base sees them (what the running commit stores). */
  async readFrozen(start: number, end: number, readCache: ReadCache): Promise<Buffer> {
    const out = Buffer.alloc(end - start);
    if (this.frozen === null) throw new Error('invariant violated: readFrozen without a commit');
    await this.fill(out, start, start, end, [this.frozen], 0, this.baseView(), readCache);
    return out;
  }

  private inlineCache: { b64: string; bytes: Buffer } | null = null;

  /** The base version as reads see it: its extents, or its inline content (decoded once). */
  baseView(): BaseView {
    const b64 = this.st.base.inline;
    if (b64 === undefined) return { extents: this.st.base.extents };
    if (this.inlineCache?.b64 !== b64) this.inlineCache = { b64, bytes: Buffer.from(b64, 'base64') };
    return { extents: this.st.base.extents, inline: this.inlineCache.bytes };
  }

  private async fill(
    out: Buffer,
    outStart: number,
    start: number,
    end: number,
    layers: DirtyLayer[],
    idx: number,
    base: BaseView,
    readCache: ReadCache,
  ): Promise<void> {
    if (start >= end) return;
    const layer = layers[idx];
    if (layer === undefined) {
      if (base.inline !== undefined && start < base.inline.length) {
        // Inline base: its bytes, zeros past them (out is zero-filled).
        base.inline.copy(out, start - outStart, start, Math.min(end, base.inline.length));
      }
      for (const ext of base.extents) {
        const eEnd = ext.offset + ext.length;
        if (eEnd <= start) continue;
        if (ext.offset >= end) break;
        const bytes = await readCache.get(chunkOf(ext));
        const s = Math.max(start, ext.offset);
        const t = Math.min(end, eEnd);
        const at = (ext.chunkOffset ?? 0) - ext.offset;
        bytes.copy(out, s - outStart, s + at, t + at);
      }
      return;
    }
    let cur = start;
    for (const p of layer.pieces(start, end)) {
      if (p.start > cur) await this.fill(out, outStart, cur, p.start, layers, idx + 1, base, readCache);
      if (p.src.kind === 'data') {
        const seg = this.segments.get(p.src.segment);
        if (seg === undefined) throw new Error(`invariant violated: segment ${p.src.segment} of ${this.st.path} is not open`);
        await seg.read(out, p.start - outStart, p.end - p.start, p.src.pos);
      } else {
        out.fill(0, p.start - outStart, p.end - outStart);
      }
      cur = p.end;
    }
    if (cur < end) await this.fill(out, outStart, cur, end, layers, idx + 1, base, readCache);
  }

  /** A file known only from metadata (opened, not yet written). */
  static fresh(store: CacheStore, st: Omit<FileState, 'format' | 'firstSegment' | 'commit' | 'leaseToken'>, volatile = false): CachedFile {
    return new CachedFile(store.fileDir(st.fileId, volatile), { format: 1, firstSegment: 1, commit: null, leaseToken: null, ...st }, store, volatile);
  }

  /** Rebuild a cached file from its directory after a restart. */
  static async recover(dir: string, store: CacheStore): Promise<CachedFile> {
    const statePath = join(dir, 'state.json');
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(statePath, 'utf8'));
    } catch (err) {
      throw new CairnError('ECORRUPT', `${statePath} cannot be read as JSON (${String(err)}); move the directory aside to go on`);
    }
    const st = parseWith(FileStateSchema, raw, statePath);
    const f = new CachedFile(dir, st, store);
    f.persisted = true;
    const segs = (await readdir(dir))
      .map((n) => /^seg-(\d{8})\.log$/.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    const sealedThrough = st.commit?.sealedThrough ?? 0;
    let layer = new DirtyLayer(st.base.size);
    let maxSeg = st.firstSegment;
    for (const n of segs) {
      const path = join(dir, segName(n));
      if (n < st.firstSegment) {
        // Left behind by a crash between "state moved up" and "segments deleted".
        await unlink(path);
        continue;
      }
      if (st.commit !== null && n > sealedThrough && f.frozen === null) {
        f.frozen = layer;
        layer = new DirtyLayer(layer.size);
      }
      const { records, validBytes } = await replaySegment(path);
      for (const r of records) {
        if (r.type === REC_WRITE) layer.write(r.offset, r.length, n, r.payloadPos);
        else layer.truncate(r.offset);
      }
      store.account(validBytes);
      f.segments.set(n, await SegmentWriter.open(path, validBytes));
      maxSeg = Math.max(maxSeg, n);
    }
    if (st.commit !== null && f.frozen === null) {
      f.frozen = layer;
      layer = new DirtyLayer(layer.size);
    }
    f.live = layer;
    if (f.frozen !== null) f.frozenThrough = sealedThrough;
    f.activeSegment = st.commit !== null ? Math.max(maxSeg, sealedThrough + 1) : maxSeg;
    await fsyncDir(dir);
    if (f.hasDirty()) {
      f.writeSeq = f.live.isEmpty() ? 1 : 2;
      f.sealedSeq = f.frozen !== null ? 1 : 0;
    }
    f.state = st.commit !== null ? (st.commit.state === 'visible' ? 'visible' : 'committing') : f.hasDirty() ? 'dirty' : 'durable';
    return f;
  }
}

