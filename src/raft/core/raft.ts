/**
 * The Raft state machine itself (etcd's raft.go, in spirit): step(message) and tick() change
 * state and queue outgoing messages and read states; RawNode turns that into Ready values.
 * Pure: no timers, sockets, disk, clock or Math.random — randomness comes from options.
 *
 * Implemented: elections with randomized timeouts, pre-vote, check-quorum with a leader
 * lease, replication with batching / pipelining / in-flight bounds and fast backtracking,
 * a no-op per term, commit by counting only in the current term, ReadIndex (leader and
 * forwarded), snapshots, leadership transfer and single-step membership changes.
 */
import { CairnError, assert } from '../../common/errors.js';
import {
  CompactedError,
  ConfChangeType,
  EntryType,
  MessageType,
  NONE,
  Role,
  UnavailableError,
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type NodeId,
  type RaftOptions,
  type ReadState,
  type Snapshot,
  type SoftState,
} from '../types.js';
import { applyToConf, cloneConf, decodeConfChange, encodeConfChange } from './confchange.js';
import { RaftLog, entrySizeBytes } from './log.js';
import { Progress } from './progress.js';
import { committedIndex, hasQuorum, voteResult } from './quorum.js';
import { ReadOnly } from './read-only.js';

/** Context of Vote/PreVote messages of a leadership transfer: they override the leader lease. */
export const CAMPAIGN_TRANSFER = new TextEncoder().encode('CampaignTransfer');

/** Bound on ReadIndex requests waiting on the leader (confirmation round or first commit). */
export const MAX_PENDING_READS = 4096;
const DEFAULT_MAX_COMMITTED_BYTES_PER_READY = 8 * 1024 * 1024;
const EMPTY = new Uint8Array(0);

type CampaignKind = 'pre' | 'election' | 'transfer';

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A message with every field defaulted. */
export function makeMessage(m: Partial<Message> & Pick<Message, 'type'>): Message {
  return {
    type: m.type,
    from: m.from ?? NONE,
    to: m.to ?? NONE,
    term: m.term ?? 0,
    logTerm: m.logTerm ?? 0,
    index: m.index ?? 0,
    entries: m.entries ?? [],
    commit: m.commit ?? 0,
    reject: m.reject ?? false,
    rejectHint: m.rejectHint ?? 0,
    ...(m.snapshot ? { snapshot: m.snapshot } : {}),
    context: m.context ?? EMPTY,
  };
}

function voteRespType(t: MessageType): MessageType {
  return t === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
}

export class Raft {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = NONE;
  lead: NodeId = NONE;
  role: Role = Role.Follower;
  readonly log: RaftLog;

  voters = new Set<NodeId>();
  learners = new Set<NodeId>();
  prs = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();

  msgs: Message[] = [];
  readStates: ReadState[] = [];

  electionElapsed = 0;
  heartbeatElapsed = 0;
  /**
   * lazyCommit: the commit index moved on the leader and has not gone to every follower yet.
   * The next append carries it, or flushCommit() (the driver, after a short linger), or the
   * next tick.
   */
  commitUnsent = false;
  /** Highest index of an entry a follower forwarded (lazyCommit: its commit goes out at once). */
  forwardedTail = 0;
  /** Ticks since this node started: the clock of the lease. */
  tickCount = 0;
  /** Leader, lease reads: per voter, the tick at which the newest acknowledged heartbeat was sent. */
  private ackSentTick = new Map<NodeId, number>();
  /** Leader, lease reads: a TimeoutNow went out in this term, so another node may win past the leases. */
  private timeoutNowSent = false;
  /** Lease length in ticks (0: lease reads off). */
  readonly leaseTicks: number;
  randomizedElectionTimeout = 0;
  readonly electionTimeout: number;
  readonly heartbeatTimeout: number;

  leadTransferee: NodeId = NONE;
  /** Index of the latest conf change proposed by this leader; none may follow until applied. */
  pendingConfIndex = 0;
  uncommittedBytes = 0;
  private readOnly = new ReadOnly(MAX_PENDING_READS);
  /** ReadIndex requests that arrived before this leader committed an entry of its term. */
  private pendingReadIndexMessages: Message[] = [];
  /** Context of the read-confirmation round in flight, so that reads batch onto the next one. */
  private readRoundInFlight = false;

  readonly opts: RaftOptions;
  readonly maxCommittedBytesPerReady: number;

  constructor(opts: RaftOptions) {
    assert(opts.id !== NONE, 'raft: node id 0 is reserved');
    assert(opts.heartbeatTicks >= 1 && opts.electionTicks > opts.heartbeatTicks, 'raft: need electionTicks > heartbeatTicks >= 1');
    this.opts = opts;
    this.id = opts.id;
    this.electionTimeout = opts.electionTicks;
    this.heartbeatTimeout = opts.heartbeatTicks;
    this.maxCommittedBytesPerReady = opts.maxCommittedBytesPerReady ?? DEFAULT_MAX_COMMITTED_BYTES_PER_READY;
    if (opts.leaseReads) {
      if (!opts.checkQuorum) throw new CairnError('EINVAL', 'raft: lease reads need checkQuorum (the followers\' side of the lease)');
      this.leaseTicks = opts.leaseTicks ?? Math.floor(opts.electionTicks / 2);
      if (this.leaseTicks < 1 || this.leaseTicks >= opts.electionTicks) {
        throw new CairnError('EINVAL', `raft: leaseTicks must be in [1, electionTicks) (got ${this.leaseTicks})`);
      }
    } else {
      this.leaseTicks = 0;
    }
    this.log = new RaftLog(opts.storage);

    const { hardState, conf } = opts.storage.initialState();
    const first = this.log.firstIndex();
    const last = this.log.lastIndex();
    if (hardState.commit > last) {
      throw new CairnError('ECORRUPT', `raft: stored commit index ${hardState.commit} is beyond the last stored entry ${last}`);
    }
    this.term = hardState.term;
    this.vote = hardState.vote;
    const applied = opts.applied;
    if (applied < first - 1) {
      throw new CairnError('EINVAL', `raft: applied index ${applied} is below the snapshot index ${first - 1}; restore the state machine from the snapshot first`);
    }
    if (applied > last) {
      throw new CairnError('ECORRUPT', `raft: applied index ${applied} is beyond the last stored entry ${last}; the log lost synced entries`);
    }
    // A commit index persisted without fsync may lag what was applied: applied implies committed.
    this.log.committed = Math.max(hardState.commit, first - 1, applied);
    this.log.applied = applied;

    // The configuration is the snapshot's plus every conf change applied since.
    let cs = cloneConf(conf);
    if (applied > first - 1) {
      for (const e of this.log.slice(first, applied + 1, Number.MAX_SAFE_INTEGER)) {
        if (e.type === EntryType.ConfChange) cs = applyToConf(cs, decodeConfChange(e.data));
      }
    }
    this.setConf(cs);
    this.becomeFollower(this.term, NONE);
  }

  // ---------------------------------------------------------------- state views

  softState(): SoftState {
    return { leader: this.lead, role: this.role };
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  confState(): ConfState {
    return cloneConf({ voters: [...this.voters], learners: [...this.learners] });
  }

  promotable(): boolean {
    return this.voters.has(this.id);
  }

  private committedEntryInCurrentTerm(): boolean {
    return this.log.termOrZero(this.log.committed) === this.term;
  }

  // ---------------------------------------------------------------- configuration

  private setConf(cs: ConfState): void {
    this.voters = new Set(cs.voters);
    this.learners = new Set(cs.learners);
    const next = this.log.lastIndex() + 1;
    const old = this.prs;
    this.prs = new Map();
    for (const id of [...cs.voters, ...cs.learners]) {
      let pr = old.get(id);
      if (!pr) {
        pr = this.newProgress(next, this.learners.has(id));
        pr.recentActive = true;
      }
      pr.isLearner = this.learners.has(id);
      this.prs.set(id, pr);
    }
  }

  private newProgress(next: number, isLearner: boolean): Progress {
    return new Progress(next, this.opts.maxInflightMsgs, this.opts.maxInflightBytes, isLearner);
  }

  /** Apply a committed conf change (called by the driver when it applies the entry). */
  applyConfChange(cc: ConfChange): ConfState {
    const before = this.voters.size;
    const wasVoters = new Set(this.voters);
    this.setConf(applyToConf(this.confState(), cc));
    if (this.role !== Role.Leader) return this.confState();

    if (!this.prs.has(this.id)) {
      // This leader removed itself: hand over to an up-to-date voter, then step down.
      let best: NodeId = NONE;
      let bestMatch = -1;
      for (const id of this.voters) {
        const pr = this.prs.get(id)!;
        if (pr.match > bestMatch) {
          best = id;
          bestMatch = pr.match;
        }
      }
      if (best !== NONE && bestMatch === this.log.lastIndex()) this.sendTimeoutNow(best);
      this.becomeFollower(this.term, NONE);
      return this.confState();
    }
    if (this.leadTransferee !== NONE && !this.voters.has(this.leadTransferee)) this.abortLeaderTransfer();
    const changedVoters = before !== this.voters.size || [...wasVoters].some((id) => !this.voters.has(id));
    if (changedVoters && this.maybeCommit()) {
      this.bcastAppend();
    } else {
      for (const id of this.prs.keys()) if (id !== this.id) this.maybeSendAppend(id, false);
    }
    return this.confState();
  }

  // ---------------------------------------------------------------- role changes

  private resetRandomizedElectionTimeout(): void {
    const r = this.opts.random();
    this.randomizedElectionTimeout = this.electionTimeout + Math.floor(Math.max(0, Math.min(r, 0.999999)) * this.electionTimeout);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.commitUnsent = false;
    this.resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.votes = new Map();
    const last = this.log.lastIndex();
    for (const [id, pr] of this.prs) {
      const fresh = this.newProgress(last + 1, pr.isLearner);
      if (id === this.id) fresh.match = last;
      this.prs.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.readOnly = new ReadOnly(MAX_PENDING_READS);
    this.pendingReadIndexMessages = [];
    this.readRoundInFlight = false;
    this.ackSentTick = new Map();
    this.timeoutNowSent = false;
  }

  becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = Role.Follower;
  }

  private becomeCandidate(): void {
    assert(this.role !== Role.Leader, 'raft: leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
  }

  private becomePreCandidate(): void {
    assert(this.role !== Role.Leader, 'raft: leader cannot become pre-candidate');
    // Neither term nor vote changes: a pre-vote round disturbs nobody.
    this.votes = new Map();
    this.lead = NONE;
    this.role = Role.PreCandidate;
  }

  private becomeLeader(): void {
    assert(this.role !== Role.Follower, 'raft: follower cannot become leader directly');
    this.reset(this.term);
    this.lead = this.id;
    this.role = Role.Leader;
    const self = this.prs.get(this.id);
    if (self) {
      self.becomeReplicate();
      self.recentActive = true;
    }
    // No conf change until everything before this term is applied (it may hold one).
    this.pendingConfIndex = this.log.lastIndex();
    const ok = this.appendEntries([{ term: 0, index: 0, type: EntryType.Normal, data: EMPTY }]);
    assert(ok, 'raft: the no-op of a new term must always be appended');
  }

  // ---------------------------------------------------------------- ticks

  tick(): void {
    this.tickCount++;
    if (this.role === Role.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.step(makeMessage({ type: MessageType.Hup, from: this.id }));
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0;
      if (this.opts.checkQuorum) this.step(makeMessage({ type: MessageType.CheckQuorum, from: this.id }));
      if (this.role === Role.Leader && this.leadTransferee !== NONE) this.abortLeaderTransfer();
    }
    if (this.role !== Role.Leader) return;
    this.flushCommit();
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0;
      this.step(makeMessage({ type: MessageType.Beat, from: this.id }));
    }
  }

  // ---------------------------------------------------------------- sending

  private send(m: Message): void {
    assert(m.to !== this.id, `raft: message ${m.type} addressed to self`);
    assert(m.to !== NONE, `raft: message ${m.type} without a destination`);
    m.from = this.id;
    if (m.type === MessageType.Vote || m.type === MessageType.VoteResp || m.type === MessageType.PreVote || m.type === MessageType.PreVoteResp) {
      assert(m.term !== 0, `raft: ${m.type} must carry a term`);
    } else if (m.type === MessageType.Prop || m.type === MessageType.ReadIndex || m.type === MessageType.TransferLeader) {
      // Forwarded requests carry no term: the leader of whatever term handles them.
      m.term = 0;
    } else {
      m.term = this.term;
    }
    this.msgs.push(m);
  }

  /** Send an append (or a snapshot) to `to` if its progress allows; returns whether one was sent. */
  maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.prs.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    let prevTerm: number;
    let ents: Entry[];
    try {
      prevTerm = this.log.term(prevIndex);
      ents = this.log.entries(pr.next, this.opts.maxSizePerMsgBytes);
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return this.sendSnapshot(to, pr);
      throw err;
    }
    if (ents.length === 0 && !sendIfEmpty) return false;
    if (pr.state === 'replicate' && ents.length > 0 && this.opts.maxInflightBytes > 0) {
      // Keep the bytes in flight within the bound: send only what fits in the room left
      // (a single entry larger than the bound goes alone, into an empty window).
      // When nothing fits, an empty append (if wanted) still carries the commit index and
      // probes for lost appends: the follower rejects it if it misses entries.
      let room = this.opts.maxInflightBytes - pr.inflights.bytes;
      let n = 0;
      while (n < ents.length && ((n === 0 && pr.inflights.count() === 0) || entrySizeBytes(ents[n]!) <= room)) {
        room -= entrySizeBytes(ents[n]!);
        n++;
      }
      if (n < ents.length) ents = ents.slice(0, n);
      if (ents.length === 0 && !sendIfEmpty) return false;
    }
    let bytes = 0;
    for (const e of ents) bytes += entrySizeBytes(e);
    this.send(makeMessage({
      type: MessageType.App,
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
    }));
    pr.sentEntries(ents.length, ents.length > 0 ? ents[ents.length - 1]!.index : prevIndex, bytes);
    return true;
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false;
    const snap = this.log.snapshot();
    assert(snap.metadata.index > 0 || this.log.firstIndex() === 1, 'raft: need a snapshot but storage has none');
    this.send(makeMessage({ type: MessageType.Snap, to, snapshot: snap }));
    pr.becomeSnapshot(snap.metadata.index);
    return true;
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  bcastAppend(): void {
    this.commitUnsent = false;
    for (const id of this.prs.keys()) if (id !== this.id) this.sendAppend(id);
  }

  /** lazyCommit: send the commit index to the followers now, if it has not gone out yet. */
  flushCommit(): void {
    if (this.commitUnsent && this.role === Role.Leader) this.bcastAppend();
  }

  private sendHeartbeat(to: NodeId, ctx: Uint8Array): void {
    const pr = this.prs.get(to)!;
    // Never tell a follower to commit past what it is known to hold.
    const commit = Math.min(pr.match, this.log.committed);
    // `index` carries the tick the heartbeat was sent at; the answer echoes it (lease reads).
    this.send(makeMessage({ type: MessageType.Heartbeat, to, commit, context: ctx, index: this.tickCount }));
  }

  private bcastHeartbeat(): void {
    const ctx = this.readOnly.lastPendingContext();
    if (ctx) this.readRoundInFlight = true;
    this.bcastHeartbeatWithCtx(ctx ?? EMPTY);
  }

  private bcastHeartbeatWithCtx(ctx: Uint8Array): void {
    for (const id of this.prs.keys()) if (id !== this.id) this.sendHeartbeat(id, ctx);
  }

  private sendTimeoutNow(to: NodeId): void {
    this.timeoutNowSent = true;
    this.send(makeMessage({ type: MessageType.TimeoutNow, to }));
  }

  // ---------------------------------------------------------------- leader helpers

  /** Append entries to the leader's log (stamping term and index); false if over the byte bound. */
  private appendEntries(es: Entry[]): boolean {
    const li = this.log.lastIndex();
    let bytes = 0;
    for (const e of es) bytes += e.data.byteLength;
    if (this.uncommittedBytes > 0 && bytes > 0 && this.uncommittedBytes + bytes > this.opts.maxUncommittedBytes) return false;
    this.uncommittedBytes += bytes;
    const stamped = es.map((e, i) => ({ term: this.term, index: li + 1 + i, type: e.type, data: e.data }));
    this.log.append(stamped);
    this.prs.get(this.id)?.maybeUpdate(this.log.lastIndex());
    this.maybeCommit();
    return true;
  }

  /** Entries handed out as committed no longer count against maxUncommittedBytes. */
  reduceUncommittedBytes(ents: Entry[]): void {
    if (this.role !== Role.Leader) return;
    let bytes = 0;
    for (const e of ents) bytes += e.data.byteLength;
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - bytes);
  }

  /** Advance commit to what a majority of voters matched, if it is of this term. */
  maybeCommit(): boolean {
    const wasCommittedInTerm = this.committedEntryInCurrentTerm();
    const mci = committedIndex(this.voters, (id) => this.prs.get(id)?.match ?? 0);
    const moved = this.log.maybeCommit(mci, this.term);
    if (moved && !wasCommittedInTerm && this.role === Role.Leader) this.releasePendingReadIndexMessages();
    return moved;
  }

  private abortLeaderTransfer(): void {
    this.leadTransferee = NONE;
  }

  private releasePendingReadIndexMessages(): void {
    const msgs = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of msgs) this.handleReadIndexOnLeader(m);
  }

  private readIndexResponse(req: Message, index: number): void {
    if (req.from === NONE || req.from === this.id) {
      this.readStates.push({ index, context: req.context });
    } else {
      this.send(makeMessage({ type: MessageType.ReadIndexResp, to: req.from, index, context: req.context }));
    }
  }

  /**
   * Lease reads: a majority of voters acknowledged a heartbeat sent at tick S, and each of
   * them refuses to vote for another node until an election timeout after it received it
   * (check-quorum), so no other leader can exist before S + electionTicks on their clocks.
   * The lease ends earlier, at S + leaseTicks on ours: valid while clocks drift less than
   * that margin. Never during a leadership transfer (a forced election ignores leases).
   */
  leaseValid(): boolean {
    if (this.leaseTicks === 0 || this.role !== Role.Leader) return false;
    if (this.leadTransferee !== NONE || this.timeoutNowSent || !this.committedEntryInCurrentTerm()) return false;
    const sent: number[] = [];
    for (const id of this.voters) sent.push(id === this.id ? this.tickCount : (this.ackSentTick.get(id) ?? -Infinity));
    sent.sort((a, b) => b - a);
    const start = sent[Math.floor(sent.length / 2)]!;
    return this.tickCount < start + this.leaseTicks;
  }

  private handleReadIndexOnLeader(m: Message): void {
    if ((this.voters.size === 1 && this.voters.has(this.id)) || this.leaseValid()) {
      this.readIndexResponse(m, this.log.committed);
      return;
    }
    if (!this.committedEntryInCurrentTerm()) {
      // The commit index may still lag entries the previous leader committed (§6.4).
      if (this.pendingReadIndexMessages.length < MAX_PENDING_READS) this.pendingReadIndexMessages.push(m);
      return;
    }
    if (!this.readOnly.addRequest(this.log.committed, m)) return;
    this.readOnly.recvAck(this.id, m.context);
    if (!this.readRoundInFlight) {
      this.readRoundInFlight = true;
      this.bcastHeartbeatWithCtx(m.context);
    }
  }

  // ---------------------------------------------------------------- local API entry points

  /** A local proposal: throws when it cannot be accepted here (no leader, transfer, bounds). */
  propose(es: Entry[]): void {
    if (this.role === Role.Leader) {
      if (!this.prs.has(this.id)) throw new CairnError('ENOTLEADER', `raft: node ${this.id} was removed from the cluster and no longer accepts proposals`);
      if (this.leadTransferee !== NONE) {
        throw new CairnError('ENOTLEADER', `raft: leadership is moving from node ${this.id} to node ${this.leadTransferee}; retry there`, { leader: this.leadTransferee });
      }
      for (const e of es) {
        if (e.type === EntryType.ConfChange) this.checkConfChange(decodeConfChange(e.data));
      }
      if (!this.appendEntries(es)) {
        throw new CairnError('EAGAIN', `raft: ${this.uncommittedBytes} bytes of proposals are not committed yet (bound ${this.opts.maxUncommittedBytes}); retry later`);
      }
      for (const e of es) if (e.type === EntryType.ConfChange) this.pendingConfIndex = this.log.lastIndex();
      this.bcastAppend();
      return;
    }
    if (this.lead === NONE) throw new CairnError('ENOTLEADER', `raft: node ${this.id} knows no leader to forward the proposal to; retry after an election`);
    this.send(makeMessage({ type: MessageType.Prop, to: this.lead, entries: es }));
  }

  /** Why a conf change cannot be proposed now (throws), on the leader. */
  private checkConfChange(cc: ConfChange): void {
    if (this.pendingConfIndex > this.log.applied) {
      throw new CairnError('EBUSY', `raft: a membership change (entry ${this.pendingConfIndex}) is not applied yet; one change at a time`);
    }
    if (!this.committedEntryInCurrentTerm()) {
      throw new CairnError('EBUSY', 'raft: the leader has not committed an entry of its term yet; retry shortly');
    }
    const isVoter = this.voters.has(cc.nodeId);
    const isLearner = this.learners.has(cc.nodeId);
    switch (cc.type) {
      case ConfChangeType.AddNode: {
        if (isVoter) throw new CairnError('EEXIST', `raft: node ${cc.nodeId} is already a voter`);
        const pr = this.prs.get(cc.nodeId);
        if (isLearner && pr && pr.state !== 'replicate') {
          // A voter that holds nothing weakens the quorum: promote once it follows the log.
          throw new CairnError('EBUSY', `raft: learner ${cc.nodeId} has not caught up with the log yet (match ${pr.match}); retry once it has`);
        }
        break;
      }
      case ConfChangeType.AddLearner:
        if (isVoter || isLearner) throw new CairnError('EEXIST', `raft: node ${cc.nodeId} is already a member`);
        break;
      case ConfChangeType.RemoveNode:
        if (!isVoter && !isLearner) throw new CairnError('ENOENT', `raft: node ${cc.nodeId} is not a member`);
        if (isVoter && this.voters.size === 1) throw new CairnError('EINVAL', `raft: node ${cc.nodeId} is the last voter and cannot be removed`);
        break;
    }
  }

  proposeConfChange(cc: ConfChange): void {
    this.propose([{ term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(cc) }]);
  }

  readIndex(context: Uint8Array): void {
    if (this.role === Role.Leader) {
      if (this.readOnly.full() || this.pendingReadIndexMessages.length >= MAX_PENDING_READS) {
        throw new CairnError('EAGAIN', `raft: ${MAX_PENDING_READS} reads are already waiting; retry later`);
      }
      this.handleReadIndexOnLeader(makeMessage({ type: MessageType.ReadIndex, from: this.id, context }));
      return;
    }
    if (this.lead === NONE) throw new CairnError('ENOTLEADER', `raft: node ${this.id} knows no leader to confirm the read; retry after an election`);
    this.send(makeMessage({ type: MessageType.ReadIndex, to: this.lead, context }));
  }

  // ---------------------------------------------------------------- step

  step(m: Message): void {
    if ((m.type === MessageType.Vote || m.type === MessageType.PreVote) && this.voters.size > 0 && !this.voters.has(m.from)) {
      // A node that is not a voter here (removed, or not yet known) cannot disrupt us. A node
      // that knows no configuration yet (joining, before its first snapshot) does vote: it may
      // already be a voter whose vote the cluster needs.
      return;
    }
    if (m.term === 0) {
      // local message or forwarded request
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = bytesEqual(m.context, CAMPAIGN_TRANSFER);
        // With lease reads, a node that just (re)started may have acknowledged a leader's
        // heartbeat before it went down: it keeps that promise for an election timeout.
        const inLease =
          this.opts.checkQuorum &&
          ((this.lead !== NONE && this.electionElapsed < this.electionTimeout) || (this.leaseTicks > 0 && this.tickCount < this.electionTimeout));
        if (!force && inLease) return; // leader lease: we heard from a live leader recently
      }
      if (m.type === MessageType.PreVote) {
        // never change term for a pre-vote
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // a granted pre-vote carries the term we would campaign in
      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.term) {
      if ((this.opts.checkQuorum || this.opts.preVote || !this.promotable()) && (m.type === MessageType.Heartbeat || m.type === MessageType.App)) {
        // Tell a stale leader about the new term, or it may never step down (and a node that
        // never campaigns, e.g. a joining one that adopted a removed node's term, would never
        // be heard from again).
        this.send(makeMessage({ type: MessageType.AppResp, to: m.from }));
      } else if (m.type === MessageType.PreVote || m.type === MessageType.Vote) {
        // Reject with our term, so a candidate that fell behind in terms catches up (§5.1);
        // else a cluster could wait on a voter whose term it never learns.
        this.send(makeMessage({ type: voteRespType(m.type), to: m.from, term: this.term, reject: true }));
      }
      return;
    }

    switch (m.type) {
      case MessageType.Hup:
        this.hup(false);
        return;
      case MessageType.Vote:
      case MessageType.PreVote: {
        const canVote =
          this.vote === m.from ||
          (this.vote === NONE && this.lead === NONE) ||
          (m.type === MessageType.PreVote && m.term > this.term);
        if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
          this.send(makeMessage({ type: voteRespType(m.type), to: m.from, term: m.term }));
          if (m.type === MessageType.Vote) {
            this.electionElapsed = 0;
            this.vote = m.from;
          }
        } else {
          this.send(makeMessage({ type: voteRespType(m.type), to: m.from, term: this.term, reject: true }));
        }
        return;
      }
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        return;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        return;
      case Role.Follower:
        this.stepFollower(m);
        return;
    }
  }

  private hup(transfer: boolean): void {
    if (this.role === Role.Leader) return;
    if (!this.promotable()) return;
    if (this.log.hasUnappliedConfChanges()) return; // the configuration may be about to change
    if (transfer) this.campaign('transfer');
    else if (this.opts.preVote) this.campaign('pre');
    else this.campaign('election');
  }

  campaign(kind: CampaignKind): void {
    if (!this.promotable()) return;
    let term: number;
    let type: MessageType;
    if (kind === 'pre') {
      this.becomePreCandidate();
      type = MessageType.PreVote;
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      type = MessageType.Vote;
      term = this.term;
    }
    if (this.poll(this.id, true) === 'won') {
      // single voter
      if (kind === 'pre') this.campaign('election');
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const id of [...this.voters].sort((a, b) => a - b)) {
      if (id === this.id) continue;
      this.send(makeMessage({
        type,
        to: id,
        term,
        index: lastIndex,
        logTerm: lastTerm,
        context: kind === 'transfer' ? CAMPAIGN_TRANSFER : EMPTY,
      }));
    }
  }

  private poll(id: NodeId, granted: boolean): 'won' | 'lost' | 'pending' {
    if (!this.votes.has(id)) this.votes.set(id, granted);
    return voteResult(this.voters, this.votes);
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Beat:
        this.bcastHeartbeat();
        return;
      case MessageType.CheckQuorum: {
        const active = new Set<NodeId>([this.id]);
        for (const [id, pr] of this.prs) {
          if (pr.recentActive) active.add(id);
          if (id !== this.id) pr.recentActive = false;
        }
        if (!hasQuorum(this.voters, active)) this.becomeFollower(this.term, NONE);
        return;
      }
      case MessageType.Prop: {
        // Forwarded by a follower: accepted when possible, else dropped (the proposer times out).
        if (m.entries.length === 0 || !this.prs.has(this.id) || this.leadTransferee !== NONE) return;
        const es: Entry[] = [];
        for (const e of m.entries) {
          if (e.type === EntryType.ConfChange) {
            try {
              this.checkConfChange(decodeConfChange(e.data));
            } catch {
              continue;
            }
            if (es.some((x) => x.type === EntryType.ConfChange)) continue;
          }
          es.push(e);
        }
        if (es.length === 0 || !this.appendEntries(es)) return;
        this.forwardedTail = this.log.lastIndex();
        if (es.some((e) => e.type === EntryType.ConfChange)) {
          const li = this.log.lastIndex();
          for (let i = 0; i < es.length; i++) {
            if (es[i]!.type === EntryType.ConfChange) this.pendingConfIndex = li - es.length + 1 + i;
          }
        }
        this.bcastAppend();
        return;
      }
      case MessageType.ReadIndex:
        if (this.readOnly.full()) return;
        this.handleReadIndexOnLeader(m);
        return;
      case MessageType.TransferLeader:
        this.handleTransferLeader(m.index);
        return;
    }

    const pr = this.prs.get(m.from);
    if (!pr) return; // not a member (removed, or a stale id)
    switch (m.type) {
      case MessageType.AppResp: {
        pr.recentActive = true;
        if (m.reject) {
          let nextProbeIdx = m.rejectHint;
          if (m.logTerm > 0) nextProbeIdx = this.log.findConflictByTerm(m.rejectHint, m.logTerm);
          if (pr.maybeDecrTo(m.index, nextProbeIdx)) {
            if (pr.state === 'replicate') pr.becomeProbe();
            this.sendAppend(m.from);
          }
          return;
        }
        const oldPaused = pr.isPaused();
        if (!pr.maybeUpdate(m.index)) return;
        if (pr.state === 'probe') {
          pr.becomeReplicate();
        } else if (pr.state === 'snapshot' && pr.match + 1 >= this.log.firstIndex()) {
          pr.becomeProbe();
          pr.becomeReplicate();
        } else if (pr.state === 'replicate') {
          pr.inflights.freeLE(m.index);
        }
        const committedBefore = this.log.committed;
        if (this.maybeCommit()) {
          // A follower answers its forwarded proposal only once it applies the entry: it learns
          // the commit index at once. Entries proposed here wait for the next append.
          if (this.opts.lazyCommit === true && this.forwardedTail <= committedBefore) {
            // Followers learn the new commit index with the next append (or flushCommit / the
            // next tick): when writes follow each other, no round of empty appends and their
            // acknowledgements for every one. Followers with entries waiting get them now.
            this.commitUnsent = true;
            for (const id of this.prs.keys()) if (id !== this.id) this.maybeSendAppend(id, false);
          } else {
            this.bcastAppend();
          }
        } else if (oldPaused) {
          this.sendAppend(m.from);
        }
        // Fill the pipeline while the window allows.
        while (this.role === Role.Leader && this.maybeSendAppend(m.from, false)) {
          // loop
        }
        if (this.role === Role.Leader && m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
          this.sendTimeoutNow(m.from);
        }
        return;
      }
      case MessageType.HeartbeatResp: {
        pr.recentActive = true;
        if (this.leaseTicks > 0 && m.index > (this.ackSentTick.get(m.from) ?? -1) && m.index <= this.tickCount) {
          this.ackSentTick.set(m.from, m.index);
        }
        pr.probeSent = false;
        if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
        if (m.context.byteLength === 0) return;
        const acks = this.readOnly.recvAck(m.from, m.context);
        if (!acks || !hasQuorum(this.voters, acks)) return;
        const released = this.readOnly.advance(m.context);
        this.readRoundInFlight = false;
        for (const rs of released) this.readIndexResponse(rs.req, rs.index);
        const next = this.readOnly.lastPendingContext();
        if (next) {
          this.readRoundInFlight = true;
          this.bcastHeartbeatWithCtx(next);
        }
        return;
      }
      case MessageType.SnapStatus: {
        if (pr.state !== 'snapshot') return;
        if (m.reject) pr.pendingSnapshot = 0;
        pr.becomeProbe();
        // Wait for the follower's answer (or a heartbeat answer) before the next append.
        pr.probeSent = true;
        return;
      }
      case MessageType.Unreachable:
        if (pr.state === 'replicate') pr.becomeProbe();
        return;
    }
  }

  private handleTransferLeader(to: NodeId): void {
    const pr = this.prs.get(to);
    if (!pr || pr.isLearner || !this.voters.has(to)) return;
    if (this.leadTransferee !== NONE) {
      if (this.leadTransferee === to) return;
      this.abortLeaderTransfer();
    }
    if (to === this.id) return;
    // The transfer must finish within one election timeout, or it is abandoned.
    this.electionElapsed = 0;
    this.leadTransferee = to;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to);
  }

  private stepCandidate(m: Message): void {
    const myResp = this.role === Role.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Prop:
      case MessageType.ReadIndex:
        return; // no leader to forward to
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case myResp: {
        const res = this.poll(m.from, !m.reject);
        if (res === 'won') {
          if (this.role === Role.PreCandidate) {
            this.campaign('election');
          } else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (res === 'lost') {
          this.becomeFollower(this.term, NONE);
        }
        return;
      }
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        if (this.lead === NONE) return;
        this.send(makeMessage({ type: MessageType.Prop, to: this.lead, entries: m.entries }));
        return;
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TransferLeader:
        if (this.lead === NONE) return;
        this.send(makeMessage({ type: MessageType.TransferLeader, to: this.lead, index: m.index }));
        return;
      case MessageType.TimeoutNow:
        // The leader asks us to campaign now, past its lease (leadership transfer).
        this.hup(true);
        return;
      case MessageType.ReadIndex:
        if (this.lead === NONE) return;
        this.send(makeMessage({ type: MessageType.ReadIndex, to: this.lead, context: m.context }));
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, context: m.context });
        return;
    }
  }

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.committed }));
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: lastNew }));
      return;
    }
    // Reject with a hint: the largest index <= m.index whose term is <= m.logTerm.
    let hintIndex = Math.min(m.index, this.log.lastIndex());
    hintIndex = this.log.findConflictByTerm(hintIndex, m.logTerm);
    const hintTerm = this.log.termOrZero(hintIndex);
    this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: m.index, reject: true, rejectHint: hintIndex, logTerm: hintTerm }));
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(m.commit);
    this.send(makeMessage({ type: MessageType.HeartbeatResp, to: m.from, context: m.context, index: m.index }));
  }

  private handleSnapshot(m: Message): void {
    const s = m.snapshot;
    if (!s) return;
    if (this.restore(s)) {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.lastIndex() }));
    } else {
      this.send(makeMessage({ type: MessageType.AppResp, to: m.from, index: this.log.committed }));
    }
  }

  /** Install a snapshot from the leader; false when we already have what it holds. */
  private restore(s: Snapshot): boolean {
    const { index, term } = s.metadata;
    if (index <= this.log.committed) return false;
    if (this.log.matchTerm(index, term)) {
      // We hold that entry: just commit up to it.
      this.log.commitTo(index);
      return false;
    }
    this.log.restore(s);
    this.setConf(s.metadata.conf);
    for (const pr of this.prs.values()) {
      pr.match = 0;
      pr.next = this.log.lastIndex() + 1;
    }
    return true;
  }
}
