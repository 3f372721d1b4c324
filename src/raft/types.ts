/**
 * The contract between the pure Raft core (src/raft/core) and everything around it
 * (the driver, the durable log, the transport, the simulator). Modelled on etcd's raft:
 * the core takes events and hands back one `Ready` describing the I/O to do; the caller
 * does it (persist, then send, then apply) and calls `advance()`.
 *
 * All numbers are plain JS numbers: terms and indexes stay far below 2^53.
 */

export type NodeId = number;
/** 0 means "no node" (no vote, no leader). */
export const NONE: NodeId = 0;

export enum EntryType {
  Normal = 0,
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque to Raft. Empty data on a Normal entry is the leader's no-op of a new term. */
  data: Uint8Array;
}

export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

/** Voters and learners. Joint consensus is not used: one change at a time. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export enum ConfChangeType {
  AddNode = 0,
  RemoveNode = 1,
  AddLearner = 2,
}

export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Opaque context, e.g. the new node's address (JSON). */
  context: Uint8Array;
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  conf: ConfState;
}

/**
 * A snapshot as the core sees it: metadata plus an opaque payload. The driver may stream a
 * large state machine snapshot in pieces (InstallSnapshot); the core only needs the
 * metadata and hands `data` through.
 */
export interface Snapshot {
  metadata: SnapshotMetadata;
  data: Uint8Array;
}

export enum MessageType {
  Hup = 'Hup', // local: start an election
  Beat = 'Beat', // local: leader sends heartbeats
  Prop = 'Prop', // proposal (local, or forwarded by a follower)
  App = 'App',
  AppResp = 'AppResp',
  Vote = 'Vote',
  VoteResp = 'VoteResp',
  PreVote = 'PreVote',
  PreVoteResp = 'PreVoteResp',
  Snap = 'Snap',
  Heartbeat = 'Heartbeat',
  HeartbeatResp = 'HeartbeatResp',
  Unreachable = 'Unreachable', // local: report from transport
  SnapStatus = 'SnapStatus', // local: report from transport
  CheckQuorum = 'CheckQuorum', // local
  TransferLeader = 'TransferLeader',
  TimeoutNow = 'TimeoutNow',
  ReadIndex = 'ReadIndex',
  ReadIndexResp = 'ReadIndexResp',
}

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** Term of the entry at `index` (App: previous entry; Vote: candidate's last entry). */
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /** On a rejected App: the follower's hint of where the logs may match. */
  rejectHint: number;
  snapshot?: Snapshot;
  /** ReadIndex request id / heartbeat context; opaque bytes. */
  context: Uint8Array;
}

export enum Role {
  Follower = 'follower',
  PreCandidate = 'pre-candidate',
  Candidate = 'candidate',
  Leader = 'leader',
}

export interface SoftState {
  leader: NodeId;
  role: Role;
}

/** A ReadIndex request that may be served once the state machine has applied `index`. */
export interface ReadState {
  index: number;
  context: Uint8Array;
}

/**
 * What the caller must do, in this order:
 *  1. persist `snapshot` (if any), `entries` and `hardState` (if any) — with fsync;
 *  2. send `messages` (only after step 1: they may depend on it);
 *  3. apply `committedEntries` to the state machine, in order;
 *  4. release `readStates` once applied index >= ReadState.index;
 *  5. call advance(ready).
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
  /** True when persisting this Ready must be fsynced before messages go out. */
  mustSync: boolean;
}

/**
 * Read-side view of the log that the core consults; the driver's durable log and the
 * simulator's memory log both implement it. Indexes below firstIndex() are compacted.
 */
export interface LogStorage {
  initialState(): { hardState: HardState; conf: ConfState };
  /** Entries [lo, hi), at most maxBytes in total but always at least one if lo < hi. */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of the entry at index i; throws CompactedError / UnavailableError. */
  term(i: number): number;
  firstIndex(): number;
  lastIndex(): number;
  snapshot(): Snapshot;
}

export class CompactedError extends Error {
  constructor(index: number) {
    super(`raft log: index ${index} is compacted`);
    this.name = 'CompactedError';
  }
}

export class UnavailableError extends Error {
  constructor(index: number) {
    super(`raft log: index ${index} is not available`);
    this.name = 'UnavailableError';
  }
}

/** Options of the core. Times are in ticks (the driver decides what a tick lasts). */
export interface RaftOptions {
  id: NodeId;
  electionTicks: number;
  heartbeatTicks: number;
  storage: LogStorage;
  /** Index already applied to the state machine (restart). */
  applied: number;
  maxSizePerMsgBytes: number;
  maxInflightMsgs: number;
  /** Bound on bytes of entries sent but not acknowledged, per follower. */
  maxInflightBytes: number;
  /** Bound on bytes of proposals not yet committed; proposals past it are dropped (EAGAIN). */
  maxUncommittedBytes: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Seeded randomness for election timeouts (the simulator passes its own). */
  random: () => number;
}

/**
 * The state machine that the driver applies committed entries to (the metadata service,
 * or a trivial key-value map in tests and benchmarks).
 *
 * Durability rule: the state machine stores its applied index in the same atomic write as
 * the effects of the entry (e.g. one LevelDB batch), so that after a crash it reports the
 * last index it really applied and the driver re-applies from there, never twice.
 */
export interface StateMachine {
  /** Last index whose effects are durable in the state machine. */
  appliedIndex(): Promise<number>;
  /** Apply committed entries in order; returns one result per entry (handed to the proposer). */
  apply(entries: Entry[]): Promise<unknown[]>;
  /** A consistent snapshot of the state at appliedIndex, as a stream of chunks. */
  snapshot(): Promise<{ index: number; term: number; chunks: AsyncIterable<Uint8Array> }>;
  /** Replace the whole state with a snapshot received from the leader. */
  restore(meta: SnapshotMetadata, chunks: AsyncIterable<Uint8Array>): Promise<void>;
  close(): Promise<void>;
}
