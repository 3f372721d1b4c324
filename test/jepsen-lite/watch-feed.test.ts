/**
 * A short real run of the watch-feed workload: three `cairn start` daemons behind fault proxies;
 * writers create, truncate and unlink files under /jepsen-watch while four watchers hop between
 * nodes and resume by revision, under kill -9 of the leader and of a node, a pause and a
 * partition (seed 24). Every watcher must have seen every change of its prefix exactly once, in
 * order, and the log must match the acknowledged writes. Longer:
 * `npm run jepsen -- --workload watch --time 600 --nemesis all`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/env.js';
import { makeSchedule } from './nemesis.js';
import { runJepsen, type RunSummary } from './runner.js';
import type { WatchCheckInput } from './checker/watch.js';

const SEED = 24;
const TIME_MS = 15_000;

describe('jepsen-lite: the metadata watch feed under faults', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let summary: RunSummary;
  const schedule = makeSchedule({ seed: SEED, durationMs: TIME_MS, nodes: [1, 2, 3], kinds: ['kill', 'pause', 'partition'], faultMs: [1_500, 2_500], quietMs: [500, 1_000] });

  beforeAll(async () => {
    dir = await tempDir('cairn-jepsen-watch-');
    summary = await runJepsen({ seed: SEED, timeMs: TIME_MS, kinds: schedule.kinds, nodes: 3, clients: 4, baseDir: dir.path, schedule, workload: 'watch' });
  }, 150_000);

  afterAll(async () => {
    await dir?.remove();
  });

  it('applies the faults, and every watcher saw every change of its prefix exactly once, in order', async () => {
    const ops = new Set(schedule.events.map((e) => e.action.op));
    expect(ops).toContain('kill-leader');
    expect([...ops].some((op) => op === 'partition' || op === 'isolate-leader')).toBe(true);
    expect(ops).toContain('pause');
    expect(summary.faultsApplied).toBe(schedule.events.length);
    expect(summary.faultErrors).toEqual([]);
    expect(summary.workloadName).toBe('watch');
    expect(summary.checks?.report.split('\n')[0]).toMatch(/^valid: watch feed/);
    expect(summary.convergence.disagreements).toEqual([]);
    expect(summary.valid).toBe(true);
    expect(summary.workload.ok).toBeGreaterThan(50);
    // The watchers really moved between nodes and really received the changes.
    const data = JSON.parse(await readFile(join(summary.runDir, 'watch.json'), 'utf8')) as Omit<WatchCheckInput, 'writes'>;
    expect(data.watchers).toHaveLength(4);
    for (const w of data.watchers) {
      expect(w.sessions).toBeGreaterThan(3);
      expect(w.events.length).toBeGreaterThan(10);
      expect(new Set(w.events.map((e) => e.node)).size).toBeGreaterThan(1);
    }
    expect(data.references).toHaveLength(3);
    expect(data.references[0]!.events.length).toBeGreaterThan(50);
  });
});
