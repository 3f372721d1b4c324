/**
 * The benchmark result format shared by every suite: named tables of rows, printed as
 * aligned text and written as Markdown + JSON under bench/results/.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTable, type Cell } from '../src/cli/output.js';

export interface BenchTable {
  title: string;
  headers: string[];
  rows: Cell[][];
  /** Free-text lines printed under the table (machine, anchors, caveats). */
  notes?: string[];
}

export interface BenchSuite {
  name: string;
  run(opts: { quick: boolean }): Promise<BenchTable[]>;
}

export const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'results');

function markdown(t: BenchTable): string {
  const esc = (c: Cell): string => (c === null || c === undefined ? '-' : String(c)).replace(/\|/g, '\\|');
  return [
    `### ${t.title}`,
    '',
    `| ${t.headers.join(' | ')} |`,
    `|${t.headers.map(() => '---').join('|')}|`,
    ...t.rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
    '',
    ...(t.notes ?? []).map((n) => `- ${n}`),
    '',
  ].join('\n');
}

/** Print tables to stdout and save them as bench/results/<suite>.md and .json. */
export async function report(suite: string, tables: BenchTable[]): Promise<void> {
  for (const t of tables) {
    process.stdout.write(`\n== ${t.title}\n${formatTable(t.headers, t.rows)}\n`);
    for (const n of t.notes ?? []) process.stdout.write(`   ${n}\n`);
  }
  await mkdir(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString();
  await writeFile(join(RESULTS_DIR, `${suite}.md`), `## ${suite} (${stamp})\n\n${tables.map(markdown).join('\n')}`);
  await writeFile(
    join(RESULTS_DIR, `${suite}.json`),
    JSON.stringify({ suite, at: stamp, tables }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2),
  );
}

/** Wall time and peak-ish heap of a function. */
export async function measure<T>(fn: () => Promise<T> | T): Promise<{ value: T; ms: number; heapMiB: number }> {
  const before = process.memoryUsage().heapUsed;
  const t0 = process.hrtime.bigint();
  const value = await fn();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const heapMiB = Math.max(0, process.memoryUsage().heapUsed - before) / 1048576;
  return { value, ms, heapMiB };
}
