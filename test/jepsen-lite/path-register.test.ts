/**
 * A short real run of the path-register workload on the metadata service: three `cairn start`
 * daemons behind fault proxies; files under /jepsen are versioned registers (linearizable Getattr,
 * Truncate with expected_version as compare-and-set) checked with the `path` model, under kill -9 +
 * restart and partitions. Longer: `npm run jepsen -- --workload path --time 600 --nemesis all`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/env.js';
import { makeSchedule } from './nemesis.js';
import { runJepsen, type RunSummary } from './runner.js';

const SEED = 21;
const TIME_MS = 15_000; // the seed's three faults need the whole window

describe('jepsen-lite: path registers on the metadata service under faults', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let summary: RunSummary;
  const schedule = makeSchedule({ seed: SEED, durationMs: TIME_MS, nodes: [1, 2, 3], kinds: ['kill', 'partition'], faultMs: [1_500, 3_000], quietMs: [500, 1_500] });

  beforeAll(async () => {
    dir = await tempDir('cairn-jepsen-path-');
    summary = await runJepsen({ seed: SEED, timeMs: TIME_MS, kinds: ['kill', 'partition'], nodes: 3, clients: 4, baseDir: dir.path, schedule, workload: 'path' });
  }, 150_000);

  afterAll(async () => {
    await dir?.remove();
  });

  it('applies kills and partitions, and the history of versioned paths is linearizable and converges', () => {
    const ops = new Set(schedule.events.map((e) => e.action.op));
    expect(ops).toContain('kill');
    expect(ops).toContain('kill-leader');
    expect([...ops].some((op) => op === 'partition' || op === 'isolate-leader')).toBe(true);
    expect(summary.faultErrors).toEqual([]);
    expect(summary.workloadName).toBe('path');
    expect(summary.linearizability.report.split('\n')[0]).toBe('linearizable');
    expect(summary.linearizability.report).toContain('model path');
    expect(summary.convergence.disagreements).toEqual([]);
    expect(summary.valid).toBe(true);
    expect(summary.workload.ok).toBeGreaterThan(50);
  });
});
