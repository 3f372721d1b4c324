/**
 * Metrics: a running node (a real `cairn start` process) exports Raft, disk fill and write-cache
 * gauges, and every metric that ops/grafana/cairn-dashboard.json and ops/prometheus/alerts.yml
 * name is one the node exports (a dashboard or alert on a name that does not exist shows nothing
 * and never fires).
 */
import { join } from 'node:path';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { writeLocalCluster } from '../../src/cli/commands/server.js';
import { REPO_ROOT, eventually, spawnCairn, tempDir, waitReady } from '../helpers/env.js';

const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

/** Metric names in a PromQL expression (Prometheus's own `up` aside). */
function namesIn(expr: string): string[] {
  return [...expr.matchAll(/\b(cairn_[a-z0-9_]+)\b/g)].map((m) => m[1]!);
}

async function startNode(config: string): Promise<ChildProcess> {
  const p = spawnCairn(['start', '--config', config], { env: { CAIRN_LOG_LEVEL: 'warn' } });
  cleanup.push(async () => {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await once(p, 'exit');
    }
  });
  await waitReady(p);
  return p;
}

describe('metrics', () => {
  it('a node exports every metric the Grafana dashboard and the alert rules use', async () => {
    const dir = await tempDir('cairn-metrics-');
    cleanup.push(dir.remove);
    const basePort = 20_000 + Math.floor(Math.random() * 35_000);
    const [n] = await writeLocalCluster({ nodes: 1, dir: dir.path, basePort, metricsBasePort: basePort + 1, disks: 2, diskSizeBytes: 256 << 20, insecure: true });
    await startNode(n!.path);
    const url = `http://127.0.0.1:${basePort + 1}/metrics`;
    // Once the node leads its one-node group, the Raft gauges say so.
    const text = await eventually(async () => {
      const t = await (await fetch(url)).text();
      return /^cairn_raft_is_leader\{node="1"\} 1$/m.test(t) ? t : undefined;
    }, 60_000, 200);
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const exported = (name: string): boolean => {
      if (types.has(name)) return true;
      const base = name.replace(/_(bucket|sum|count)$/, '');
      return base !== name && (types.get(base) === 'histogram' || types.get(base) === 'summary');
    };
    // The gauges read at scrape time carry values.
    expect(text).toMatch(/^cairn_raft_term\{node="1"\} [1-9]\d*$/m);
    expect(text).toMatch(new RegExp(`^cairn_disk_capacity_bytes\\{node="1",disk="${join(dir.path, 'node1', 'disk0').replace(/[/.]/g, '\\$&')}"\\} ${256 << 20}$`, 'm'));
    expect(text).toMatch(/^cairn_disk_fill_ratio\{node="1",disk="[^"]+"\} 0(\.\d+)?(e-\d+)?$/m);
    expect(text).toMatch(/^cairn_client_dirty_bytes\{node="1"\} 0$/m);

    const dashboard = JSON.parse(await readFile(join(REPO_ROOT, 'ops', 'grafana', 'cairn-dashboard.json'), 'utf8')) as {
      panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
    };
    const dashExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `dashboard panel "${p.title}"`, expr: t.expr })));
    const rules = parse(await readFile(join(REPO_ROOT, 'ops', 'prometheus', 'alerts.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
    const ruleExprs = rules.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: String(r.expr) })));
    expect(dashExprs.length).toBeGreaterThan(20);
    expect(ruleExprs.length).toBeGreaterThan(10);
    const missing = [...dashExprs, ...ruleExprs].flatMap(({ where, expr }) => namesIn(expr).filter((m) => !exported(m)).map((m) => `${where}: ${m}`));
    expect(missing).toEqual([]);
    // Each part the brief names has a metric on the dashboard.
    const used = new Set(dashExprs.flatMap((e) => namesIn(e.expr)));
    for (const m of ['cairn_raft_commit_index', 'cairn_meta_ops_total', 'cairn_chunk_disk_bytes_total', 'cairn_client_dirty_bytes', 'cairn_client_cached_files', 'cairn_chunk_scrub_shards_total', 'cairn_repair_progress_ratio', 'cairn_mover_shards_moved_total', 'cairn_disk_fill_ratio']) {
      expect(used.has(m), m).toBe(true);
    }
  }, 120_000);
});
