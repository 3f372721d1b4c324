/**
 * The metadata gRPC service (proto/meta.proto), served by every node. Each request is
 * validated with zod; writes become one Raft entry each (proposed through the Replicator,
 * which forwards from a follower to the leader); reads are linearizable by default
 * (ReadIndex on this node, then the local state machine) or serializable when asked.
 *
 * Writes are accepted on the leader; a follower answers ENOTLEADER with the leader's address
 * (MetaClient retries there) unless forwardWrites is set. Lease and commit operations are
 * leader-only in any case: they carry the proposer's clock, and the leader's clock is the one
 * that decides lease expiry.
 */
import { z } from 'zod';
import { CairnError, fail } from '../common/errors.js';
import { formatZodError } from '../common/config.js';
import { logger } from '../common/log.js';
import { counter, gauge, histogram } from '../common/metrics.js';
import { grpc, serviceOf, toServiceError, unary } from '../rpc/grpc.js';
import { validateOp, type EntryRef, type Op, type Ref } from './ops.js';
import { encodeCheckedOp, encodeEntryOps } from './entry.js';
import type { Replicator } from './replicator.js';
import { parseDiskmap } from '../diskmap/index.js';
import type { ApplyResult, CommitRecord, EntryResult, Inode, Lease, MetaStateMachine, WatchEvent } from './state-machine.js';
import { CAIRN_VERSION, FEATURES, VERSION_HEARD_WITHIN_MS, clusterSupports, compareVersions, nextClusterVersion, requireFeature } from '../common/version.js';

/** Largest encoded entry accepted from one request. */
export const MAX_ENTRY_BYTES = 8 * 1024 * 1024;
/** Operations one Batch request may carry. */
export const MAX_BATCH_OPS = 1024;
/** Operations coalesced into one Raft entry (bounded by MAX_ENTRY_BYTES too). */
export const MAX_OPS_PER_PROPOSAL = 1024;
/** Bytes of one entry's header (entry.ts) on top of its operation records. */
const ENTRY_HEADER_BYTES = 17;
/** Events sent per watch message, and the bound on one watcher's unsent backlog. */
const WATCH_BATCH = 256;
/** Watch streams one node serves at a time; more get EAGAIN. */
export const MAX_WATCHERS = 1024;
/** How often the leader proposes the expiry of dead leases (default). */
const LEASE_SWEEP_MS = 2_000;

export interface NodeInfo {
  nodeId: number;
  address: string;
  leaderId(): number;
  leaderAddress(): string | undefined;
  role(): string;
  term(): number;
  /** Every member's release as this node heard it lately (RaftNode.memberVersions); the leader moves the cluster version with it. */
  memberVersions?(withinMs: number): Array<{ id: number; version: string | undefined }>;
}

export interface MetaServiceOptions {
  sm: MetaStateMachine;
  /** The Raft node (or LocalReplicator); a function so the service can exist before Raft starts. */
  replicator: () => Replicator | undefined;
  node?: NodeInfo;
  /** Check a diskmap document before proposing it (default: the diskmap module's parseDiskmap). */
  validateDiskmap?: (doc: unknown) => void;
  nowMs?: () => number;
  /**
   * Let a follower propose writes itself (Raft forwards them to the leader). Off by default:
   * a follower answers ENOTLEADER with the leader's address and MetaClient goes there, which
   * saves a hop and fails fast when the leader is gone (a forwarded proposal to a dead leader
   * is lost silently and only times out).
   */
  forwardWrites?: boolean;
  /** How often the leader looks for expired leases to remove (default 2 s). */
  leaseSweepMs?: number;
  /** How often the leader checks whether the cluster version may move up (default 1 s; docs/upgrade.md). */
  versionGateMs?: number;
  /**
   * Total bytes of inline file content the metadata may hold (default 1 GiB): stamped into every
   * inline write this node proposes; past it such writes fail with ENOSPC and go to chunks.
   */
  inlineBudgetBytes?: number;
  /**
   * Write putFile operations as their binary record (entry.ts opcode 9: the content as raw bytes,
   * decoded field by field) instead of JSON checked with zod on every node. Nodes before 0.2.0
   * cannot decode it: answer true only once every member of the cluster runs a release that does
   * (the cluster version gate). Default: false.
   */
  binaryPutFile?: () => boolean;
}

/** Default total of inline file content (MetaServiceOptions.inlineBudgetBytes). */
export const DEFAULT_INLINE_BUDGET_BYTES = 1024 * 1024 * 1024;

// ---------------------------------------------------------------- request schemas

const u64 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const u32 = z.number().int().min(0).max(0xffff_ffff);
const wireRef = z.object({ ino: u64, path: z.string().max(16_384), parent: u64, name: z.string().max(4096) }).partial();

function toRef(r: z.infer<typeof wireRef> | null | undefined, what: string): Ref {
  const ino = r?.ino ?? 0;
  const path = r?.path ?? '';
  const parent = r?.parent ?? 0;
  const name = r?.name ?? '';
  const forms = (ino > 0 ? 1 : 0) + (path !== '' ? 1 : 0) + (parent > 0 || name !== '' ? 1 : 0);
  if (forms !== 1) fail('EINVAL', `${what}: give exactly one of ino, path, or parent and name`);
  if (ino > 0) return { ino };
  if (path !== '') return { path };
  if (parent === 0) fail('EINVAL', `${what}: name without a parent`);
  return { parent, name };
}

function toEntryRef(r: z.infer<typeof wireRef> | null | undefined, what: string): EntryRef {
  const ref = toRef(r, what);
  if ('ino' in ref) fail('EINVAL', `${what}: needs a path or a parent and name, not an inode`);
  return ref;
}

const extentWire = z.object({ offset: u64, length: u64, chunk_hash: z.string(), scheme: z.string(), pg: u32, chunk_offset: u64.default(0), chunk_length: u64.default(0) });

const S = {
  getattr: z.object({ node: wireRef.nullish(), serializable: z.boolean().default(false), with_layout: z.boolean().default(false) }),
  lookup: z.object({ parent: u64, name: z.string().max(4096), serializable: z.boolean().default(false) }),
  readdir: z.object({
    dir: wireRef.nullish(), after: z.string().max(4096).default(''), limit: u32.default(0),
    serializable: z.boolean().default(false), with_attrs: z.boolean().default(false),
  }),
  readlink: z.object({ node: wireRef.nullish(), serializable: z.boolean().default(false) }),
  mkdir: z.object({ at: wireRef.nullish(), mode: u32, uid: u32, gid: u32 }),
  create: z.object({
    at: wireRef.nullish(), mode: u32, uid: u32, gid: u32, exclusive: z.boolean(),
    lease_holder: z.string().max(128).default(''), lease_ttl_ms: z.number().int().min(0).max(600_000).default(0),
    lease_addr: z.string().max(256).default(''),
  }),
  symlink: z.object({ at: wireRef.nullish(), target: z.string(), uid: u32, gid: u32 }),
  link: z.object({ node: wireRef.nullish(), at: wireRef.nullish() }),
  remove: z.object({ at: wireRef.nullish() }),
  rename: z.object({ from: wireRef.nullish(), to: wireRef.nullish(), no_replace: z.boolean().default(false) }),
  setattr: z.object({
    node: wireRef.nullish(),
    set_mode: z.boolean().default(false), mode: u32.default(0),
    set_uid: z.boolean().default(false), uid: u32.default(0),
    set_gid: z.boolean().default(false), gid: u32.default(0),
    set_mtime: z.boolean().default(false), mtime_ms: u64.default(0),
    set_atime: z.boolean().default(false), atime_ms: u64.default(0),
  }),
  truncate: z.object({ node: wireRef.nullish(), size: u64, expected_version: u64, fence: u64 }),
  xattrSet: z.object({ node: wireRef.nullish(), name: z.string(), value: z.instanceof(Buffer), flag: z.enum(['', 'any', 'create', 'replace']).default('') }),
  xattrGet: z.object({ node: wireRef.nullish(), name: z.string().max(255), serializable: z.boolean().default(false) }),
  xattrList: z.object({ node: wireRef.nullish(), serializable: z.boolean().default(false) }),
  xattrRemove: z.object({ node: wireRef.nullish(), name: z.string() }),
  commit: z.object({
    ino: u64, expected_version: u64, fence: u64, size: u64, extents: z.array(extentWire).max(100_000), mtime_ms: u64.default(0), durable: z.boolean().default(false),
    has_inline: z.boolean().default(false), inline: z.instanceof(Buffer).optional(),
    splice: z.boolean().default(false), splice_from: u64.default(0), splice_to: u64.default(0),
  }),
  putFile: z.object({
    at: wireRef.nullish(), mode: u32, uid: u32, gid: u32, data: z.instanceof(Buffer).optional(), mtime_ms: u64.default(0), mkdirs: z.boolean().default(false),
  }),
  commitStatus: z.object({ ino: u64, version: u64, serializable: z.boolean().default(false) }),
  markDurable: z.object({ ino: u64, version: u64 }),
  leaseAcquire: z.object({ ino: u64, holder: z.string(), ttl_ms: u32, addr: z.string().max(256).default('') }),
  leaseRenew: z.object({ ino: u64, holder: z.string(), token: u64, ttl_ms: u32 }),
  leaseRelease: z.object({ ino: u64, holder: z.string(), token: u64 }),
  leaseGet: z.object({ ino: u64, serializable: z.boolean().default(false) }),
  pin: z.object({ ino: u64, version: u64, holder: z.string(), ttl_ms: u32 }),
  unpin: z.object({ ino: u64, holder: z.string() }),
  diskmapGet: z.object({ serializable: z.boolean().default(false) }),
  diskmapPropose: z.object({ expected_epoch: u64, document_json: z.string(), diff_json: z.string().default('') }),
  diskmapChange: z.object({ epoch: u64, serializable: z.boolean().default(false) }),
  scanLayouts: z.object({ after_ino: u64.default(0), limit: u32.default(0), serializable: z.boolean().default(false) }),
  nodeRegister: z.object({ node_id: u32.min(1), record_json: z.string().min(2) }),
  watch: z.object({ path: z.string().max(8192).default(''), from_revision: u64.default(0) }),
  batch: z.object({ ops: z.array(z.record(z.string(), z.unknown())).max(MAX_BATCH_OPS) }),
  status: z.object({}).passthrough(),
  lockSession: z.object({ session: z.string().max(128), ttl_ms: u32.default(0), create: z.boolean().default(false), end: z.boolean().default(false) }),
  lock: z.object({
    ino: u64, session: z.string().max(128), owner: z.string().max(64), kind: z.enum(['posix', 'flock']), mode: z.enum(['read', 'write', 'unlock']),
    start: u64.default(0), end: u64.default(0), pid: z.number().int().min(-0x8000_0000).max(0x7fff_ffff).default(0),
  }),
  lockRelease: z.object({ ino: u64, session: z.string().max(128), owner: z.string().max(64), kind: z.enum(['posix', 'flock', '']).default('') }),
  lockList: z.object({ ino: u64, serializable: z.boolean().default(false) }),
};

// ---------------------------------------------------------------- wire shapes

export function attrToWire(i: Inode): Record<string, unknown> {
  return {
    ino: i.ino, type: i.type, mode: i.mode, uid: i.uid, gid: i.gid, size: i.size, mtime_ms: i.mtimeMs,
    ctime_ms: i.ctimeMs, atime_ms: i.atimeMs, nlink: i.nlink, version: i.version, parent: i.parent,
    name: i.name, target: i.target ?? '', xattrs: i.xattrs,
  };
}

function recordToWire(c: CommitRecord): Record<string, unknown> {
  return {
    ino: c.ino, version: c.version, state: c.state, fence: c.fence, size: c.size, extents: c.extents,
    revision: c.revision, committed_at_ms: c.committedAtMs,
  };
}

function eventToWire(e: WatchEvent): Record<string, unknown> {
  return {
    revision: e.revision, kind: e.kind, path: e.path, new_path: e.newPath ?? '', ino: e.ino,
    version: e.version, now_ms: e.nowMs,
  };
}

/** Does an event concern the subtree at `path` ("" or "/" = everything)? */
export function eventMatches(e: WatchEvent, path: string): boolean {
  if (path === '' || path === '/') return true;
  const under = (p: string | undefined): boolean => p !== undefined && (p === path || p.startsWith(`${path}/`));
  return under(e.path) || under(e.newPath);
}

// ---------------------------------------------------------------- writes

/**
 * The namespace writes that may travel in a Batch: per method, the request schema, the
 * operation a request becomes, and the reply built from the operation's result. The single
 * RPCs and Batch use the same table, so a batched write is the same operation as a lone one.
 */
interface WriteMethod {
  /** Name of the BatchOp field and of the latency metric. */
  field: string;
  schema: z.ZodType;
  toOp(q: never): Op;
  reply(v: Record<string, unknown>): Record<string, unknown>;
  /** Where the reply goes in a BatchResult. */
  slot?: 'attr' | 'rename' | 'record';
}

const attrReply = (v: Record<string, unknown>): Record<string, unknown> => ({
  attr: attrToWire(v.attr as Inode),
  created: v.created === true,
});
const emptyReply = (): Record<string, unknown> => ({});

function write<S extends z.ZodType>(
  field: string,
  schema: S,
  toOp: (q: z.infer<S>) => Op,
  reply: (v: Record<string, unknown>) => Record<string, unknown>,
  slot?: WriteMethod['slot'],
): WriteMethod {
  return { field, schema, toOp: toOp as (q: never) => Op, reply, ...(slot ? { slot } : {}) };
}

export const WRITE_METHODS: Record<string, WriteMethod> = {
  Mkdir: write('mkdir', S.mkdir, (q) => ({ op: 'mkdir', at: toEntryRef(q.at, 'at'), mode: q.mode & 0o7777, uid: q.uid, gid: q.gid }), attrReply, 'attr'),
  Create: write(
    'create', S.create,
    (q) => ({
      op: 'create', at: toEntryRef(q.at, 'at'), mode: q.mode & 0o7777, uid: q.uid, gid: q.gid, exclusive: q.exclusive,
      ...(q.lease_holder !== '' ? { lease: { holder: q.lease_holder, ttlMs: q.lease_ttl_ms, ...(q.lease_addr !== '' ? { addr: q.lease_addr } : {}) } } : {}),
    }),
    (v) => ({ ...attrReply(v), ...(v.lease !== undefined ? { lease: leaseReply(v) } : {}) }), 'attr',
  ),
  Symlink: write('symlink', S.symlink, (q) => ({ op: 'symlink', at: toEntryRef(q.at, 'at'), target: q.target, uid: q.uid, gid: q.gid }), attrReply, 'attr'),
  Link: write('link', S.link, (q) => ({ op: 'link', node: toRef(q.node, 'node'), at: toEntryRef(q.at, 'at') }), attrReply, 'attr'),
  Unlink: write('unlink', S.remove, (q) => ({ op: 'unlink', at: toEntryRef(q.at, 'at') }), emptyReply),
  Rmdir: write('rmdir', S.remove, (q) => ({ op: 'rmdir', at: toEntryRef(q.at, 'at') }), emptyReply),
  Rename: write(
    'rename', S.rename,
    (q) => ({ op: 'rename', from: toEntryRef(q.from, 'from'), to: toEntryRef(q.to, 'to'), noReplace: q.no_replace }),
    (v) => ({ renamed: v.renamed === true, replaced: (v.replaced as number | undefined) ?? 0 }), 'rename',
  ),
  Setattr: write(
    'setattr', S.setattr,
    (q) => {
      const op: Op = { op: 'setattr', node: toRef(q.node, 'node') };
      if (q.set_mode) op.mode = q.mode & 0o7777;
      if (q.set_uid) op.uid = q.uid;
      if (q.set_gid) op.gid = q.gid;
      if (q.set_mtime) op.mtimeMs = q.mtime_ms;
      if (q.set_atime) op.atimeMs = q.atime_ms;
      return op;
    },
    attrReply, 'attr',
  ),
  SetXattr: write(
    'set_xattr', S.xattrSet,
    (q) => ({
      op: 'setxattr', node: toRef(q.node, 'node'), name: q.name, valueB64: q.value.toString('base64'),
      flag: q.flag === '' ? 'any' : q.flag,
    }),
    emptyReply,
  ),
  RemoveXattr: write('remove_xattr', S.xattrRemove, (q) => ({ op: 'removexattr', node: toRef(q.node, 'node'), name: q.name }), emptyReply),
  MarkDurable: write('mark_durable', S.markDurable, (q) => ({ op: 'markDurable', ino: q.ino, version: q.version }), (v) => recordToWire(v.record as CommitRecord), 'record'),
  // The budget is this node's (MetaService stamps it before proposing: see stampBudget).
  PutFile: write(
    'put_file', S.putFile,
    (q) => ({
      op: 'putFile', at: toEntryRef(q.at, 'at'), mode: q.mode & 0o7777, uid: q.uid, gid: q.gid, dataB64: (q.data ?? Buffer.alloc(0)).toString('base64'),
      mkdirs: q.mkdirs, inlineBudget: 0, ...(q.mtime_ms > 0 ? { mtimeMs: q.mtime_ms } : {}),
    }),
    attrReply, 'attr',
  ),
};

const WRITE_BY_FIELD = new Map(Object.values(WRITE_METHODS).map((m) => [m.field, m]));

function valueOf(res: ApplyResult): Record<string, unknown> {
  if (!res.ok) throw new CairnError(res.code, res.message, res.details);
  return res.value;
}

function errorSlot(err: unknown): Record<string, unknown> {
  const e = err instanceof CairnError ? err : new CairnError('EIO', String(err));
  return { code: e.code, message: e.message, details_json: e.details === undefined ? '' : JSON.stringify(e.details) };
}

interface ProposalGroup {
  records: Buffer[];
  bytes: number;
  waiters: Array<{ count: number; resolve: (r: ApplyResult[]) => void; reject: (e: unknown) => void }>;
}

// ---------------------------------------------------------------- the service

export class MetaService {
  private readonly log = logger('meta-service');
  private readonly sm: MetaStateMachine;
  private readonly now: () => number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private versionTimer: NodeJS.Timeout | undefined;
  private readonly watchers = new Set<AbortController>();
  /** Operations waiting for the end of this turn of the event loop to be proposed as one entry. */
  private group: ProposalGroup | undefined;
  private readonly opsTotal = counter('cairn_meta_ops_total', 'Metadata requests by method and outcome', ['method', 'outcome']);
  private readonly revisionGauge = gauge('cairn_meta_revision', 'Last metadata revision applied on this node');
  private readonly inlineGauge = gauge('cairn_meta_inline_bytes', 'Bytes of inline file content held in the metadata (see inlineBudgetBytes)');
  private readonly inlineBudgetGauge = gauge('cairn_meta_inline_budget_bytes', 'Inline content budget of this node (inlineBudgetBytes)');
  private readonly inlineBudget: number;
  // Fine buckets below 5 ms: a lone write is one Raft round of 1-5 ms (bench/put-stages.ts reads them).
  private readonly latency = histogram('cairn_meta_request_seconds', 'Metadata request latency', ['method'], [
    0.0002, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1,
  ]);

  constructor(private readonly opts: MetaServiceOptions) {
    this.sm = opts.sm;
    this.now = opts.nowMs ?? Date.now;
    this.inlineBudget = opts.inlineBudgetBytes ?? DEFAULT_INLINE_BUDGET_BYTES;
    this.inlineBudgetGauge.set(this.inlineBudget);
  }

  /** Inline writes carry this node's budget (deterministic on apply: the entry holds it). */
  private stampBudget(op: Op): Op {
    op = this.gateFields(op);
    if (op.op === 'putFile' || (op.op === 'commit' && op.inlineB64 !== undefined)) return { ...op, inlineBudget: this.inlineBudget };
    return op;
  }

  /**
   * Fields that older releases refuse (their op schemas are strict) leave an operation only once
   * the cluster version says every node reads them (docs/upgrade.md): a lease's peer address
   * (dfsLeases) is dropped in a mixed cluster, so its readers fall back to the committed version.
   */
  private gateFields(op: Op): Op {
    if (clusterSupports(this.sm, 'dfsLeases')) return op;
    if (op.op === 'leaseAcquire' && op.addr !== undefined) {
      const { addr: _addr, ...rest } = op;
      return rest;
    }
    if (op.op === 'create' && op.lease?.addr !== undefined) {
      const { addr: _addr, ...lease } = op.lease;
      return { ...op, lease };
    }
    return op;
  }

  private encoding(): { binaryPutFile: boolean } {
    return { binaryPutFile: this.opts.binaryPutFile?.() === true };
  }

  private replicator(): Replicator {
    const r = this.opts.replicator();
    if (r === undefined) fail('EUNAVAIL', 'the metadata service is starting; retry shortly');
    return r;
  }

  private notLeader(): CairnError {
    const n = this.opts.node;
    const leader = n?.leaderId() ?? 0;
    const addr = n?.leaderAddress();
    return new CairnError(
      'ENOTLEADER',
      leader !== 0 ? `node ${n?.nodeId} is not the leader; node ${leader} at ${addr ?? '?'} is` : `node ${n?.nodeId} knows no leader yet; retry`,
      { leader, ...(addr !== undefined ? { leaderAddress: addr } : {}) },
    );
  }

  /** Replicate one operation; returns its result or throws its POSIX error. */
  async propose(op: Op, leaderOnly = false): Promise<Record<string, unknown>> {
    this.checkWriter(leaderOnly);
    // Leader-only operations (leases, commits) read the leader's clock: proposed at once,
    // alone, so that no step-down can come between the leadership check and the proposal.
    const [res] = await this.proposeRecords([encodeCheckedOp(this.stampBudget(op), this.encoding())], !leaderOnly);
    return valueOf(res!);
  }

  /** ENOTLEADER unless this node may propose writes (the leader, or any node with forwardWrites). */
  private checkWriter(leaderOnly: boolean): void {
    const r = this.replicator();
    if ((leaderOnly || !this.opts.forwardWrites) && r.isLeader !== undefined && !r.isLeader()) throw this.notLeader();
  }

  /**
   * Replicate checked operation records (encodeCheckedOp); resolves with one result per operation, in order. With
   * `coalesce`, operations proposed during the same turn of the event loop (from any request
   * or client) share one Raft entry — one replication, one fsync per node and one apply batch
   * for all of them — and each still applies atomically, in order, with its own result.
   */
  private proposeRecords(records: Buffer[], coalesce: boolean): Promise<ApplyResult[]> {
    let bytes = 0;
    for (const r of records) bytes += r.length;
    if (bytes + ENTRY_HEADER_BYTES > MAX_ENTRY_BYTES) {
      return Promise.reject(new CairnError('EINVAL', `request too large: ${bytes} bytes encoded, limit ${MAX_ENTRY_BYTES}`));
    }
    if (!coalesce || records.length > MAX_OPS_PER_PROPOSAL) return this.proposeEntry(records);
    return new Promise<ApplyResult[]>((resolve, reject) => {
      let g = this.group;
      if (g !== undefined && (g.records.length + records.length > MAX_OPS_PER_PROPOSAL || g.bytes + bytes > MAX_ENTRY_BYTES)) {
        this.flushGroup(g);
        g = undefined;
      }
      if (g === undefined) {
        const fresh: ProposalGroup = { records: [], bytes: ENTRY_HEADER_BYTES, waiters: [] };
        this.group = fresh;
        g = fresh;
        setImmediate(() => this.flushGroup(fresh));
      }
      for (const r of records) g.records.push(r);
      g.bytes += bytes;
      g.waiters.push({ count: records.length, resolve, reject });
    });
  }

  private flushGroup(g: ProposalGroup): void {
    if (this.group !== g) return;
    this.group = undefined;
    this.proposeEntry(g.records).then(
      (results) => {
        let at = 0;
        for (const w of g.waiters) {
          w.resolve(results.slice(at, at + w.count));
          at += w.count;
        }
      },
      (err: unknown) => {
        for (const w of g.waiters) w.reject(err);
      },
    );
  }

  /** One Raft entry holding these operation records; one result per record. */
  private async proposeEntry(records: Buffer[]): Promise<ApplyResult[]> {
    const r = this.replicator();
    const res = (await r.propose(encodeEntryOps(records, this.now()))) as EntryResult | undefined;
    if (res === null || res === undefined) fail('EIO', 'a metadata entry was applied without a result');
    if (!Array.isArray(res)) {
      valueOf(res); // an entry that did not decode: its error is every operation's
      fail('EIO', 'a metadata entry was applied with a single result');
    }
    if (res.length !== records.length) fail('EIO', `an entry of ${records.length} operations gave ${res.length} results`);
    return res;
  }

  /**
   * A Batch request: every operation checked like its single RPC (a bad one fails alone),
   * the valid ones proposed together; results[i] answers ops[i].
   */
  private async batch(q: z.infer<typeof S.batch>): Promise<Record<string, unknown>> {
    this.checkWriter(false);
    const results: Array<Record<string, unknown>> = new Array(q.ops.length);
    const valid: Buffer[] = [];
    const slots: Array<{ i: number; m: WriteMethod }> = [];
    q.ops.forEach((b, i) => {
      try {
        const field = b.op;
        const m = typeof field === 'string' ? WRITE_BY_FIELD.get(field) : undefined;
        if (m === undefined) fail('EINVAL', `batch operation ${i}: no operation set (or not one that may be batched)`);
        const parsed = m.schema.safeParse(b[field as string]);
        if (!parsed.success) fail('EINVAL', formatZodError(`batch operation ${i}`, parsed.error));
        valid.push(encodeCheckedOp(this.stampBudget(m.toOp(parsed.data as never)), this.encoding()));
        slots.push({ i, m });
      } catch (err) {
        results[i] = errorSlot(err);
      }
    });
    if (valid.length > 0) {
      const res = await this.proposeRecords(valid, true);
      res.forEach((r, j) => {
        const { i, m } = slots[j]!;
        try {
          const reply = m.reply(valueOf(r));
          results[i] = m.slot === undefined ? {} : { [m.slot]: reply };
        } catch (err) {
          results[i] = errorSlot(err);
        }
      });
    }
    return { results };
  }

  /** Linearizable unless serializable: wait until this node has applied everything committed. */
  async barrier(serializable: boolean): Promise<void> {
    if (!serializable) await this.replicator().readIndex();
  }

  /** Propose the expiry of leases dead past their margin (runs on the leader only). */
  startLeaseSweeper(): void {
    this.sweepTimer = setInterval(() => {
      const r = this.opts.replicator();
      if (r === undefined || (r.isLeader !== undefined && !r.isLeader())) return;
      this.sm
        .expiredLeases(this.now(), 1000)
        .then(async (inos) => {
          if (inos.length > 0) await this.propose({ op: 'leaseExpire', inos }, true);
          const pins = await this.sm.expiredPins(this.now(), 1000);
          if (pins.length > 0) await this.propose({ op: 'pinExpire', pins }, true);
          const sessions = await this.sm.expiredLockSessions(this.now(), 1000);
          if (sessions.length > 0) await this.propose({ op: 'lockExpire', sessions }, true);
        })
        .catch((err: unknown) => this.log.debug({ err: String(err) }, 'lease sweep skipped'));
    }, this.opts.leaseSweepMs ?? LEASE_SWEEP_MS);
    this.sweepTimer.unref();
  }

  /**
   * The cluster version gate (src/common/version.ts): on the leader, once every member (voters and
   * learners) was heard running a release above the recorded cluster version, record the lowest
   * of them. Proposed only when that release knows the clusterVersion operation, so every node
   * that applies it understands it.
   */
  startVersionGate(): void {
    const n = this.opts.node;
    if (n?.memberVersions === undefined) return;
    // Checked often while the cluster is below this release (a new cluster records its version
    // within a heartbeat round or two of its first election), then once a period.
    const period = this.opts.versionGateMs ?? 1_000;
    let inFlight = false;
    const check = (): void => {
      this.versionTimer = setTimeout(check, compareVersions(this.sm.clusterVersion(), CAIRN_VERSION) < 0 ? Math.min(period, 100) : period);
      this.versionTimer.unref();
      const r = this.opts.replicator();
      if (inFlight || r === undefined || (r.isLeader !== undefined && !r.isLeader())) return;
      const members = n.memberVersions!(VERSION_HEARD_WITHIN_MS);
      const next = nextClusterVersion(this.sm.clusterVersion(), members.map((m) => m.version));
      if (next === undefined || compareVersions(next, FEATURES.clusterVersion) < 0) return;
      inFlight = true;
      this.propose({ op: 'clusterVersion', version: next }, true).then(
        (res) => this.log.info({ clusterVersion: res.version, members }, 'cluster version recorded'),
        (err: unknown) => this.log.debug({ err: String(err) }, 'cluster version not recorded this time'),
      ).finally(() => {
        inFlight = false;
      });
    };
    check();
  }

  /** Stop background work and end every watch stream. */
  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.versionTimer) clearTimeout(this.versionTimer);
    for (const w of this.watchers) w.abort();
  }

  private timed<S extends z.ZodType, Res>(
    method: string,
    schema: S,
    fn: (req: z.infer<S>) => Promise<Res>,
  ): grpc.handleUnaryCall<unknown, Res> {
    return unary(schema, async (req) => {
      const end = this.latency.startTimer({ method });
      try {
        const res = await fn(req);
        this.opsTotal.inc({ method, outcome: 'ok' });
        this.revisionGauge.set(this.sm.revision());
        this.inlineGauge.set(this.sm.inlineBytes());
        return res;
      } catch (err) {
        this.opsTotal.inc({ method, outcome: err instanceof CairnError ? err.code : 'EIO' });
        throw err;
      } finally {
        end();
      }
    });
  }

  definition(): { service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
    const sm = this.sm;
    const impl: grpc.UntypedServiceImplementation = {};
    for (const [method, m] of Object.entries(WRITE_METHODS)) {
      const metric = m.field === 'set_xattr' ? 'setxattr' : m.field === 'remove_xattr' ? 'removexattr' : m.field === 'mark_durable' ? 'markDurable' : m.field === 'put_file' ? 'putFile' : m.field;
      impl[method] = this.timed(metric, m.schema, async (q) => m.reply(await this.propose(m.toOp(q as never))));
    }
    Object.assign(impl, {
      Getattr: this.timed('getattr', S.getattr, async (q) => {
        const ref = toRef(q.node, 'node');
        await this.barrier(q.serializable);
        const attr = await sm.getattr(ref);
        if (!q.with_layout || attr.type !== 'file') return { attr: attrToWire(attr) };
        const l = await sm.layout({ ino: attr.ino });
        return {
          attr: attrToWire(attr),
          layout_version: l.version,
          extents: l.extents.map((e) => ({ offset: e.offset, length: e.length, chunk_hash: e.chunkHash, scheme: e.scheme, pg: e.pg, chunk_offset: e.chunkOffset ?? 0, chunk_length: e.chunkLength ?? 0 })),
          ...(l.data !== undefined ? { has_inline: true, inline: l.data } : {}),
        };
      }),
      Lookup: this.timed('lookup', S.lookup, async (q) => {
        const ref = toRef({ parent: q.parent, name: q.name }, 'lookup');
        validateRef(ref);
        await this.barrier(q.serializable);
        return { attr: attrToWire(await sm.getattr(ref)) };
      }),
      Readdir: this.timed('readdir', S.readdir, async (q) => {
        const ref = toRef(q.dir, 'dir');
        await this.barrier(q.serializable);
        const page = await sm.readdir(ref, q.after, q.limit === 0 ? 1000 : q.limit, q.with_attrs);
        const last = page.entries[page.entries.length - 1];
        return {
          entries: page.entries.map((e) => ({ name: e.name, ino: e.ino, type: e.type, ...(e.attr ? { attr: attrToWire(e.attr) } : {}) })),
          more: page.more,
          next_after: page.more && last ? last.name : '',
          revision: page.revision,
        };
      }),
      Readlink: this.timed('readlink', S.readlink, async (q) => {
        const ref = toRef(q.node, 'node');
        await this.barrier(q.serializable);
        return { target: await sm.readlink(ref) };
      }),
      Truncate: this.timed('truncate', S.truncate, async (q) => {
        const v = await this.propose(
          { op: 'truncate', node: toRef(q.node, 'node'), size: q.size, expectedVersion: q.expected_version, fence: q.fence },
          true,
        );
        return { attr: attrToWire(v.attr as Inode), record: recordToWire(v.record as CommitRecord) };
      }),
      GetXattr: this.timed('getxattr', S.xattrGet, async (q) => {
        const ref = toRef(q.node, 'node');
        await this.barrier(q.serializable);
        return { value: await sm.getxattr(ref, q.name) };
      }),
      ListXattr: this.timed('listxattr', S.xattrList, async (q) => {
        const ref = toRef(q.node, 'node');
        await this.barrier(q.serializable);
        return { names: await sm.listxattr(ref) };
      }),
      CommitVersion: this.timed('commit', S.commit, async (q) => {
        const v = await this.propose(
          {
            op: 'commit', ino: q.ino, expectedVersion: q.expected_version, fence: q.fence, size: q.size,
            extents: q.extents.map((e) => ({ offset: e.offset, length: e.length, chunkHash: e.chunk_hash, scheme: e.scheme, pg: e.pg, ...(e.chunk_length > 0 ? { chunkOffset: e.chunk_offset, chunkLength: e.chunk_length } : {}) })),
            ...(q.mtime_ms > 0 ? { mtimeMs: q.mtime_ms } : {}),
            ...(q.durable ? { durable: true } : {}),
            ...(q.has_inline ? { inlineB64: (q.inline ?? Buffer.alloc(0)).toString('base64') } : {}),
            ...(q.splice ? { spliceFrom: q.splice_from, spliceTo: q.splice_to } : {}),
          },
          true,
        );
        return { attr: attrToWire(v.attr as Inode), record: recordToWire(v.record as CommitRecord) };
      }),
      CommitStatus: this.timed('commitStatus', S.commitStatus, async (q) => {
        await this.barrier(q.serializable);
        return recordToWire(await sm.commitStatus(q.ino, q.version));
      }),
      LeaseAcquire: this.timed('leaseAcquire', S.leaseAcquire, async (q) => {
        const v = await this.propose({ op: 'leaseAcquire', ino: q.ino, holder: q.holder, ttlMs: q.ttl_ms, ...(q.addr !== '' ? { addr: q.addr } : {}) }, true);
        return leaseReply(v);
      }),
      LeaseRenew: this.timed('leaseRenew', S.leaseRenew, async (q) => {
        const v = await this.propose({ op: 'leaseRenew', ino: q.ino, holder: q.holder, token: q.token, ttlMs: q.ttl_ms }, true);
        return leaseReply(v);
      }),
      LeaseGet: this.timed('leaseGet', S.leaseGet, async (q) => {
        await this.barrier(q.serializable);
        const l = await sm.lease(q.ino);
        const remaining = l === undefined ? 0 : l.expiresAtMs - this.now();
        if (l === undefined || remaining <= 0) return { held: false };
        return { held: true, holder: l.holder, token: l.token, addr: l.addr ?? '', remaining_ms: Math.ceil(remaining) };
      }),
      // Lock operations are new metadata records: refused (EAGAIN) until every node reads them.
      LockSession: this.timed('lockSession', S.lockSession, async (q) => {
        requireFeature(sm, 'locks');
        if (q.end) return { released: Number((await this.propose({ op: 'lockSessionEnd', session: q.session })).released ?? 0) };
        await this.propose({ op: 'lockSession', session: q.session, ttlMs: q.ttl_ms, create: q.create }, true);
        return { released: 0 };
      }),
      Lock: this.timed('lock', S.lock, async (q) => {
        requireFeature(sm, 'locks');
        const v = await this.propose({ op: 'lockSet', ino: q.ino, session: q.session, owner: q.owner, kind: q.kind, mode: q.mode, start: q.start, end: q.end, pid: q.pid }, true);
        return v.granted === true ? { granted: true } : { granted: false, conflict: v.conflict };
      }),
      LockRelease: this.timed('lockRelease', S.lockRelease, async (q) => {
        requireFeature(sm, 'locks');
        const v = await this.propose({ op: 'lockRelease', ino: q.ino, session: q.session, owner: q.owner, ...(q.kind !== '' ? { kind: q.kind } : {}) });
        return { released: Number(v.released ?? 0) };
      }),
      LockList: this.timed('lockList', S.lockList, async (q) => {
        await this.barrier(q.serializable);
        return { locks: await sm.locks(q.ino) };
      }),
      LeaseRelease: this.timed('leaseRelease', S.leaseRelease, async (q) => {
        const v = await this.propose({ op: 'leaseRelease', ino: q.ino, holder: q.holder, token: q.token });
        return { released: v.released === true };
      }),
      Pin: this.timed('pin', S.pin, async (q) => {
        const v = await this.propose({ op: 'pin', ino: q.ino, version: q.version, holder: q.holder, ttlMs: q.ttl_ms }, true);
        const p = v.pin as { ino: number; version: number };
        return { ino: p.ino, version: p.version };
      }),
      Unpin: this.timed('unpin', S.unpin, async (q) => {
        const v = await this.propose({ op: 'unpin', ino: q.ino, holder: q.holder });
        return { unpinned: v.unpinned === true };
      }),
      DiskmapGet: this.timed('diskmapGet', S.diskmapGet, async (q) => {
        await this.barrier(q.serializable);
        const d = await sm.diskmap();
        return { epoch: d.epoch, document_json: d.documentJson };
      }),
      DiskmapPropose: this.timed('diskmapPropose', S.diskmapPropose, async (q) => {
        let doc: unknown;
        try {
          doc = JSON.parse(q.document_json);
        } catch (err) {
          fail('EINVAL', `diskmap document is not JSON: ${(err as Error).message}`);
        }
        if (typeof doc !== 'object' || doc === null || (doc as { epoch?: unknown }).epoch !== q.expected_epoch + 1) {
          fail('EINVAL', `the proposed diskmap must carry epoch ${q.expected_epoch + 1} (expected epoch + 1)`);
        }
        (this.opts.validateDiskmap ?? ((d: unknown) => void parseDiskmap(d, 'proposed diskmap')))(doc);
        if (q.diff_json !== '') {
          try {
            JSON.parse(q.diff_json);
          } catch {
            fail('EINVAL', 'diskmap diff is not JSON');
          }
        }
        const v = await this.propose({ op: 'diskmapPropose', expectedEpoch: q.expected_epoch, documentJson: q.document_json, diffJson: q.diff_json || '{}' });
        return { epoch: v.epoch, revision: v.revision };
      }),
      NodeRegister: this.timed('nodeRegister', S.nodeRegister, async (q) => {
        let rec: unknown;
        try {
          rec = JSON.parse(q.record_json);
        } catch {
          fail('EINVAL', 'node record is not JSON');
        }
        if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) fail('EINVAL', 'node record must be a JSON object');
        await this.propose({ op: 'nodeRegister', nodeId: q.node_id, recordJson: q.record_json });
        return {};
      }),
      DiskmapChange: this.timed('diskmapChange', S.diskmapChange, async (q) => {
        await this.barrier(q.serializable);
        const c = await sm.diskmapChange(q.epoch);
        if (c === undefined) fail('ENOENT', `no diskmap change recorded for epoch ${q.epoch}`);
        return { epoch: c.epoch, diff_json: c.diffJson, revision: c.revision, now_ms: c.nowMs };
      }),
      ScanLayouts: this.timed('scanLayouts', S.scanLayouts, async (q) => {
        await this.barrier(q.serializable);
        const limit = q.limit === 0 ? 1000 : q.limit;
        const rows = await sm.scanLayouts(q.after_ino, limit);
        const last = rows[rows.length - 1];
        return {
          layouts: rows.map((r) => ({
            ino: r.ino,
            version: r.version,
            extents: r.extents.map((e) => ({ offset: e.offset, length: e.length, chunk_hash: e.chunkHash, scheme: e.scheme, pg: e.pg, chunk_offset: e.chunkOffset ?? 0, chunk_length: e.chunkLength ?? 0 })),
          })),
          next_after_ino: rows.length === Math.min(limit, 10_000) && last ? last.ino : 0,
        };
      }),
      Batch: this.timed('batch', S.batch, (q) => this.batch(q)),
      Watch: (call: grpc.ServerWritableStream<unknown, unknown>) => this.watch(call),
      Status: this.timed('status', S.status, async () => {
        const n = this.opts.node;
        return {
          node_id: n?.nodeId ?? 0, leader_id: n?.leaderId() ?? 0, leader_address: n?.leaderAddress() ?? '',
          role: n?.role() ?? 'local', term: n?.term() ?? 0, applied: await sm.appliedIndex(), revision: sm.revision(),
          first_revision: sm.firstRevision(), address: n?.address ?? '',
          version: CAIRN_VERSION, cluster_version: sm.clusterVersion(),
        };
      }),
    } satisfies grpc.UntypedServiceImplementation);
    return { service: serviceOf('meta.proto', 'cairn.meta.Meta').service, impl };
  }

  /**
   * Server stream of events under a path from a revision: history first, then live events as
   * they are applied here. Each message says up to which revision everything was delivered,
   * so a client resumes anywhere (this node or another) from that revision + 1 without a gap
   * or a repeat.
   */
  private watch(call: grpc.ServerWritableStream<unknown, unknown>): void {
    const parsed = S.watch.safeParse(call.request);
    const ac = new AbortController();
    const end = (err?: unknown): void => {
      this.watchers.delete(ac);
      if (ac.signal.aborted && err === undefined) {
        call.end();
        return;
      }
      ac.abort();
      if (err !== undefined) call.emit('error', toServiceError(err));
      else call.end();
    };
    if (!parsed.success) {
      end(new CairnError('EINVAL', formatZodError('request', parsed.error)));
      return;
    }
    const q = parsed.data;
    let path = q.path;
    try {
      if (path !== '' && path !== '/') {
        validateRef({ path });
        path = path.replace(/\/+$/, '');
      }
    } catch (err) {
      end(err);
      return;
    }
    if (this.watchers.size >= MAX_WATCHERS) {
      end(new CairnError('EAGAIN', `node serves ${this.watchers.size} watch streams already; retry later or on another node`));
      return;
    }
    this.watchers.add(ac);
    call.on('cancelled', () => ac.abort());
    call.on('close', () => ac.abort());
    const sm = this.sm;
    const writeMsg = (msg: unknown): Promise<void> =>
      new Promise((resolve) => {
        if (call.write(msg)) resolve();
        else call.once('drain', () => resolve());
      });
    void (async () => {
      let next = q.from_revision === 0 ? sm.revision() + 1 : q.from_revision;
      // Tell the client where it stands at once (it may resume from here).
      await writeMsg({ events: [], revision: next - 1 });
      while (!ac.signal.aborted) {
        const evs = await sm.events(next, WATCH_BATCH);
        if (evs.length === 0) {
          await sm.waitForRevision(next - 1, ac.signal);
          continue;
        }
        const matched = evs.filter((e) => eventMatches(e, path)).map(eventToWire);
        next = evs[evs.length - 1]!.revision + 1;
        if (matched.length > 0 || sm.revision() < next) await writeMsg({ events: matched, revision: next - 1 });
      }
    })().then(
      () => end(),
      (err: unknown) => end(err),
    );
  }
}

function validateRef(ref: Ref): void {
  validateOp({ op: 'setattr', node: ref });
}

function leaseReply(v: Record<string, unknown>): Record<string, unknown> {
  const l = v.lease as Lease;
  return { ino: l.ino, holder: l.holder, token: l.token, ttl_ms: v.ttlMs, addr: l.addr ?? '' };
}
