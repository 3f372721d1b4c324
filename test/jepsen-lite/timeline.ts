/**
 * A timeline picture of a run (SVG): one row per client process, one bar per operation from invocation to
 * completion (green ok, orange fail, red unknown outcome), and the fault windows shaded behind them
 * with their names. Open timeline.svg from a run folder in a browser.
 */
import type { HistoryLine } from './recorder.js';
import { describeAction, type AppliedAction } from './nemesis.js';

const WIDTH_PX = 1600;
const ROW_PX = 14;
const MARGIN_LEFT_PX = 60;
const MARGIN_TOP_PX = 40;
/** Operations drawn at most (an SVG of millions of bars helps nobody). */
const BARS_MAX = 50_000;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Fault windows: from a fault action to the action that undoes it (or the end of the run). */
export function faultWindows(applied: readonly AppliedAction[], endMs: number): { fromMs: number; toMs: number; label: string }[] {
  const out: { fromMs: number; toMs: number; label: string }[] = [];
  const open = new Map<string, { fromMs: number; label: string }>();
  const undo: Record<string, string> = { restart: 'kill', resume: 'pause', heal: 'partition', 'restore-disk': 'lose-disk', 'restart-dead': 'kill-leader' };
  for (const a of applied) {
    const act = a.action;
    const node = 'node' in act ? act.node : 0;
    const undone = undo[act.op];
    if (undone !== undefined) {
      const key = `${undone}:${undone === 'partition' || undone === 'kill-leader' ? 0 : node}`;
      const o2 = undone === 'partition' ? open.get('isolate-leader:0') : undefined;
      if (o2 !== undefined) {
        out.push({ fromMs: o2.fromMs, toMs: a.atMs, label: o2.label });
        open.delete('isolate-leader:0');
      }
      const o = open.get(key);
      if (o !== undefined) {
        out.push({ fromMs: o.fromMs, toMs: a.atMs, label: o.label });
        open.delete(key);
      }
    } else {
      open.set(`${act.op}:${act.op === 'partition' || act.op === 'isolate-leader' || act.op === 'kill-leader' ? 0 : node}`, { fromMs: a.atMs, label: a.resolved ?? describeAction(act) });
    }
  }
  for (const o of open.values()) out.push({ fromMs: o.fromMs, toMs: endMs, label: o.label });
  return out;
}

/**
 * Render the SVG. `startNs` is the run's time zero on the monotonic clock. `rowOf` names the row of a
 * process (default: one row per process id; a run maps retired processes back to their client).
 */
export function renderTimeline(
  history: readonly HistoryLine[],
  applied: readonly AppliedAction[],
  startNs: bigint,
  title: string,
  rowOf: (process: number) => string = (p) => `p${p}`,
): string {
  const ms = (t: string): number => Number(BigInt(t) - startNs) / 1e6;
  const invokes = new Map<number, HistoryLine>();
  const bars: { row: number; from: number; to: number; type: string; label: string }[] = [];
  const rows = new Map<string, number>();
  let endMs = 0;
  for (const l of history) {
    endMs = Math.max(endMs, ms(l.time_ns));
    if (l.type === 'invoke') {
      invokes.set(l.process, l);
      continue;
    }
    const inv = invokes.get(l.process);
    if (inv === undefined) continue;
    invokes.delete(l.process);
    const c = rowOf(l.process);
    if (!rows.has(c)) rows.set(c, rows.size);
    if (bars.length < BARS_MAX) {
      bars.push({
        row: rows.get(c)!,
        from: ms(inv.time_ns),
        to: ms(l.time_ns),
        type: l.type,
        label: `p${l.process} ${l.f} ${l.key ?? ''} ${JSON.stringify(inv.value ?? null)} -> ${l.type} ${JSON.stringify(l.value ?? null)}${l.error ? ` ${l.error}` : ''}`,
      });
    }
  }
  for (const a of applied) endMs = Math.max(endMs, a.atMs);
  const scale = (WIDTH_PX - MARGIN_LEFT_PX - 10) / Math.max(1, endMs);
  const x = (t: number): number => MARGIN_LEFT_PX + t * scale;
  const height = MARGIN_TOP_PX + Math.max(1, rows.size) * ROW_PX + 30;
  const colour: Record<string, string> = { ok: '#4caf50', fail: '#ff9800', info: '#e53935' };
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH_PX}" height="${height}" font-family="sans-serif" font-size="10">`);
  parts.push(`<text x="4" y="14" font-size="13">${esc(title)}</text>`);
  for (const w of faultWindows(applied, endMs)) {
    parts.push(
      `<rect x="${x(w.fromMs).toFixed(1)}" y="${MARGIN_TOP_PX - 12}" width="${Math.max(1, (w.toMs - w.fromMs) * scale).toFixed(1)}" height="${height - MARGIN_TOP_PX}" fill="#9e9e9e" fill-opacity="0.25"><title>${esc(w.label)}</title></rect>`,
      `<text x="${(x(w.fromMs) + 2).toFixed(1)}" y="${MARGIN_TOP_PX - 2}">${esc(w.label)}</text>`,
    );
  }
  for (const [name, row] of rows) parts.push(`<text x="4" y="${MARGIN_TOP_PX + row * ROW_PX + 10}">${esc(name)}</text>`);
  for (const b of bars) {
    parts.push(
      `<rect x="${x(b.from).toFixed(1)}" y="${MARGIN_TOP_PX + b.row * ROW_PX + 2}" width="${Math.max(1, (b.to - b.from) * scale).toFixed(1)}" height="${ROW_PX - 4}" fill="${colour[b.type] ?? '#607d8b'}"><title>${esc(b.label)}</title></rect>`,
    );
  }
  for (let s = 0; s <= endMs / 1000; s += Math.max(1, Math.ceil(endMs / 1000 / 20))) {
    parts.push(`<text x="${x(s * 1000).toFixed(1)}" y="${height - 8}">${s}s</text>`);
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
