/**
 * `npm run jepsen:soak -- --runs N --time S`: N fault-injection runs of every workload, each with a
 * fresh seed and every fault, one after another; then one table (runs, operations, acknowledged
 * operations, anomalies, undecided) and the replay command of every run that was not valid.
 * `--docs` writes the table into docs/jepsen-lite.md (between the soak markers). Exit codes: 0 every
 * run valid, 1 an anomaly (or a cluster that did not converge), 3 no anomaly but some run undecided,
 * 2 usage error.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../helpers/env.js';
import { NEMESIS_KINDS } from './nemesis.js';
import { WORKLOAD_NAMES, runJepsen, type RunSummary, type WorkloadName } from './runner.js';

const USAGE = `usage: npm run jepsen:soak -- [--runs N] [--time S] [--workloads LIST] [--clients N] [--docs] [--out DIR]

  --runs N          runs of each workload (default 3), each with a fresh seed and every fault
  --time S          seconds per run (default 150)
  --workloads LIST  comma list of ${WORKLOAD_NAMES.join(', ')} (default: all)
  --clients N       concurrent clients per run (default 6)
  --docs            write the summary table into docs/jepsen-lite.md
  --out DIR         parent of run folders (default .jepsen-runs)`;

function usage(message: string): never {
  process.stderr.write(`jepsen:soak: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

type Outcome = 'valid' | 'anomaly' | 'undecided';

function outcomeOf(s: RunSummary): Outcome {
  if (s.valid) return 'valid';
  if (s.convergence.converged && s.linearizability.verdict === 'unknown') return 'undecided';
  return 'anomaly';
}

interface Row {
  workload: WorkloadName;
  runs: number;
  operations: number;
  acknowledged: number;
  anomalies: number;
  undecided: number;
  seconds: number;
}

export function soakTable(rows: readonly Row[], when: string, timeS: number): string {
  const lines = [
    `Soak of ${when}: every fault (${NEMESIS_KINDS.join(', ')}), ${timeS} s per run, fresh seeds.`,
    '',
    '| workload | runs | operations | acknowledged | anomalies | undecided | wall time (s) |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.workload} | ${r.runs} | ${r.operations} | ${r.acknowledged} | ${r.anomalies} | ${r.undecided} | ${r.seconds.toFixed(0)} |`),
  ];
  return lines.join('\n');
}

const BEGIN = '<!-- soak:begin -->';
const END = '<!-- soak:end -->';

async function writeDocs(table: string): Promise<void> {
  const file = join(REPO_ROOT, 'docs', 'jepsen-lite.md');
  const text = await readFile(file, 'utf8');
  const block = `${BEGIN}\n${table}\n${END}`;
  const i = text.indexOf(BEGIN);
  const j = text.indexOf(END);
  const next = i !== -1 && j > i ? `${text.slice(0, i)}${block}${text.slice(j + END.length)}` : `${text.trimEnd()}\n\n## Soak runs\n\n${block}\n`;
  await writeFile(file, next);
}

async function main(argv: string[]): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        runs: { type: 'string', default: '3' },
        time: { type: 'string', default: '150' },
        workloads: { type: 'string' },
        clients: { type: 'string', default: '6' },
        docs: { type: 'boolean', default: false },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    usage((err as Error).message);
  }
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const runs = Number(v.runs);
  const timeS = Number(v.time);
  const clients = Number(v.clients);
  if (!Number.isInteger(runs) || runs < 1 || runs > 10_000) usage('--runs must be an integer in 1..10000');
  if (!Number.isInteger(timeS) || timeS < 5 || timeS > 24 * 3600) usage('--time must be an integer number of seconds in 5..86400');
  if (!Number.isInteger(clients) || clients < 1 || clients > 64) usage('--clients must be an integer in 1..64');
  const workloads = (v.workloads?.split(',').map((w) => w.trim()) ?? [...WORKLOAD_NAMES]) as WorkloadName[];
  for (const w of workloads) if (!WORKLOAD_NAMES.includes(w)) usage(`unknown workload ${JSON.stringify(w)}`);

  const rows = new Map<WorkloadName, Row>(workloads.map((w) => [w, { workload: w, runs: 0, operations: 0, acknowledged: 0, anomalies: 0, undecided: 0, seconds: 0 }]));
  const notValid: string[] = [];
  const total = runs * workloads.length;
  let done = 0;
  const startedAt = Date.now();
  for (let i = 0; i < runs; i++) {
    for (const w of workloads) {
      const seed = Math.floor(Math.random() * 2 ** 31);
      const eta = done === 0 ? '?' : `${Math.round(((Date.now() - startedAt) / done) * (total - done) / 1000)} s`;
      process.stdout.write(`[${done + 1}/${total}, ETA ${eta}] ${w} seed ${seed}, ${timeS} s ...\n`);
      const s = await runJepsen({
        seed,
        timeMs: timeS * 1000,
        kinds: [...NEMESIS_KINDS],
        nodes: 3,
        clients,
        baseDir: v.out ?? join(REPO_ROOT, '.jepsen-runs'),
        reads: 'linearizable',
        workload: w,
        log: () => {},
      });
      done++;
      const o = outcomeOf(s);
      const r = rows.get(w)!;
      r.runs++;
      r.operations += s.linearizability.operations;
      r.acknowledged += s.workload.ok;
      r.seconds += s.durationMs / 1000;
      if (o === 'anomaly') r.anomalies++;
      if (o === 'undecided') r.undecided++;
      process.stdout.write(`  ${o.toUpperCase()}: ${s.linearizability.operations} operations, ${s.workload.ok} acknowledged; ${s.runDir}\n`);
      if (o !== 'valid') notValid.push(`${o} ${w} seed ${seed}: ${s.replay}`);
    }
  }
  const table = soakTable([...rows.values()], new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', timeS);
  process.stdout.write(`\n${table}\n`);
  if (notValid.length > 0) process.stdout.write(`\nruns that were not valid (replay each with its command):\n${notValid.map((l) => `  ${l}`).join('\n')}\n`);
  if (v.docs) await writeDocs(table);
  const anomalies = [...rows.values()].reduce((a, r) => a + r.anomalies, 0);
  const undecided = [...rows.values()].reduce((a, r) => a + r.undecided, 0);
  return anomalies > 0 ? 1 : undecided > 0 ? 3 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`jepsen:soak: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(70);
  },
);
