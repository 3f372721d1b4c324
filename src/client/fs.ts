/**
 * CairnFs: the node daemon's file API (the design note's fopen / fread / fwrite / fappend /
 * fflush / fclose / fcommit, plus truncate, stat and commit status), in-process.
 *
 * One instance per machine owns that machine's write cache; every local user of the file
 * system goes through it, so processes on one node share state at once (an open of a path
 * that is already cached returns the cached file — the note's `cache.find_opened`). A local
 * socket protocol for other processes (the CLI, FUSE) is the next layer and not here yet.
 *
 * Modes (per file system, overridable per open):
 *  - weak (default): write returns once the bytes are in the cache journal (they survive a
 *    kill -9 of the daemon); flush/fsync make the journal durable on the cache disk; the commit
 *    runs by itself `idleCommitDelayMs` after the last close, or at once when a file's dirty
 *    bytes pass `dirtyThresholdBytes`, or when the cache is under pressure.
 *  - strong: flush, fsync and close return only once everything written before them is
 *    committed and durable (all shards stored, cache dropped).
 */
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { logger, type Logger } from '../common/log.js';
import { parseWith } from '../common/config.js';
import { counter, gauge } from '../common/metrics.js';
import { CacheStore } from './cache-store.js';
import { CachedFile, type CommitState } from './cached-file.js';
import { DirtyLayer } from './extent-map.js';
import { makeChunker, type Chunker } from './chunker.js';
import { ReadCache } from './read-cache.js';
import { runCommit, ensureLease, type PipelineDeps } from './pipeline.js';
import { MAX_RECORD_PAYLOAD_BYTES, RECORD_HEADER_BYTES, MAX_FILE_OFFSET } from './journal.js';
import type { ChunkPort, FileAttr, MetaPort } from './ports.js';
import type { CoherencePort, RemoteAttr, RemoteWriter } from './coherence.js';

const MIB = 1024 * 1024;

export const chunkerConfigSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('fixed'), sizeBytes: z.number().int().min(4096).max(64 * MIB) }).strict(),
  z
    .object({
      kind: z.literal('fastcdc'),
      minBytes: z.number().int().positive(),
      avgBytes: z.number().int().positive(),
      maxBytes: z.number().int().max(64 * MIB),
    })
    .strict(),
]);

export const cairnFsOptionsSchema = z
  .object({
    cacheDir: z.string().min(1),
    mode: z.enum(['weak', 'strong']).default('weak'),
    chunker: chunkerConfigSchema.default({ kind: 'fixed', sizeBytes: 4 * MIB }),
    cacheMaxBytes: z.number().int().min(64 * 1024).default(1024 * MIB),
    cacheFullTimeoutMs: z.number().int().min(1).default(30_000),
    readCacheMaxBytes: z.number().int().nonnegative().default(256 * MIB),
    /**
     * Chunks fetched ahead of a sequential reader (0: none); random reads never read ahead. Deeper
     * than 1 measured no faster over loopback (docs/client.md); links with more latency may want 2–4.
     */
    readAheadChunks: z.number().int().min(0).max(64).default(1),
    idleCommitDelayMs: z.number().int().nonnegative().default(2_000),
    dirtyThresholdBytes: z.number().int().positive().default(64 * MIB),
    leaseTtlMs: z.number().int().min(100).max(600_000).default(30_000),
    commitParallelism: z.number().int().min(1).max(64).default(4),
    putAttempts: z.number().int().min(1).max(100).default(5),
    retryBaseMs: z.number().int().min(1).default(200),
    /** How long a strong-mode flush/close (or commit with wait) waits before ETIMEDOUT; the commit goes on. */
    durableTimeoutMs: z.number().int().min(1).default(300_000),
    /**
     * Versions up to this size are committed inline in the metadata, with no chunk (docs/client.md,
     * "Inline small files"); 0 (the library's default) never. The node daemon sets it from
     * daemon.file.inlineMaxBytes (64 KiB). At most the metadata's INLINE_MAX_BYTES (256 KiB).
     */
    inlineMaxBytes: z.number().int().min(0).max(256 * 1024).default(0),
    /**
     * A commit stores only the bytes it changed: old chunks are kept as slices around them, and an
     * aligned chunk-sized window holding more than `maxPiecesPerWindow` pieces is rewritten whole
     * (compaction). Off (the library's default): a touched chunk is rewritten whole. The node daemon
     * turns it on (daemon.file.slices). docs/client.md, "Slices".
     */
    slices: z.boolean().default(false),
    maxPiecesPerWindow: z.number().int().min(2).max(1024).default(16),
  })
  .strict();
export type CairnFsOptions = z.input<typeof cairnFsOptionsSchema>;
type Options = z.output<typeof cairnFsOptionsSchema>;

export type Mode = 'weak' | 'strong';

export interface OpenOptions {
  /** Open for writing (takes the file's write lease). Default false. */
  write?: boolean;
  /** Create the file if it does not exist (implies write). */
  create?: boolean;
  /** With create: fail with EEXIST if it exists. */
  exclusive?: boolean;
  /** Cut the file to 0 bytes at open (implies write). */
  truncate?: boolean;
  /** Every write goes to the end of the file (implies write). */
  append?: boolean;
  /** Commit mode of this handle; default the file system's. */
  mode?: Mode;
  /**
   * An upload whose cache need not survive a crash (CachedFile.volatile): nothing of it is
   * fsynced on the cache disk and a restart discards it. Only with create + exclusive + strong
   * mode, where nothing is acknowledged before the commit is durable in the chunk store; the
   * file then takes no other write handle (EBUSY) until its cache is gone.
   */
  volatile?: boolean;
}

/** What the VFS opens by: the inode (file id), with the write lease its create came with, if any. */
export interface OpenByIdOptions {
  write?: boolean;
  truncate?: boolean;
  append?: boolean;
  mode?: Mode;
  /** The lease token a create of this file granted this holder (no separate leaseAcquire then). */
  leaseToken?: string;
  /** The file was just created (empty, version 0) with this mode: no metadata read needed. */
  created?: { path: string; mode: number; version: number; mtimeMs: number };
  /** The `replicated` durability level (docs/dfs-cache.md): a write returns once a replica node has it too. */
  replicate?: boolean;
  /**
   * Open for writing without taking the write lease: the first commit takes it (the VFS, whose
   * programs on several nodes coordinate with cluster-wide locks: a lock holder commits and gives
   * the lease back at its unlock). Without locks, two nodes writing one file meet at commit: the
   * later commit waits for the lease and may end in ECONFLICT (its data kept in the cache).
   */
  lazyLease?: boolean;
}

export interface CommitStatus {
  path: string;
  state: CommitState;
  /** Bytes written and not yet durable in the chunk store. */
  pendingBytes: number;
  /** Committed version the cache sits on (the newest this node knows). */
  version: number;
  size: number;
  error: string | null;
}

export interface Stat {
  path: string;
  size: number;
  version: number;
  mode: number;
  mtimeMs: number;
  state: CommitState;
  pendingBytes: number;
}

interface Handle {
  file: CachedFile;
  pos: number;
  /** Where the handle's last read ended: a read that starts there is sequential (read-ahead). */
  lastReadEnd: number;
  write: boolean;
  append: boolean;
  mode: Mode;
  /** A write handle whose writes go to the file's writer node (another node held the lease): its handle there. */
  remote?: { w: RemoteWriter; rfd: number };
  /** The `replicated` level: every write is mirrored to a replica node before it returns. */
  replicate?: boolean;
}

/** Open handles per file system (every table has a bound). */
export const MAX_OPEN_HANDLES = 65_536;
/** One read returns at most this many bytes (a short read, as POSIX allows); memory stays bounded. */
export const MAX_READ_BYTES = 64 * 1024 * 1024;
/** Longest wait before a failed commit is tried again (it doubles from 10 × retryBaseMs). */
const MAX_COMMIT_RETRY_MS = 60_000;
/**
 * Dirty ranges one file's live layer may hold in memory. A writer past it starts a commit and
 * waits for it to seal the layer (ENOSPC after cacheFullTimeoutMs), so tiny scattered writes
 * cannot grow the index without bound.
 */
export const MAX_LAYER_ENTRIES = 1_000_000;
/** Lease renewals sent at once. */
const RENEW_PARALLELISM = 8;

const commitsTotal = counter('cairn_client_commits_total', 'Commits finished by the client', ['result']);
const cacheBytes = gauge('cairn_client_cache_bytes', 'Bytes of journal in the write cache');

export class CairnFs {
  private readonly files = new Map<string, CachedFile>();
  private readonly byPath = new Map<string, string>();
  /** Files whose last name is gone (discard): never committed again, dropped at last close. */
  private readonly discarded = new Set<string>();
  private readonly handles = new Map<number, Handle>();
  private nextFd = 3;
  private readonly idleTimers = new Map<CachedFile, NodeJS.Timeout>();
  private readonly retryTimers = new Map<CachedFile, NodeJS.Timeout>();
  private renewTimer: NodeJS.Timeout | null = null;
  /** Cached files being removed from disk, by file id (an open of the same file waits). */
  private readonly removing = new Map<string, Promise<void>>();
  /** Background clean-ups in flight (shutdown waits for them). */
  private readonly background = new Set<Promise<void>>();
  private closing = false;
  private readonly deps: PipelineDeps;
  /** Cache coherence with the other nodes (src/peer); absent in a library-only CairnFs. */
  private coherence: CoherencePort | undefined;
  /** The lease token each file was last claimed under (claims are sent once per token). */
  private readonly claimed = new Map<string, string>();
  private readonly invalidateListeners = new Set<(fileId: string) => void>();
  /** Files whose writes a replica node's log holds since their last clean state (replicated level). */
  private readonly mirrored = new Set<string>();
  readonly readCache: ReadCache;
  readonly chunker: Chunker;
  private readonly log: Logger;

  private constructor(
    private readonly opts: Options,
    private readonly meta: MetaPort,
    chunks: ChunkPort,
    private readonly store: CacheStore,
    readonly holder: string,
  ) {
    this.log = logger('client', { holder });
    this.chunker = makeChunker(opts.chunker);
    this.readCache = new ReadCache(chunks, opts.readCacheMaxBytes);
    this.deps = {
      meta,
      chunks,
      readCache: this.readCache,
      chunker: this.chunker,
      holder,
      addr: () => this.coherence?.addr,
      beforeCommit: async (f, version) => {
        if (this.coherence === undefined || !this.mirrored.has(f.fileId)) return;
        try {
          await this.coherence.intent(f.fileId, version);
        } catch (err) {
          // The replica missed it: its log no longer matches; the next write starts afresh, after a durable commit.
          this.log.warn({ path: f.st.path, err: String(err) }, 'the replica did not take a commit intent; mirroring starts again after this commit');
          this.mirrored.delete(f.fileId);
          this.coherence.resetReplica(f.fileId);
        }
      },
      leaseTtlMs: opts.leaseTtlMs,
      parallelism: opts.commitParallelism,
      putAttempts: opts.putAttempts,
      retryBaseMs: opts.retryBaseMs,
      inlineMaxBytes: opts.inlineMaxBytes,
      slices: opts.slices ? { windowBytes: makeChunker(opts.chunker).maxBytes, maxPiecesPerWindow: opts.maxPiecesPerWindow } : null,
      closing: () => this.closing,
      log: this.log,
    };
    store.onPressure = () => {
      for (const f of this.files.values()) if (f.hasDirty()) this.kick(f);
    };
  }

  /** Open the node's cache, recover every cached file and resume its pending commit. */
  static async start(options: CairnFsOptions, ports: { meta: MetaPort; chunks: ChunkPort }): Promise<CairnFs> {
    const opts = parseWith(cairnFsOptionsSchema, options, 'CairnFs options');
    const store = new CacheStore(opts.cacheDir, opts.cacheMaxBytes, opts.cacheFullTimeoutMs);
    const nodeId = await store.init();
    const fs = new CairnFs(opts, ports.meta, ports.chunks, store, `client-${nodeId}`);
    for (const dir of await store.listFileDirs()) {
      try {
        const f = await CachedFile.recover(dir, store);
        fs.files.set(f.fileId, f);
        fs.byPath.set(f.st.path, f.fileId);
        fs.log.info({ path: f.st.path, state: f.state, pendingBytes: f.pendingBytes() }, 'recovered cached file');
      } catch (err) {
        fs.log.error({ dir, err: String(err) }, 'cached file could not be recovered; left in place');
      }
    }
    for (const f of fs.files.values()) {
      if (f.hasDirty() || f.st.commit !== null) fs.kick(f);
      else fs.forgetLater(f); // crashed after its cache was dropped, before the directory went
    }
    fs.renewTimer = setInterval(() => void fs.renewLeases(), Math.max(50, Math.floor(opts.leaseTtlMs / 3)));
    fs.renewTimer.unref();
    cacheBytes.set(store.usedBytes);
    return fs;
  }

  get cacheUsedBytes(): number {
    return this.store.usedBytes;
  }

  /** Cached files this node holds (path → commit state); for `cairn status`. */
  cachedFiles(): CommitStatus[] {
    return [...this.files.values()].map((f) => this.statusOf(f));
  }

  // ---------------------------------------------------------------- open / close

  async open(path: string, o: OpenOptions = {}): Promise<number> {
    this.checkOpen();
    if (this.handles.size >= MAX_OPEN_HANDLES) throw new CairnError('EAGAIN', `${MAX_OPEN_HANDLES} handles are open; close some first`);
    const write = o.write === true || o.create === true || o.truncate === true || o.append === true;
    const volatile = o.volatile === true;
    if (volatile && !(o.create === true && o.exclusive === true && (o.mode ?? this.opts.mode) === 'strong')) {
      throw new CairnError('EINVAL', 'a volatile open must create the file exclusively, in strong mode');
    }
    let file = this.cachedByPath(path);
    if (file !== undefined && o.create === true && o.exclusive === true) throw new CairnError('EEXIST', `${path} exists`);
    if (file !== undefined && write && file.volatile) throw new CairnError('EBUSY', `${path} is being uploaded; open it for writing once the upload is done`);
    if (file === undefined) {
      // An exclusive create needs no look-up first: the create itself answers EEXIST.
      let attr = o.create === true && o.exclusive === true ? null : await this.meta.lookup(path);
      /** The write lease that came with the file this open created (no separate acquire then). */
      let granted: string | undefined;
      if (attr === null) {
        if (o.create !== true) throw new CairnError('ENOENT', `${path} does not exist`);
        try {
          const addr = this.coherence?.addr;
          const made = await this.meta.create(path, { mode: 0o644, lease: { holder: this.holder, ttlMs: this.opts.leaseTtlMs, ...(addr !== undefined ? { addr } : {}) } });
          granted = made.lease?.token;
          attr = made;
        } catch (err) {
          if (!(err instanceof CairnError && err.code === 'EEXIST') || o.exclusive === true) throw err;
          attr = await this.meta.lookup(path);
          if (attr === null) throw new CairnError('ENOENT', `${path} vanished while it was being created; try again`);
        }
      } else if (o.create === true && o.exclusive === true) {
        throw new CairnError('EEXIST', `${path} exists`);
      }
      const gone = this.removing.get(attr.fileId);
      if (gone !== undefined) await gone.catch(() => undefined);
      file = this.files.get(attr.fileId);
      if (file !== undefined && write && file.volatile) throw new CairnError('EBUSY', `${path} is being uploaded; open it for writing once the upload is done`);
      if (file === undefined) {
        file = CachedFile.fresh(
          this.store,
          {
            fileId: attr.fileId,
            path,
            mode: attr.mode,
            base: baseOf(attr),
          },
          volatile,
        );
        file.mtimeMs = attr.mtimeMs;
        file.state = 'clean';
        if (granted !== undefined) file.st = { ...file.st, leaseToken: granted };
        this.files.set(attr.fileId, file);
      }
      this.byPath.set(path, attr.fileId);
    }
    return this.attach(file, write, o.append === true, o.mode ?? this.opts.mode, o.truncate === true);
  }

  private async attach(f: CachedFile, write: boolean, append: boolean, mode: Mode, truncate: boolean, lazyLease = false): Promise<number> {
    // Counted as open before the next await, so a concurrent clean-up (forgetIfIdle) leaves it alone.
    f.openCount += 1;
    this.clearTimer(this.idleTimers, f);
    let remote: Handle['remote'];
    if (write && !lazyLease) {
      try {
        try {
          await f.lock.run(async () => {
            await ensureLease(f, this.deps);
          });
          await this.claim(f);
        } catch (err) {
          // Another node writes this file: this handle's writes go to it (never two writers).
          const w = this.writerFromBusy(f, err);
          if (w === undefined) throw err;
          const rfd = await this.coherence!.openWrite(w, f.fileId);
          if (rfd === null) throw err;
          remote = { w, rfd };
        }
      } catch (err) {
        f.openCount -= 1;
        if (f.openCount === 0) this.afterLastClose(f);
        throw err;
      }
    }
    if (f.pinnedVersion === null && f.st.base.extents.length > 0) await this.pin(f);
    const fd = this.nextFd++;
    this.handles.set(fd, { file: f, pos: 0, lastReadEnd: -1, write, append, mode, ...(remote !== undefined ? { remote } : {}) });
    if (truncate) await this.truncate(fd, 0);
    return fd;
  }

  /**
   * Open a file by its id (the metadata's inode number), as the VFS does: names are the VFS's
   * business, so a rename or unlink of the file leaves this handle on the same file. A file
   * cached on this node is shared with its other handles; otherwise its attributes and layout
   * are read fresh from the metadata (close-to-open).
   */
  async openById(fileId: string, o: OpenByIdOptions = {}): Promise<number> {
    this.checkOpen();
    if (this.handles.size >= MAX_OPEN_HANDLES) throw new CairnError('EAGAIN', `${MAX_OPEN_HANDLES} handles are open; close some first`);
    const write = o.write === true || o.truncate === true || o.append === true;
    let file = this.files.get(fileId);
    if (file === undefined) {
      const gone = this.removing.get(fileId);
      if (gone !== undefined) await gone.catch(() => undefined);
      file = this.files.get(fileId);
    }
    if (file !== undefined && write && file.volatile) throw new CairnError('EBUSY', `${file.st.path} is being uploaded; open it for writing once the upload is done`);
    if (file === undefined) {
      const attr = o.created !== undefined ? { ...o.created, size: 0, extents: [] } : await this.meta.getattr(fileId);
      file = this.files.get(fileId);
      if (file === undefined) {
        file = CachedFile.fresh(this.store, {
          fileId,
          path: attr.path,
          mode: attr.mode,
          base: baseOf(attr),
        });
        file.mtimeMs = attr.mtimeMs;
        file.state = 'clean';
        if (o.leaseToken !== undefined) file.st = { ...file.st, leaseToken: o.leaseToken };
        this.files.set(fileId, file);
      }
    }
    const fd = await this.attach(file, write, o.append === true, o.mode ?? this.opts.mode, o.truncate === true && o.replicate !== true, o.lazyLease === true);
    const h = this.handles.get(fd);
    if (h !== undefined && o.replicate === true && write && this.coherence !== undefined) {
      h.replicate = true;
      if (o.truncate === true) await this.truncate(fd, 0);
    }
    return fd;
  }

  /**
   * Size and mtime of a file as this node's cache sees it (written, maybe not committed), if this
   * node writes it (dirty, committing, or under its lease). A clean file without a lease is the
   * metadata's to describe (another node may have committed a newer version since).
   */
  cachedAttr(fileId: string): { size: number; mtimeMs: number; dirty: boolean } | undefined {
    const f = this.files.get(fileId);
    if (f === undefined) return undefined;
    const dirty = f.hasDirty() || f.running !== null;
    if (!dirty && f.st.leaseToken === null) return undefined;
    return { size: f.size, mtimeMs: f.mtimeMs, dirty };
  }

  // ---------------------------------------------------------------- coherence (docs/dfs-cache.md)

  /** This node's peer address (src/peer), named in the leases it takes; undefined without coherence. */
  get peerAddr(): string | undefined {
    return this.coherence?.addr;
  }

  /** How long the write leases this node takes last (renewed at a third of it). */
  get leaseTtlMs(): number {
    return this.opts.leaseTtlMs;
  }

  /** The size of an open handle's file as this node sees it. */
  sizeOf(fd: number): number {
    return this.handle(fd).file.size;
  }

  /** Plug in the coherence port (src/peer), once the node's transport is up. */
  setCoherence(c: CoherencePort): void {
    this.coherence = c;
  }

  /** Called with a file id whenever another node's write makes what this node cached of it stale. */
  onInvalidate(cb: (fileId: string) => void): () => void {
    this.invalidateListeners.add(cb);
    return () => this.invalidateListeners.delete(cb);
  }

  /** Another node claimed or gave back the file: drop what this node cached of it (base refreshed at the next read). */
  invalidate(fileId: string): void {
    const f = this.files.get(fileId);
    if (f !== undefined) f.stale = true;
    for (const cb of this.invalidateListeners) cb(fileId);
  }

  /** Size and mtime of the file as its writer on another node sees them now; undefined when no other node writes it. */
  async remoteAttr(fileId: string): Promise<RemoteAttr | undefined> {
    const f = this.files.get(fileId);
    if (f !== undefined && (f.hasDirty() || f.st.leaseToken !== null || f.running !== null)) return undefined;
    const w = this.coherence?.writerOf(fileId);
    if (w === undefined) return undefined;
    const a = await this.askWriter(fileId, w, () => this.coherence!.attr(w, fileId));
    if (a === null) {
      this.coherence!.forget(fileId, w);
      this.invalidate(fileId);
      return undefined;
    }
    return a;
  }

  /**
   * A call to the file's writer node; when it fails, the metadata says whether that writer's lease
   * is still live (then the error stands: its data is not readable elsewhere) or gone (null: it
   * no longer writes the file, and the committed version is the newest).
   */
  private async askWriter<T>(fileId: string, w: RemoteWriter, fn: () => Promise<T | null>): Promise<T | null> {
    try {
      return await fn();
    } catch (err) {
      if (this.meta.leaseOf === undefined) throw err;
      const l = await this.meta.leaseOf(fileId);
      if (l !== null && l.token === w.token) throw err;
      this.log.info({ fileId, writer: w.addr, err: String(err) }, 'the writer of a file does not answer and its lease is gone; reading the committed version');
      return null;
    }
  }

  /**
   * Before a replicated handle's first mirrored op on a file: a replica's log starts from a clean
   * file (everything before it committed and durable), so it never lacks an acknowledged write.
   */
  private async startMirror(h: Handle): Promise<void> {
    const f = h.file;
    if (h.replicate !== true || this.mirrored.has(f.fileId)) return;
    if (f.hasDirty() || f.running !== null || f.st.commit !== null) await this.commitWait(f, 'durable');
  }

  /** Mirror one op to the replica (caller holds the file's lock, the op is in the journal). False: not mirrored (commit durably instead). */
  private async mirrorOp(f: CachedFile, op: { kind: 'write'; offset: number; data: Buffer } | { kind: 'truncate'; size: number }): Promise<boolean> {
    const fresh = !this.mirrored.has(f.fileId);
    try {
      await this.coherence!.mirror(f.fileId, Number(f.st.leaseToken ?? 0), f.st.base.version, op, fresh);
      this.mirrored.add(f.fileId);
      return true;
    } catch (err) {
      this.log.warn({ path: f.st.path, err: String(err) }, 'no replica took a write; it is acknowledged once committed instead');
      this.mirrored.delete(f.fileId);
      this.coherence!.resetReplica(f.fileId);
      return false;
    }
  }

  /** The replica side's takeover: apply a dead writer's mirrored ops as this node's own writes, durable in this node's cache. */
  async applyMirrored(fileId: string, ops: Array<{ kind: 'write'; offset: number; data: Buffer } | { kind: 'truncate'; size: number }>): Promise<void> {
    const fd = await this.openById(fileId, { write: true, mode: 'weak' });
    try {
      for (const op of ops) {
        if (op.kind === 'write') await this.write(fd, op.data, op.offset);
        else await this.truncate(fd, op.size);
      }
      await this.fsync(fd);
    } finally {
      await this.close(fd);
    }
  }

  /** This node holds the file as its writer (its lease, or data not yet committed): it answers other nodes for it. */
  private holds(f: CachedFile): boolean {
    return f.st.leaseToken !== null || f.hasDirty() || f.running !== null;
  }

  /** For the peer port: the file's size and mtime here, or null when this node does not write it. */
  peerAttr(fileId: string): RemoteAttr | null {
    const f = this.files.get(fileId);
    if (f === undefined || !this.holds(f)) return null;
    return { size: f.size, mtimeMs: f.mtimeMs, state: f.state, pendingBytes: f.pendingBytes(), level: this.levelOf(f) };
  }

  /** The durability level of a file's pending data: committed when a strong handle writes it, replicated when a replica holds it, else local. */
  private levelOf(f: CachedFile): 'local' | 'replicated' | 'committed' {
    for (const h of this.handles.values()) if (h.file === f && h.write && h.mode === 'strong') return 'committed';
    return this.mirrored.has(f.fileId) ? 'replicated' : 'local';
  }

  /**
   * Where a file's uncommitted data lives (`cairn status PATH`): this node when it writes the file,
   * else the node its live lease names, asked over the peer port; null writer: nothing pending.
   */
  async dirtyStatus(fileId: string): Promise<{ writer: string | null; level: string; state?: string; pendingBytes?: number }> {
    const f = this.files.get(fileId);
    if (f !== undefined && this.holds(f)) return { writer: this.coherence?.addr ?? 'this node', level: f.pendingBytes() > 0 ? this.levelOf(f) : '', state: f.state, pendingBytes: f.pendingBytes() };
    if (this.coherence === undefined || this.meta.leaseOf === undefined) return { writer: null, level: '' };
    const l = await this.meta.leaseOf(fileId);
    // The lease names the writer; one whose lease lapsed (a slow renewal) may still hold data: the claim named it.
    const w = l !== null && l.addr !== undefined ? { addr: l.addr, token: l.token } : this.coherence.writerOf(fileId);
    if (w === undefined || w.addr === this.coherence.addr) return { writer: null, level: '' };
    const a = await this.coherence.attr(w, fileId).catch(() => null);
    if (a === null) return { writer: l !== null ? w.addr : null, level: '' };
    return { writer: w.addr, level: (a.pendingBytes ?? 0) > 0 ? (a.level ?? '') : '', ...(a.state !== undefined ? { state: a.state } : {}), ...(a.pendingBytes !== undefined ? { pendingBytes: a.pendingBytes } : {}) };
  }

  /** For the peer port: bytes as this node (the writer) sees them, cut at the size; null when it does not write the file. */
  async peerRead(fileId: string, offset: number, length: number): Promise<(RemoteAttr & { data: Buffer }) | null> {
    checkRange(offset, length);
    const f = this.files.get(fileId);
    if (f === undefined || !this.holds(f)) return null;
    const end = Math.min(f.size, offset + Math.min(length, MAX_READ_BYTES));
    const data = end <= offset ? Buffer.alloc(0) : await f.read(offset, end, this.readCache);
    return { data, size: f.size, mtimeMs: f.mtimeMs };
  }

  /** For the peer port: a write handle for another node's writes, or null when this node does not write the file. */
  async peerOpenWrite(fileId: string): Promise<number | null> {
    const f = this.files.get(fileId);
    if (f === undefined || f.st.leaseToken === null) return null;
    return this.openById(fileId, { write: true });
  }

  /** Claim the file to the other nodes once per lease token, before a write handle opens. */
  private async claim(f: CachedFile): Promise<void> {
    const token = f.st.leaseToken;
    if (this.coherence === undefined || token === null || this.claimed.get(f.fileId) === token) return;
    await this.coherence.claim(f.fileId, Number(token));
    this.claimed.set(f.fileId, token);
  }

  /** The writer an EBUSY of a lease acquire names (with its peer address), if any. */
  private writerFromBusy(f: CachedFile, err: unknown): RemoteWriter | undefined {
    if (this.coherence === undefined || !(err instanceof CairnError) || err.code !== 'EBUSY') return undefined;
    const addr = err.details?.addr;
    const token = Number(err.details?.token ?? 0);
    if (typeof addr !== 'string' || addr === this.coherence.addr) return this.coherence.writerOf(f.fileId);
    const w = { addr, token };
    this.coherence.learn(f.fileId, w);
    return w;
  }

  /** The remote writer a read of `f` goes to, if another node writes it now. */
  private remoteFor(f: CachedFile): RemoteWriter | undefined {
    if (this.coherence === undefined || f.hasDirty() || f.st.leaseToken !== null || f.running !== null) return undefined;
    return this.coherence.writerOf(f.fileId);
  }

  /** A clean file whose base another node replaced: read its layout again from the metadata. */
  private async refreshBase(f: CachedFile): Promise<void> {
    await f.lock.run(async () => {
      if (!f.stale) return;
      f.stale = false;
      if (f.hasDirty() || f.running !== null || f.st.leaseToken !== null || f.st.commit !== null) return;
      const attr = await this.meta.getattr(f.fileId);
      if (f.hasDirty()) return;
      f.st = { ...f.st, base: baseOf(attr) };
      f.live = new DirtyLayer(attr.size);
      f.mtimeMs = attr.mtimeMs;
    });
  }

  /** An explicit mtime (utimensat) for a cached file: its next commit carries it instead of the last write's time. */
  setMtime(fileId: string, mtimeMs: number): void {
    const f = this.files.get(fileId);
    if (f !== undefined) f.mtimeMs = mtimeMs;
  }

  /**
   * The file's last name went away (unlink, or rename over it): commit nothing more of it, and
   * drop its cache once its last handle closes. Open handles keep reading and writing it.
   */
  discard(fileId: string): void {
    this.discarded.add(fileId);
    const f = this.files.get(fileId);
    if (f === undefined) {
      this.discarded.delete(fileId);
      return;
    }
    this.clearTimer(this.idleTimers, f);
    this.clearTimer(this.retryTimers, f);
    if (f.openCount === 0) this.dropDiscarded(f);
  }

  private dropDiscarded(f: CachedFile): void {
    const p: Promise<void> = (async () => {
      if (f.running !== null) await f.running.catch(() => undefined);
      if (f.openCount > 0 || this.files.get(f.fileId) !== f) return;
      this.files.delete(f.fileId);
      if (this.byPath.get(f.st.path) === f.fileId) this.byPath.delete(f.st.path);
      this.discarded.delete(f.fileId);
      const done = f.removeFromDisk();
      this.removing.set(f.fileId, done);
      try {
        await done;
      } finally {
        if (this.removing.get(f.fileId) === done) this.removing.delete(f.fileId);
      }
      cacheBytes.set(this.store.usedBytes);
    })()
      .catch((err: unknown) => this.log.warn({ path: f.st.path, err: String(err) }, 'dropping a discarded cached file failed'))
      .finally(() => this.background.delete(p));
    this.background.add(p);
  }

  async close(fd: number): Promise<void> {
    const h = this.handle(fd);
    try {
      if (h.remote !== undefined) await this.coherence!.close(h.remote.w, h.remote.rfd);
      if (h.write && h.mode === 'strong' && !this.discarded.has(h.file.fileId)) await this.commitWait(h.file, 'durable');
    } finally {
      this.handles.delete(fd);
      h.file.openCount -= 1;
      if (h.file.openCount === 0) this.afterLastClose(h.file);
    }
  }

  // ---------------------------------------------------------------- data

  async read(fd: number, length: number, position?: number): Promise<Buffer> {
    const h = this.handle(fd);
    checkRange(position ?? h.pos, length);
    const at = position ?? h.pos;
    const f = h.file;
    const w = this.remoteFor(f);
    if (w !== undefined) {
      // Another node writes this file: its bytes, as it sees them now (docs/dfs-cache.md).
      const r = await this.askWriter(f.fileId, w, () => this.coherence!.read(w, f.fileId, at, Math.min(length, MAX_READ_BYTES)));
      if (r !== null) {
        if (position === undefined) h.pos = at + r.data.length;
        return r.data;
      }
      this.coherence!.forget(f.fileId, w);
      this.invalidate(f.fileId);
    }
    if (f.stale) await this.refreshBase(f);
    const end = Math.min(f.size, at + Math.min(length, MAX_READ_BYTES));
    // A read that continues the previous one fetches the next chunks in the background
    // (readAheadChunks ahead); random reads never do, so a database's page reads cost no extra chunk.
    const sequential = at === h.lastReadEnd;
    h.lastReadEnd = end;
    const out = end <= at ? Buffer.alloc(0) : await f.read(at, end, this.readCache, { readAheadChunks: sequential ? this.opts.readAheadChunks : 0 });
    if (position === undefined) h.pos = at + out.length;
    return out;
  }

  /** Write at `position` (or the handle's position; the end for append handles). Returns bytes written. */
  async write(fd: number, data: Uint8Array, position?: number): Promise<number> {
    const h = this.writable(fd);
    checkRange(position ?? h.pos, data.length);
    if (data.length === 0) return 0;
    if (h.remote !== undefined) {
      const r = await this.coherence!.write(h.remote.w, h.remote.rfd, data, h.append ? null : (position ?? h.pos));
      if (position === undefined || h.append) h.pos = r.at + data.length;
      return data.length;
    }
    const f = h.file;
    if (f.live.entryCount >= MAX_LAYER_ENTRIES) {
      this.kick(f);
      await f.waitFor(() => f.live.entryCount < MAX_LAYER_ENTRIES, this.opts.cacheFullTimeoutMs, 'a commit to make room in the dirty index').catch(() => {
        throw new CairnError('ENOSPC', `${f.st.path} holds ${MAX_LAYER_ENTRIES} separate dirty ranges and no commit made room in time`);
      });
    }
    await this.startMirror(h);
    // Space first (may wait: back-pressure), then the journal append under the file's lock.
    const records = Math.ceil(data.length / MAX_RECORD_PAYLOAD_BYTES);
    await this.store.reserve(data.length + records * RECORD_HEADER_BYTES);
    let at = 0;
    let unmirrored = false;
    try {
      await f.lock.run(async () => {
        at = h.append ? f.size : (position ?? h.pos);
        checkRange(at, data.length);
        await f.appendWrite(at, data);
        f.setState(f.frozen !== null ? f.state : 'dirty');
        if (h.replicate === true) unmirrored = !(await this.mirrorOp(f, { kind: 'write', offset: at, data: Buffer.from(data) }));
      });
    } catch (err) {
      this.store.release(data.length + records * RECORD_HEADER_BYTES);
      throw err;
    }
    if (unmirrored) await this.commitWait(f, 'durable');
    cacheBytes.set(this.store.usedBytes);
    if (position === undefined || h.append) h.pos = at + data.length;
    if (f.liveWrittenBytes >= this.opts.dirtyThresholdBytes) this.kick(f);
    return data.length;
  }

  /** Write at the end of the file, whatever the handle's position. Returns the offset written at. */
  async append(fd: number, data: Uint8Array): Promise<number> {
    const h = this.writable(fd);
    const wasAppend = h.append;
    h.append = true;
    try {
      await this.write(fd, data);
      return h.pos - data.length;
    } finally {
      h.append = wasAppend;
    }
  }

  /** Set the size of an open file (by handle) or of a path. */
  async truncate(target: number | string, size: number): Promise<void> {
    checkRange(size, 0);
    if (typeof target === 'string') {
      const fd = await this.open(target, { write: true });
      try {
        await this.truncate(fd, size);
      } finally {
        await this.close(fd);
      }
      return;
    }
    const h = this.writable(target);
    if (h.remote !== undefined) {
      await this.coherence!.truncate(h.remote.w, h.remote.rfd, size);
      return;
    }
    const f = h.file;
    await this.startMirror(h);
    await this.store.reserve(RECORD_HEADER_BYTES);
    let unmirrored = false;
    try {
      await f.lock.run(async () => {
        await f.appendTruncate(size);
        f.setState(f.frozen !== null ? f.state : 'dirty');
        if (h.replicate === true) unmirrored = !(await this.mirrorOp(f, { kind: 'truncate', size }));
      });
    } catch (err) {
      this.store.release(RECORD_HEADER_BYTES);
      throw err;
    }
    if (unmirrored) await this.commitWait(f, 'durable');
  }

  /** weak: the cached writes are durable on this node's cache disk. strong: committed and durable. */
  async flush(fd: number): Promise<void> {
    const h = this.handle(fd);
    if (h.remote !== undefined) {
      await this.coherence!.fsync(h.remote.w, h.remote.rfd);
      return;
    }
    if (h.mode === 'strong' && !this.discarded.has(h.file.fileId)) {
      await this.commitWait(h.file, 'durable');
      return;
    }
    await h.file.lock.run(() => h.file.syncJournal());
  }

  async fsync(fd: number): Promise<void> {
    await this.flush(fd);
  }

  // ---------------------------------------------------------------- commit

  /**
   * Commit a file now (by handle or path): `wait` 'none' returns at once, 'visible' once readers
   * everywhere see the writes made before this call, 'durable' once they are fully stored.
   */
  async commit(target: number | string, wait: 'none' | 'visible' | 'durable' = 'durable'): Promise<CommitStatus> {
    const f = typeof target === 'number' ? this.handle(target).file : this.cachedByPath(target);
    if (f === undefined) {
      const attr = await this.meta.lookup(target as string);
      if (attr === null) throw new CairnError('ENOENT', `${String(target)} does not exist`);
      return { path: attr.path, state: 'durable', pendingBytes: 0, version: attr.version, size: attr.size, error: null };
    }
    if (wait === 'none') {
      this.kick(f);
      return this.statusOf(f);
    }
    await this.commitWait(f, wait);
    return this.statusOf(f);
  }

  /**
   * A whole small file (at most `inlineMaxBytes`) stored in one metadata write: the file at `path`
   * is replaced by a new one holding `data` inline, durable when this returns (either mode), as a
   * rename over it would; `mkdirs` makes missing parents. Returns null when this path cannot take
   * it — inline storage off, data too large, the path cached on this node (an open or uncommitted
   * file: the cache decides), or the metadata's inline budget full (logged) — and the caller
   * writes the file through open/write/close instead.
   */
  async putSmall(path: string, data: Buffer, o: { mkdirs?: boolean; mode?: number } = {}): Promise<{ fileId: string; version: number; size: number } | null> {
    this.checkOpen();
    if (this.opts.inlineMaxBytes === 0 || data.length > this.opts.inlineMaxBytes || this.byPath.has(path)) return null;
    try {
      const a = await this.meta.putFile(path, data, { mode: o.mode ?? 0o644, mkdirs: o.mkdirs === true });
      return { fileId: a.fileId, version: a.version, size: a.size };
    } catch (err) {
      if (!(err instanceof CairnError && err.code === 'ENOSPC')) throw err;
      this.log.warn({ path, size: data.length, err: err.message }, 'inline budget of the metadata is full; storing this small file in chunks');
      return null;
    }
  }

  // ---------------------------------------------------------------- cluster-wide locks (src/vfs/locks.ts)

  /**
   * A lock on the file was just granted: a clean cached copy (open handles on this node, nothing
   * of its own to commit) moves to the metadata's current version, so what the previous holder
   * committed is what reads see now. A file with writes of its own is left alone (its commit
   * compares and sets against its base). Returns whether the copy moved.
   */
  async revalidate(fileId: string): Promise<boolean> {
    const f = this.files.get(fileId);
    if (f === undefined) return false;
    const clean = (): boolean => !f.hasDirty() && f.running === null && f.st.commit === null && f.frozen === null;
    if (!clean()) return false;
    const attr = await this.meta.getattr(fileId);
    if (attr.version === f.st.base.version) return false;
    let moved = false;
    await f.lock.run(async () => {
      if (!clean() || this.files.get(fileId) !== f || attr.version <= f.st.base.version) return;
      f.st = { ...f.st, base: baseOf(attr) };
      f.live = new DirtyLayer(attr.size);
      f.mtimeMs = attr.mtimeMs;
      if (f.persisted) await f.saveState();
      moved = true;
    });
    return moved;
  }

  /**
   * A lock on the file is being released: what this node wrote is committed first (visible to
   * every node and durable in the chunk store), then the write lease goes back, so that the next
   * holder — on any node — can commit its own writes. Nothing to do for a file not cached here.
   */
  async settle(fileId: string): Promise<void> {
    const f = this.files.get(fileId);
    if (f === undefined || this.discarded.has(fileId)) return;
    // The lease may be held by another node a moment longer (its own unlock is giving it back): try again.
    const deadline = Date.now() + this.opts.durableTimeoutMs;
    for (let pause = 20; f.hasDirty() || f.st.commit !== null; pause = Math.min(500, pause * 2)) {
      try {
        await this.commitWait(f, 'durable');
      } catch (err) {
        if (!(err instanceof CairnError && err.code === 'EBUSY') || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, pause));
      }
    }
    const token = f.st.leaseToken;
    if (token === null || f.hasDirty()) return;
    f.st = { ...f.st, leaseToken: null };
    await this.meta.releaseLease(fileId, this.holder, token).catch((err: unknown) => {
      this.log.warn({ path: f.st.path, err: String(err) }, 'lease release after an unlock failed; it will expire');
    });
  }

  /** Files up to this size are stored inline in the metadata (0: never). */
  get inlineMaxBytes(): number {
    return this.opts.inlineMaxBytes;
  }

  /** The file id (the metadata's inode number, as text) of an open handle's file. */
  fileIdOf(fd: number): string {
    return this.handle(fd).file.fileId;
  }

  /** Where the file's commit stands and how many bytes are still pending. */
  async commitStatus(path: string): Promise<CommitStatus> {
    const f = this.cachedByPath(path);
    if (f !== undefined) return this.statusOf(f);
    const attr = await this.meta.lookup(path);
    if (attr === null) throw new CairnError('ENOENT', `${path} does not exist`);
    return { path, state: 'durable', pendingBytes: 0, version: attr.version, size: attr.size, error: null };
  }

  async stat(path: string): Promise<Stat> {
    const f = this.cachedByPath(path);
    if (f !== undefined) {
      return {
        path,
        size: f.size,
        version: f.st.base.version,
        mode: f.st.mode,
        mtimeMs: f.mtimeMs,
        state: f.state,
        pendingBytes: f.pendingBytes(),
      };
    }
    const attr = await this.meta.lookup(path);
    if (attr === null) throw new CairnError('ENOENT', `${path} does not exist`);
    return { path, size: attr.size, version: attr.version, mode: attr.mode, mtimeMs: attr.mtimeMs, state: 'durable', pendingBytes: 0 };
  }

  /** Stop background work and close journal files. Cached data stays on disk for the next start. */
  async shutdown(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.renewTimer !== null) clearInterval(this.renewTimer);
    for (const t of this.idleTimers.values()) clearTimeout(t);
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.idleTimers.clear();
    this.retryTimers.clear();
    this.store.close();
    await Promise.allSettled([...this.files.values()].map((f) => f.running ?? Promise.resolve()));
    await Promise.allSettled([...this.background]);
    for (const f of this.files.values()) await f.closeSegments();
    this.handles.clear();
  }

  // ---------------------------------------------------------------- internals

  private statusOf(f: CachedFile): CommitStatus {
    return {
      path: f.st.path,
      state: f.state,
      pendingBytes: f.pendingBytes(),
      version: f.st.base.version,
      size: f.size,
      error: f.lastError === null ? null : f.lastError.toString(),
    };
  }

  private cachedByPath(path: string): CachedFile | undefined {
    const id = this.byPath.get(path);
    return id === undefined ? undefined : this.files.get(id);
  }

  private checkOpen(): void {
    if (this.closing) throw new CairnError('ECANCELED', 'the file system is shut down');
  }

  private handle(fd: number): Handle {
    this.checkOpen();
    const h = this.handles.get(fd);
    if (h === undefined) throw new CairnError('EINVAL', `file handle ${fd} is not open`);
    return h;
  }

  private writable(fd: number): Handle {
    const h = this.handle(fd);
    if (!h.write) throw new CairnError('EACCES', `file handle ${fd} (${h.file.st.path}) was opened read-only`);
    if (h.file.state === 'conflict') {
      throw new CairnError('ECONFLICT', `${h.file.st.path} has a conflicting commit; its cached data is kept in ${h.file.dir}`);
    }
    return h;
  }

  private clearTimer(m: Map<CachedFile, NodeJS.Timeout>, f: CachedFile): void {
    const t = m.get(f);
    if (t !== undefined) clearTimeout(t);
    m.delete(f);
  }

  /**
   * Pin the base version for this node's open handles: chunk GC keeps a pinned version's chunks
   * even once it is superseded or unlinked (docs/client.md, "GC safety"). Renewed with the leases.
   */
  private async pin(f: CachedFile): Promise<void> {
    const version = f.st.base.version;
    try {
      await this.meta.pinVersion(f.fileId, version, this.holder, this.opts.leaseTtlMs);
      f.pinnedVersion = version;
    } catch (err) {
      this.log.warn({ path: f.st.path, version, err: String(err) }, 'could not pin the open version; its chunks are kept by the GC grace period only');
    }
  }

  private unpinLater(f: CachedFile): void {
    if (f.pinnedVersion === null) return;
    f.pinnedVersion = null;
    const p: Promise<void> = this.meta
      .unpinVersion(f.fileId, this.holder)
      .catch((err: unknown) => this.log.warn({ path: f.st.path, err: String(err) }, 'unpin failed; the pin will expire'))
      .finally(() => this.background.delete(p));
    this.background.add(p);
  }

  private afterLastClose(f: CachedFile): void {
    if (this.closing) return;
    if (this.discarded.has(f.fileId)) {
      this.unpinLater(f);
      this.dropDiscarded(f);
      return;
    }
    this.unpinLater(f);
    if (f.hasDirty()) {
      this.clearTimer(this.idleTimers, f);
      const t = setTimeout(() => {
        this.idleTimers.delete(f);
        this.kick(f);
      }, this.opts.idleCommitDelayMs);
      t.unref();
      this.idleTimers.set(f, t);
    } else if (f.running === null) {
      this.forgetLater(f);
    }
  }

  private forgetLater(f: CachedFile): void {
    const p: Promise<void> = this.forgetIfIdle(f)
      .catch((err: unknown) => this.log.warn({ path: f.st.path, err: String(err) }, 'dropping a clean cached file failed'))
      .finally(() => this.background.delete(p));
    this.background.add(p);
  }

  /** Drop a clean, unopened file from memory and disk, and give its lease back. */
  private async forgetIfIdle(f: CachedFile): Promise<void> {
    if (f.openCount > 0 || f.hasDirty() || f.running !== null || f.st.commit !== null || this.closing) return;
    await f.lock.run(async () => {
      if (f.openCount > 0 || f.hasDirty() || f.running !== null || this.files.get(f.fileId) !== f) return;
      // Out of the maps in the same tick as the decision: an open from now on builds a new
      // CachedFile, and waits (removing) until this one's directory is gone.
      this.files.delete(f.fileId);
      if (this.byPath.get(f.st.path) === f.fileId) this.byPath.delete(f.st.path);
      const token = f.st.leaseToken;
      const done = (async () => {
        await f.removeFromDisk();
        if (token !== null) {
          f.st = { ...f.st, leaseToken: null };
          await this.meta.releaseLease(f.fileId, this.holder, token).catch((err: unknown) => {
            this.log.warn({ path: f.st.path, err: String(err) }, 'lease release failed; it will expire');
          });
          this.claimed.delete(f.fileId);
          this.mirrored.delete(f.fileId);
          this.coherence?.released(f.fileId, Number(token));
        }
      })();
      this.removing.set(f.fileId, done);
      try {
        await done;
      } finally {
        if (this.removing.get(f.fileId) === done) this.removing.delete(f.fileId);
      }
    });
    cacheBytes.set(this.store.usedBytes);
  }

  /** Start (or queue one more) commit of the file in the background. */
  private kick(f: CachedFile): void {
    if (this.closing || this.discarded.has(f.fileId)) return;
    this.clearTimer(this.retryTimers, f);
    f.commitRequested = true;
    if (f.running !== null) return;
    if (f.state !== 'conflict') f.lastError = null;
    f.running = this.commitLoop(f).finally(() => {
      f.running = null;
      if (!this.closing && f.openCount === 0 && !f.hasDirty()) this.forgetLater(f);
    });
  }

  private async commitLoop(f: CachedFile): Promise<void> {
    while (f.commitRequested && !this.closing) {
      f.commitRequested = false;
      try {
        await runCommit(f, this.deps);
        f.commitFailures = 0;
        commitsTotal.inc({ result: 'ok' });
        cacheBytes.set(this.store.usedBytes);
        if (f.hasDirty() && f.liveWrittenBytes >= this.opts.dirtyThresholdBytes) f.commitRequested = true;
      } catch (err) {
        const e = err instanceof CairnError ? err : new CairnError('EIO', String(err));
        commitsTotal.inc({ result: e.code });
        if (this.closing) return;
        this.log.warn({ path: f.st.path, err: e.toString() }, 'commit failed; the data stays in the cache');
        if (e.code === 'ECONFLICT') {
          f.setState('conflict', e);
          return;
        }
        f.setState(f.st.commit?.state === 'visible' ? 'visible' : 'dirty', e);
        f.commitFailures += 1;
        const delayMs = Math.min(MAX_COMMIT_RETRY_MS, this.opts.retryBaseMs * 10 * 2 ** Math.min(f.commitFailures - 1, 10));
        const t = setTimeout(() => {
          this.retryTimers.delete(f);
          this.kick(f);
        }, delayMs);
        t.unref();
        this.retryTimers.set(f, t);
        return;
      }
    }
  }

  /** Commit and wait until everything written before this call is visible / durable. */
  private async commitWait(f: CachedFile, level: 'visible' | 'durable'): Promise<void> {
    const target = f.writeSeq;
    const reached = (): boolean => (level === 'durable' ? f.durableSeq : f.visibleSeq) >= target;
    if (reached() && f.st.commit === null) return;
    this.kick(f);
    await f.waitFor(() => reached() || f.lastError !== null, this.opts.durableTimeoutMs, `commit to ${level}`);
    if (!reached()) throw f.lastError ?? new CairnError('EIO', `${f.st.path}: commit failed`);
  }

  private renewing = false;

  /** Renew the lease of every file that holds one, a few at a time; a failure drops the token. */
  private async renewLeases(): Promise<void> {
    if (this.renewing || this.closing) return;
    this.renewing = true;
    try {
      // Pins of open files first (re-pinned when a commit moved the base on), a few at a time, then leases.
      const pins = [...this.files.values()].filter((f) => f.openCount > 0 && (f.pinnedVersion !== null || f.st.base.extents.length > 0));
      await Promise.all(Array.from({ length: RENEW_PARALLELISM }, async () => {
        for (let f = pins.shift(); f !== undefined && !this.closing; f = pins.shift()) await this.pin(f);
      }));
      const queue = [...this.files.values()].filter((f) => f.st.leaseToken !== null);
      const worker = async (): Promise<void> => {
        for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
          const token = f.st.leaseToken;
          if (token === null || this.closing) continue;
          try {
            const lease = await this.meta.renewLease(f.fileId, this.holder, token, this.opts.leaseTtlMs);
            if (f.st.leaseToken === token) f.st = { ...f.st, leaseToken: lease.token };
          } catch (err) {
            this.log.warn({ path: f.st.path, err: String(err) }, 'lease renewal failed; the next commit takes a new lease');
            if (f.st.leaseToken === token) f.st = { ...f.st, leaseToken: null };
          }
        }
      };
      await Promise.all(Array.from({ length: RENEW_PARALLELISM }, worker));
    } finally {
      this.renewing = false;
    }
  }
}

function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > MAX_FILE_OFFSET) {
    throw new CairnError('EINVAL', `offset ${offset} and length ${length} must be non-negative integers within 2^53`);
  }
}

/** The committed version a cached file sits on, as the metadata describes it (inline content included). */
function baseOf(attr: { version: number; size: number; extents: FileAttr['extents']; inline?: Buffer }): { version: number; size: number; extents: FileAttr['extents']; inline?: string } {
  return { version: attr.version, size: attr.size, extents: attr.extents, ...(attr.inline !== undefined ? { inline: attr.inline.toString('base64') } : {}) };
}
