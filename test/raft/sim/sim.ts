/**
 * The deterministic Raft simulator: N RawNodes with MemoryStorage in one process, driven by
 * a seeded PRNG, over an in-memory network that drops, delays, reorders and duplicates
 * messages and partitions nodes; nodes crash (anywhere in the Ready hand-off, losing what was
 * not synced) and restart; clients propose, read (ReadIndex), transfer leadership and change
 * membership. After every step it checks the Raft safety properties; at the end it heals
 * everything and checks that every acknowledged proposal is applied on every member.
 */
import {
  BOOTSTRAP_INDEX,
  BOOTSTRAP_TERM,
  ConfChangeType,
  EntryType,
  MessageType,
  NONE,
  Role,
  type Entry,
  type HardState,
  type Message,
  type NodeId,
  type Ready,
} from '../../../src/raft/types.js';
import { CairnError } from '../../../src/common/errors.js';
import { MemoryStorage, RawNode, decodeConfChange } from '../../../src/raft/core/index.js';
import { Prng } from './prng.js';

export interface SimConfig {
  seed: number;
  /** Initial voters: 3 or 5. */
  nodes: number;
  /** Ticks of the faulty phase. */
  steps: number;
  /** Keep the last events for the failure report. */
  traceEvents?: number;
}

export interface SimStats {
  proposals: number;
  acked: number;
  reads: number;
  readsReleased: number;
  leaders: number;
  crashes: number;
  confChanges: number;
  snapshotsSent: number;
  transfers: number;
  messages: number;
  finalTicks: number;
}

export class SimFailure extends Error {
  constructor(
    message: string,
    readonly trace: string[],
  ) {
    super(message);
    this.name = 'SimFailure';
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const MAX_NODE_ID = 9;
/** Bound on messages in flight in the simulated network. */
const NETWORK_CAPACITY = 20_000;
const HEAL_TICKS_MAX = 4000;

const keyCache = new WeakMap<Entry, string>();

function entryKey(e: Entry): string {
  let k = keyCache.get(e);
  if (k === undefined) {
    k = `${e.term}:${e.type}:${dec.decode(e.data)}`;
    keyCache.set(e, k);
  }
  return k;
}

interface PendingRead {
  reqTick: number;
  /** Highest index of a proposal acknowledged before the read was asked. */
  minIndex: number;
}

class SimNode {
  rn: RawNode | undefined;
  /** The state machine: key of the entry applied at index i is keys[i - 1]. Durable. */
  keys: string[];
  /** What a crash keeps of the hard state: the last one persisted with fsync. */
  syncedHardState: HardState;
  pendingReads = new Map<string, PendingRead>();
  readsWaitingApply: { ctx: string; index: number }[] = [];
  incarnation = 0;

  constructor(
    readonly id: NodeId,
    readonly storage: MemoryStorage,
    keys: string[],
  ) {
    this.keys = keys;
    this.syncedHardState = storage.hardState();
  }

  get up(): boolean {
    return this.rn !== undefined;
  }
}

interface InFlight {
  at: number;
  m: Message;
  /** For a Snap: the transport reports the outcome back to the sender (reportSnapshot). */
  snapReport?: boolean;
}

/** The node count a seed runs with when none is given: 3 and 5 alternate. */
export function nodesForSeed(seed: number): number {
  return seed % 2 === 0 ? 5 : 3;
}

export function runSimulation(cfg: SimConfig): SimStats {
  return new Simulation(cfg).run();
}

export class Simulation {
  private readonly rng: Prng;
  private readonly nodes = new Map<NodeId, SimNode>();
  private net: InFlight[] = [];
  private now = 0;
  private partition: Map<NodeId, number> | undefined;
  private nextNodeId: NodeId;
  private removed = new Set<NodeId>();
  private faultsOn = true;
  private readonly trace: string[] = [];

  // network parameters of this seed
  private readonly dropP: number;
  private readonly dupP: number;
  private readonly maxDelay: number;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean = false;
  /** Lease reads: then clocks do not drift (the lease's clock assumption holds exactly). */
  private readonly leaseReads: boolean;
  /** Lazy commit propagation (what the driver runs): on for half the seeds (3 and 5 nodes), without a draw of the PRNG. */
  private readonly lazyCommit: boolean;
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly maxSizePerMsgBytes: number;
  private readonly maxInflightMsgs: number;
  private readonly maxInflightBytes: number;

  // checker state
  private leaderOfTerm = new Map<number, NodeId>();
  /** (index:term) -> key of the entry every log must hold there. */
  private entryAt = new Map<string, string>();
  /** index -> key applied there (by anyone). */
  private appliedAt = new Map<number, string>();
  /** index -> lowest term whose leader is known to have committed it. */
  private commitTermAt = new Map<number, number>();
  private maxCommitSeen = 0;
  private proposalSeq = 0;
  private readSeq = 0;
  private proposals = new Map<string, { node: NodeId; tick: number }>();
  private acked = new Map<string, { index: number; tick: number }>();
  private maxAckedIndex = 0;
  readonly stats: SimStats = {
    proposals: 0, acked: 0, reads: 0, readsReleased: 0, leaders: 0, crashes: 0,
    confChanges: 0, snapshotsSent: 0, transfers: 0, messages: 0, finalTicks: 0,
  };

  constructor(readonly cfg: SimConfig) {
    this.rng = new Prng(cfg.seed);
    const r = this.rng;
    this.dropP = r.pick([0, 0.01, 0.05, 0.1]);
    this.dupP = r.pick([0, 0.01, 0.05]);
    this.maxDelay = 1 + r.int(4);
    this.preVote = r.chance(0.6);
    this.checkQuorum = r.chance(0.6);
    this.leaseReads = r.chance(0.3);
    if (this.leaseReads) this.checkQuorum = true;
    this.lazyCommit = cfg.seed % 4 < 2;
    this.electionTicks = 10 + r.int(6);
    this.heartbeatTicks = 1 + r.int(3);
    this.maxSizePerMsgBytes = r.pick([1, 64, 256, 4096]);
    this.maxInflightMsgs = r.pick([1, 2, 4, 64]);
    this.maxInflightBytes = r.pick([0, 128, 1024]);
    const voters = Array.from({ length: cfg.nodes }, (_, i) => i + 1);
    for (const id of voters) {
      const storage = new MemoryStorage({ index: BOOTSTRAP_INDEX, term: BOOTSTRAP_TERM, conf: { voters, learners: [] }, data: enc.encode(JSON.stringify(['boot'])) });
      const n = new SimNode(id, storage, ['boot']);
      this.nodes.set(id, n);
      this.start(n);
    }
    this.appliedAt.set(BOOTSTRAP_INDEX, 'boot');
    this.nextNodeId = cfg.nodes + 1;
  }

  private log(s: string): void {
    const max = this.cfg.traceEvents ?? 200;
    if (max <= 0) return;
    this.trace.push(`t${this.now} ${s}`);
    if (this.trace.length > max) this.trace.shift();
  }

  private fail(msg: string): never {
    throw new SimFailure(`seed ${this.cfg.seed}: ${msg}`, this.trace.slice());
  }

  // ------------------------------------------------------------------ node lifecycle

  private start(n: SimNode): void {
    const snap = n.storage.snapshot();
    if (n.keys.length < snap.metadata.index) this.restoreStateMachine(n, snap.data, snap.metadata.index);
    const nodeRng = this.rng.fork();
    n.incarnation++;
    n.rn = new RawNode({
      id: n.id,
      storage: n.storage,
      electionTicks: this.electionTicks,
      heartbeatTicks: this.heartbeatTicks,
      applied: n.keys.length,
      maxSizePerMsgBytes: this.maxSizePerMsgBytes,
      maxInflightMsgs: this.maxInflightMsgs,
      maxInflightBytes: this.maxInflightBytes,
      maxUncommittedBytes: 4096,
      preVote: this.preVote,
      checkQuorum: this.checkQuorum,
      random: () => nodeRng.next(),
      maxCommittedBytesPerReady: 512,
      leaseReads: this.leaseReads,
      lazyCommit: this.lazyCommit,
    });
    this.log(`start n${n.id} (incarnation ${n.incarnation}, applied ${n.keys.length}, last ${n.storage.lastIndex()})`);
  }

  private crash(n: SimNode, where: string): void {
    n.rn = undefined;
    // Whatever was written without fsync is lost: a commit-only hard state.
    const hs = n.storage.hardState();
    if (hs.term === n.syncedHardState.term && hs.vote === n.syncedHardState.vote) {
      n.storage.setHardState(n.syncedHardState);
    }
    n.pendingReads.clear();
    n.readsWaitingApply = [];
    this.stats.crashes++;
    this.log(`crash n${n.id} ${where}`);
  }

  private restoreStateMachine(n: SimNode, data: Uint8Array, index: number): void {
    const keys = JSON.parse(dec.decode(data)) as string[];
    if (keys.length !== index) this.fail(`n${n.id}: snapshot at ${index} holds ${keys.length} entries`);
    for (let i = 0; i < keys.length; i++) this.checkApplied(n, i + 1, keys[i]!);
    n.keys = keys;
  }

  // ------------------------------------------------------------------ network

  private linkUp(a: NodeId, b: NodeId): boolean {
    if (!this.partition) return true;
    return (this.partition.get(a) ?? 0) === (this.partition.get(b) ?? 0);
  }

  private sendAll(from: SimNode, msgs: Message[]): void {
    for (const m of msgs) {
      if (m.to === from.id) this.fail(`n${from.id} sent ${m.type} to itself`);
      if (m.snapshot) this.stats.snapshotsSent++;
      const lost = this.net.length >= NETWORK_CAPACITY || (this.faultsOn && this.rng.chance(this.dropP));
      if (lost) {
        if (m.snapshot) this.scheduleSnapReport(m, false);
        continue;
      }
      const copies = this.faultsOn && this.rng.chance(this.dupP) ? 2 : 1;
      for (let c = 0; c < copies; c++) {
        const delay = this.faultsOn ? 1 + this.rng.int(this.maxDelay) : 1;
        this.net.push({ at: this.now + delay, m });
      }
    }
  }

  /** The transport tells the sender whether a snapshot got through (the driver's duty). */
  private scheduleSnapReport(m: Message, ok: boolean): void {
    const report: Message = { ...m, type: MessageType.SnapStatus, from: m.to, to: m.from, reject: !ok, entries: [] };
    delete report.snapshot;
    this.net.push({ at: this.now + 1 + this.rng.int(this.maxDelay), m: report, snapReport: true });
  }

  private deliverDue(): void {
    const due: InFlight[] = [];
    const rest: InFlight[] = [];
    for (const f of this.net) (f.at <= this.now ? due : rest).push(f);
    this.net = rest;
    this.rng.shuffle(due); // reorder
    for (const { m, snapReport } of due) {
      const dst = this.nodes.get(m.to);
      if (snapReport) {
        if (dst?.rn) {
          dst.rn.reportSnapshot(m.from, !m.reject);
          this.processReadies(dst);
        }
        continue;
      }
      if (!dst || !dst.up || !this.linkUp(m.from, m.to)) {
        if (m.snapshot) this.scheduleSnapReport(m, false);
        // Sometimes the transport notices and tells the sender the peer is unreachable.
        const sender = this.nodes.get(m.from);
        if (sender?.rn && this.rng.chance(0.2)) {
          sender.rn.reportUnreachable(m.to);
          this.processReadies(sender);
        }
        continue;
      }
      this.stats.messages++;
      dst.rn!.step(m);
      if (m.snapshot) this.scheduleSnapReport(m, true);
      this.processReadies(dst);
    }
  }

  // ------------------------------------------------------------------ the Ready hand-off

  private processReadies(n: SimNode): void {
    let guard = 0;
    while (n.rn && n.rn.hasReady()) {
      if (++guard > 1000) this.fail(`n${n.id} never runs out of Ready`);
      this.handleReady(n, n.rn);
    }
  }

  private handleReady(n: SimNode, rn: RawNode): void {
    const rd = rn.ready();
    const crashAt = this.faultsOn && this.rng.chance(0.003) ? this.rng.int(4) : -1;
    if (crashAt === 0) return this.crash(n, 'before persisting a Ready');

    // 1. persist
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    if (rd.entries.length > 0) {
      for (const e of rd.entries) {
        const k = `${e.index}:${e.term}`;
        const have = this.entryAt.get(k);
        if (have !== undefined && have !== entryKey(e)) this.fail(`log matching: two different entries at index ${e.index} term ${e.term}`);
        this.entryAt.set(k, entryKey(e));
      }
      n.storage.append(rd.entries);
    }
    if (rd.hardState) {
      n.storage.setHardState(rd.hardState);
      if (rd.mustSync) n.syncedHardState = rd.hardState;
    }
    this.checkReadyState(n, rn, rd);
    if (crashAt === 1) return this.crash(n, 'after persisting, before sending');

    // 2. send
    this.sendAll(n, rd.messages);
    if (crashAt === 2) return this.crash(n, 'after sending, before applying');

    // 3. apply
    if (rd.snapshot) {
      this.restoreStateMachine(n, rd.snapshot.data, rd.snapshot.metadata.index);
      this.log(`n${n.id} installed snapshot ${rd.snapshot.metadata.index}`);
    }
    for (const e of rd.committedEntries) {
      if (e.index <= n.keys.length) continue; // already applied before a crash
      if (e.index !== n.keys.length + 1) this.fail(`n${n.id} applies ${e.index} after ${n.keys.length}`);
      const key = entryKey(e);
      this.checkApplied(n, e.index, key);
      n.keys.push(key);
      if (e.type === EntryType.ConfChange) {
        const cc = decodeConfChange(e.data);
        const cs = rn.applyConfChange(cc);
        if (cc.type === ConfChangeType.RemoveNode) this.removed.add(cc.nodeId);
        this.log(`n${n.id} applied conf change ${ConfChangeType[cc.type]} n${cc.nodeId} at ${e.index} -> voters ${cs.voters} learners ${cs.learners}`);
      } else if (e.data.byteLength > 0) {
        const id = dec.decode(e.data);
        const p = this.proposals.get(id);
        if (p && p.node === n.id && !this.acked.has(id)) {
          this.acked.set(id, { index: e.index, tick: this.now });
          this.maxAckedIndex = Math.max(this.maxAckedIndex, e.index);
          this.stats.acked++;
        }
      }
    }
    // 4. read states
    for (const rs of rd.readStates) {
      const ctx = dec.decode(rs.context);
      const pr = n.pendingReads.get(ctx);
      if (!pr) continue; // a duplicate answer, or a read of an earlier incarnation
      n.pendingReads.delete(ctx);
      if (rs.index < pr.minIndex) {
        this.fail(`read linearity: read ${ctx} on n${n.id} got index ${rs.index} but a proposal at ${pr.minIndex} was acknowledged before it was asked`);
      }
      n.readsWaitingApply.push({ ctx, index: rs.index });
    }
    if (crashAt === 3) return this.crash(n, 'after applying, before advance');
    rn.advance(rd);
    this.releaseReads(n);
  }

  private releaseReads(n: SimNode): void {
    if (n.readsWaitingApply.length === 0) return;
    const keep: { ctx: string; index: number }[] = [];
    for (const r of n.readsWaitingApply) {
      if (n.keys.length >= r.index) this.stats.readsReleased++;
      else keep.push(r);
    }
    n.readsWaitingApply = keep;
  }

  private checkApplied(n: SimNode, index: number, key: string): void {
    const have = this.appliedAt.get(index);
    if (have === undefined) this.appliedAt.set(index, key);
    else if (have !== key) this.fail(`state machine safety: n${n.id} applies ${key} at ${index}, another node applied ${have}`);
  }

  /** Election safety and leader completeness, at the moment a Ready shows the new state. */
  private checkReadyState(n: SimNode, rn: RawNode, rd: Ready): void {
    const r = rn.raft;
    if (r.role === Role.Leader) {
      const other = this.leaderOfTerm.get(r.term);
      if (other === undefined) {
        this.leaderOfTerm.set(r.term, n.id);
        this.stats.leaders++;
        this.log(`n${n.id} is leader of term ${r.term}`);
        // Lease safety: no older leader may still hold a valid read lease now.
        for (const o of this.nodes.values()) {
          if (o !== n && o.rn && o.rn.raft.term < r.term && o.rn.raft.leaseValid()) {
            this.fail(`lease safety: n${n.id} leads term ${r.term} while n${o.id} (term ${o.rn.raft.term}) still holds a read lease`);
          }
        }
        // Leader completeness: every entry committed in an earlier term is in this log.
        const first = r.log.firstIndex();
        for (const [index, term] of this.commitTermAt) {
          if (term >= r.term || index < first) continue;
          const want = this.appliedAt.get(index) ?? this.committedKey.get(index);
          let got: string | undefined;
          try {
            got = entryKey(r.log.slice(index, index + 1, Number.MAX_SAFE_INTEGER)[0]!);
          } catch {
            got = undefined;
          }
          if (got !== want) this.fail(`leader completeness: leader n${n.id} of term ${r.term} lacks committed entry ${index} (${want}), has ${got}`);
        }
      } else if (other !== n.id) {
        this.fail(`election safety: n${other} and n${n.id} are both leaders of term ${r.term}`);
      }
      // Record what this leader commits, with its term.
      const commit = r.log.committed;
      if (rd.hardState && commit > 0) {
        for (let i = Math.max(1, r.log.firstIndex(), this.maxCommitSeen + 1); i <= commit; i++) {
          if (!this.commitTermAt.has(i)) {
            this.commitTermAt.set(i, r.term);
            const key = entryKey(r.log.slice(i, i + 1, Number.MAX_SAFE_INTEGER)[0]!);
            const prev = this.committedKey.get(i);
            if (prev !== undefined && prev !== key) this.fail(`commit safety: ${i} committed as ${prev} and as ${key}`);
            this.committedKey.set(i, key);
          }
        }
        this.maxCommitSeen = Math.max(this.maxCommitSeen, commit);
      }
    }
  }

  private committedKey = new Map<number, string>();

  // ------------------------------------------------------------------ checks after every step

  private checkLogMatching(): void {
    const logs: { id: NodeId; first: number; ents: Entry[] }[] = [];
    for (const n of this.nodes.values()) logs.push({ id: n.id, first: n.storage.firstIndex(), ents: n.storage.allEntries() });
    for (let a = 0; a < logs.length; a++) {
      for (let b = a + 1; b < logs.length; b++) {
        const A = logs[a]!;
        const B = logs[b]!;
        const lo = Math.max(A.first, B.first);
        const hi = Math.min(A.first + A.ents.length, B.first + B.ents.length) - 1;
        // Highest common index where the terms agree; everything before must agree too.
        let top = -1;
        for (let i = hi; i >= lo; i--) {
          if (A.ents[i - A.first]!.term === B.ents[i - B.first]!.term) {
            top = i;
            break;
          }
        }
        for (let i = lo; i <= top; i++) {
          const ea = A.ents[i - A.first]!;
          const eb = B.ents[i - B.first]!;
          if (ea.term !== eb.term || entryKey(ea) !== entryKey(eb)) {
            this.fail(`log matching: n${A.id} and n${B.id} agree at ${top} but differ at ${i}`);
          }
        }
      }
    }
  }

  private checkElectionSafetyNow(): void {
    const byTerm = new Map<number, NodeId>();
    for (const n of this.nodes.values()) {
      const r = n.rn?.raft;
      if (!r || r.role !== Role.Leader) continue;
      const other = byTerm.get(r.term);
      if (other !== undefined && other !== n.id) this.fail(`election safety: n${other} and n${n.id} lead term ${r.term}`);
      byTerm.set(r.term, n.id);
    }
  }

  // ------------------------------------------------------------------ client actions and faults

  private upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.up);
  }

  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes.values()) {
      const r = n.rn?.raft;
      if (r && r.role === Role.Leader && (!best || r.term > best.rn!.raft.term)) best = n;
    }
    return best;
  }

  private tolerated(err: unknown): boolean {
    return err instanceof CairnError && ['ENOTLEADER', 'EAGAIN', 'EBUSY', 'EEXIST', 'ENOENT', 'EINVAL'].includes(err.code);
  }

  private propose(): void {
    const ups = this.upNodes();
    if (ups.length === 0) return;
    const n = this.rng.pick(ups);
    const id = `p${++this.proposalSeq}`;
    try {
      n.rn!.propose(enc.encode(id));
      this.proposals.set(id, { node: n.id, tick: this.now });
      this.stats.proposals++;
    } catch (err) {
      if (!this.tolerated(err)) throw err;
    }
    this.processReadies(n);
  }

  private read(): void {
    const ups = this.upNodes();
    if (ups.length === 0) return;
    // Half of the reads go to a node that believes it leads (perhaps a stale one).
    const leaders = ups.filter((u) => u.rn!.raft.role === Role.Leader);
    const n = leaders.length > 0 && this.rng.chance(0.5) ? this.rng.pick(leaders) : this.rng.pick(ups);
    const ctx = `r${n.id}.${++this.readSeq}`;
    try {
      n.pendingReads.set(ctx, { reqTick: this.now, minIndex: this.maxAckedIndex });
      n.rn!.readIndex(enc.encode(ctx));
      this.stats.reads++;
    } catch (err) {
      n.pendingReads.delete(ctx);
      if (!this.tolerated(err)) throw err;
    }
    this.processReadies(n);
  }

  private transfer(): void {
    const l = this.currentLeader();
    if (!l) return;
    const voters = l.rn!.status().conf.voters.filter((v) => v !== l.id);
    if (voters.length === 0) return;
    const to = this.rng.pick(voters);
    this.log(`transfer leadership n${l.id} -> n${to}`);
    l.rn!.transferLeadership(to);
    this.stats.transfers++;
    this.processReadies(l);
  }

  private confChange(): void {
    const l = this.currentLeader();
    if (!l) return;
    const conf = l.rn!.status().conf;
    // Usually asked of the leader; sometimes of another node, which forwards it.
    const ups = this.upNodes();
    const via = this.rng.chance(0.7) || ups.length === 0 ? l : this.rng.pick(ups);
    const options: (() => void)[] = [];
    const propose = (type: ConfChangeType, nodeId: NodeId) => () => {
      try {
        via.rn!.proposeConfChange({ type, nodeId, context: new Uint8Array(0) });
        this.stats.confChanges++;
        this.log(`propose ${ConfChangeType[type]} n${nodeId} on n${via.id}`);
        if (!this.nodes.has(nodeId)) {
          // The new node starts empty and learns everything from the leader's snapshot.
          const sn = new SimNode(nodeId, new MemoryStorage(), []);
          this.nodes.set(nodeId, sn);
          this.start(sn);
          this.nextNodeId++;
        }
      } catch (err) {
        if (!this.tolerated(err)) throw err;
      }
    };
    if (this.nextNodeId <= MAX_NODE_ID) {
      options.push(propose(ConfChangeType.AddLearner, this.nextNodeId));
      if (this.rng.chance(0.3)) options.push(propose(ConfChangeType.AddNode, this.nextNodeId)); // straight to voter
    }
    for (const id of conf.learners) options.push(propose(ConfChangeType.AddNode, id));
    for (const id of conf.learners) options.push(propose(ConfChangeType.RemoveNode, id));
    if (conf.voters.length > 3) for (const id of conf.voters) options.push(propose(ConfChangeType.RemoveNode, id));
    if (options.length === 0) return;
    this.rng.pick(options)();
    this.processReadies(via);
  }

  private snapshotNode(n: SimNode): void {
    if (!n.rn) return;
    const applied = n.keys.length;
    const snapIndex = n.storage.snapshot().metadata.index;
    if (applied <= snapIndex || applied > n.storage.lastIndex()) return;
    const conf = n.rn.status().conf;
    n.storage.createSnapshot(applied, conf, enc.encode(JSON.stringify(n.keys)));
    const keep = this.rng.int(4);
    n.storage.compact(Math.max(applied - keep, n.storage.firstIndex() - 1));
    this.log(`n${n.id} snapshot at ${applied}, log from ${n.storage.firstIndex()}`);
  }

  private randomPartition(): void {
    const ids = [...this.nodes.keys()];
    const p = new Map<NodeId, number>();
    const mode = this.rng.int(3);
    if (mode === 0) {
      const iso = this.rng.pick(ids);
      for (const id of ids) p.set(id, id === iso ? 1 : 0);
    } else {
      for (const id of ids) p.set(id, this.rng.int(2));
    }
    this.partition = p;
    this.log(`partition ${[...p].map(([id, g]) => `n${id}:${g}`).join(' ')}`);
  }

  private faults(): void {
    const r = this.rng;
    if (r.chance(0.006)) {
      const ups = this.upNodes();
      if (ups.length > 0) this.crash(r.pick(ups), 'at random');
    }
    if (r.chance(0.004)) {
      const l = this.currentLeader();
      if (l) this.crash(l, 'the leader');
    }
    for (const n of this.nodes.values()) {
      if (!n.up && r.chance(0.05)) this.start(n);
    }
    if (!this.partition && r.chance(0.015)) this.randomPartition();
    else if (this.partition && r.chance(0.025)) {
      this.partition = undefined;
      this.log('heal partition');
    }
  }

  private clientOps(): void {
    const r = this.rng;
    if (r.chance(0.3)) this.propose();
    if (r.chance(0.25)) this.read();
    if (r.chance(0.008)) this.transfer();
    if (r.chance(0.015)) this.confChange();
    if (r.chance(0.02)) {
      const ups = this.upNodes();
      if (ups.length > 0) this.snapshotNode(r.pick(ups));
    }
  }

  // ------------------------------------------------------------------ the run

  private tickAll(): void {
    for (const n of this.nodes.values()) {
      if (!n.rn) continue;
      if (this.faultsOn && !this.leaseReads && this.rng.chance(0.1)) continue; // clocks drift
      n.rn.tick();
      this.processReadies(n);
    }
  }

  private step(): void {
    this.now++;
    if (this.faultsOn) {
      this.faults();
      this.clientOps();
    }
    this.tickAll();
    // The driver's linger timer: now and then, a leader sends a commit index no append carried.
    if (this.lazyCommit) for (const n of this.nodes.values()) if (n.rn && this.rng.chance(0.3)) n.rn.flushCommit();
    this.deliverDue();
    for (const n of this.nodes.values()) this.processReadies(n);
    this.checkElectionSafetyNow();
    this.checkLogMatching();
  }

  run(): SimStats {
    for (let i = 0; i < this.cfg.steps; i++) this.step();

    // Heal: no more faults, every node of the final configuration up, wait for convergence.
    this.faultsOn = false;
    this.partition = undefined;
    this.log('heal everything');
    for (const n of this.nodes.values()) if (!n.up) this.start(n);
    let converged = false;
    for (let t = 0; t < HEAL_TICKS_MAX; t++) {
      this.step();
      this.stats.finalTicks++;
      if (t % 5 === 0 && this.converged()) {
        converged = true;
        break;
      }
    }
    if (!converged) this.fail(`liveness: the cluster did not converge within ${HEAL_TICKS_MAX} ticks after healing (${this.describe()})`);
    this.checkAckedEverywhere();
    return this.stats;
  }

  private members(): NodeId[] {
    const l = this.currentLeader();
    if (!l) return [];
    const cs = l.rn!.status().conf;
    return [...cs.voters, ...cs.learners];
  }

  private converged(): boolean {
    const l = this.currentLeader();
    if (!l) return false;
    const st = l.rn!.status();
    if (st.commit !== st.lastIndex) return false;
    for (const id of this.members()) {
      const n = this.nodes.get(id);
      if (!n || !n.rn) return false;
      if (n.keys.length !== st.commit) return false;
    }
    return true;
  }

  private checkAckedEverywhere(): void {
    for (const [id, a] of this.acked) {
      for (const m of this.members()) {
        const n = this.nodes.get(m)!;
        const key = n.keys[a.index - 1];
        if (key === undefined || !key.endsWith(`:${EntryType.Normal}:${id}`)) {
          this.fail(`durability: acknowledged proposal ${id} (index ${a.index}) is not applied on n${m} (has ${key})`);
        }
      }
    }
  }

  private describe(): string {
    return [...this.nodes.values()]
      .map((n) => {
        if (!n.rn) return `n${n.id}:down`;
        const s = n.rn.status();
        const prs = s.role === Role.Leader ? ` progress{${[...s.progress].map(([id, p]) => `${id}:${p.state} m${p.match} n${p.next} inf${p.inflight}${p.recentActive ? '' : ' inactive'}`).join(', ')}}` : '';
        return `n${n.id}:${s.role} t${s.term} lead${s.leader} commit${s.commit} applied${n.keys.length} last${s.lastIndex} voters[${s.conf.voters}] learners[${s.conf.learners}]${prs}`;
      })
      .join(' | ');
  }
}

export { NONE };
