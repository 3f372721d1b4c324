/**
 * A cluster of real Cairn daemons for fault-injection runs — `cairn kv serve` (the trivial Raft
 * key-value group, src/raft/kv) or `cairn start` (the metadata node, src/server) — N processes with
 * their own data dirs and ports, whose peer addresses point at per-link fault proxies (proxy.ts),
 * supervised (supervisor.ts), and exposed as a NemesisTarget. Clients talk to each node directly
 * (partitions cut node-to-node links, as in Jepsen).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RaftConfig } from '../../src/common/config.js';
import { CairnError } from '../../src/common/errors.js';
import { KvClient } from '../../src/raft/kv/client.js';
import { MetaClient } from '../../src/meta/client.js';
import { freePort } from '../helpers/env.js';
import { loseDirectory, restoreDirectory, type NemesisTarget } from './nemesis.js';
import { LinkNetwork, type Components, type NodeId } from './proxy.js';
import { Supervisor, cairnCommand, type SupervisedProcess } from './supervisor.js';

const STATUS_TIMEOUT_MS = 1_000;

/** Which daemon the nodes run. */
export type Daemon = 'kv' | 'meta';

const DAEMON_ARGS: Record<Daemon, (configFile: string) => string[]> = {
  kv: (f) => ['kv', 'serve', '--config', f],
  meta: (f) => ['start', '--config', f],
};

export interface ClusterOptions {
  readonly daemon?: Daemon;
  readonly nodes: number;
  /** Where node data dirs, configs and logs go. */
  readonly dir: string;
  readonly raft?: Partial<RaftConfig>;
  readonly readyTimeoutMs?: number;
  /** Chunk disks per node (directories beside the data dir; `cairn start` only), each `diskBytes`. */
  readonly disksPerNode?: number;
  readonly diskBytes?: number;
  /** The config's `daemon` section (`cairn start` only). */
  readonly daemonConfig?: Record<string, unknown>;
}

/** Capacity of a test disk when none is given. */
const DISK_BYTES_DEFAULT = 256 * 1024 * 1024;

/** Raft timing for runs on a small shared machine: elections in about a second. */
export const RUN_RAFT_DEFAULTS: Partial<RaftConfig> = { tickMs: 50, electionTicks: 20, heartbeatTicks: 2 };

export class Cluster implements NemesisTarget {
  private constructor(
    readonly daemon: Daemon,
    readonly ids: readonly NodeId[],
    private readonly listen: ReadonlyMap<NodeId, string>,
    readonly net: LinkNetwork,
    readonly supervisor: Supervisor,
    private readonly dir: string,
    private readonly readyTimeoutMs: number,
  ) {}

  static async start(o: ClusterOptions): Promise<Cluster> {
    if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 9) throw new CairnError('EINVAL', 'a cluster has 1..9 nodes');
    const ids = Array.from({ length: o.nodes }, (_, i) => i + 1);
    const listen = new Map<NodeId, string>();
    for (const id of ids) listen.set(id, `127.0.0.1:${await freePort()}`);
    const net = await LinkNetwork.create(ids, (id) => listen.get(id)!);
    const supervisor = new Supervisor();
    const cluster = new Cluster(o.daemon ?? 'kv', ids, listen, net, supervisor, o.dir, o.readyTimeoutMs ?? 60_000);
    try {
      for (const id of ids) {
        const nodeDir = join(o.dir, `n${id}`);
        await mkdir(join(nodeDir, 'data'), { recursive: true });
        await mkdir(join(nodeDir, 'cache'), { recursive: true });
        const config = {
          clusterName: 'jepsen-lite',
          nodeId: id,
          listen: listen.get(id)!,
          peers: ids.map((j) => ({ id: j, address: j === id ? listen.get(id)! : net.peerAddress(id, j) })),
          dataDir: join(nodeDir, 'data'),
          cacheDir: join(nodeDir, 'cache'),
          location: { machine: id },
          raft: { ...RUN_RAFT_DEFAULTS, ...o.raft },
          ...(o.disksPerNode === undefined
            ? {}
            : { disks: Array.from({ length: o.disksPerNode }, (_, d) => ({ path: join(nodeDir, `disk${d}`), disk: d, capacityBytes: o.diskBytes ?? DISK_BYTES_DEFAULT })) }),
          ...(o.daemonConfig === undefined ? {} : { daemon: o.daemonConfig }),
        };
        for (let d = 0; d < (o.disksPerNode ?? 0); d++) await mkdir(join(nodeDir, `disk${d}`), { recursive: true });
        const configFile = join(nodeDir, 'config.json');
        await writeFile(configFile, `${JSON.stringify(config, null, 2)}\n`);
        const { command, args } = cairnCommand(DAEMON_ARGS[o.daemon ?? 'kv'](configFile));
        supervisor.add({
          name: `n${id}`,
          command,
          args,
          env: { CAIRN_LOG_LEVEL: process.env.CAIRN_LOG_LEVEL ?? 'info' },
          logFile: join(nodeDir, 'node.log'),
          ready: (line) => line.includes('"ready":true'),
        });
      }
      await supervisor.startAll(cluster.readyTimeoutMs);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** The address clients use for node `id` (direct, not through a proxy). */
  endpoint(id: NodeId): string {
    const a = this.listen.get(id);
    if (a === undefined) throw new CairnError('EINVAL', `no node ${id}`);
    return a;
  }

  proc(id: NodeId): SupervisedProcess {
    return this.supervisor.get(`n${id}`);
  }

  dataDir(id: NodeId): string {
    return join(this.dir, `n${id}`, 'data');
  }

  async kill(node: NodeId): Promise<void> {
    await this.proc(node).kill9();
  }

  async restart(node: NodeId): Promise<void> {
    const p = this.proc(node);
    if (p.state === 'running' || p.state === 'paused') await p.kill9();
    await p.start(this.readyTimeoutMs);
  }

  async restartDead(): Promise<void> {
    for (const id of this.ids) {
      const p = this.proc(id);
      if (p.state === 'exited' || p.state === 'stopped') await p.start(this.readyTimeoutMs);
    }
  }

  async pause(node: NodeId): Promise<void> {
    this.proc(node).pause();
  }

  async resume(node: NodeId): Promise<void> {
    this.proc(node).resume();
  }

  async partition(components: Components): Promise<void> {
    this.net.partition(components);
  }

  async heal(): Promise<void> {
    this.net.heal();
  }

  /** The leader most running nodes report (asked directly, not through the proxies). */
  async leader(): Promise<NodeId | undefined> {
    const votes = new Map<number, number>();
    await Promise.all(
      this.ids.map(async (id) => {
        if (this.proc(id).state !== 'running') return;
        const leader = await this.leaderSeenBy(id).catch(() => 0); // an unreachable node has no say
        if (leader > 0) votes.set(leader, (votes.get(leader) ?? 0) + 1);
      }),
    );
    let best: NodeId | undefined;
    for (const [id, n] of votes) if (best === undefined || n > votes.get(best)!) best = id;
    return best;
  }

  /** The leader node `id` knows of (0: none). */
  private async leaderSeenBy(id: NodeId): Promise<number> {
    if (this.daemon === 'kv') {
      const c = new KvClient([this.endpoint(id)], STATUS_TIMEOUT_MS);
      try {
        return (await c.status(0)).leader;
      } finally {
        c.close();
      }
    }
    const c = new MetaClient({ endpoints: [this.endpoint(id)], timeoutMs: STATUS_TIMEOUT_MS, retryBudgetMs: 0 });
    try {
      return (await c.status(this.endpoint(id))).leaderId;
    } finally {
      c.close();
    }
  }

  async loseDisk(node: NodeId): Promise<void> {
    await loseDirectory(this.dataDir(node));
  }

  async restoreDisk(node: NodeId): Promise<void> {
    await restoreDirectory(this.dataDir(node));
  }

  /** Undo every fault: resume paused nodes, heal the network, restore disks, restart dead nodes. */
  async healAll(): Promise<void> {
    this.net.heal();
    for (const id of this.ids) {
      await restoreDirectory(this.dataDir(id));
      const p = this.proc(id);
      if (p.state === 'paused') p.resume();
      if (p.state === 'exited' || p.state === 'stopped') await p.start(this.readyTimeoutMs);
    }
  }

  async stop(): Promise<void> {
    await this.supervisor.stopAll(3_000);
    await this.net.close();
  }
}
