/**
 * A short jepsen-lite files run whose nemesis keeps one node down for long stretches ('down':
 * kill -9, restarted only after 8–10 s here; 20–60 s by default in `npm run jepsen -- --workload
 * files --nemesis down --time 600`). Strong uploads go on while the node is down (handoff), the
 * node catches up when it returns, and every acknowledged file reads back through every node,
 * byte for byte. The schedule itself is checked too: each 'down' fault is a kill and a restart of
 * the same node, as long as asked, and a schedule without 'down' is the one it always was.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/env.js';
import { makeSchedule } from './nemesis.js';
import { runJepsen, type RunSummary } from './runner.js';

const SEED = 23;
const TIME_MS = 24_000;

describe('jepsen-lite: files with one node down for long stretches', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let summary: RunSummary;
  const schedule = makeSchedule({ seed: SEED, durationMs: TIME_MS, nodes: [1, 2, 3], kinds: ['down'], faultMs: [1_500, 2_500], quietMs: [500, 1_000], downMs: [8_000, 10_000] });

  it('a down fault is a kill and a restart of one node, 8–10 s apart; other schedules are unchanged by it', () => {
    expect(schedule.events.length).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < schedule.events.length; i += 2) {
      const [a, b] = [schedule.events[i]!, schedule.events[i + 1]!];
      expect(a.action.op).toBe('kill');
      expect(b.action).toEqual({ op: 'restart', node: (a.action as { node: number }).node });
      expect(b.atMs - a.atMs).toBeGreaterThanOrEqual(8_000);
      expect(b.atMs - a.atMs).toBeLessThanOrEqual(10_000);
    }
    const other = makeSchedule({ seed: 11, durationMs: 12_000, nodes: [1, 2, 3], kinds: ['kill', 'pause', 'partition'], faultMs: [1_500, 2_500], quietMs: [500, 1_000] });
    expect(other.events.map((e) => e.action.op)).not.toContain('down');
  });

  beforeAll(async () => {
    dir = await tempDir('cairn-jepsen-down-');
    summary = await runJepsen({ seed: SEED, timeMs: TIME_MS, kinds: schedule.kinds, nodes: 3, clients: 4, baseDir: dir.path, schedule, workload: 'files', quietTailMs: 5_000 });
  }, 240_000);

  afterAll(async () => {
    await dir?.remove();
  });

  it('strong uploads go on while a node is down, and every acknowledged file reads back through every node', () => {
    expect(summary.faultsApplied).toBe(schedule.events.length);
    expect(summary.faultErrors).toEqual([]);
    const report = summary.checks?.report ?? '';
    expect(report.split('\n')[0]).toMatch(/^valid: files; /);
    expect(summary.convergence.disagreements).toEqual([]);
    expect(summary.valid).toBe(true);
    expect(summary.workload.ok).toBeGreaterThanOrEqual(10);
    expect(Number(/(\d+) bytes verified/.exec(report)?.[1] ?? 0)).toBeGreaterThan(50_000);
  });
});
