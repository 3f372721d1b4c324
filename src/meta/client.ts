/**
 * MetaClient: the library every other part (the file API, the CLI, the chunk GC) uses to talk
 * to the metadata service. It knows several endpoints and hides which node leads: a request
 * that meets ENOTLEADER is retried on the leader it names; a node that cannot be reached is
 * skipped for the next one. Reads are linearizable unless `{ serializable: true }`.
 *
 * Retries of writes: a write is retried after ENOTLEADER (it was not proposed) and after
 * EUNAVAIL (the node could not be reached or was starting). EUNAVAIL after the request reached
 * a node that then died can make a retried create report EEXIST, or a retried commit report
 * ECONFLICT; commitStatus() tells whether the first attempt won.
 *
 * Coalescing: namespace writes that callers have in flight at the same moment (issued during
 * one turn of the event loop) go to the node as one Batch request, which the node proposes as
 * one Raft entry; each write still applies atomically, in the order it was issued, and gets
 * its own result or error, exactly as if it had been sent alone. A write issued while nothing
 * else is pending goes alone, as its own RPC (no added wait). `batchWrites: false` turns it off.
 *
 * watch() is an async iterator of events that survives disconnects, leader changes and node
 * restarts: it resumes from the last revision it saw, so no event is missed or repeated.
 */
import { CairnError, isErrorCode } from '../common/errors.js';
import { call, grpc, makeClient, openServerStream, serviceOf, fromServiceError } from '../rpc/grpc.js';
import type { Ref, EntryRef, Extent } from './ops.js';
import type { CommitRecord, DirEntry, EventKind, Inode, InodeType, WatchEvent } from './state-machine.js';
import { LEASE_SAFETY_MARGIN_MS } from './state-machine.js';
import { reportedVersion } from '../common/version.js';
import type { HeldLock, LockKind, LockMode } from './lock-table.js';

export type { Ref, EntryRef, Extent, CommitRecord, DirEntry, Inode, InodeType, WatchEvent, EventKind, HeldLock, LockKind, LockMode };

/** A path string or a reference object. */
export type Target = string | Ref;
export type EntryTarget = string | EntryRef;

export interface ReadOptions {
  /** Read this node's state without the ReadIndex barrier (may be stale). */
  serializable?: boolean;
}

export interface Attr extends Inode {}

/** A directory entry; `attr` is set when the listing was asked `withAttrs`. */
export interface DirEntryPlus extends DirEntry {
  attr?: Attr;
}

export interface LeaseGrant {
  ino: number;
  holder: string;
  token: number;
  ttlMs: number;
  /** Local clock (Date.now()) before which the holder may rely on the lease: send time + ttl - margin. */
  validUntilMs: number;
  /** The holder's peer address (src/peer), when it gave one. */
  addr?: string;
}

export interface MetaStatus {
  nodeId: number;
  leaderId: number;
  leaderAddress: string;
  role: string;
  term: number;
  applied: number;
  revision: number;
  firstRevision: number;
  address: string;
  /** The node's release ("0.1.0" for a node that reports none: docs/upgrade.md). */
  version: string;
  /** The cluster version as the node applied it ("0.1.0" from a node that reports none). */
  clusterVersion: string;
}

export interface MetaClientOptions {
  /** host:port of one or more nodes. */
  endpoints: string[];
  /** Deadline of one attempt. */
  timeoutMs?: number;
  /** Total time spent retrying a request across nodes before giving up. */
  retryBudgetMs?: number;
  /** Coalesce concurrent namespace writes into Batch requests (default true). */
  batchWrites?: boolean;
  /**
   * With batchWrites: at most this many write requests in flight; writes issued meanwhile wait for
   * one to return and go together as one Batch (0, the default: no limit, each event-loop turn's
   * writes go at once). For callers whose writes arrive one by one from many sources (the file
   * service's small puts): they share Raft entries instead of paying one each.
   */
  maxWritesInFlight?: number;
}

/** Writes one Batch request carries at most (the node accepts 1024). */
export const MAX_BATCH_WRITES = 512;

/** The writes that may be coalesced: their BatchOp field and where their reply sits in a BatchResult. */
const BATCHABLE: Readonly<Record<string, { field: string; slot?: 'attr' | 'rename' | 'record' }>> = {
  Mkdir: { field: 'mkdir', slot: 'attr' },
  Create: { field: 'create', slot: 'attr' },
  Symlink: { field: 'symlink', slot: 'attr' },
  Link: { field: 'link', slot: 'attr' },
  Unlink: { field: 'unlink' },
  Rmdir: { field: 'rmdir' },
  Rename: { field: 'rename', slot: 'rename' },
  Setattr: { field: 'setattr', slot: 'attr' },
  SetXattr: { field: 'set_xattr' },
  RemoveXattr: { field: 'remove_xattr' },
  MarkDurable: { field: 'mark_durable', slot: 'record' },
  PutFile: { field: 'put_file', slot: 'attr' },
};

interface QueuedWrite {
  method: string;
  req: Record<string, unknown>;
  resolve: (r: Record<string, unknown>) => void;
  reject: (e: unknown) => void;
}

const RETRY_BACKOFF_MS = [20, 50, 100, 200, 400, 800];
const READ_METHODS: ReadonlySet<string> = new Set([
  'Getattr', 'Lookup', 'Readdir', 'Readlink', 'GetXattr', 'ListXattr', 'CommitStatus', 'DiskmapGet', 'DiskmapChange', 'Status',
  'ScanLayouts', 'LeaseGet', 'LockList',
]);

function heldLockFromWire(l: Wire): HeldLock {
  return {
    kind: String(l.kind) as LockKind, session: String(l.session), owner: String(l.owner), mode: String(l.mode) as LockMode,
    start: Number(l.start ?? 0), end: Number(l.end ?? 0), pid: Number(l.pid ?? 0),
  };
}

function toWireRef(t: Target): Record<string, unknown> {
  if (typeof t === 'string') return { path: t };
  if ('ino' in t) return { ino: t.ino };
  if ('path' in t) return { path: t.path };
  return { parent: t.parent, name: t.name };
}

function attrFromWire(a: Record<string, unknown> | undefined): Attr {
  const w = a ?? {};
  const attr: Attr = {
    ino: Number(w.ino), type: w.type as InodeType, mode: Number(w.mode), uid: Number(w.uid), gid: Number(w.gid),
    size: Number(w.size), mtimeMs: Number(w.mtime_ms), ctimeMs: Number(w.ctime_ms), atimeMs: Number(w.atime_ms),
    nlink: Number(w.nlink), version: Number(w.version), parent: Number(w.parent), name: String(w.name ?? ''),
    xattrs: Number(w.xattrs ?? 0),
  };
  if (attr.type === 'symlink') attr.target = String(w.target ?? '');
  return attr;
}

function recordFromWire(r: Record<string, unknown>): CommitRecord {
  return {
    ino: Number(r.ino), version: Number(r.version), state: r.state as CommitRecord['state'], fence: Number(r.fence),
    size: Number(r.size), extents: Number(r.extents), revision: Number(r.revision), committedAtMs: Number(r.committed_at_ms),
  };
}

function eventFromWire(e: Record<string, unknown>): WatchEvent {
  const ev: WatchEvent = {
    revision: Number(e.revision), kind: e.kind as EventKind, path: String(e.path), ino: Number(e.ino),
    version: Number(e.version), nowMs: Number(e.now_ms),
  };
  if (typeof e.new_path === 'string' && e.new_path !== '') ev.newPath = e.new_path;
  return ev;
}

type Wire = Record<string, unknown>;

export class MetaClient {
  private readonly endpoints: string[];
  private readonly clients = new Map<string, grpc.Client>();
  private current = 0;
  private readonly timeoutMs: number;
  private readonly retryBudgetMs: number;
  private closed = false;
  private readonly batchWrites: boolean;
  /** Writes issued during this turn of the event loop (at most MAX_BATCH_WRITES). */
  private queued: QueuedWrite[] = [];
  private flushScheduled = false;
  private readonly maxWritesInFlight: number;
  /** Write requests (lone or Batch) sent and not yet answered. */
  private writesInFlight = 0;

  constructor(opts: MetaClientOptions) {
    if (opts.endpoints.length === 0) throw new CairnError('EINVAL', 'MetaClient needs at least one endpoint');
    this.endpoints = [...opts.endpoints];
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.retryBudgetMs = opts.retryBudgetMs ?? 30_000;
    this.batchWrites = opts.batchWrites ?? true;
    this.maxWritesInFlight = opts.maxWritesInFlight ?? 0;
  }

  private client(addr: string): grpc.Client {
    let c = this.clients.get(addr);
    if (c === undefined) {
      c = makeClient(serviceOf('meta.proto', 'cairn.meta.Meta'), addr);
      this.clients.set(addr, c);
    }
    return c;
  }

  private endpoint(): string {
    return this.endpoints[this.current % this.endpoints.length]!;
  }

  private useLeader(err: CairnError): boolean {
    const addr = err.details?.leaderAddress;
    if (typeof addr !== 'string' || addr === '') return false;
    let i = this.endpoints.indexOf(addr);
    if (i < 0) {
      this.endpoints.push(addr);
      i = this.endpoints.length - 1;
    }
    this.current = i;
    return true;
  }

  /** One request; a batchable write waits for the end of this turn of the event loop to be coalesced. */
  private rpc(method: string, req: Wire): Promise<Wire> {
    if (!this.batchWrites || BATCHABLE[method] === undefined) return this.send(method, req);
    if (this.closed) return Promise.reject(new CairnError('ECANCELED', 'MetaClient is closed'));
    return new Promise<Wire>((resolve, reject) => {
      this.queued.push({ method, req, resolve, reject });
      if (this.queued.length >= MAX_BATCH_WRITES) this.flush();
      else if (this.maxWritesInFlight > 0 && this.writesInFlight >= this.maxWritesInFlight) {
        // Sent when a write in flight returns (sendWrites' finally).
      } else if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => {
          this.flushScheduled = false;
          this.flush();
        });
      }
    });
  }

  /** Send the queued writes: alone if there is one, else as one Batch (results[i] answers ops[i]). */
  private flush(): void {
    const writes = this.queued;
    this.queued = [];
    if (writes.length === 0) return;
    this.writesInFlight++;
    const done = (): void => {
      this.writesInFlight--;
      if (this.maxWritesInFlight > 0 && this.queued.length > 0 && !this.flushScheduled) this.flush();
    };
    if (writes.length === 1) {
      const w = writes[0]!;
      this.send(w.method, w.req).then(w.resolve, w.reject).finally(done);
      return;
    }
    const ops = writes.map((w) => ({ [BATCHABLE[w.method]!.field]: w.req }));
    void this.send('Batch', { ops }).then(
      (reply) => {
        const results = (reply.results as Wire[] | undefined) ?? [];
        writes.forEach((w, i) => {
          const r = results[i];
          if (r === undefined) {
            w.reject(new CairnError('EIO', `the Batch reply has ${results.length} results for ${writes.length} writes`));
            return;
          }
          const code = typeof r.code === 'string' ? r.code : '';
          if (code !== '') {
            let details: Record<string, unknown> | undefined;
            if (typeof r.details_json === 'string' && r.details_json !== '') {
              try {
                details = JSON.parse(r.details_json) as Record<string, unknown>;
              } catch {
                details = undefined;
              }
            }
            w.reject(new CairnError(isErrorCode(code) ? code : 'EIO', String(r.message ?? ''), details));
            return;
          }
          const slot = BATCHABLE[w.method]!.slot;
          w.resolve(slot === undefined ? {} : ((r[slot] as Wire | null | undefined) ?? {}));
        });
      },
      (err: unknown) => {
        for (const w of writes) w.reject(err);
      },
    ).finally(done);
  }

  /** One request with failover: ENOTLEADER → the named leader; EUNAVAIL/EAGAIN → next node. */
  private async send(method: string, req: Wire): Promise<Wire> {
    if (this.closed) throw new CairnError('ECANCELED', 'MetaClient is closed');
    const deadline = Date.now() + this.retryBudgetMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await call<Wire, Wire>(this.client(this.endpoint()), method, req, this.timeoutMs);
      } catch (err) {
        if (!(err instanceof CairnError)) throw err;
        // Reads may also move on from a node that is stopping or too slow; writes may not
        // (the entry may still commit there).
        const retriable =
          err.code === 'ENOTLEADER' || err.code === 'EUNAVAIL' || err.code === 'EAGAIN' ||
          (READ_METHODS.has(method) && (err.code === 'ECANCELED' || err.code === 'ETIMEDOUT'));
        if (!retriable || Date.now() > deadline || this.closed) throw err;
        if (!(err.code === 'ENOTLEADER' && this.useLeader(err))) this.current++;
        const pause = RETRY_BACKOFF_MS[Math.min(attempt, RETRY_BACKOFF_MS.length - 1)]!;
        // Cycle through the nodes quickly first; back off once every node was tried.
        if (attempt >= this.endpoints.length - 1) await new Promise((r) => setTimeout(r, pause));
      }
    }
  }

  // ---- reads

  async stat(target: Target, opts: ReadOptions = {}): Promise<Attr> {
    const r = await this.rpc('Getattr', { node: toWireRef(target), serializable: opts.serializable === true });
    return attrFromWire(r.attr as Wire);
  }

  async lookup(parent: number, name: string, opts: ReadOptions = {}): Promise<Attr> {
    const r = await this.rpc('Lookup', { parent, name, serializable: opts.serializable === true });
    return attrFromWire(r.attr as Wire);
  }

  /**
   * Attributes plus the current layout of a file: its extents, or `inline`, its content when it
   * is stored in the metadata (checked against its checksum by the serving node).
   */
  async layout(target: Target, opts: ReadOptions = {}): Promise<{ attr: Attr; version: number; extents: Extent[]; inline?: Buffer }> {
    const r = await this.rpc('Getattr', { node: toWireRef(target), serializable: opts.serializable === true, with_layout: true });
    const extents = ((r.extents as Wire[] | undefined) ?? []).map((e) => ({
      offset: Number(e.offset), length: Number(e.length), chunkHash: String(e.chunk_hash), scheme: String(e.scheme), pg: Number(e.pg),
      ...(Number(e.chunk_length ?? 0) > 0 ? { chunkOffset: Number(e.chunk_offset ?? 0), chunkLength: Number(e.chunk_length) } : {}),
    }));
    const out = { attr: attrFromWire(r.attr as Wire), version: Number(r.layout_version ?? 0), extents };
    return r.has_inline === true ? { ...out, inline: Buffer.isBuffer(r.inline) ? r.inline : Buffer.alloc(0) } : out;
  }

  /**
   * A whole small file in one Raft write: a new file holding `data` inline in the metadata
   * (durable when this returns), linked at `at` in place of an existing regular file (EISDIR
   * for a directory, EINVAL for a symlink); `mkdirs` makes missing parent directories. ENOSPC
   * when the metadata's inline budget is full: store the file in chunks then.
   */
  async putFile(at: EntryTarget, data: Uint8Array, opts: { mode?: number; uid?: number; gid?: number; mtimeMs?: number; mkdirs?: boolean } = {}): Promise<Attr> {
    const r = await this.rpc('PutFile', {
      at: toWireRef(at), mode: opts.mode ?? 0o644, uid: opts.uid ?? 0, gid: opts.gid ?? 0, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
      mtime_ms: opts.mtimeMs ?? 0, mkdirs: opts.mkdirs === true,
    });
    return attrFromWire(r.attr as Wire);
  }

  /** One page of a directory, in name order, after `after` (exclusive). */
  /**
   * One page of a directory; with `withAttrs` every entry carries `attr` (readdirplus).
   * `revision`: the page reflects every change up to it, so list then watch from revision + 1
   * (of the first page, for a listing of several pages) and no change is missed.
   */
  async readdir(
    dir: Target,
    opts: ReadOptions & { after?: string; limit?: number; withAttrs?: boolean } = {},
  ): Promise<{ entries: DirEntryPlus[]; more: boolean; nextAfter: string; revision: number }> {
    const r = await this.rpc('Readdir', {
      dir: toWireRef(dir), after: opts.after ?? '', limit: opts.limit ?? 1000, serializable: opts.serializable === true,
      with_attrs: opts.withAttrs === true,
    });
    const entries = ((r.entries as Wire[] | undefined) ?? []).map((e) => {
      const d: DirEntryPlus = { name: String(e.name), ino: Number(e.ino), type: e.type as InodeType };
      if (e.attr !== null && e.attr !== undefined && opts.withAttrs === true) d.attr = attrFromWire(e.attr as Wire);
      return d;
    });
    return { entries, more: r.more === true, nextAfter: String(r.next_after ?? ''), revision: Number(r.revision ?? 0) };
  }

  /** Every entry of a directory, page by page. */
  async *readdirAll(dir: Target, opts: ReadOptions & { pageSize?: number; withAttrs?: boolean } = {}): AsyncGenerator<DirEntryPlus> {
    let after = '';
    for (;;) {
      const page = await this.readdir(dir, { ...opts, after, limit: opts.pageSize ?? 1000 });
      yield* page.entries;
      if (!page.more) return;
      after = page.nextAfter;
    }
  }

  async readlink(target: Target, opts: ReadOptions = {}): Promise<string> {
    return String((await this.rpc('Readlink', { node: toWireRef(target), serializable: opts.serializable === true })).target);
  }

  async getxattr(target: Target, name: string, opts: ReadOptions = {}): Promise<Buffer> {
    return (await this.rpc('GetXattr', { node: toWireRef(target), name, serializable: opts.serializable === true })).value as Buffer;
  }

  async listxattr(target: Target, opts: ReadOptions = {}): Promise<string[]> {
    return ((await this.rpc('ListXattr', { node: toWireRef(target), serializable: opts.serializable === true })).names as string[]) ?? [];
  }

  async commitStatus(ino: number, version: number, opts: ReadOptions = {}): Promise<CommitRecord> {
    return recordFromWire(await this.rpc('CommitStatus', { ino, version, serializable: opts.serializable === true }));
  }

  async diskmapGet(opts: ReadOptions = {}): Promise<{ epoch: number; documentJson: string }> {
    const r = await this.rpc('DiskmapGet', { serializable: opts.serializable === true });
    return { epoch: Number(r.epoch), documentJson: String(r.document_json) };
  }

  async diskmapChange(epoch: number, opts: ReadOptions = {}): Promise<{ epoch: number; diffJson: string; revision: number; nowMs: number }> {
    const r = await this.rpc('DiskmapChange', { epoch, serializable: opts.serializable === true });
    return { epoch: Number(r.epoch), diffJson: String(r.diff_json), revision: Number(r.revision), nowMs: Number(r.now_ms) };
  }

  /**
   * The current layout of every file, in inode order, page by page: what the chunk garbage
   * collector must keep. Older versions are not listed (GC keeps a grace period for them).
   */
  async *scanLayouts(opts: ReadOptions & { pageSize?: number } = {}): AsyncGenerator<{ ino: number; version: number; extents: Extent[] }> {
    let after = 0;
    for (;;) {
      const r = await this.rpc('ScanLayouts', { after_ino: after, limit: opts.pageSize ?? 1000, serializable: opts.serializable === true });
      for (const l of (r.layouts as Wire[] | undefined) ?? []) {
        yield {
          ino: Number(l.ino),
          version: Number(l.version),
          extents: ((l.extents as Wire[] | undefined) ?? []).map((e) => ({
            offset: Number(e.offset), length: Number(e.length), chunkHash: String(e.chunk_hash), scheme: String(e.scheme), pg: Number(e.pg),
      ...(Number(e.chunk_length ?? 0) > 0 ? { chunkOffset: Number(e.chunk_offset ?? 0), chunkLength: Number(e.chunk_length) } : {}),
          })),
        };
      }
      after = Number(r.next_after_ino ?? 0);
      if (after === 0) return;
    }
  }

  /** Status of the node currently used (or of `endpoint`). */
  async status(endpoint?: string): Promise<MetaStatus> {
    const r = endpoint
      ? await call<Wire, Wire>(this.client(endpoint), 'Status', {}, this.timeoutMs)
      : await this.rpc('Status', {});
    return {
      nodeId: Number(r.node_id), leaderId: Number(r.leader_id), leaderAddress: String(r.leader_address), role: String(r.role),
      term: Number(r.term), applied: Number(r.applied), revision: Number(r.revision), firstRevision: Number(r.first_revision),
      address: String(r.address), version: reportedVersion(r.version as string | undefined),
      clusterVersion: reportedVersion(r.cluster_version as string | undefined),
    };
  }

  // ---- namespace writes

  async mkdir(at: EntryTarget, opts: { mode?: number; uid?: number; gid?: number } = {}): Promise<Attr> {
    const r = await this.rpc('Mkdir', { at: toWireRef(at), mode: opts.mode ?? 0o755, uid: opts.uid ?? 0, gid: opts.gid ?? 0 });
    return attrFromWire(r.attr as Wire);
  }

  /**
   * Create a file; with exclusive false an existing file is returned (created: false). With `lease`, a file it creates comes with that holder's write lease, granted
   * in the same operation (no separate leaseAcquire); `lease` in the answer is that grant.
   */
  async create(
    at: EntryTarget,
    opts: { mode?: number; uid?: number; gid?: number; exclusive?: boolean; lease?: { holder: string; ttlMs: number; addr?: string } } = {},
  ): Promise<{ attr: Attr; created: boolean; lease?: LeaseGrant }> {
    const sentAt = Date.now();
    const r = await this.rpc('Create', {
      at: toWireRef(at), mode: opts.mode ?? 0o644, uid: opts.uid ?? 0, gid: opts.gid ?? 0, exclusive: opts.exclusive ?? true,
      lease_holder: opts.lease?.holder ?? '', lease_ttl_ms: opts.lease?.ttlMs ?? 0, lease_addr: opts.lease?.addr ?? '',
    });
    const lease = r.lease !== null && r.lease !== undefined && Number((r.lease as Wire).token) > 0 ? this.leaseGrant(r.lease as Wire, sentAt) : undefined;
    return { attr: attrFromWire(r.attr as Wire), created: r.created === true, ...(lease !== undefined ? { lease } : {}) };
  }

  async symlink(at: EntryTarget, target: string, opts: { uid?: number; gid?: number } = {}): Promise<Attr> {
    const r = await this.rpc('Symlink', { at: toWireRef(at), target, uid: opts.uid ?? 0, gid: opts.gid ?? 0 });
    return attrFromWire(r.attr as Wire);
  }

  /** A new name `at` for the existing file `node`. */
  async link(node: Target, at: EntryTarget): Promise<Attr> {
    return attrFromWire((await this.rpc('Link', { node: toWireRef(node), at: toWireRef(at) })).attr as Wire);
  }

  async unlink(at: EntryTarget): Promise<void> {
    await this.rpc('Unlink', { at: toWireRef(at) });
  }

  async rmdir(at: EntryTarget): Promise<void> {
    await this.rpc('Rmdir', { at: toWireRef(at) });
  }

  async rename(from: EntryTarget, to: EntryTarget, opts: { noReplace?: boolean } = {}): Promise<{ renamed: boolean; replaced: number }> {
    const r = await this.rpc('Rename', { from: toWireRef(from), to: toWireRef(to), no_replace: opts.noReplace === true });
    return { renamed: r.renamed === true, replaced: Number(r.replaced ?? 0) };
  }

  async setattr(
    target: Target,
    changes: { mode?: number; uid?: number; gid?: number; mtimeMs?: number; atimeMs?: number },
  ): Promise<Attr> {
    const r = await this.rpc('Setattr', {
      node: toWireRef(target),
      set_mode: changes.mode !== undefined, mode: changes.mode ?? 0,
      set_uid: changes.uid !== undefined, uid: changes.uid ?? 0,
      set_gid: changes.gid !== undefined, gid: changes.gid ?? 0,
      set_mtime: changes.mtimeMs !== undefined, mtime_ms: changes.mtimeMs ?? 0,
      set_atime: changes.atimeMs !== undefined, atime_ms: changes.atimeMs ?? 0,
    });
    return attrFromWire(r.attr as Wire);
  }

  async setxattr(target: Target, name: string, value: Uint8Array, flag: 'any' | 'create' | 'replace' = 'any'): Promise<void> {
    await this.rpc('SetXattr', { node: toWireRef(target), name, value: Buffer.from(value), flag });
  }

  async removexattr(target: Target, name: string): Promise<void> {
    await this.rpc('RemoveXattr', { node: toWireRef(target), name });
  }

  // ---- file versions, commits and leases

  /**
   * Install a new version of a file: compare-and-set on `expectedVersion` (ECONFLICT if another
   * commit won), fenced by the write lease's token (EFENCED if the lease is gone or expired).
   * The new version is `expectedVersion + 1` and is visible at once; its record says "visible"
   * until markDurable().
   */
  async commitVersion(c: {
    ino: number;
    expectedVersion: number;
    fence: number;
    size: number;
    extents: Extent[];
    mtimeMs?: number;
    /** Every shard of the new chunks is stored already: the record says durable at once. */
    durable?: boolean;
    /** The whole content, stored inline in the metadata (extents empty); ENOSPC when the inline budget is full. */
    inline?: Uint8Array;
    /** A delta: `extents` are the new layout within [from, to); outside it the current layout stays (cut at size). */
    splice?: { from: number; to: number };
  }): Promise<{ attr: Attr; record: CommitRecord }> {
    const r = await this.rpc('CommitVersion', {
      ino: c.ino, expected_version: c.expectedVersion, fence: c.fence, size: c.size, mtime_ms: c.mtimeMs ?? 0, durable: c.durable === true,
      extents: c.extents.map((e) => ({ offset: e.offset, length: e.length, chunk_hash: e.chunkHash, scheme: e.scheme, pg: e.pg, chunk_offset: e.chunkOffset ?? 0, chunk_length: e.chunkLength ?? 0 })),
      ...(c.inline !== undefined ? { has_inline: true, inline: Buffer.from(c.inline.buffer, c.inline.byteOffset, c.inline.byteLength) } : {}),
      ...(c.splice !== undefined ? { splice: true, splice_from: c.splice.from, splice_to: c.splice.to } : {}),
    });
    return { attr: attrFromWire(r.attr as Wire), record: recordFromWire(r.record as Wire) };
  }

  /** Record that every shard of a version is stored at full health. */
  async markDurable(ino: number, version: number): Promise<CommitRecord> {
    return recordFromWire(await this.rpc('MarkDurable', { ino, version }));
  }

  /** Cut a file to `size` as a new version (CAS on expectedVersion; fence 0 when no lease is held). */
  async truncate(target: Target, size: number, expectedVersion: number, fence = 0): Promise<{ attr: Attr; record: CommitRecord }> {
    const r = await this.rpc('Truncate', { node: toWireRef(target), size, expected_version: expectedVersion, fence });
    return { attr: attrFromWire(r.attr as Wire), record: recordFromWire(r.record as Wire) };
  }

  /**
   * Pin a version of a file (GC keeps its chunks while the pin lives, even once superseded or
   * unlinked); pinning the same version again renews it. ECONFLICT when the file moved on.
   */
  async pin(ino: number, version: number, holder: string, ttlMs: number): Promise<void> {
    await this.rpc('Pin', { ino, version, holder, ttl_ms: ttlMs });
  }

  async unpin(ino: number, holder: string): Promise<boolean> {
    return (await this.rpc('Unpin', { ino, holder })).unpinned === true;
  }

  /** Take the write lease of a file (EBUSY while another holder has it). */
  async leaseAcquire(ino: number, holder: string, ttlMs: number, addr = ''): Promise<LeaseGrant> {
    const sentAt = Date.now();
    return this.leaseGrant(await this.rpc('LeaseAcquire', { ino, holder, ttl_ms: ttlMs, addr }), sentAt);
  }

  async leaseRenew(ino: number, holder: string, token: number, ttlMs: number): Promise<LeaseGrant> {
    const sentAt = Date.now();
    return this.leaseGrant(await this.rpc('LeaseRenew', { ino, holder, token, ttl_ms: ttlMs }), sentAt);
  }

  /** The file's live write lease (holder, token, peer address, time left by the answering node's clock), or null. */
  async leaseGet(ino: number, opts: { serializable?: boolean } = {}): Promise<{ holder: string; token: number; addr?: string; remainingMs: number } | null> {
    const r = await this.rpc('LeaseGet', { ino, serializable: opts.serializable === true });
    if (r.held !== true) return null;
    return { holder: String(r.holder), token: Number(r.token), ...(typeof r.addr === 'string' && r.addr !== '' ? { addr: r.addr } : {}), remainingMs: Number(r.remaining_ms) };
  }

  async leaseRelease(ino: number, holder: string, token: number): Promise<boolean> {
    return (await this.rpc('LeaseRelease', { ino, holder, token })).released === true;
  }

  private leaseGrant(r: Wire, sentAt: number): LeaseGrant {
    const ttlMs = Number(r.ttl_ms);
    return {
      ino: Number(r.ino), holder: String(r.holder), token: Number(r.token), ttlMs,
      validUntilMs: sentAt + ttlMs - Math.min(LEASE_SAFETY_MARGIN_MS, ttlMs / 2),
      ...(typeof r.addr === 'string' && r.addr !== '' ? { addr: r.addr } : {}),
    };
  }

  // ---- cluster-wide locks (src/meta/lock-table.ts)

  /** Create (create) or renew a lock session for ttlMs; EFENCED when a renewed one already expired. */
  async lockSession(session: string, ttlMs: number, create: boolean): Promise<void> {
    await this.rpc('LockSession', { session, ttl_ms: ttlMs, create });
  }

  /** End a lock session: every lock it holds is released. */
  async lockSessionEnd(session: string): Promise<number> {
    return Number((await this.rpc('LockSession', { session, end: true })).released ?? 0);
  }

  /**
   * Take, change or release (mode 'unlock') a lock: granted, or not with a conflicting lock of
   * another owner named. EFENCED when the session expired, ESTALE when the inode is gone.
   */
  async lock(req: { ino: number; session: string; owner: string; kind: LockKind; mode: LockMode | 'unlock'; start: number; end: number; pid: number }): Promise<{ granted: boolean; conflict?: HeldLock }> {
    const r = await this.rpc('Lock', { ino: req.ino, session: req.session, owner: req.owner, kind: req.kind, mode: req.mode, start: req.start, end: req.end, pid: req.pid });
    if (r.granted === true) return { granted: true };
    return { granted: false, ...(r.conflict ? { conflict: heldLockFromWire(r.conflict as Wire) } : {}) };
  }

  /** Release every lock of one owner on an inode (of one kind, or both). */
  async lockRelease(ino: number, session: string, owner: string, kind?: LockKind): Promise<number> {
    return Number((await this.rpc('LockRelease', { ino, session, owner, kind: kind ?? '' })).released ?? 0);
  }

  /** The inode's lock table (linearizable unless serializable). */
  async lockList(ino: number, opts: ReadOptions = {}): Promise<HeldLock[]> {
    const r = await this.rpc('LockList', { ino, serializable: opts.serializable === true });
    return ((r.locks as Wire[] | undefined) ?? []).map(heldLockFromWire);
  }

  /** Write (replace) a node's registry record: a JSON object, one Raft entry. */
  async nodeRegister(nodeId: number, recordJson: string): Promise<void> {
    await this.rpc('NodeRegister', { node_id: nodeId, record_json: recordJson });
  }

  /** Replace the diskmap: compare-and-set on its epoch (the document carries expectedEpoch + 1). */
  async diskmapPropose(expectedEpoch: number, documentJson: string, diffJson = '{}'): Promise<{ epoch: number; revision: number }> {
    const r = await this.rpc('DiskmapPropose', { expected_epoch: expectedEpoch, document_json: documentJson, diff_json: diffJson });
    return { epoch: Number(r.epoch), revision: Number(r.revision) };
  }

  // ---- watch

  /**
   * Events under `path` ("/" for all) from `fromRevision` (0: from now on), in revision order.
   * Reconnects to any endpoint after a failure and resumes after the last revision delivered.
   * Ends when `signal` aborts; throws ECOMPACTED if the revision was compacted away.
   * `onProgress` sees the revision up to which everything was delivered (to persist a resume point).
   */
  async *watch(
    path: string,
    opts: { fromRevision?: number; signal?: AbortSignal; onProgress?: (revision: number) => void } = {},
  ): AsyncGenerator<WatchEvent> {
    let next = opts.fromRevision ?? 0;
    let failures = 0;
    while (!opts.signal?.aborted && !this.closed) {
      const queue: Array<Wire> = [];
      let wake: (() => void) | undefined;
      let ended: CairnError | null | undefined;
      const stream = openServerStream(this.client(this.endpoint()), 'Watch', { path, from_revision: next });
      const onAbort = (): void => stream.cancel();
      opts.signal?.addEventListener('abort', onAbort);
      const signal = (): void => {
        wake?.();
        wake = undefined;
      };
      stream.on('data', (m: Wire) => {
        queue.push(m);
        // Bounded: stop reading while the consumer is behind.
        if (queue.length >= 64) stream.pause();
        signal();
      });
      stream.on('error', (e: grpc.ServiceError) => {
        ended = fromServiceError(e);
        signal();
      });
      stream.on('end', () => {
        ended ??= null;
        signal();
      });
      try {
        for (;;) {
          if (opts.signal?.aborted || this.closed) return;
          if (queue.length === 0) {
            if (ended !== undefined) break;
            await new Promise<void>((r) => (wake = r));
            continue;
          }
          const m = queue.shift()!;
          if (queue.length < 16) stream.resume();
          failures = 0;
          for (const w of (m.events as Wire[] | undefined) ?? []) {
            if (opts.signal?.aborted || this.closed) return;
            const ev = eventFromWire(w);
            if (next !== 0 && ev.revision < next) continue; // never repeat
            next = ev.revision + 1;
            yield ev;
          }
          const upTo = Number(m.revision ?? 0);
          if (upTo + 1 > next) next = upTo + 1;
          opts.onProgress?.(next - 1);
        }
      } finally {
        opts.signal?.removeEventListener('abort', onAbort);
        stream.cancel();
      }
      if (opts.signal?.aborted || this.closed) return;
      if (ended && (ended.code === 'ECOMPACTED' || ended.code === 'EINVAL' || ended.code === 'ENAMETOOLONG')) throw ended;
      // Disconnected: try the next node after a short pause.
      this.current++;
      failures++;
      await new Promise((r) => setTimeout(r, RETRY_BACKOFF_MS[Math.min(failures, RETRY_BACKOFF_MS.length - 1)]));
    }
  }

  close(): void {
    this.closed = true;
    for (const w of this.queued.splice(0)) w.reject(new CairnError('ECANCELED', 'MetaClient is closed'));
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
