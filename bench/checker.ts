/**
 * Checker benchmark (issue 17): the time test/jepsen-lite's linearizability checker needs per 10,000
 * operations for each model, on generated histories shaped like a faulty run's: 6 processes, keys
 * rotated as the workloads rotate them (KeyRotation: ≤ 150 operations and ≤ 8 unknown outcomes per key),
 * 10% of mutations with unknown outcome (each took effect or not, by a coin), overlapping calls and
 * returns. Valid histories (the checker must search to the end of each key) and the same with one
 * impossible read at the end (it must rule out every order). CPU time is the steadier figure here.
 */
import { checkWithModel } from '../test/jepsen-lite/checker/check.js';
import type { PairedOp } from '../test/jepsen-lite/checker/history.js';
import type { ModelName } from '../test/jepsen-lite/checker/models.js';
import type { BenchSuite, BenchTable } from './table.js';

type Step = { f: string; invoke: unknown; out: unknown; err?: string; next: unknown; mutates: boolean };

function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const NAMES = ['a', 'b', 'c', 'd'];

/** One operation of each model against the true state of its key. */
const GEN: Record<ModelName, { init: () => unknown; step: (s: unknown, r: () => number) => Step; impossibleRead: (op: PairedOp) => PairedOp | undefined }> = {
  register: {
    init: () => null,
    step(s, r) {
      const x = r();
      const v = Math.floor(r() * 5);
      if (x < 0.5) return { f: 'read', invoke: null, out: s, next: s, mutates: false };
      if (x < 0.75) return { f: 'write', invoke: v, out: v, next: v, mutates: true };
      const e = Math.floor(r() * 5);
      return s === e ? { f: 'cas', invoke: [e, v], out: [e, v], next: v, mutates: true } : { f: 'cas', invoke: [e, v], out: [e, v], err: 'ECONFLICT', next: s, mutates: true };
    },
    impossibleRead: (op) => (op.f === 'read' && op.outcome === 'ok' ? { ...op, completionValue: 99 } : undefined),
  },
  kv: {
    init: () => '',
    step(s, r) {
      const x = r();
      const v = String(Math.floor(r() * 10));
      if (x < 0.5) return { f: 'get', invoke: null, out: s, next: s, mutates: false };
      if (x < 0.75) return { f: 'put', invoke: v, out: v, next: v, mutates: true };
      return { f: 'append', invoke: v, out: v, next: `${String(s)}${v}`, mutates: true };
    },
    impossibleRead: (op) => (op.f === 'get' && op.outcome === 'ok' ? { ...op, completionValue: 'x' } : undefined),
  },
  path: {
    init: () => ({ value: null, version: 0 }),
    step(s, r) {
      const st = s as { value: number | null; version: number };
      const x = r();
      const v = Math.floor(r() * 5);
      if (x < 0.5) return { f: 'read', invoke: null, out: st, next: st, mutates: false };
      const ev = r() < 0.7 ? st.version : st.version + 1;
      return ev === st.version
        ? { f: 'cas', invoke: [ev, v], out: { version: st.version + 1 }, next: { value: v, version: st.version + 1 }, mutates: true }
        : { f: 'cas', invoke: [ev, v], out: null, err: 'ECONFLICT', next: st, mutates: true };
    },
    impossibleRead: (op) => (op.f === 'read' && op.outcome === 'ok' ? { ...op, completionValue: { value: 99, version: 1 } } : undefined),
  },
  dir: {
    init: () => [],
    step(s, r) {
      const st = s as string[];
      const pick = (): string => NAMES[Math.floor(r() * NAMES.length)]!;
      const x = r();
      if (x < 0.25) return { f: 'readdir', invoke: null, out: [...st].sort(), next: st, mutates: false };
      if (x < 0.55) {
        const n = pick();
        return st.includes(n) ? { f: 'create', invoke: n, out: n, err: 'EEXIST', next: st, mutates: true } : { f: 'create', invoke: n, out: n, next: [...st, n], mutates: true };
      }
      if (x < 0.8) {
        const n = pick();
        return st.includes(n) ? { f: 'unlink', invoke: n, out: n, next: st.filter((y) => y !== n), mutates: true } : { f: 'unlink', invoke: n, out: n, err: 'ENOENT', next: st, mutates: true };
      }
      const from = pick();
      let to = pick();
      while (to === from) to = pick();
      if (!st.includes(from)) return { f: 'rename', invoke: [from, to], out: [from, to], err: 'ENOENT', next: st, mutates: true };
      if (st.includes(to)) return { f: 'rename', invoke: [from, to], out: [from, to], err: 'EEXIST', next: st, mutates: true };
      return { f: 'rename', invoke: [from, to], out: [from, to], next: [...st.filter((y) => y !== from), to], mutates: true };
    },
    impossibleRead: (op) => (op.f === 'readdir' && op.outcome === 'ok' ? { ...op, completionValue: ['zz'] } : undefined),
  },
};

/** `n` operations over rotating keys, 3 live at once. */
export function generate(model: ModelName, n: number, seed: number, pUnknown = 0.1): PairedOp[] {
  const r = mulberry(seed);
  const g = GEN[model];
  const live = [0, 1, 2];
  let nextKey = 3;
  const state = new Map<number, unknown>();
  const ops = new Map<number, number>();
  const unknown = new Map<number, number>();
  const out: PairedOp[] = [];
  for (let i = 0; i < n; i++) {
    const slot = Math.floor(r() * live.length);
    const k = live[slot]!;
    const s = state.has(k) ? state.get(k) : g.init();
    const st = g.step(s, r);
    const isUnknown = st.mutates && r() < pUnknown;
    if (!isUnknown || r() < 0.5) state.set(k, st.next);
    const at = BigInt(i * 10 + 20);
    const call = at - BigInt(Math.floor(r() * 25));
    const ret = at + BigInt(Math.floor(r() * 25));
    out.push({
      process: `p${i}`,
      f: st.f,
      key: `k${k}`,
      invokeValue: st.invoke,
      outcome: isUnknown ? 'unknown' : st.err !== undefined ? 'fail' : 'ok',
      completionValue: isUnknown ? undefined : st.out,
      error: isUnknown ? 'ETIMEDOUT' : st.err,
      call,
      ret: isUnknown ? undefined : ret,
      callAt: `t=${call}`,
      retAt: `t=${ret}`,
    });
    ops.set(k, (ops.get(k) ?? 0) + 1);
    if (isUnknown) unknown.set(k, (unknown.get(k) ?? 0) + 1);
    if ((ops.get(k) ?? 0) >= 150 || (unknown.get(k) ?? 0) >= 8) live[slot] = nextKey++;
  }
  return out;
}

function withImpossibleRead(model: ModelName, h: PairedOp[]): PairedOp[] {
  for (let i = h.length - 1; i >= 0; i--) {
    const bad = GEN[model].impossibleRead(h[i]!);
    if (bad !== undefined) return h.map((o, j) => (j === i ? bad : o));
  }
  return h;
}

export const checkerSuite: BenchSuite = {
  name: 'checker',
  async run({ quick }) {
    const n = quick ? 2_000 : 10_000;
    const rows: (string | number)[][] = [];
    for (const model of ['register', 'kv', 'path', 'dir'] as ModelName[]) {
      for (const kind of ['valid', 'one impossible read'] as const) {
        const times: number[] = [];
        const cpus: number[] = [];
        let verdict = '';
        let configs = 0;
        for (const seed of [11, 12, 13]) {
          const base = generate(model, n, seed);
          const h = kind === 'valid' ? base : withImpossibleRead(model, base);
          const c0 = process.cpuUsage();
          const t0 = process.hrtime.bigint();
          const res = checkWithModel(model, h, { allKeys: kind === 'valid' });
          times.push(Number(process.hrtime.bigint() - t0) / 1e6);
          const c = process.cpuUsage(c0);
          cpus.push((c.user + c.system) / 1000);
          verdict = res.verdict;
          configs += res.configurations;
        }
        const per10k = (x: number): number => Math.round((x * 10_000) / n);
        rows.push([model, kind, n, verdict, `${per10k(Math.min(...times))}–${per10k(Math.max(...times))}`, `${per10k(Math.min(...cpus))}–${per10k(Math.max(...cpus))}`, Math.round(configs / 3)]);
      }
    }
    const table: BenchTable = {
      title: 'linearizability checker: time per 10,000 operations (3 seeds)',
      headers: ['model', 'history', 'operations', 'verdict', 'wall ms / 10k ops', 'CPU ms / 10k ops', 'configurations (mean)'],
      rows,
      notes: [
        'generated like a faulty run: 3 live keys rotated after 150 operations or 8 unknown outcomes, 10% of mutations unknown, overlapping calls',
        '"one impossible read": the last read of the history returns a value no order can give; the checker stops at the first failing key',
      ],
    };
    return [table];
  },
};
