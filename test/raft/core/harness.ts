/**
 * Test harness for the Raft core scenario tests: nodes of RawNode + MemoryStorage that do
 * the Ready hand-off by the contract (persist, send, apply, advance), and a synchronous
 * in-memory network with per-link drops, in the spirit of etcd's raft paper tests.
 */
import {
  BOOTSTRAP_INDEX,
  BOOTSTRAP_TERM,
  EntryType,
  MessageType,
  NONE,
  Role,
  type Entry,
  type Message,
  type NodeId,
  type RaftOptions,
  type ReadState,
} from '../../../src/raft/types.js';
import { MemoryStorage, RawNode, decodeConfChange, makeMessage } from '../../../src/raft/core/index.js';

export type NodeOptions = Partial<Omit<RaftOptions, 'id' | 'storage'>>;

export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function options(id: NodeId, storage: MemoryStorage, o: NodeOptions = {}): RaftOptions {
  return {
    id,
    storage,
    electionTicks: 10,
    heartbeatTicks: 1,
    applied: 0,
    maxSizePerMsgBytes: 1024 * 1024,
    maxInflightMsgs: 256,
    maxInflightBytes: 0,
    maxUncommittedBytes: 1 << 30,
    preVote: false,
    checkQuorum: false,
    random: seededRandom(id * 7919),
    ...o,
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();
export const bytes = (s: string): Uint8Array => enc.encode(s);
export const text = (b: Uint8Array): string => dec.decode(b);

/** Entries of the given terms at indexes 1.. (the paper's figures). */
export function entriesOfTerms(terms: number[], from = 1): Entry[] {
  return terms.map((term, i) => ({ term, index: from + i, type: EntryType.Normal, data: bytes(`t${term}i${from + i}`) }));
}

/** A storage at index 0 with `voters` and an optional log and term. */
export function storageWith(voters: NodeId[], log: Entry[] = [], term = 0, learners: NodeId[] = []): MemoryStorage {
  const s = new MemoryStorage({ conf: { voters, learners } });
  s.append(log);
  s.setHardState({ term, vote: NONE, commit: 0 });
  return s;
}

export class TestNode {
  readonly rn: RawNode;
  applied: Entry[] = [];
  readStates: ReadState[] = [];

  constructor(
    readonly id: NodeId,
    readonly storage: MemoryStorage,
    o: NodeOptions = {},
  ) {
    this.rn = new RawNode(options(id, storage, o));
  }

  get raft() {
    return this.rn.raft;
  }

  /** Do one Ready's work; return the messages to send. */
  handleReady(): Message[] {
    const rd = this.rn.ready();
    if (rd.snapshot) this.storage.applySnapshot(rd.snapshot);
    this.storage.append(rd.entries);
    if (rd.hardState) this.storage.setHardState(rd.hardState);
    for (const m of rd.messages) {
      if (m.to === this.id) throw new Error(`message to self in Ready: ${m.type}`);
    }
    for (const e of rd.committedEntries) {
      this.applied.push(e);
      if (e.type === EntryType.ConfChange) this.rn.applyConfChange(decodeConfChange(e.data));
    }
    this.readStates.push(...rd.readStates);
    this.rn.advance(rd);
    return rd.messages;
  }

  /** Handle every pending Ready; return all messages. */
  drain(): Message[] {
    const out: Message[] = [];
    let guard = 0;
    while (this.rn.hasReady()) {
      out.push(...this.handleReady());
      if (++guard > 1000) throw new Error('node never runs out of Ready');
    }
    return out;
  }

  appliedData(): string[] {
    return this.applied.filter((e) => e.type === EntryType.Normal && e.data.byteLength > 0).map((e) => text(e.data));
  }
}

/** A cluster on a synchronous network: messages are delivered until none is left. */
export class Network {
  readonly nodes = new Map<NodeId, TestNode>();
  /** Links that drop everything: "from-to". */
  private cut = new Set<string>();
  /** Message types dropped everywhere. */
  readonly dropTypes = new Set<MessageType>();
  /** Every message delivered (or dropped), for inspection. */
  readonly trace: Message[] = [];
  /** Hook to intercept a message: return false to drop it. */
  filter: ((m: Message) => boolean) | undefined;

  /**
   * Nodes `ids`, all voters. With `bootstrap`, each starts from the bootstrap snapshot at
   * index 1 (as real clusters do, so that a joining node gets a snapshot); otherwise from an
   * empty log at index 0 (as in the paper's figures), or from `logs`.
   */
  constructor(ids: NodeId[], o: NodeOptions & { bootstrap?: boolean } = {}, logs?: Map<NodeId, { log: Entry[]; term: number }>) {
    const { bootstrap, ...opts } = o;
    for (const id of ids) {
      const l = logs?.get(id);
      const storage = bootstrap
        ? new MemoryStorage({ index: BOOTSTRAP_INDEX, term: BOOTSTRAP_TERM, conf: { voters: ids, learners: [] } })
        : storageWith(ids, l?.log ?? [], l?.term ?? 0);
      this.nodes.set(id, new TestNode(id, storage, { applied: bootstrap ? BOOTSTRAP_INDEX : 0, ...opts }));
    }
  }

  node(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}-${other}`);
      this.cut.add(`${other}-${id}`);
    }
  }

  cutLink(a: NodeId, b: NodeId): void {
    this.cut.add(`${a}-${b}`);
    this.cut.add(`${b}-${a}`);
  }

  heal(): void {
    this.cut.clear();
    this.dropTypes.clear();
    this.filter = undefined;
  }

  /** Deliver messages (and everything they cause) until the network is quiet. */
  deliver(initial: Message[] = []): void {
    const queue: Message[] = [...initial];
    for (const n of this.nodes.values()) queue.push(...n.drain());
    let guard = 0;
    while (queue.length > 0) {
      if (++guard > 200_000) throw new Error('network never quiets down');
      const m = queue.shift()!;
      this.trace.push(m);
      const dst = this.nodes.get(m.to);
      const lost = this.cut.has(`${m.from}-${m.to}`) || this.dropTypes.has(m.type) || (this.filter !== undefined && !this.filter(m)) || !dst;
      // The transport reports the fate of every snapshot to its sender.
      if (m.type === MessageType.Snap) this.nodes.get(m.from)?.rn.reportSnapshot(m.to, !lost);
      if (lost) continue;
      dst.rn.step(m);
      queue.push(...dst.drain());
      for (const n of this.nodes.values()) if (n !== dst) queue.push(...n.drain());
    }
  }

  campaign(id: NodeId): void {
    this.node(id).rn.campaign();
    this.deliver();
  }

  propose(id: NodeId, data: string): void {
    this.node(id).rn.propose(bytes(data));
    this.deliver();
  }

  tick(id: NodeId, n = 1): void {
    for (let i = 0; i < n; i++) this.node(id).rn.tick();
    this.deliver();
  }

  tickAll(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const node of this.nodes.values()) node.rn.tick();
      this.deliver();
    }
  }

  leader(): NodeId {
    const leaders = [...this.nodes.values()].filter((n) => n.raft.role === Role.Leader);
    return leaders.length === 1 ? leaders[0]!.id : NONE;
  }
}

export { makeMessage };

/** One node on its own (no network): messages are read from its Ready by the test. */
export function soloNode(
  id: NodeId,
  voters: NodeId[],
  init: { log?: Entry[]; term?: number; vote?: NodeId; commit?: number; learners?: NodeId[] } = {},
  o: NodeOptions = {},
): TestNode {
  const s = storageWith(voters, init.log ?? [], init.term ?? 0, init.learners ?? []);
  s.setHardState({ term: init.term ?? 0, vote: init.vote ?? NONE, commit: init.commit ?? 0 });
  return new TestNode(id, s, o);
}

/** Make a solo node leader of the next term: campaign and grant it every vote. */
export function makeLeader(n: TestNode): void {
  n.rn.campaign();
  const term = n.raft.term;
  for (const v of n.raft.voters) {
    if (v === n.id) continue;
    n.rn.step(makeMessage({ type: MessageType.VoteResp, from: v, to: n.id, term }));
  }
  if (n.raft.role !== Role.Leader) throw new Error('makeLeader: node did not become leader');
}

export function msg(m: Partial<Message> & Pick<Message, 'type' | 'from' | 'to'>): Message {
  return makeMessage(m);
}
