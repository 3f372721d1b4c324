/**
 * The linearizability search: Wing & Gong's algorithm as improved by Lowe ("Testing for
 * linearizability", 2017) — a depth-first search over a linked list of call/return events that
 * linearizes one pending operation at a time, backtracks at a return event it cannot pass, and
 * memoizes every (set of linearized operations, model state) configuration it has already tried
 * so that no configuration is explored twice.
 *
 * This file knows nothing of history formats or keys: it checks one partition (one key) of
 * already-paired operations against a model. Per-key partitioning (P-compositionality) is done by
 * the caller (check.ts). Operations with an unknown outcome have `ret = Infinity`: they have no
 * return event, so the search may linearize them at any point after their call or never.
 */
import { assert } from '../../../src/common/errors.js';

/** A sequential specification. States are immutable values; `key` names a state for memoization. */
export interface Model<S, I, O> {
  readonly name: string;
  init(): S;
  /**
   * Apply `input` to `state`. `output` is what the client observed, or undefined when the outcome
   * is unknown (then any result is acceptable). Returns the next state, or undefined when the
   * observed output is impossible from `state`.
   */
  step(state: S, input: I, output: O | undefined): S | undefined;
  /** A text that is equal for equal states (used as the memo key and in reports). */
  key(state: S): string;
  /** Human-readable form of one operation, e.g. `cas [1 4] -> ok`. */
  describe(input: I, output: O | undefined): string;
}

/** One paired operation. Times only need to be ordered; `ret` is Infinity for unknown outcomes. */
export interface Operation<I, O> {
  readonly id: number;
  readonly process: string;
  readonly call: number;
  readonly ret: number;
  readonly input: I;
  readonly output: O | undefined;
  /** Where it came from (e.g. "line 57" or "t=1.203s"), for reports. */
  readonly callAt: string;
  readonly retAt: string;
}

export type SearchResult<S> =
  | { readonly kind: 'ok'; readonly configs: number }
  | {
      readonly kind: 'violation';
      readonly configs: number;
      /** Index (into the ops array) of the operation whose completion no linearization explains. */
      readonly blockedOp: number;
      /** Model states reachable just before that completion (bounded sample). */
      readonly statesBefore: readonly S[];
    }
  | { readonly kind: 'unknown'; readonly configs: number; readonly reason: string };

export interface SearchOptions {
  /** Give up (result 'unknown') after this many milliseconds. */
  readonly deadlineMs?: number;
  /** Give up after this many memoized configurations (bounds memory). */
  readonly maxConfigs?: number;
}

const STATES_BEFORE_MAX = 8;
const DEADLINE_CHECK_EVERY = 4096;

/** A tiny deterministic PRNG (mulberry32) for the Zobrist hashes of the linearized set. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * The search over one partition, resumable: `run(steps)` advances it by at most `steps` moves and
 * returns the answer, or undefined while it is still running. The caller interleaves the keys of a
 * history this way and stops as soon as one key is known to be non-linearizable.
 */
export class LinearizationSearch<S, I, O> {
  private readonly n: number;
  private readonly finiteCount: number;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly nodeOp: Int32Array;
  private readonly nodeIsCall: Uint8Array;
  private readonly retNodeOf: Int32Array;
  /**
   * For an operation with an unknown outcome: the unknown operation with an identical input whose
   * call comes just before it in the event list, or -1. Such twins are interchangeable, so the
   * search linearizes them in call order only (see run()).
   */
  private readonly twinBefore: Int32Array;
  private readonly stateIds = new Map<string, number>();
  private readonly states: S[] = [];
  private readonly words: number;
  private readonly bits: Uint32Array;
  /** Bit i set when operation i completed (ret finite). */
  private readonly finiteMask: Uint32Array;
  private readonly zobA: Uint32Array;
  private readonly zobB: Uint32Array;
  private hA = 0;
  private hB = 0;
  // Memo of configurations in flat pools: bucket heads by hash, chained through memoNext.
  private readonly memoHead = new Map<number, number>();
  private memoNext = new Int32Array(1024);
  private memoHB = new Int32Array(1024);
  private memoState = new Int32Array(1024);
  private memoBits: Uint32Array;
  private configs = 0;
  private readonly stackNode: number[] = [];
  private readonly stackState: number[] = [];
  private readonly stackPhase: number[] = [];
  /**
   * The scan's pass over the candidates: 0 tries completed operations, 1 then tries unknown ones.
   * Completed operations first means configurations are reached with as few unknown operations
   * spent as possible, so that remember() prunes the ones that spent more.
   */
  private phase = 0;
  private stateId: number;
  private linearizedFinite = 0;
  private entry: number;
  private blockedNode = -1;
  private readonly blockedStates = new Set<number>();
  private result: SearchResult<S> | undefined;

  constructor(
    private readonly model: Model<S, I, O>,
    private readonly ops: readonly Operation<I, O>[],
    private readonly maxConfigs = Number.POSITIVE_INFINITY,
  ) {
    const n = ops.length;
    this.n = n;
    // Events sorted by time; a call sorts before a return at the same time (more permissive).
    type Ev = { op: number; isCall: boolean; time: number };
    const evs: Ev[] = [];
    let finiteCount = 0;
    for (let i = 0; i < n; i++) {
      const op = ops[i]!;
      evs.push({ op: i, isCall: true, time: op.call });
      if (op.ret !== Infinity) {
        assert(op.ret >= op.call, `operation ${op.id} returns before it is called`);
        evs.push({ op: i, isCall: false, time: op.ret });
        finiteCount++;
      }
    }
    this.finiteCount = finiteCount;
    evs.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.op - b.op : a.isCall ? -1 : 1));

    // The doubly linked list of events; node 0 is the head sentinel, nodes 1..m in time order.
    const m = evs.length;
    this.next = new Int32Array(m + 1);
    this.prev = new Int32Array(m + 1);
    this.nodeOp = new Int32Array(m + 1);
    this.nodeIsCall = new Uint8Array(m + 1);
    this.retNodeOf = new Int32Array(n).fill(-1);
    for (let k = 0; k < m; k++) {
      const node = k + 1;
      const ev = evs[k]!;
      this.nodeOp[node] = ev.op;
      this.nodeIsCall[node] = ev.isCall ? 1 : 0;
      if (!ev.isCall) this.retNodeOf[ev.op] = node;
      this.prev[node] = k;
      this.next[node] = k + 1 <= m - 1 ? k + 2 : 0;
    }
    this.next[0] = m > 0 ? 1 : 0;
    this.twinBefore = new Int32Array(n).fill(-1);
    const lastUnknownByInput = new Map<string, number>();
    for (const ev of evs) {
      if (!ev.isCall || ops[ev.op]!.ret !== Infinity) continue;
      const k = JSON.stringify(ops[ev.op]!.input);
      const before = lastUnknownByInput.get(k);
      if (before !== undefined) this.twinBefore[ev.op] = before;
      lastUnknownByInput.set(k, ev.op);
    }

    this.words = Math.max(1, Math.ceil(n / 32));
    this.bits = new Uint32Array(this.words);
    this.finiteMask = new Uint32Array(this.words);
    this.memoBits = new Uint32Array(1024 * this.words);
    const rnd = mulberry32(0x5eed1234 ^ n);
    this.zobA = new Uint32Array(n);
    this.zobB = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      // Only completed operations enter the hash: configurations that differ only in which
      // unknown operations they spent share a bucket, where remember() compares them by inclusion.
      const a = rnd();
      const b = rnd();
      if (ops[i]!.ret === Infinity) continue;
      this.zobA[i] = a;
      this.zobB[i] = b;
      this.finiteMask[i >>> 5]! |= 1 << (i & 31);
    }
    this.stateId = this.intern(model.init());
    this.entry = this.next[0]!;
  }

  get configurations(): number {
    return this.configs;
  }

  private intern(s: S): number {
    const k = this.model.key(s);
    let id = this.stateIds.get(k);
    if (id === undefined) {
      id = this.states.length;
      this.states.push(s);
      this.stateIds.set(k, id);
    }
    return id;
  }

  private flip(i: number): void {
    this.bits[i >>> 5]! ^= 1 << (i & 31);
    this.hA ^= this.zobA[i]!;
    this.hB ^= this.zobB[i]!;
  }

  private unlink(node: number): void {
    const { next, prev } = this;
    next[prev[node]!] = next[node]!;
    if (next[node] !== 0) prev[next[node]!] = prev[node]!;
  }

  private relink(node: number): void {
    const { next, prev } = this;
    next[prev[node]!] = node;
    if (next[node] !== 0) prev[next[node]!] = node;
  }

  private lift(callNode: number): void {
    this.unlink(callNode);
    const r = this.retNodeOf[this.nodeOp[callNode]!]!;
    if (r !== -1) this.unlink(r);
  }

  private unlift(callNode: number): void {
    const r = this.retNodeOf[this.nodeOp[callNode]!]!;
    if (r !== -1) this.relink(r);
    this.relink(callNode);
  }

  /**
   * Record (linearized set, state); false if it is dominated by one seen before: the same state,
   * the same completed operations linearized, and a subset of these unknown ones spent (an unknown
   * operation need never take effect, so the configuration that kept more of them pending can do
   * everything this one can). With no unknown operations this is plain equality.
   */
  private remember(stateId: number): boolean {
    const { words, bits, finiteMask } = this;
    const h = (this.hA ^ Math.imul(stateId + 1, 0x9e3779b1)) | 0;
    const hB = this.hB | 0;
    const head = this.memoHead.get(h);
    for (let e = head ?? -1; e !== -1; e = this.memoNext[e]!) {
      if (this.memoState[e] !== stateId || this.memoHB[e] !== hB) continue;
      const base = e * words;
      let dominated = true;
      for (let w = 0; w < words; w++) {
        const m = this.memoBits[base + w]!;
        const b = bits[w]!;
        if (((m ^ b) & finiteMask[w]!) !== 0 || (m & ~b) !== 0) {
          dominated = false;
          break;
        }
      }
      if (dominated) return false;
    }
    const e = this.configs++;
    if (e >= this.memoNext.length) this.grow();
    this.memoNext[e] = head ?? -1;
    this.memoHB[e] = hB;
    this.memoState[e] = stateId;
    this.memoBits.set(bits, e * words);
    this.memoHead.set(h, e);
    return true;
  }

  private grow(): void {
    const cap = this.memoNext.length * 2;
    const g = <T extends Int32Array | Uint32Array>(a: T, size: number): T => {
      const b = new (a.constructor as new (n: number) => T)(size);
      b.set(a);
      return b;
    };
    this.memoNext = g(this.memoNext, cap);
    this.memoHB = g(this.memoHB, cap);
    this.memoState = g(this.memoState, cap);
    this.memoBits = g(this.memoBits, cap * this.words);
  }

  /** Advance by at most `steps` moves; the answer once known, else undefined. */
  run(steps: number): SearchResult<S> | undefined {
    if (this.result !== undefined) return this.result;
    const { model, ops, next, nodeOp, nodeIsCall, stackNode, stackState, stackPhase } = this;
    for (let s = 0; s < steps; s++) {
      if (this.linearizedFinite === this.finiteCount) return (this.result = { kind: 'ok', configs: this.configs });
      if (this.configs > this.maxConfigs) {
        return (this.result = { kind: 'unknown', configs: this.configs, reason: `search stopped after ${this.configs} configurations` });
      }
      const entry = this.entry;
      if (entry !== 0 && nodeIsCall[entry] === 1) {
        const opIndex = nodeOp[entry]!;
        const op = ops[opIndex]!;
        if ((op.ret === Infinity) !== (this.phase === 1)) {
          this.entry = next[entry]!;
          continue;
        }
        // Two dominance rules for operations with an unknown outcome (they need never take
        // effect, so a configuration that leaves one pending can do all that one which spent it
        // can): (1) of identical unknown operations, only the earliest-called pending one is
        // tried — any order using a later twin works with the earlier one in its place; (2) one
        // that would leave the state as it is is not linearized here. Both keep the search exact
        // and cut the 2^u subsets of u pending unknowns that made long faulty runs undecidable.
        const twin = this.twinBefore[opIndex]!;
        if (twin !== -1 && (this.bits[twin >>> 5]! & (1 << (twin & 31))) === 0) {
          this.entry = next[entry]!;
          continue;
        }
        const nextState = model.step(this.states[this.stateId]!, op.input, op.output);
        if (nextState !== undefined) {
          const nextId = this.intern(nextState);
          if (op.ret === Infinity && nextId === this.stateId) {
            this.entry = next[entry]!;
            continue;
          }
          this.flip(opIndex);
          if (this.remember(nextId)) {
            stackNode.push(entry);
            stackState.push(this.stateId);
            stackPhase.push(this.phase);
            this.phase = 0;
            this.stateId = nextId;
            if (op.ret !== Infinity) this.linearizedFinite++;
            this.lift(entry);
            this.entry = next[0]!;
            continue;
          }
          this.flip(opIndex);
        }
        this.entry = next[entry]!;
        continue;
      }
      // A return event (or the end of the list): the completed candidates are tried; now the
      // unknown ones, and after those every way forward from here is blocked.
      if (this.phase === 0) {
        this.phase = 1;
        this.entry = next[0]!;
        continue;
      }
      if (entry !== 0) {
        if (entry > this.blockedNode) {
          this.blockedNode = entry;
          this.blockedStates.clear();
        }
        if (entry === this.blockedNode && this.blockedStates.size < STATES_BEFORE_MAX) this.blockedStates.add(this.stateId);
      }
      const top = stackNode.pop();
      if (top === undefined) {
        return (this.result = {
          kind: 'violation',
          configs: this.configs,
          blockedOp: this.blockedNode > 0 ? nodeOp[this.blockedNode]! : 0,
          statesBefore: [...this.blockedStates].map((id) => this.states[id]!),
        });
      }
      this.stateId = stackState.pop()!;
      this.phase = stackPhase.pop()!;
      const opIndex = nodeOp[top]!;
      this.flip(opIndex);
      if (ops[opIndex]!.ret !== Infinity) this.linearizedFinite--;
      this.unlift(top);
      this.entry = next[top]!;
    }
    return undefined;
  }
}

/**
 * Decide whether `ops` (one partition) is linearizable with respect to `model`, in one go.
 * The search is exact: 'violation' means no linearization exists.
 */
export function searchLinearization<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  options: SearchOptions = {},
): SearchResult<S> {
  const search = new LinearizationSearch(model, ops, options.maxConfigs);
  const started = Date.now();
  for (;;) {
    const r = search.run(DEADLINE_CHECK_EVERY);
    if (r !== undefined) return r;
    if (options.deadlineMs !== undefined && Date.now() - started > options.deadlineMs) {
      return { kind: 'unknown', configs: search.configurations, reason: `search stopped after ${options.deadlineMs} ms (${search.configurations} configurations)` };
    }
  }
}
