/**
 * `cairn start` runs one node daemon (src/server) until SIGTERM/SIGINT; `cairn init` writes
 * the configs (and data, cache and disk directories) of a local cluster on 127.0.0.1.
 */
import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { loadNodeConfig, nodeConfigSchema, type NodeConfig } from '../../common/config.js';
import { CairnError } from '../../common/errors.js';
import { mkdirDurable, writeFileDurable, pathExists } from '../../common/durable.js';
import { logger } from '../../common/log.js';
import { printJson, printTable } from '../output.js';
import { parseOptions } from '../usage.js';
import { untilSignal } from '../signals.js';

const initSchema = z.object({
  nodes: z.coerce.number().int().min(1).max(9),
  dir: z.string().min(1),
  basePort: z.coerce.number().int().min(1024).max(65_000),
  metricsBasePort: z.coerce.number().int().min(1024).max(65_000).optional(),
  diskSizeBytes: z.coerce.number().int().min(1 << 20).default(4 * 1024 * 1024 * 1024),
  disks: z.coerce.number().int().min(1).max(16).default(1),
  clusterName: z.string().default('local'),
  force: z.boolean().default(false),
  json: z.boolean().default(false),
});


/** The configs of an n-node cluster on 127.0.0.1 (one machine per node in the topology). */
export function localClusterConfigs(o: z.infer<typeof initSchema>): Array<{ path: string; config: NodeConfig }> {
  const dir = resolve(o.dir);
  const peers = Array.from({ length: o.nodes }, (_, i) => ({ id: i + 1, address: `127.0.0.1:${o.basePort + i}` }));
  return peers.map((p, i) => {
    const nodeDir = join(dir, `node${p.id}`);
    const config = nodeConfigSchema.parse({
      clusterName: o.clusterName,
      nodeId: p.id,
      listen: p.address,
      peers,
      dataDir: join(nodeDir, 'data'),
      cacheDir: join(nodeDir, 'cache'),
      location: { dc: 0, row: 0, rack: 0, machine: i },
      disks: Array.from({ length: o.disks }, (_, d) => ({
        path: join(nodeDir, `disk${d}`),
        disk: d,
        capacityBytes: o.diskSizeBytes,
        class: 'hdd',
      })),
      ...(o.metricsBasePort !== undefined ? { metricsListen: `127.0.0.1:${o.metricsBasePort + i}` } : {}),
    });
    return { path: join(nodeDir, 'cairn.json'), config };
  });
}

/**
 * Write the configs and directories of a local cluster (what `cairn init` and `cairn local up`
 * do). Refuses to overwrite an existing config unless force is set.
 */
export async function writeLocalCluster(raw: z.input<typeof initSchema>): Promise<Array<{ path: string; config: NodeConfig }>> {
  const o = initSchema.parse(raw);
  const nodes = localClusterConfigs(o);
  if (!o.force) {
    for (const n of nodes) {
      if (await pathExists(n.path)) throw new CairnError('EEXIST', `${n.path} exists; use --force to overwrite it`);
    }
  }
  for (const n of nodes) {
    await mkdirDurable(n.config.dataDir);
    await mkdirDurable(n.config.cacheDir);
    // Disks are labelled by the node itself on its first start (src/server), which remembers
    // what it formatted: an unmounted disk is then reported, never silently re-formatted.
    for (const d of n.config.disks) await mkdirDurable(d.path);
    await writeFileDurable(n.path, `${JSON.stringify(n.config, null, 2)}\n`);
  }
  return nodes;
}

export function register(program: Command): void {
  program
    .command('start')
    .description('run this node (metadata Raft member and its services) until SIGTERM or SIGINT')
    .requiredOption('--config <file>', 'node config file (see `cairn init` and ops/config)')
    .option('--join', 'start with an empty membership and wait to be added to a running cluster')
    .action(async (raw: { config: string; join?: boolean }) => {
      const cfg = await loadNodeConfig(raw.config);
      const { startNode } = await import('../../server/node.js');
      const log = logger('start', { node: cfg.nodeId });
      const n = await startNode(cfg, { join: raw.join === true });
      process.stdout.write(
        `${JSON.stringify({ ready: true, nodeId: cfg.nodeId, address: n.address, metrics: n.metricsAddress ?? null, pid: process.pid })}\n`,
      );
      await untilSignal(log);
      await n.stop();
    });

  program
    .command('init')
    .description('write the configs and directories of a local cluster on 127.0.0.1')
    .requiredOption('--dir <dir>', 'directory that will hold node1/, node2/, …')
    .option('--nodes <n>', 'number of nodes', '3')
    .option('--base-port <port>', 'gRPC port of node 1 (node i listens on base + i - 1)', '7400')
    .option('--metrics-base-port <port>', 'serve /metrics of node i on this port + i - 1')
    .option('--disks <n>', 'directory disks per node', '1')
    .option('--disk-size-bytes <n>', 'capacity each directory disk offers', String(4 * 1024 * 1024 * 1024))
    .option('--cluster-name <name>', 'cluster name', 'local')
    .option('--force', 'overwrite existing config files')
    .option('--json', 'print JSON')
    .action(async (raw: unknown) => {
      const o = parseOptions(initSchema, raw);
      const nodes = await writeLocalCluster(o);
      if (o.json) {
        printJson({ nodes: nodes.map((n) => ({ nodeId: n.config.nodeId, config: n.path, listen: n.config.listen })) });
        return;
      }
      printTable(
        ['node', 'listen', 'config'],
        nodes.map((n) => [n.config.nodeId, n.config.listen, n.path]),
      );
      process.stdout.write(
        `\nstart each node with:  cairn start --config ${join(resolve(o.dir), 'node<N>', 'cairn.json')}\n` +
          `then e.g.:             cairn ls / --endpoints ${nodes.map((n) => n.config.listen).join(',')}\n`,
      );
    });
}
