/**
 * `npm run jepsen -- --time 600 --nemesis all --seed S`: a fault-injection run against a real
 * KV Raft cluster (see runner.ts and docs/jepsen-lite.md). Prints the run folder, the replay
 * command, the faults as they happen and the verdict. Exit codes: 0 valid, 1 anomaly found
 * (not linearizable, or the cluster did not converge), 2 usage error, 3 undecided check.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CairnError } from '../../src/common/errors.js';
import { REPO_ROOT } from '../helpers/env.js';
import { NEMESIS_KINDS, type NemesisKind } from './nemesis.js';
import { WORKLOAD_NAMES, loadSchedule, runJepsen, type WorkloadName } from './runner.js';

const USAGE = `usage: npm run jepsen -- [options]

A fault-injection run: N cairn kv daemons behind fault proxies, a register workload,
a seeded nemesis schedule, then convergence and linearizability checks.

options:
  --workload W      register (KV Raft group, cairn kv serve; default),
                    path (versioned paths on the metadata service, cairn start), or
                    dir (directory entries on the metadata service, cairn start), or
                    watch (the metadata watch feed: writers change paths while
                    watchers hop between nodes and resume by revision), or
                    files (strong-mode uploads through the file service, read back
                    by SHA-256 through every node after healing)
  --time S          run length in seconds (default 60)
  --nemesis LIST    all | none | comma list of ${NEMESIS_KINDS.join(', ')} (default all)
  --seed N          seed of the fault schedule and workload (default: random)
  --nodes N         cluster size (default 3)
  --clients N       concurrent clients (default 6)
  --schedule FILE   replay a saved nemesis.json instead of making a schedule from the seed
  --out DIR         parent of run folders (default .jepsen-runs in the repository)
  --reads MODE      linearizable (default) or serializable (a known-weak mode: stale
                    reads under partitions show that the checker catches anomalies)
  --keep-data       keep the nodes' data dirs even when the run is valid
  -h, --help        this text`;

function usage(message: string): never {
  process.stderr.write(`jepsen: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function int(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer in ${min}..${max}`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        time: { type: 'string' },
        nemesis: { type: 'string', default: 'all' },
        seed: { type: 'string' },
        nodes: { type: 'string' },
        clients: { type: 'string' },
        schedule: { type: 'string' },
        out: { type: 'string' },
        'keep-data': { type: 'boolean', default: false },
        reads: { type: 'string', default: 'linearizable' },
        workload: { type: 'string', default: 'register' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    usage((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const timeS = int('time', v.time, 60, 5, 24 * 3600);
  const seed = int('seed', v.seed, Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31 - 1);
  const nodes = int('nodes', v.nodes, 3, 1, 9);
  const clients = int('clients', v.clients, 6, 1, 64);
  if (v.reads !== 'linearizable' && v.reads !== 'serializable') usage('--reads must be linearizable or serializable');
  if (!(WORKLOAD_NAMES as readonly string[]).includes(v.workload)) usage(`--workload must be one of ${WORKLOAD_NAMES.join(', ')}`);
  let kinds: NemesisKind[];
  if (v.nemesis === 'all') kinds = [...NEMESIS_KINDS];
  else if (v.nemesis === 'none') kinds = [];
  else {
    kinds = v.nemesis.split(',').map((k) => k.trim()) as NemesisKind[];
    for (const k of kinds) if (!(NEMESIS_KINDS as readonly string[]).includes(k)) usage(`unknown nemesis ${JSON.stringify(k)}`);
  }
  try {
    const schedule = v.schedule === undefined ? undefined : await loadSchedule(v.schedule);
    const summary = await runJepsen({
      seed: schedule?.seed ?? seed,
      timeMs: schedule?.durationMs ?? timeS * 1000,
      kinds: schedule?.kinds ?? kinds,
      nodes: schedule?.nodes.length ?? nodes,
      clients,
      baseDir: v.out ?? join(REPO_ROOT, '.jepsen-runs'),
      schedule,
      keepData: v['keep-data'],
      reads: v.reads,
      workload: v.workload as WorkloadName,
      log: (line) => process.stdout.write(`${line}\n`),
    });
    const verdict = summary.checks !== undefined ? `${summary.checks.name} ${summary.checks.valid ? 'valid' : 'invalid'}` : summary.linearizability.verdict;
    // Three answers, never a fourth: VALID, INVALID (an anomaly), UNDECIDED (the check could not
    // conclude: not an anomaly, and not a pass either).
    const undecided = summary.linearizability.verdict === 'unknown' && summary.convergence.converged;
    const head = undecided ? 'UNDECIDED' : summary.valid ? 'VALID' : 'INVALID';
    process.stdout.write(`\n${head}: ${verdict}, ${summary.convergence.converged ? 'converged' : 'did not converge'}; ${summary.runDir}\n`);
    process.stdout.write(`replay: ${summary.replay}\n`);
    if ((summary.checks?.warnings?.length ?? 0) > 0) process.stdout.write(`${summary.checks!.warnings!.length} warning(s): see the report above and summary.json\n`);
    if (undecided) return 3;
    return summary.valid ? 0 : 1;
  } catch (err) {
    if (err instanceof CairnError) {
      process.stderr.write(`jepsen: ${err.code}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`jepsen: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(70);
  },
);
