/**
 * Checking a whole history: interpret each recorded operation through the model (drop definite
 * no-effects and unknown reads), split by key (P-compositionality: a history is linearizable iff
 * each key's sub-history is), run the search on each key, and explain the earliest failure as the
 * smallest window it can show: the key, the completion that no linearization of the prefix before
 * it can explain, the operations overlapping it, and the states the key could have been in.
 */
import type { HistoryModel } from './models.js';
import { dirModel, kvModel, pathModel, registerModel, showValue, type ModelName } from './models.js';
import type { PairedOp } from './history.js';
import { LinearizationSearch, type Operation } from './wgl.js';

export interface CheckOptions {
  /** Search budget for the whole history; when spent, keys not yet decided are 'unknown'. */
  readonly deadlineMs?: number;
  /** Per-key bound on memoized configurations (bounds memory; about (n/32+3)*4 bytes each). */
  readonly maxConfigs?: number;
  /** Keep searching the other keys after one is found non-linearizable (default: stop). */
  readonly allKeys?: boolean;
}

export interface OpView {
  readonly process: string;
  readonly description: string;
  readonly callAt: string;
  readonly retAt: string;
}

export interface KeyViolation {
  readonly key: string;
  /** Operations of this key (after dropping no-effects) in the shortest failing prefix. */
  readonly prefixOps: number;
  readonly totalOps: number;
  /** The operation whose completion cannot be explained. */
  readonly blocked: OpView;
  /** Operations of this key that overlap the blocked one in time (it included). */
  readonly concurrent: readonly OpView[];
  /** The last operations of this key that completed before the blocked one was invoked. */
  readonly before: readonly OpView[];
  /** States the key could have been in just before the blocked completion. */
  readonly statesBefore: readonly string[];
  /** Its position in the whole history, to pick the earliest failure. */
  readonly retTime: bigint;
}

export interface CheckResult {
  readonly verdict: 'linearizable' | 'not linearizable' | 'unknown';
  readonly model: string;
  readonly operations: { readonly total: number; readonly checked: number; readonly dropped: number; readonly unknownOutcome: number };
  readonly keys: number;
  readonly configurations: number;
  /** Every failing key, earliest failure first. */
  readonly violations: readonly KeyViolation[];
  /** Keys whose search ran out of budget, with what made each hard. */
  readonly undecided: readonly UndecidedKey[];
  /** Keys left unchecked because another key was already found non-linearizable. */
  readonly unchecked: readonly string[];
}

/** A key whose search stopped before an answer: its size and what made the search hard. */
export interface UndecidedKey {
  readonly key: string;
  readonly reason: string;
  readonly operations: number;
  /** Operations of unknown outcome (each may take effect at any later time, or never). */
  readonly unknownOutcome: number;
  /** The most operations of this key in flight at one instant (unknown ones count until the end). */
  readonly maxConcurrent: number;
  readonly configurations: number;
}

/** The most operations that overlap at one instant (calls before returns at the same time). */
function maxConcurrent(ops: readonly { call: number; ret: number }[]): number {
  const evs: [number, number][] = [];
  for (const o of ops) {
    evs.push([o.call, 1]);
    if (o.ret !== Infinity) evs.push([o.ret, -1]);
  }
  evs.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  let now = 0;
  let max = 0;
  for (const [, d] of evs) {
    now += d;
    if (now > max) max = now;
  }
  return max;
}

const CONTEXT_BEFORE = 3;
const CONCURRENT_MAX = 20;
const SLICE_STEPS = 20_000;
const DEFAULT_MAX_CONFIGS = 2_000_000;

/** Check a paired history against a model. */
export function checkHistory<S, I, O>(model: HistoryModel<S, I, O>, history: readonly PairedOp[], options: CheckOptions = {}): CheckResult {
  // Times as small integers (ranks) so the search can compare numbers.
  const times = new Set<bigint>();
  for (const p of history) {
    times.add(p.call);
    if (p.ret !== undefined) times.add(p.ret);
  }
  const sorted = [...times].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const rank = new Map<bigint, number>(sorted.map((t, i) => [t, i]));

  type Op = Operation<I, O> & { readonly retTime: bigint | undefined };
  const byKey = new Map<string, Op[]>();
  let dropped = 0;
  let unknownOutcome = 0;
  for (const p of history) {
    const raw = { f: p.f, invokeValue: p.invokeValue, completionValue: p.completionValue, error: p.error, where: p.callAt };
    const it = p.outcome === 'ok' ? model.ok(raw) : p.outcome === 'fail' ? model.failed(raw) : model.unknown(raw);
    if (it.drop) {
      dropped++;
      continue;
    }
    const key = p.key ?? '';
    let list = byKey.get(key);
    if (list === undefined) {
      list = [];
      byKey.set(key, list);
    }
    const unknown = p.outcome === 'unknown';
    if (unknown) unknownOutcome++;
    list.push({
      id: list.length,
      process: p.process,
      call: rank.get(p.call)!,
      ret: unknown || p.ret === undefined ? Infinity : rank.get(p.ret)!,
      input: it.input,
      output: unknown ? undefined : it.output,
      callAt: p.callAt,
      retAt: unknown ? `${p.retAt} (outcome unknown)` : p.retAt,
      retTime: unknown ? undefined : p.ret,
    });
  }

  const view = (op: Op): OpView => ({ process: op.process, description: model.describe(op.input, op.output), callAt: op.callAt, retAt: op.retAt });

  const violations: KeyViolation[] = [];
  const undecided: UndecidedKey[] = [];
  const undecidedKey = (key: string, ops: readonly Op[], reason: string, configs: number): UndecidedKey => ({
    key,
    reason,
    operations: ops.length,
    unknownOutcome: ops.filter((o) => o.ret === Infinity).length,
    maxConcurrent: maxConcurrent(ops),
    configurations: configs,
  });
  let configurations = 0;
  let checked = 0;
  const keys = [...byKey.keys()].sort();
  for (const key of keys) checked += byKey.get(key)!.length;

  const explain = (key: string, ops: Op[], blockedOp: number, statesBefore: readonly S[]): KeyViolation => {
    const blocked = ops[blockedOp]!;
    const concurrent = ops
      .filter((o) => o.call <= blocked.ret && o.ret >= blocked.call)
      .sort((a, b) => a.call - b.call)
      .slice(0, CONCURRENT_MAX);
    const before = ops
      .filter((o) => o.ret < blocked.call)
      .sort((a, b) => a.ret - b.ret)
      .slice(-CONTEXT_BEFORE);
    return {
      key,
      prefixOps: ops.filter((o) => o.call <= blocked.ret).length,
      totalOps: ops.length,
      blocked: view(blocked),
      concurrent: concurrent.map(view),
      before: before.map(view),
      statesBefore: statesBefore.map((s) => model.key(s)),
      retTime: blocked.retTime ?? 0n,
    };
  };

  // All keys are searched in turn, a slice at a time, so that one key whose search is long does
  // not hide another key's quick violation (as Porcupine does by checking keys in parallel).
  let running = keys.map((key) => ({ key, ops: byKey.get(key)!, search: new LinearizationSearch(model, byKey.get(key)!, options.maxConfigs ?? DEFAULT_MAX_CONFIGS) }));
  const started = Date.now();
  let unchecked: string[] = [];
  while (running.length > 0) {
    const still: typeof running = [];
    for (const k of running) {
      const r = k.search.run(SLICE_STEPS);
      if (r === undefined) {
        still.push(k);
        continue;
      }
      configurations += r.configs;
      if (r.kind === 'unknown') undecided.push(undecidedKey(k.key, k.ops, r.reason, r.configs));
      else if (r.kind === 'violation') violations.push(explain(k.key, k.ops, r.blockedOp, r.statesBefore));
    }
    running = still;
    if (violations.length > 0 && !options.allKeys) {
      unchecked = running.map((k) => k.key);
      for (const k of running) configurations += k.search.configurations;
      break;
    }
    if (options.deadlineMs !== undefined && Date.now() - started > options.deadlineMs) {
      for (const k of running) {
        configurations += k.search.configurations;
        undecided.push(undecidedKey(k.key, k.ops, `search stopped after ${options.deadlineMs} ms (${k.search.configurations} configurations)`, k.search.configurations));
      }
      break;
    }
  }
  violations.sort((a, b) => (a.retTime < b.retTime ? -1 : a.retTime > b.retTime ? 1 : 0));
  return {
    verdict: violations.length > 0 ? 'not linearizable' : undecided.length > 0 ? 'unknown' : 'linearizable',
    model: model.name,
    operations: { total: history.length, checked, dropped, unknownOutcome },
    keys: byKey.size,
    configurations,
    violations,
    undecided,
    unchecked,
  };
}

/** The text the check-history command prints. */
export function formatResult(r: CheckResult): string {
  const lines: string[] = [r.verdict];
  lines.push(
    `  model ${r.model}; ${r.operations.total} operations (${r.operations.checked} checked, ${r.operations.dropped} dropped as no-effect, ` +
      `${r.operations.unknownOutcome} with unknown outcome) on ${r.keys} key(s); ${r.configurations} configurations explored`,
  );
  const showKey = (k: string): string => (k === '' ? '(single register)' : showValue(k));
  const showOp = (o: OpView): string => `    process ${o.process}: ${o.description}   [${o.callAt} .. ${o.retAt}]`;
  const first = r.violations[0];
  if (first !== undefined) {
    lines.push('');
    lines.push(`key ${showKey(first.key)}: the first ${first.prefixOps} of its ${first.totalOps} operations have no linearization.`);
    lines.push(`  This completion cannot be explained by any order of the operations before it:`);
    lines.push(showOp(first.blocked));
    if (first.statesBefore.length > 0) {
      lines.push(`  just before it the key could only hold: ${first.statesBefore.join(' | ')}`);
    }
    lines.push(`  operations overlapping it in time:`);
    for (const o of first.concurrent) lines.push(showOp(o));
    if (first.before.length > 0) {
      lines.push(`  the last operations that completed before it began:`);
      for (const o of first.before) lines.push(showOp(o));
    }
    if (r.violations.length > 1) {
      lines.push(`  other keys that are not linearizable: ${r.violations.slice(1).map((v) => showKey(v.key)).join(', ')}`);
    }
  }
  if (r.unchecked.length > 0) lines.push(`  (${r.unchecked.length} other key(s) not searched to the end; pass --all-keys to check them)`);
  for (const u of r.undecided) {
    lines.push(
      `key ${showKey(u.key)}: undecided (${u.reason}): ${u.operations} operations, ${u.unknownOutcome} of unknown outcome, ` +
        `up to ${u.maxConcurrent} in flight at once. The search grows with the unknown outcomes that overlap; ` +
        `a workload keeps keys decidable by retiring a key after a few of them (workloads/common.ts, KeyRotation).`,
    );
  }
  return lines.join('\n');
}

/** Check with a model chosen by name (the models have different types, hence the dispatch). */
export function checkWithModel(name: ModelName, history: readonly PairedOp[], options: CheckOptions = {}): CheckResult {
  switch (name) {
    case 'register':
      return checkHistory(registerModel, history, options);
    case 'kv':
      return checkHistory(kvModel, history, options);
    case 'path':
      return checkHistory(pathModel, history, options);
    case 'dir':
      return checkHistory(dirModel, history, options);
  }
}
