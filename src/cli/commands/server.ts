/**
 * `cairn start` runs one node daemon (src/server) until SIGTERM/SIGINT. The configs (and data,
 * cache, disk and TLS folders) of a local cluster on 127.0.0.1 are written here too, for
 * `cairn init --nodes N` and `cairn local up` (init.ts holds init, join and token).
 */
import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { loadNodeConfig, nodeConfigSchema, type NodeConfig } from '../../common/config.js';
import { CairnError } from '../../common/errors.js';
import { mkdirDurable, writeFileDurable, pathExists, privateUmask } from '../../common/durable.js';
import { logger } from '../../common/log.js';
import { untilSignal } from '../signals.js';
import { issueInto, readCa, writeNewCa } from '../credentials.js';
import { credentialFiles } from '../../rpc/security.js';
import { randomBytes } from 'node:crypto';

export const initSchema = z.object({
  nodes: z.coerce.number().int().min(1).max(9),
  dir: z.string().min(1),
  basePort: z.coerce.number().int().min(1024).max(65_000),
  metricsBasePort: z.coerce.number().int().min(1024).max(65_000).optional(),
  /** The status page of node i on 127.0.0.1:statusBasePort+i (anonymous: only this machine reaches it). */
  statusBasePort: z.coerce.number().int().min(1024).max(65_000).optional(),
  diskSizeBytes: z.coerce.number().int().min(1 << 20).default(4 * 1024 * 1024 * 1024),
  disks: z.coerce.number().int().min(1).max(16).default(1),
  clusterName: z.string().default('local'),
  /** Write no TLS section: the nodes accept anyone (benchmarks comparing with other systems). */
  insecure: z.boolean().default(false),
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
      ...(o.statusBasePort !== undefined ? { statusPage: { listen: `127.0.0.1:${o.statusBasePort + i}`, anonymous: true } } : {}),
      ...(o.insecure ? {} : { tls: credentialFiles(join(nodeDir, 'tls'), 'node') }),
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
  // One CA per cluster folder (kept on restart: the nodes' certificates stay valid), a node
  // certificate per node, and a client certificate for the owner's CLI in <dir>/client.
  const dir = resolve(o.dir);
  if (!o.insecure) {
    const ca = (await readCa(dir)) ?? (await writeNewCa(dir, `${o.clusterName}-${randomBytes(6).toString('hex')}`));
    for (const n of nodes) await issueInto(join(dir, `node${n.config.nodeId}`, 'tls'), ca, { kind: 'node', name: `node-${n.config.nodeId}`, ips: ['127.0.0.1'] });
    await issueInto(join(dir, 'client'), ca, { kind: 'client', name: 'client-admin' });
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
    .option('--rejoin', 'this member lost its data directory: the others take it back as a new member and re-seed it (its disks are kept)')
    .action(async (raw: { config: string; join?: boolean; rejoin?: boolean }) => {
      privateUmask();
      const cfg = await loadNodeConfig(raw.config);
      const { startNode } = await import('../../server/node.js');
      const log = logger('start', { node: cfg.nodeId });
      const signalled = untilSignal(log);
      if (raw.rejoin === true) {
        const { rejoinCluster } = await import('../../server/node-ops.js');
        const { loadIdentity, setTlsIdentity } = await import('../../rpc/security.js');
        if (cfg.tls !== undefined) setTlsIdentity(loadIdentity(cfg.tls)); // the node's own certificate asks
        await rejoinCluster(cfg, log);
      }
      const n = await startNode(cfg, { join: raw.join === true || raw.rejoin === true });
      process.stdout.write(
        `${JSON.stringify({ ready: true, nodeId: cfg.nodeId, address: n.address, metrics: n.metricsAddress ?? null, statusPage: n.statusPageAddress ?? null, pid: process.pid })}\n`,
      );
      const fatal = await Promise.race([signalled.then(() => undefined), n.failed]);
      await n.stop();
      // A node whose Raft failed ends with a non-zero status (systemd restarts it). Whatever
      // handle outlives stop() (a socket in its close handshake, a worker) must not keep the
      // process alive: it exits at once once stopped.
      const code = fatal === undefined ? 0 : 1;
      if (fatal !== undefined) process.stderr.write(`cairn: EIO: raft failed: ${fatal.message}\n`);
      log.info({ code }, 'exiting');
      process.exit(code);
    });
}
