/**
 * RaftNode: the driver around the pure core. It owns the durable log (storage.ts), the gRPC
 * transport (transport.ts), the tick timer and the Ready loop:
 *
 *   persist (one LevelDB batch, fsynced) → send → apply to the state machine → release reads → advance
 *
 * with overlaps that Raft allows: the leader sends its new entries to the followers while its
 * own write is in flight, committed entries that this node already holds durably are applied
 * while the Ready's write is in flight (etcd does both), and a follower forwards proposals and
 * read requests to the leader without waiting for the Ready being persisted.
 *
 * Proposals made while a Ready is being persisted are gathered into the next one (group
 * commit). A proposal is wrapped in an envelope (proposer id, request id) so that the node that
 * proposed it resolves the caller's promise with the state machine's result when it applies
 * the entry; followers hand proposals to the leader through the core's forwarding.
 *
 * Linearizable reads share ReadIndex requests: all reads waiting when a request goes out are
 * released together once the local state machine has applied up to the read index.
 *
 * Crash safety: the state machine stores its applied index atomically with its effects; on
 * start the core resumes from that index, and entries the state machine already holds (after
 * it restored a snapshot newer than the log) are never applied twice.
 */
import { failpoint } from '../common/failpoint.js';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { randomInt } from 'node:crypto';
import { RawNode } from './core/index.js';
import { decodeConfChange } from './core/confchange.js';
import { DiskStorage } from './storage.js';
import { Transport, readSpool } from './transport.js';
import { CAIRN_VERSION } from '../common/version.js';
import { startServer, type StartedServer, type grpc } from '../rpc/grpc.js';
import { raftConfigSchema, type RaftConfig } from '../common/config.js';
import { CairnError, assert } from '../common/errors.js';
import { logger, type Logger } from '../common/log.js';
import { histogram } from '../common/metrics.js';
import {
  ConfChangeType,
  EntryType,
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  MessageType,
  type Message,
  type NodeId,
  type Ready,
  type Role,
  type StateMachine,
} from './types.js';

/**
 * How long a leader's new commit index may wait for the next append to carry it before it is
 * sent on its own (lazyCommit). Writes that follow each other (a client waiting for each
 * answer sends its next within a fraction of a millisecond) save a round of empty appends and
 * their acknowledgements; followers apply at most this much later when writes stop.
 */
const COMMIT_LINGER_MS = 2;

/**
 * Where a write's time goes (docs/meta.md, "Where a small write's time goes"): fine buckets from
 * 0.1 ms, since one Raft round on a quiet machine is 1-2 ms. bench/put-stages.ts reads them.
 */
const STAGE_BUCKETS = [0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1];
const stageMetrics = {
  persist: histogram('cairn_raft_persist_seconds', 'One Ready written to the Raft log (one LevelDB batch; sync="true": fsynced)', ['sync'], STAGE_BUCKETS),
  apply: histogram('cairn_raft_apply_seconds', 'One batch of committed entries applied to the state machine', [], STAGE_BUCKETS),
  appendRtt: histogram('cairn_raft_append_rtt_seconds', 'Leader: entries sent to a follower until its acknowledgement (network + the follower\'s fsync)', [], STAGE_BUCKETS),
  propose: histogram('cairn_raft_propose_seconds', 'Proposer: propose() until the entry is applied here and its result known', [], STAGE_BUCKETS),
};
/** Appends awaiting their acknowledgement, per follower, for cairn_raft_append_rtt_seconds (bounded). */
const MAX_TRACKED_APPENDS = 256;

export interface RaftPeer {
  id: NodeId;
  address: string;
}

export interface RaftNodeOptions {
  id: NodeId;
  /** The Raft log lives in <dataDir>/raft, incoming snapshots are spooled in <dataDir>/raft-spool. */
  dataDir: string;
  /** host:port for the node's gRPC server (port 0 picks a free port). */
  listen: string;
  /** Address peers use to reach this node (defaults to the bound listen address). */
  advertise?: string;
  /** Initial voters, this node included (used on the very first start only), and known addresses. */
  peers: RaftPeer[];
  /** Start with an empty membership and wait to be added by the cluster (no bootstrap). */
  join?: boolean;
  raft?: Partial<RaftConfig>;
  stateMachine: StateMachine;
  /** More gRPC services served on the same address (the KV or metadata service). */
  services?: Array<{ service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation }>;
  /** Default deadline of propose() and membership changes. */
  proposeTimeoutMs?: number;
  /** Default deadline of readIndex(). */
  readTimeoutMs?: number;
  /** Bound on proposals waiting for their result on this node. */
  maxPendingProposals?: number;
  /** Bound on linearizable reads waiting on this node. */
  maxPendingReads?: number;
  random?: () => number;
  /** Called once if the node stops itself after a fatal error (a failed fsync or apply). */
  onFatal?: (err: Error) => void;
}

export interface RaftStatus {
  id: NodeId;
  address: string;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  leader: NodeId;
  role: Role | string;
  conf: ConfState;
  snapshotIndex: number;
  firstIndex: number;
  lastIndex: number;
  peers: Record<string, string>;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  deadlineMs: number;
}

interface ReadWaiter {
  resolve: () => void;
  reject: (e: Error) => void;
  deadlineMs: number;
}

/** Messages that acknowledge durable state: never sent before the Ready is persisted. */
const MUST_FOLLOW_PERSIST: ReadonlySet<MessageType> = new Set([MessageType.AppResp, MessageType.VoteResp, MessageType.PreVoteResp]);

const ENVELOPE_MAGIC = 0xca;
const ENVELOPE_BYTES = 13;

/** Wrap proposal data with the proposer's id and a request id. */
export function wrapEnvelope(proposer: NodeId, req: number, data: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(ENVELOPE_BYTES + data.length);
  b[0] = ENVELOPE_MAGIC;
  b.writeUInt32BE(proposer, 1);
  b.writeUInt32BE(Math.floor(req / 0x1_0000_0000), 5);
  b.writeUInt32BE(req >>> 0, 9);
  b.set(data, ENVELOPE_BYTES);
  return b;
}

export function unwrapEnvelope(data: Uint8Array): { proposer: NodeId; req: number; payload: Uint8Array } | undefined {
  if (data.length < ENVELOPE_BYTES || data[0] !== ENVELOPE_MAGIC) return undefined;
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return { proposer: b.readUInt32BE(1), req: b.readUInt32BE(5) * 0x1_0000_0000 + b.readUInt32BE(9), payload: b.subarray(ENVELOPE_BYTES) };
}

/** The context carried by a conf change proposed through this driver. */
interface ConfContext {
  address?: string;
  proposer?: number;
  req?: number;
}

function parseConfContext(ctx: Uint8Array): ConfContext {
  if (ctx.length === 0) return {};
  try {
    const v = JSON.parse(Buffer.from(ctx).toString('utf8')) as Record<string, unknown>;
    return {
      address: typeof v.address === 'string' ? v.address : undefined,
      proposer: typeof v.proposer === 'number' ? v.proposer : undefined,
      req: typeof v.req === 'number' ? v.req : undefined,
    };
  } catch {
    return {};
  }
}

export class RaftNode {
  readonly id: NodeId;
  private readonly log: Logger;
  private readonly cfg: RaftConfig;
  private raw!: RawNode;
  private storage!: DiskStorage;
  private transport!: Transport;
  private server!: StartedServer;
  private timer: NodeJS.Timeout | undefined;
  /** Sends a commit index that no append carried within COMMIT_LINGER_MS (lazyCommit). */
  private commitFlush: NodeJS.Timeout | undefined;
  private address = '';
  private readonly sm: StateMachine;
  private peers = new Map<NodeId, string>();

  private leader: NodeId = 0;
  private role: string = 'follower';
  /** Last entry index handed to the state machine (or covered by its restored snapshot). */
  private applied = 0;
  /** The state machine's own durable applied index; entries at or below it are not re-applied. */
  private smApplied = 0;
  private conf: ConfState = { voters: [], learners: [] };

  private running = false;
  private again = false;
  private scheduled = false;
  private forwardScheduled = false;
  private stopped = false;
  private idle: Promise<void> = Promise.resolve();
  private fatal: Error | undefined;

  private reqSeq = 0;
  private readonly pending = new Map<number, Pending>();
  private confPending: number | undefined;
  private confRetrying = false;

  private readSeq = 0;
  private readonly readNonce = randomInt(0, 0xffff_ffff);
  private readQueue: ReadWaiter[] = [];
  private readInFlight: { ctx: number; waiters: ReadWaiter[]; sentAtMs: number } | undefined;
  private readReady: Array<{ index: number; waiters: ReadWaiter[] }> = [];
  private readonly leaderWaiters = new Set<() => void>();

  private unsavedHard: HardState | undefined;
  /** Leader: per follower, appends sent and not yet acknowledged (last index, send time in ns). */
  private readonly appendsOut = new Map<NodeId, Array<{ last: number; at: bigint }>>();
  private incomingSnap: { index: number; term: number; file: string } | undefined;
  private snapshotting = false;

  private readonly proposeTimeoutMs: number;
  private readonly readTimeoutMs: number;
  private readonly maxPendingProposals: number;
  private readonly maxPendingReads: number;

  private constructor(private readonly opts: RaftNodeOptions) {
    this.id = opts.id;
    this.sm = opts.stateMachine;
    this.cfg = raftConfigSchema.parse(opts.raft ?? {});
    this.log = logger('raft', { node: opts.id });
    this.proposeTimeoutMs = opts.proposeTimeoutMs ?? 10_000;
    this.readTimeoutMs = opts.readTimeoutMs ?? 10_000;
    this.maxPendingProposals = opts.maxPendingProposals ?? 65_536;
    this.maxPendingReads = opts.maxPendingReads ?? 65_536;
  }

  /** Open the log, start the gRPC server and the tick timer. */
  static async start(opts: RaftNodeOptions): Promise<RaftNode> {
    const n = new RaftNode(opts);
    try {
      await n.init();
    } catch (err) {
      await n.stop().catch(() => undefined);
      throw err;
    }
    return n;
  }

  private async init(): Promise<void> {
    const o = this.opts;
    this.storage = await DiskStorage.open(join(o.dataDir, 'raft'));
    if (this.storage.isEmpty() && o.join !== true) {
      if (!o.peers.some((p) => p.id === o.id)) {
        throw new CairnError('EINVAL', `node ${o.id} is not among the initial peers; start it with join to add it to a running cluster`);
      }
      await this.storage.bootstrap(o.peers.map((p) => p.id));
      this.log.info({ voters: o.peers.map((p) => p.id) }, 'bootstrapped a new raft group');
    }
    this.peers = this.storage.peerAddresses();
    for (const p of o.peers) if (!this.peers.has(p.id)) this.peers.set(p.id, p.address);

    this.smApplied = await this.sm.appliedIndex();
    const snap = this.storage.snapshotMetadata();
    const hs = this.storage.hardState();
    let applied = this.smApplied;
    if (applied < snap.index) {
      if (snap.index === 1 && snap.term === 1) applied = 1; // the bootstrap snapshot: the empty state
      else {
        throw new CairnError(
          'ECORRUPT',
          `node ${o.id}: the state machine has applied up to ${applied} but the raft log starts after ${snap.index}; ` +
            `the state machine data is older than the log (wipe ${o.dataDir} and re-add the node)`,
        );
      }
    }
    applied = Math.min(applied, hs.commit);
    this.applied = Math.max(applied, this.smApplied);
    this.conf = this.storage.initialState().conf;

    this.raw = new RawNode({
      id: o.id,
      electionTicks: this.cfg.electionTicks,
      heartbeatTicks: this.cfg.heartbeatTicks,
      storage: this.storage,
      applied,
      maxSizePerMsgBytes: this.cfg.maxSizePerMsgBytes,
      maxInflightMsgs: this.cfg.maxInflightMsgs,
      maxInflightBytes: this.cfg.maxInflightMsgs * this.cfg.maxSizePerMsgBytes,
      maxUncommittedBytes: 64 * 1024 * 1024,
      preVote: this.cfg.preVote,
      checkQuorum: this.cfg.checkQuorum,
      random: o.random ?? Math.random,
      lazyCommit: true,
    });

    const spoolDir = join(o.dataDir, 'raft-spool');
    this.transport = new Transport({ id: o.id, address: o.advertise ?? o.listen, peers: this.peers, spoolDir, log: this.log });
    await this.transport.cleanSpool();
    this.transport.handler = {
      onMessages: (msgs) => this.onMessages(msgs),
      onSnapshot: (msg, file) => this.onSnapshot(msg, file),
      snapshotChunks: async () => (await this.sm.snapshot()).chunks,
      reportUnreachable: (id) => this.safely(() => this.raw.reportUnreachable(id)),
      reportSnapshot: (id, ok) => {
        this.safely(() => this.raw.reportSnapshot(id, ok));
        this.kick();
      },
      learnPeer: (id, address) => this.learnPeer(id, address),
    };
    this.server = await startServer(o.listen, [this.transport.service(), ...(o.services ?? [])]);
    this.address = o.advertise ?? this.server.address;
    this.transport.setAddress(this.address); // listen port 0: the real port is known only now
    this.timer = setInterval(() => this.onTick(), this.cfg.tickMs);
    this.log.info({ address: this.address, applied, conf: this.conf }, 'raft node started');
    // A single-voter group elects itself at once.
    if (this.conf.voters.length === 1 && this.conf.voters[0] === o.id) this.safely(() => this.raw.campaign());
    this.kick();
  }

  // ---- public API ----

  /** The address this node serves on (after binding). */
  get listenAddress(): string {
    return this.address;
  }

  isLeader(): boolean {
    return this.leader === this.id && this.role === 'leader';
  }

  leaderId(): NodeId {
    return this.leader;
  }

  appliedIndex(): number {
    return this.applied;
  }

  /**
   * The release of every member (voters and learners) as this node last heard it: its own, and
   * each peer's from its last message batch if that came within `withinMs` (else undefined). On
   * the leader every member is heard each heartbeat (docs/upgrade.md).
   */
  memberVersions(withinMs: number): Array<{ id: NodeId; version: string | undefined }> {
    const heard = this.transport?.peerVersions() ?? new Map<NodeId, { version: string; atMs: number }>();
    const now = Date.now();
    return [...this.conf.voters, ...this.conf.learners].map((id) => {
      if (id === this.id) return { id, version: CAIRN_VERSION };
      const h = heard.get(id);
      return { id, version: h !== undefined && now - h.atMs <= withinMs ? h.version : undefined };
    });
  }

  status(): RaftStatus {
    const s = this.raw.status();
    const snap = this.storage.snapshotMetadata();
    return {
      id: this.id,
      address: this.address,
      term: s.term,
      vote: s.vote,
      commit: s.commit,
      applied: this.applied,
      leader: s.leader,
      role: s.role,
      conf: { voters: [...this.conf.voters], learners: [...this.conf.learners] },
      snapshotIndex: snap.index,
      firstIndex: this.storage.firstIndex(),
      lastIndex: this.storage.lastIndex(),
      peers: Object.fromEntries([...this.peers].map(([k, v]) => [String(k), v])),
    };
  }

  /**
   * Replicate `data` and resolve with the state machine's result for it once this node has
   * applied it. Fails with ENOTLEADER when no leader is known, EAGAIN when too much is
   * pending, ETIMEDOUT when the entry was not applied in time (it may still commit later).
   */
  propose(data: Uint8Array, opts: { timeoutMs?: number } = {}): Promise<unknown> {
    this.checkRunning();
    if (this.pending.size >= this.maxPendingProposals) {
      return Promise.reject(new CairnError('EAGAIN', `node ${this.id}: ${this.pending.size} proposals pending; retry later`));
    }
    const req = ++this.reqSeq;
    const env = wrapEnvelope(this.id, req, data);
    const timed = stageMetrics.propose.startTimer();
    return new Promise<unknown>((resolve, reject) => {
      try {
        this.raw.propose(env);
      } catch (err) {
        reject(this.mapCoreError(err));
        return;
      }
      const done = (v: unknown): void => {
        timed();
        resolve(v);
      };
      this.pending.set(req, { resolve: done, reject, deadlineMs: Date.now() + (opts.timeoutMs ?? this.proposeTimeoutMs) });
      this.kick();
    });
  }

  /**
   * Linearizable barrier: resolves once this node's state machine has applied everything
   * committed before the call. Reads that wait together share one ReadIndex request.
   */
  readIndex(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.checkRunning();
    if (this.readQueue.length + (this.readInFlight?.waiters.length ?? 0) >= this.maxPendingReads) {
      return Promise.reject(new CairnError('EAGAIN', `node ${this.id}: too many linearizable reads pending; retry later`));
    }
    return new Promise<void>((resolve, reject) => {
      this.readQueue.push({ resolve, reject, deadlineMs: Date.now() + (opts.timeoutMs ?? this.readTimeoutMs) });
      this.issueRead();
    });
  }

  /** Wait until some leader is known (returns its id). */
  async waitForLeader(timeoutMs = 10_000): Promise<NodeId> {
    const deadline = Date.now() + timeoutMs;
    while (this.leader === 0) {
      this.checkRunning();
      if (Date.now() > deadline) throw new CairnError('ETIMEDOUT', `node ${this.id}: no leader elected within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.leaderWaiters.add(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.leader;
  }

  /** How much of a peer's log is known to match (on the leader; undefined elsewhere or for a stranger). */
  peerMatch(id: NodeId): number | undefined {
    if (!this.isLeader()) return undefined;
    return this.raw.status().progress.get(id)?.match;
  }

  /** Start an election now (tests, operators). */
  campaign(): void {
    this.checkRunning();
    this.raw.campaign();
    this.kick();
  }

  addVoter(id: NodeId, address: string, opts: { timeoutMs?: number } = {}): Promise<ConfState> {
    return this.changeConf(ConfChangeType.AddNode, id, address, opts.timeoutMs);
  }

  addLearner(id: NodeId, address: string, opts: { timeoutMs?: number } = {}): Promise<ConfState> {
    return this.changeConf(ConfChangeType.AddLearner, id, address, opts.timeoutMs);
  }

  /** Make a learner a voter (it should have caught up first). */
  promote(id: NodeId, opts: { timeoutMs?: number } = {}): Promise<ConfState> {
    const address = this.peers.get(id);
    if (address === undefined) return Promise.reject(new CairnError('ENOENT', `node ${id} is not a known peer`));
    return this.changeConf(ConfChangeType.AddNode, id, address, opts.timeoutMs);
  }

  remove(id: NodeId, opts: { timeoutMs?: number } = {}): Promise<ConfState> {
    return this.changeConf(ConfChangeType.RemoveNode, id, undefined, opts.timeoutMs);
  }

  /** Ask the leader to hand leadership to `to`; resolves when `to` is the leader. */
  async transferLeadership(to: NodeId, opts: { timeoutMs?: number } = {}): Promise<void> {
    this.checkRunning();
    if (!this.conf.voters.includes(to)) throw new CairnError('EINVAL', `node ${to} is not a voter`);
    const electionMs = this.cfg.electionTicks * this.cfg.tickMs;
    const deadline = Date.now() + (opts.timeoutMs ?? Math.max(5000, electionMs * 10));
    let lastAskMs = 0;
    while (this.leader !== to) {
      this.checkRunning();
      if (Date.now() > deadline) throw new CairnError('ETIMEDOUT', `leadership did not move to node ${to} in time`);
      // The core abandons a transfer after an election timeout (e.g. the target lagged): ask again.
      if (Date.now() - lastAskMs > electionMs && this.raw.status().leadTransferee !== to) {
        lastAskMs = Date.now();
        this.raw.transferLeadership(to);
        this.kick();
      }
      await new Promise((r) => setTimeout(r, this.cfg.tickMs));
    }
  }

  /** Stop timers, the server and the transport; close the log and the state machine. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.commitFlush !== undefined) clearTimeout(this.commitFlush);
    const err = new CairnError('ECANCELED', `node ${this.id} is stopping`);
    this.failAll(err);
    await this.idle.catch(() => undefined);
    while (this.running) await new Promise((r) => setTimeout(r, 5));
    this.transport?.close();
    if (this.unsavedHard !== undefined && this.fatal === undefined) {
      await this.storage.persist({ entries: [], hardState: this.unsavedHard, sync: true }).catch(() => undefined);
    }
    if (this.server !== undefined) {
      // Peers keep streams open to us: give in-flight calls a moment, then cut them.
      await this.server.stop(200);
    }
    await this.storage?.close().catch(() => undefined);
    await this.sm.close().catch(() => undefined);
    this.log.info('raft node stopped');
  }

  // ---- internals ----

  private checkRunning(): void {
    if (this.fatal !== undefined) throw new CairnError('EIO', `node ${this.id} stopped after an error: ${this.fatal.message}`);
    if (this.stopped) throw new CairnError('ECANCELED', `node ${this.id} is stopped`);
  }

  private mapCoreError(err: unknown): Error {
    if (err instanceof CairnError) {
      if (err.code === 'ENOTLEADER' && this.leader !== 0 && this.leader !== this.id) {
        return new CairnError('ENOTLEADER', err.message, { leader: this.leader, leaderAddress: this.peers.get(this.leader) });
      }
      return err;
    }
    return new CairnError('EIO', `raft: ${(err as Error).message}`);
  }

  private safely(fn: () => void): void {
    if (this.stopped) return;
    try {
      fn();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'raft core refused an event');
    }
  }

  private changeConf(type: ConfChangeType, nodeId: NodeId, address: string | undefined, timeoutMs?: number): Promise<ConfState> {
    this.checkRunning();
    if (!this.isLeader()) {
      return Promise.reject(
        new CairnError('ENOTLEADER', `node ${this.id} is not the leader; change membership on node ${this.leader}`, { leader: this.leader }),
      );
    }
    if (this.confPending !== undefined && (this.pending.has(this.confPending) || this.confRetrying)) {
      return Promise.reject(new CairnError('EBUSY', 'a membership change is already in progress; changes go one at a time'));
    }
    const req = ++this.reqSeq;
    const ctx: ConfContext = { proposer: this.id, req };
    if (address !== undefined) ctx.address = address;
    const cc: ConfChange = { type, nodeId, context: Buffer.from(JSON.stringify(ctx)) };
    const deadlineMs = Date.now() + (timeoutMs ?? this.proposeTimeoutMs);
    this.confPending = req;
    return new Promise<ConfState>((resolve, reject) => {
      // A new leader accepts a change only after it committed an entry of its term (EBUSY
      // until then): retry every tick until the deadline.
      const attempt = (): void => {
        this.confRetrying = false;
        if (this.stopped) return reject(new CairnError('ECANCELED', `node ${this.id} is stopping`));
        try {
          this.raw.proposeConfChange(cc);
        } catch (err) {
          if (err instanceof CairnError && err.code === 'EBUSY' && Date.now() < deadlineMs) {
            this.confRetrying = true;
            setTimeout(attempt, this.cfg.tickMs);
            return;
          }
          if (this.confPending === req) this.confPending = undefined;
          reject(this.mapCoreError(err));
          return;
        }
        this.pending.set(req, { resolve: resolve as (v: unknown) => void, reject, deadlineMs });
        this.kick();
      };
      attempt();
    });
  }

  private learnPeer(id: NodeId, address: string): void {
    if (id === this.id || this.peers.get(id) === address) return;
    if (this.peers.has(id)) return; // configured addresses win over what the wire says
    this.peers.set(id, address);
    this.transport.addPeer(id, address);
  }

  private onMessages(msgs: Message[]): void {
    if (this.stopped || this.fatal !== undefined) return;
    for (const m of msgs) {
      if (m.type === MessageType.AppResp && !m.reject) this.appendAcked(m.from, m.index);
      this.safely(() => this.raw.step(m));
    }
    this.kick();
  }

  /** Send messages; appends carrying entries are timed until their acknowledgement. */
  private send(msgs: Message[]): void {
    if (msgs.length === 0) return;
    for (const m of msgs) {
      if (m.type !== MessageType.App || m.entries.length === 0) continue;
      let out = this.appendsOut.get(m.to);
      if (out === undefined) this.appendsOut.set(m.to, (out = []));
      if (out.length >= MAX_TRACKED_APPENDS) out.shift();
      out.push({ last: m.entries[m.entries.length - 1]!.index, at: process.hrtime.bigint() });
    }
    this.transport.send(msgs);
  }

  private appendAcked(from: NodeId, index: number): void {
    const out = this.appendsOut.get(from);
    if (out === undefined || out.length === 0) return;
    const now = process.hrtime.bigint();
    while (out.length > 0 && out[0]!.last <= index) stageMetrics.appendRtt.observe(Number(now - out.shift()!.at) / 1e9);
  }

  private async onSnapshot(msg: Message, file: string): Promise<void> {
    this.checkRunning();
    const meta = msg.snapshot!.metadata;
    if (this.incomingSnap !== undefined && this.incomingSnap.file !== file) await rm(this.incomingSnap.file, { force: true });
    this.incomingSnap = { index: meta.index, term: meta.term, file };
    this.raw.step(msg);
    this.kick();
  }

  private onTick(): void {
    if (this.stopped || this.fatal !== undefined) return;
    this.safely(() => this.raw.tick());
    const now = Date.now();
    // Expire proposals and reads past their deadline.
    for (const [req, p] of this.pending) {
      if (now > p.deadlineMs) {
        this.pending.delete(req);
        p.reject(new CairnError('ETIMEDOUT', `proposal not applied on node ${this.id} in time (leader ${this.leader}); it may still commit`));
      }
    }
    this.readQueue = this.expireReads(this.readQueue, now);
    for (const r of this.readReady) r.waiters = this.expireReads(r.waiters, now);
    this.readReady = this.readReady.filter((r) => r.waiters.length > 0);
    if (this.readInFlight !== undefined) {
      this.readInFlight.waiters = this.expireReads(this.readInFlight.waiters, now);
      // No answer for an election timeout: the request was lost (leader change); ask again.
      if (now - this.readInFlight.sentAtMs > this.cfg.electionTicks * this.cfg.tickMs || this.readInFlight.waiters.length === 0) {
        const w = this.readInFlight.waiters;
        this.readInFlight = undefined;
        this.readQueue.unshift(...w);
      }
    }
    this.issueRead();
    this.kick();
  }

  private expireReads(list: ReadWaiter[], now: number): ReadWaiter[] {
    if (list.length === 0) return list;
    return list.filter((w) => {
      if (now <= w.deadlineMs) return true;
      w.reject(
        this.leader === 0
          ? new CairnError('ENOTLEADER', `node ${this.id} knows no leader; the read could not be confirmed`)
          : new CairnError('ETIMEDOUT', `linearizable read on node ${this.id} not confirmed in time (leader ${this.leader})`),
      );
      return false;
    });
  }

  private issueRead(): void {
    if (this.readInFlight !== undefined || this.readQueue.length === 0 || this.stopped) return;
    if (this.leader === 0) return; // wait for a leader (the tick retries)
    // Read contexts are unique across the cluster and across restarts: node id, a random
    // nonce of this run, and a sequence number.
    const ctx = ++this.readSeq;
    const bytes = Buffer.allocUnsafe(16);
    bytes.writeUInt32BE(this.id, 0);
    bytes.writeUInt32BE(this.readNonce, 4);
    bytes.writeUInt32BE(Math.floor(ctx / 0x1_0000_0000), 8);
    bytes.writeUInt32BE(ctx >>> 0, 12);
    const waiters = this.readQueue;
    this.readQueue = [];
    try {
      this.raw.readIndex(bytes);
    } catch {
      this.readQueue = waiters; // retried on the next tick
      return;
    }
    this.readInFlight = { ctx, waiters, sentAtMs: Date.now() };
    this.kick();
  }

  private releaseReads(): void {
    if (this.readReady.length === 0) return;
    const keep: Array<{ index: number; waiters: ReadWaiter[] }> = [];
    for (const r of this.readReady) {
      if (r.index <= this.applied) for (const w of r.waiters) w.resolve();
      else keep.push(r);
    }
    this.readReady = keep;
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    const reads = [...this.readQueue, ...(this.readInFlight?.waiters ?? []), ...this.readReady.flatMap((r) => r.waiters)];
    this.readQueue = [];
    this.readInFlight = undefined;
    this.readReady = [];
    for (const w of reads) w.reject(err);
  }

  /** Send the proposals and read requests this follower forwards to the leader, now. */
  private sendForwarded(): void {
    this.forwardScheduled = false;
    if (this.stopped || this.fatal !== undefined || !this.running) return; // else the next Ready carries them
    const fwd = this.raw.takeForwarded();
    if (fwd.length > 0) this.transport.send(fwd);
  }

  /** Run the Ready loop soon (once per turn of the event loop, however many events came). */
  private kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      // Requests forwarded to the leader need not wait for the Ready being persisted.
      if (!this.forwardScheduled) {
        this.forwardScheduled = true;
        setImmediate(() => this.sendForwarded());
      }
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.idle = this.loop();
    });
  }

  private async loop(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      do {
        this.again = false;
        while (!this.stopped && this.raw.hasReady()) {
          const rd = this.raw.ready();
          // A test's stand-in for a failed fsync or apply (nothing armed: no await at all).
          const fp = failpoint('raft.ready');
          if (fp !== undefined) await fp;
          await this.handleReady(rd);
          if (this.stopped) break;
          this.raw.advance(rd);
        }
        if (!this.stopped) await this.maybeSnapshot();
      } while (this.again && !this.stopped);
      if (!this.stopped && this.commitFlush === undefined && this.raw.hasUnsentCommit()) {
        // The leader's new commit index waits a moment for the next append to carry it.
        this.commitFlush = setTimeout(() => {
          this.commitFlush = undefined;
          if (this.stopped) return;
          this.safely(() => this.raw.flushCommit());
          this.kick();
        }, COMMIT_LINGER_MS);
      }
    } catch (err) {
      // A failed fsync or apply leaves the node in an unknown state: stop rather than go on.
      this.fatal = err as Error;
      this.log.error({ err: (err as Error).stack }, 'raft node failed; stopping it');
      this.failAll(new CairnError('EIO', `node ${this.id} failed: ${(err as Error).message}`));
      if (this.timer !== undefined) clearInterval(this.timer);
      try {
        this.opts.onFatal?.(err as Error);
      } catch {
        // the owner's handler must not break the loop's own cleanup
      }
    } finally {
      this.running = false;
    }
  }

  private async handleReady(rd: Ready): Promise<void> {
    if (rd.softState !== undefined) {
      const wasLeader = this.leader;
      this.leader = rd.softState.leader;
      this.role = rd.softState.role;
      if (wasLeader !== this.leader) {
        this.appendsOut.clear(); // appends of another term are never timed
        this.log.info({ leader: this.leader, role: this.role }, 'leader changed');
        for (const w of this.leaderWaiters) w();
        this.leaderWaiters.clear();
      }
    }
    // Messages that may go out before this Ready is persisted:
    //  - all of them when nothing needs an fsync (only the commit index changed);
    //  - on the leader, when its term and vote are already durable: it writes its own entries
    //    in parallel with replicating them (raft thesis §10.2.1; etcd does the same). This is
    //    safe because the loop is serial: an entry can count as committed only through acks
    //    that arrive while this Ready's write is in flight, and nothing that reveals the commit
    //    (applied results, commit indexes, read states) leaves before the next Ready — which is
    //    taken only once this write is durable.
    // Acknowledgements (AppResp, VoteResp, PreVoteResp) always wait for the fsync.
    const stored = this.storage.hardState();
    const termVoteDurable = rd.hardState === undefined || (rd.hardState.term === stored.term && rd.hardState.vote === stored.vote);
    const leaderNow = (rd.softState?.role ?? this.role) === 'leader';
    let late: Message[] = rd.messages;
    if (!rd.mustSync) {
      this.send(rd.messages);
      late = [];
    } else if (leaderNow && termVoteDurable && rd.snapshot === undefined && rd.messages.length > 0) {
      const early: Message[] = [];
      late = [];
      for (const m of rd.messages) (MUST_FOLLOW_PERSIST.has(m.type) ? late : early).push(m);
      this.send(early);
    }
    // 1. persist: an installed snapshot first reaches the state machine, then the log.
    if (rd.snapshot !== undefined) await this.installSnapshot(rd.snapshot.metadata.index, rd.snapshot.metadata.term);
    // A hard state whose only change is the commit index is not needed for safety (after a
    // restart the commit index is learnt again); it rides along with the next write instead
    // of costing a LevelDB write of its own.
    if (rd.hardState !== undefined) this.unsavedHard = rd.hardState;
    let applyFrom = 0;
    if (rd.snapshot !== undefined || rd.entries.length > 0 || rd.mustSync) {
      const hardState = this.unsavedHard;
      this.unsavedHard = undefined;
      // Committed entries this node already holds durably do not wait for this Ready's write:
      // they are applied (and their results released) while it is in flight, as etcd does.
      // Committed means stored by a majority — on the leader too, because this Ready was
      // taken only after the previous write (which held its own copies) was durable. Conf
      // changes write the log themselves, so they and everything after them wait.
      const durableLast = rd.entries.length > 0 ? Math.min(this.storage.lastIndex(), rd.entries[0]!.index - 1) : this.storage.lastIndex();
      if (rd.snapshot === undefined) {
        while (
          applyFrom < rd.committedEntries.length &&
          rd.committedEntries[applyFrom]!.index <= durableLast &&
          rd.committedEntries[applyFrom]!.type !== EntryType.ConfChange
        ) {
          applyFrom++;
        }
      }
      const persisted = stageMetrics.persist.startTimer({ sync: String(rd.mustSync) });
      const writing = this.storage.persist({
        snapshot: rd.snapshot?.metadata,
        entries: rd.entries,
        hardState,
        sync: rd.mustSync,
      });
      writing.then(() => persisted(), () => undefined);
      writing.catch(() => undefined); // a failure is handled by the await below, not reported as unhandled meanwhile
      if (applyFrom > 0) {
        try {
          await this.applyEntries(rd.committedEntries.slice(0, applyFrom));
        } catch (err) {
          await writing.catch(() => undefined);
          throw err;
        }
      }
      await writing;
      if (rd.snapshot !== undefined) {
        this.conf = rd.snapshot.metadata.conf;
        this.applied = Math.max(this.applied, rd.snapshot.metadata.index, this.smApplied);
        for (const id of [...rd.snapshot.metadata.conf.voters, ...rd.snapshot.metadata.conf.learners]) {
          const a = this.peers.get(id);
          if (a !== undefined) this.transport.addPeer(id, a);
        }
        await this.storage.setPeers(this.peers);
      }
    }
    // 2. send what had to wait for the write
    this.send(late);
    // 3. apply (what was not applied while the write was in flight)
    const rest = applyFrom === 0 ? rd.committedEntries : rd.committedEntries.slice(applyFrom);
    if (rest.length > 0) await this.applyEntries(rest);
    // 4. reads
    for (const rs of rd.readStates) {
      const b = Buffer.from(rs.context.buffer, rs.context.byteOffset, rs.context.byteLength);
      const mine = b.length === 16 && b.readUInt32BE(0) === this.id && b.readUInt32BE(4) === this.readNonce;
      const ctx = mine ? b.readUInt32BE(8) * 0x1_0000_0000 + b.readUInt32BE(12) : -1;
      if (this.readInFlight !== undefined && this.readInFlight.ctx === ctx) {
        this.readReady.push({ index: rs.index, waiters: this.readInFlight.waiters });
        this.readInFlight = undefined;
      }
    }
    this.releaseReads();
    if (this.readInFlight === undefined && this.readQueue.length > 0) queueMicrotask(() => this.issueRead());
  }

  private async installSnapshot(index: number, term: number): Promise<void> {
    const inc = this.incomingSnap;
    if (inc === undefined || inc.index !== index || inc.term !== term) {
      throw new CairnError('EIO', `raft: the core installs snapshot ${index}/${term} but no such snapshot was received`);
    }
    this.incomingSnap = undefined;
    const meta = this.storage.snapshotMetadata();
    this.log.info({ index, term, from: meta.index }, 'restoring the state machine from a snapshot');
    await this.sm.restore({ index, term, conf: { voters: [], learners: [] } }, readSpool(inc.file));
    await rm(inc.file, { force: true });
    this.smApplied = await this.sm.appliedIndex();
    assert(this.smApplied >= index, `state machine restored to ${this.smApplied}, below the snapshot ${index}`);
  }

  private async applyEntries(entries: Entry[]): Promise<void> {
    const toSm: Entry[] = [];
    const owners: Array<{ req: number } | undefined> = [];
    for (const e of entries) {
      if (e.index <= this.smApplied) continue;
      if (e.type === EntryType.Normal) {
        const env = unwrapEnvelope(e.data);
        toSm.push(env === undefined ? e : { index: e.index, term: e.term, type: e.type, data: env.payload });
        owners.push(env !== undefined && env.proposer === this.id ? { req: env.req } : undefined);
      } else {
        toSm.push(e);
        owners.push(undefined);
      }
    }
    if (toSm.length > 0) {
      const applying = stageMetrics.apply.startTimer();
      const results = await this.sm.apply(toSm);
      applying();
      this.smApplied = toSm[toSm.length - 1]!.index;
      for (let i = 0; i < owners.length; i++) {
        const o = owners[i];
        if (o === undefined) continue;
        const p = this.pending.get(o.req);
        if (p !== undefined) {
          this.pending.delete(o.req);
          p.resolve(results[i]);
        }
      }
    }
    // Membership changes take effect in the core once applied, in log order.
    for (const e of entries) if (e.type === EntryType.ConfChange) await this.applyConfEntry(e);
    this.applied = Math.max(this.applied, entries[entries.length - 1]!.index);
  }

  private async applyConfEntry(e: Entry): Promise<void> {
    const cc = decodeConfChangeEntry(e.data);
    if (cc === undefined) {
      this.log.error({ index: e.index }, 'undecodable conf change entry; skipped');
      return;
    }
    const ctx = parseConfContext(cc.context);
    const cs = this.raw.applyConfChange(cc);
    this.conf = cs;
    if (cc.type === ConfChangeType.RemoveNode) {
      if (cc.nodeId !== this.id) {
        this.peers.delete(cc.nodeId);
        this.transport.removePeer(cc.nodeId);
      } else this.log.warn('this node was removed from the raft group');
    } else if (ctx.address !== undefined && cc.nodeId !== this.id) {
      this.peers.set(cc.nodeId, ctx.address);
      this.transport.addPeer(cc.nodeId, ctx.address);
    }
    await this.storage.persist({ entries: [], conf: cs, sync: true });
    await this.storage.setPeers(this.peers);
    this.log.info({ change: ConfChangeType[cc.type], node: cc.nodeId, conf: cs }, 'membership changed');
    if (ctx.proposer === this.id && ctx.req !== undefined) {
      const p = this.pending.get(ctx.req);
      if (p !== undefined) {
        this.pending.delete(ctx.req);
        p.resolve(cs);
      }
      if (this.confPending === ctx.req) this.confPending = undefined;
    }
  }

  /** Every snapshotEntries applied entries: make the state machine durable, record it, compact the log. */
  private async maybeSnapshot(): Promise<void> {
    const last = this.storage.snapshotMetadata().index;
    if (this.snapshotting || this.applied - last < this.cfg.snapshotEntries || this.smApplied < this.applied) return;
    this.snapshotting = true;
    try {
      const snap = await this.sm.snapshot(); // makes the state at snap.index durable; chunks are not read here
      if (snap.index <= last || snap.index > this.storage.lastIndex()) return;
      // The stored commit index must not fall below the snapshot: after a restart the core
      // resumes at min(applied, commit), which must not be compacted away.
      if (this.unsavedHard !== undefined) {
        const hardState = this.unsavedHard;
        this.unsavedHard = undefined;
        await this.storage.persist({ entries: [], hardState, sync: true });
      }
      if (this.storage.hardState().commit < snap.index) return;
      const compactTo = Math.max(0, snap.index - this.cfg.compactionMarginEntries);
      await this.storage.createSnapshot({ index: snap.index, term: this.storage.term(snap.index), conf: this.conf }, compactTo);
      this.log.info({ index: snap.index, compactTo }, 'snapshot taken, log compacted');
    } finally {
      this.snapshotting = false;
    }
  }
}

/** Conf change entries carry the ConfChange the core encoded (core/confchange.ts). */
function decodeConfChangeEntry(data: Uint8Array): ConfChange | undefined {
  try {
    return decodeConfChange(data);
  } catch {
    return undefined;
  }
}
