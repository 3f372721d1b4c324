/**
 * A short real fault-injection run in npm test: three `cairn kv serve` daemons behind fault proxies,
 * a register workload through all three nodes, and a seeded schedule with SIGSTOP/SIGCONT, partitions,
 * kill -9 of the leader + restart, and isolating the leader. The history must be linearizable,
 * the cluster must converge after healing, and the run folder must hold what a person needs.
 * Longer runs: `npm run jepsen -- --time 600 --nemesis all --seed S`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/env.js';
import { makeSchedule } from './nemesis.js';
import { runJepsen, type RunSummary } from './runner.js';

const SEED = 20;
const TIME_MS = 20_000;

describe('jepsen-lite: register workload on the KV Raft group under faults', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let summary: RunSummary;
  const schedule = makeSchedule({ seed: SEED, durationMs: TIME_MS, nodes: [1, 2, 3], kinds: ['kill', 'pause', 'partition'], faultMs: [1_500, 3_000], quietMs: [500, 1_500] });

  beforeAll(async () => {
    dir = await tempDir('cairn-jepsen-run-');
    summary = await runJepsen({
      seed: SEED,
      timeMs: TIME_MS,
      kinds: ['kill', 'pause', 'partition'],
      nodes: 3,
      clients: 4,
      baseDir: dir.path,
      schedule,
      keepData: false,
    });
  }, 150_000);

  afterAll(async () => {
    await dir?.remove();
  });

  it('the schedule exercises every fault kind it was given', () => {
    const ops = new Set(schedule.events.map((e) => e.action.op));
    for (const op of ['kill-leader', 'restart-dead', 'pause', 'resume', 'isolate-leader', 'partition', 'heal']) expect(ops).toContain(op);
    expect(summary.faultsApplied).toBe(schedule.events.length);
    expect(summary.faultErrors).toEqual([]);
  });

  it('the history is linearizable and the cluster converges after healing', () => {
    expect(summary.linearizability.report.split('\n')[0]).toBe('linearizable');
    expect(summary.convergence.disagreements).toEqual([]);
    expect(summary.convergence.converged).toBe(true);
    expect(summary.unexpectedExits).toEqual([]);
    expect(summary.valid).toBe(true);
    // The workload did real work through the faults.
    expect(summary.workload.ok).toBeGreaterThan(50);
  });

  it('the run folder holds the history, the schedule, the summary, the timeline and the replay command', () => {
    for (const f of ['history.jsonl', 'nemesis.json', 'summary.json', 'timeline.svg', 'replay.txt']) expect(existsSync(join(summary.runDir, f)), f).toBe(true);
    const replay = readFileSync(join(summary.runDir, 'replay.txt'), 'utf8');
    expect(replay).toContain(`--seed ${SEED}`);
    expect(replay).toContain(`--schedule ${join(summary.runDir, 'nemesis.json')}`);
    expect(JSON.parse(readFileSync(join(summary.runDir, 'nemesis.json'), 'utf8'))).toEqual(schedule);
    const lines = readFileSync(join(summary.runDir, 'history.jsonl'), 'utf8').trim().split('\n');
    expect(lines.length).toBe(summary.linearizability.operations * 2 - countUnfinished(lines));
    expect(existsSync(join(summary.runDir, 'cluster'))).toBe(false); // data removed after a valid run
  });
});

/** Invocations without a completion line (none expected: every client completes what it starts). */
function countUnfinished(lines: string[]): number {
  const pending = new Set<number>();
  for (const l of lines) {
    const o = JSON.parse(l) as { process: number; type: string };
    if (o.type === 'invoke') pending.add(o.process);
    else pending.delete(o.process);
  }
  return pending.size;
}
