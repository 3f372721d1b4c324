/**
 * A short real run of the directory workload on the metadata service: three `cairn start` daemons
 * behind fault proxies; exclusive create, unlink, rename without replace and readdir in a few
 * directories, checked with the `dir` model, under kill -9 + restart, a partition and a pause.
 * Longer: `npm run jepsen -- --workload dir --time 600 --nemesis all`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/env.js';
import { makeSchedule } from './nemesis.js';
import { runJepsen, type RunSummary } from './runner.js';

const SEED = 4;
const TIME_MS = 12_000;

describe('jepsen-lite: directory operations on the metadata service under faults', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let summary: RunSummary;
  const schedule = makeSchedule({ seed: SEED, durationMs: TIME_MS, nodes: [1, 2, 3], kinds: ['kill', 'pause', 'partition'], faultMs: [1_500, 2_500], quietMs: [500, 1_000] });

  beforeAll(async () => {
    dir = await tempDir('cairn-jepsen-dir-');
    summary = await runJepsen({ seed: SEED, timeMs: TIME_MS, kinds: schedule.kinds, nodes: 3, clients: 4, baseDir: dir.path, schedule, workload: 'dir' });
  }, 150_000);

  afterAll(async () => {
    await dir?.remove();
  });

  it('applies the faults, and the directory history is linearizable and converges', () => {
    const ops = new Set(schedule.events.map((e) => e.action.op));
    expect([...ops].some((op) => op === 'kill' || op === 'kill-leader')).toBe(true);
    expect([...ops].some((op) => op === 'partition' || op === 'isolate-leader')).toBe(true);
    expect(ops).toContain('pause');
    expect(summary.faultsApplied).toBe(schedule.events.length);
    expect(summary.faultErrors).toEqual([]);
    expect(summary.workloadName).toBe('dir');
    expect(summary.linearizability.report).toContain('model dir');
    expect(summary.linearizability.report.split('\n')[0]).toBe('linearizable');
    expect(summary.convergence.disagreements).toEqual([]);
    expect(summary.valid).toBe(true);
    expect(summary.workload.ok).toBeGreaterThan(50);
  });
});
