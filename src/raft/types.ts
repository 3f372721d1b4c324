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
  Heartbeat = 'Heartbeat', // `index`: the leader's tick when sent (lease reads)
  HeartbeatResp = 'HeartbeatResp', // `index`: echoes the heartbeat's
  Unreachable = 'Unreachable', // local: report from transport
  SnapStatus = 'SnapStatus', // local: report from transport
  CheckQuorum = 'CheckQuorum', // local
  TransferLeader = 'TransferLeader', // `index` holds the transferee's id
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
  /**
   * ReadIndex request id / heartbeat context; opaque bytes. Read contexts must be unique
   * per request across the cluster (e.g. node id + counter): a confirmation round is
   * matched by its context.
   */
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
 *  1. persist `snapshot` (if any), `entries` and `hardState` (if any) — with fsync when
 *     `mustSync`. Entries replace any stored entries from their first index on;
 *  2. send `messages` (only after step 1: they may depend on it). Never addressed to self.
 *     For every Snap message the transport later calls RawNode.reportSnapshot(to, ok): the
 *     leader sends nothing more to that follower until it hears;
 *  3. if `snapshot`: restore the state machine from it; then apply `committedEntries` in
 *     order (for an EntryType.ConfChange entry: decodeConfChange(data), then
 *     RawNode.applyConfChange(cc)). An entry with empty data is a leader's no-op;
 *  4. release `readStates` once applied index >= ReadState.index;
 *  5. call advance(ready); only then ask for the next Ready.
 * A crash anywhere in 1–5 is safe: what was persisted stays, the rest is redone after restart.
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
  /**
   * The persisted HardState and the configuration *of the latest snapshot*
   * (snapshot().metadata.conf). On restart the core replays the ConfChange entries between
   * the snapshot and RaftOptions.applied itself, so the driver need not persist the
   * configuration anywhere but in snapshots. (A newer conf is tolerated: replay is idempotent.)
   */
  initialState(): { hardState: HardState; conf: ConfState };
  /**
   * Entries [lo, hi), at most maxBytes in total but always at least one if lo < hi.
   * Throws CompactedError if lo < firstIndex(), UnavailableError if hi > lastIndex()+1.
   */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /**
   * Term of the entry at index i, for firstIndex()-1 <= i <= lastIndex() (the term of
   * firstIndex()-1 is the snapshot's term); throws CompactedError below, UnavailableError above.
   */
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
  /** Bound on bytes of committed entries handed out in one Ready (default 8 MiB). */
  maxCommittedBytesPerReady?: number;
  /**
   * Lease reads (off by default; needs checkQuorum): the leader answers ReadIndex without a
   * heartbeat round while a majority acknowledged a heartbeat sent less than `leaseTicks`
   * ago. Clock assumption: between any two nodes, electionTicks on one clock always last
   * longer in real time than leaseTicks on the other (e.g. the default electionTicks/2
   * tolerates clocks that run up to twice as fast as each other). The driver must tick by a
   * monotonic clock and deliver the ticks it missed (after a GC pause or SIGSTOP): a leader
   * whose ticks stop while real time goes on would serve stale reads. Followers keep their
   * side of the lease across restarts by refusing votes for electionTicks after they start.
   */
  leaseReads?: boolean;
  /** Lease length in ticks, in [1, electionTicks); default floor(electionTicks / 2). */
  leaseTicks?: number;
  /**
   * Do not broadcast a commit-index advance at once (off by default): it rides on the next
   * append, or goes out when the driver calls flushCommit() or at the next tick. Saves a round
   * of empty appends and acknowledgements per write when writes follow each other; followers
   * learn the commit (and apply) up to that much later. Not for entries a follower forwarded
   * (their proposer waits to apply them): their commit goes out at once. Linearizable reads on
   * followers are not delayed: the leader's heartbeat round for a ReadIndex carries the commit.
   */
  lazyCommit?: boolean;
}

/**
 * Bootstrapping a cluster: every initial member starts from a snapshot at index 1, term 1
 * whose conf lists the initial voters (MemoryStorage({ index: 1, term: 1, conf })); a node
 * that joins later starts empty (index 0, no conf) and receives the leader's snapshot,
 * because index 1 is compacted everywhere. The state machine's state at index 1 is empty.
 */
export const BOOTSTRAP_INDEX = 1;
export const BOOTSTRAP_TERM = 1;

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
