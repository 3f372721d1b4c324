/**
 * RawNode: the core's public face (etcd's rawnode.go, in spirit). Events go in through
 * tick/step/propose/…; the resulting I/O comes out as one Ready at a time, and advance()
 * tells the core that the caller has done it. See the Ready contract in ../types.ts.
 */
import { CairnError } from '../../common/errors.js';
import {
  EntryType,
  MessageType,
  NONE,
  Role,
  type ConfChange,
  type ConfState,
  type HardState,
  type Message,
  type NodeId,
  type RaftOptions,
  type Ready,
  type SoftState,
} from '../types.js';
import { makeMessage, Raft } from './raft.js';
import type { ProgressState } from './progress.js';

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
  /** Appends in flight (messages). */
  inflight: number;
  /** Bytes of entries in flight. */
  inflightBytes: number;
  isLearner: boolean;
  recentActive: boolean;
}

export interface Status {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  leader: NodeId;
  role: Role;
  conf: ConfState;
  /** Per member; filled on the leader only. */
  progress: Map<NodeId, ProgressStatus>;
  leadTransferee: NodeId;
}

/** Messages that only a local caller may step (the others come from peers). */
const LOCAL_ONLY = new Set<MessageType>([MessageType.Hup, MessageType.Beat, MessageType.CheckQuorum]);

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

export class RawNode {
  /** The state machine inside; exposed for tests and the simulator's checks. */
  readonly raft: Raft;
  private prevSoft: SoftState;
  private prevHard: HardState;

  constructor(opts: RaftOptions) {
    this.raft = new Raft(opts);
    this.prevSoft = this.raft.softState();
    this.prevHard = this.raft.hardState();
  }

  tick(): void {
    this.raft.tick();
  }

  /** A message from a peer, or a local report (Unreachable, SnapStatus). */
  step(m: Message): void {
    if (LOCAL_ONLY.has(m.type)) {
      throw new CairnError('EINVAL', `raft: ${m.type} is a local message and cannot come from a peer`);
    }
    if (m.from === NONE && m.type !== MessageType.Unreachable && m.type !== MessageType.SnapStatus) {
      throw new CairnError('EINVAL', `raft: ${m.type} message without a sender`);
    }
    if (m.to !== NONE && m.to !== this.raft.id) return; // misrouted
    this.raft.step(m);
  }

  /** Start an election now (tests and operators); ignored on the leader and on non-voters. */
  campaign(): void {
    this.raft.step(makeMessage({ type: MessageType.Hup, from: this.raft.id }));
  }

  propose(data: Uint8Array): void {
    this.raft.propose([{ term: 0, index: 0, type: EntryType.Normal, data }]);
  }

  proposeConfChange(cc: ConfChange): void {
    if (this.raft.role !== Role.Leader) {
      if (this.raft.lead === NONE) throw new CairnError('ENOTLEADER', `raft: node ${this.raft.id} knows no leader to forward the membership change to`);
    }
    this.raft.proposeConfChange(cc);
  }

  applyConfChange(cc: ConfChange): ConfState {
    return this.raft.applyConfChange(cc);
  }

  readIndex(context: Uint8Array): void {
    this.raft.readIndex(context);
  }

  transferLeadership(to: NodeId): void {
    if (this.raft.role !== Role.Leader && this.raft.lead === NONE) {
      throw new CairnError('ENOTLEADER', `raft: node ${this.raft.id} knows no leader to transfer leadership from`);
    }
    this.raft.step(makeMessage({ type: MessageType.TransferLeader, from: this.raft.id, index: to }));
  }

  reportUnreachable(id: NodeId): void {
    this.raft.step(makeMessage({ type: MessageType.Unreachable, from: id }));
  }

  reportSnapshot(id: NodeId, ok: boolean): void {
    this.raft.step(makeMessage({ type: MessageType.SnapStatus, from: id, reject: !ok }));
  }

  /**
   * Take the requests this node forwards to the leader (Prop, ReadIndex) out of the messages
   * waiting for the next Ready, so that the caller can send them while a Ready is still being
   * persisted. They carry no term and acknowledge nothing, so they depend on no durable state
   * and may leave at any time (the network may reorder them anyway).
   */
  takeForwarded(): Message[] {
    const r = this.raft;
    let out: Message[] | undefined;
    for (const m of r.msgs) if (m.type === MessageType.Prop || m.type === MessageType.ReadIndex) (out ??= []).push(m);
    if (out === undefined) return [];
    r.msgs = r.msgs.filter((m) => m.type !== MessageType.Prop && m.type !== MessageType.ReadIndex);
    return out;
  }

  /** lazyCommit: the leader holds a commit index its followers have not been sent yet. */
  hasUnsentCommit(): boolean {
    return this.raft.commitUnsent;
  }

  /** lazyCommit: send the commit index to the followers now (the messages come in the next Ready). */
  flushCommit(): void {
    this.raft.flushCommit();
  }

  hasReady(): boolean {
    const r = this.raft;
    const soft = r.softState();
    if (soft.leader !== this.prevSoft.leader || soft.role !== this.prevSoft.role) return true;
    if (!hardStateEqual(r.hardState(), this.prevHard)) return true;
    if (r.log.unstable.snapshot) return true;
    if (r.msgs.length > 0 || r.readStates.length > 0) return true;
    if (r.log.unstableEntries().length > 0) return true;
    return r.log.hasNextCommittedEntries();
  }

  ready(): Ready {
    const r = this.raft;
    const soft = r.softState();
    const hard = r.hardState();
    const rd: Ready = {
      entries: r.log.unstableEntries().slice(),
      committedEntries: r.log.nextCommittedEntries(r.maxCommittedBytesPerReady),
      messages: r.msgs,
      readStates: r.readStates,
      mustSync: false,
    };
    if (soft.leader !== this.prevSoft.leader || soft.role !== this.prevSoft.role) rd.softState = soft;
    if (!hardStateEqual(hard, this.prevHard)) rd.hardState = hard;
    const snap = r.log.unstable.snapshot;
    if (snap) rd.snapshot = snap;
    rd.mustSync =
      rd.entries.length > 0 || rd.snapshot !== undefined || hard.term !== this.prevHard.term || hard.vote !== this.prevHard.vote;
    this.prevSoft = soft;
    this.prevHard = hard;
    r.msgs = [];
    r.readStates = [];
    return rd;
  }

  advance(rd: Ready): void {
    const log = this.raft.log;
    if (rd.snapshot) {
      log.stableSnapTo(rd.snapshot.metadata.index);
      if (log.applied < rd.snapshot.metadata.index) log.applied = rd.snapshot.metadata.index;
    }
    const lastEntry = rd.entries[rd.entries.length - 1];
    if (lastEntry) log.stableTo(lastEntry.index, lastEntry.term);
    const lastCommitted = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastCommitted) {
      log.appliedTo(lastCommitted.index);
      this.raft.reduceUncommittedBytes(rd.committedEntries);
    }
  }

  status(): Status {
    const r = this.raft;
    const progress = new Map<NodeId, ProgressStatus>();
    if (r.role === Role.Leader) {
      for (const [id, pr] of r.prs) {
        progress.set(id, {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          inflight: pr.inflights.count(),
          inflightBytes: pr.inflights.bytes,
          isLearner: pr.isLearner,
          recentActive: pr.recentActive,
        });
      }
    }
    return {
      id: r.id,
      term: r.term,
      vote: r.vote,
      commit: r.log.committed,
      applied: r.log.applied,
      lastIndex: r.log.lastIndex(),
      leader: r.lead,
      role: r.role,
      conf: r.confState(),
      progress,
      leadTransferee: r.leadTransferee,
    };
  }
}
