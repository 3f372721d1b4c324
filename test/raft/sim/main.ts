/**
 * `npm run sim -- --seeds N [--start S] [--nodes 3|5] [--steps K] [--trace]`: runs the
 * deterministic Raft simulator over many seeds; a failing seed prints the command that
 * replays it exactly (and, with --trace, the last events before the failure).
 */
import { nodesForSeed, runSimulation, SimFailure, type SimStats } from './sim.js';

interface Args {
  seeds: number;
  start: number;
  nodes: number | undefined;
  steps: number;
  trace: boolean;
}

function usage(msg: string): never {
  process.stderr.write(`${msg}\nusage: npm run sim -- --seeds N [--start S] [--nodes 3|5] [--steps K] [--trace]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seeds: 100, start: 1, nodes: undefined, steps: 500, trace: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    if (k === '--trace') {
      a.trace = true;
      continue;
    }
    const v = argv[++i];
    const n = Number(v);
    if (v === undefined || !Number.isSafeInteger(n) || n < 0) usage(`bad value for ${k}: ${v}`);
    switch (k) {
      case '--seeds': a.seeds = n; break;
      case '--start': a.start = n; break;
      case '--nodes':
        if (n !== 3 && n !== 5) usage('--nodes must be 3 or 5');
        a.nodes = n;
        break;
      case '--steps': a.steps = n; break;
      default: usage(`unknown option ${k}`);
    }
  }
  return a;
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const total: Partial<Record<keyof SimStats, number>> = {};
  let failed = 0;
  const t0 = performance.now();
  for (let seed = args.start; seed < args.start + args.seeds; seed++) {
    const nodes = args.nodes ?? nodesForSeed(seed);
    try {
      const st = runSimulation({ seed, nodes, steps: args.steps, traceEvents: args.trace ? 400 : 0 });
      for (const [k, v] of Object.entries(st)) total[k as keyof SimStats] = (total[k as keyof SimStats] ?? 0) + v;
    } catch (err) {
      failed++;
      process.stdout.write(`FAIL ${err instanceof Error ? err.message : String(err)}\n`);
      if (err instanceof SimFailure && args.trace) process.stdout.write(err.trace.map((l) => `  ${l}\n`).join(''));
      if (!(err instanceof SimFailure) && err instanceof Error) process.stdout.write(`${err.stack}\n`);
      process.stdout.write(`  replay: npm run sim -- --seeds 1 --start ${seed} --nodes ${nodes} --steps ${args.steps} --trace\n`);
    }
  }
  const ms = performance.now() - t0;
  process.stdout.write(`${args.seeds - failed}/${args.seeds} seeds passed in ${(ms / 1000).toFixed(1)} s; totals ${JSON.stringify(total)}\n`);
  process.exit(failed > 0 ? 1 : 0);
}

main();
