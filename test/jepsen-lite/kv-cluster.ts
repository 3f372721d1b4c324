/**
 * A cluster of real `cairn kv serve` daemons (the trivial Raft key-value group, src/raft/kv) for
 * fault-injection runs: N processes with their own data dirs and ports, whose peer addresses point at
 * per-link fault proxies (proxy.ts), supervised (supervisor.ts), and exposed as a NemesisTarget.
 * Clients talk to each node directly (partitions cut node-to-node links, as in Jepsen).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RaftConfig } from '../../src/common/config.js';
import { CairnError } from '../../src/common/errors.js';
import { KvClient } from '../../src/raft/kv/client.js';
import { freePort } from '../helpers/env.js';
import { loseDirectory, restoreDirectory, type NemesisTarget } from './nemesis.js';
import { LinkNetwork, type Components, type NodeId } from './proxy.js';
import { Supervisor, cairnCommand, type SupervisedProcess } from './supervisor.js';

export interface KvClusterOptions {
  readonly nodes: number;
  /** Where node data dirs, configs and logs go. */
  readonly dir: string;
  readonly raft?: Partial<RaftConfig>;
  readonly readyTimeoutMs?: number;
}

/** Raft timing for runs on a small shared machine: elections in about a second. */
export const RUN_RAFT_DEFAULTS: Partial<RaftConfig> = { tickMs: 50, electionTicks: 20, heartbeatTicks: 2 };

export class KvCluster implements NemesisTarget {
  private constructor(
    readonly ids: readonly NodeId[],
    private readonly listen: ReadonlyMap<NodeId, string>,
    readonly net: LinkNetwork,
    readonly supervisor: Supervisor,
    private readonly dir: string,
    private readonly readyTimeoutMs: number,
  ) {}

  static async start(o: KvClusterOptions): Promise<KvCluster> {
    if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 9) throw new CairnError('EINVAL', 'a kv cluster has 1..9 nodes');
    const ids = Array.from({ length: o.nodes }, (_, i) => i + 1);
    const listen = new Map<NodeId, string>();
    for (const id of ids) listen.set(id, `127.0.0.1:${await freePort()}`);
    const net = await LinkNetwork.create(ids, (id) => listen.get(id)!);
    const supervisor = new Supervisor();
    const cluster = new KvCluster(ids, listen, net, supervisor, o.dir, o.readyTimeoutMs ?? 60_000);
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
        };
        const configFile = join(nodeDir, 'config.json');
        await writeFile(configFile, `${JSON.stringify(config, null, 2)}\n`);
        const { command, args } = cairnCommand(['kv', 'serve', '--config', configFile]);
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
        const c = new KvClient([this.endpoint(id)], 1_000);
        try {
          const s = await c.status(0);
          if (s.leader > 0) votes.set(s.leader, (votes.get(s.leader) ?? 0) + 1);
        } catch {
          // an unreachable node has no say
        } finally {
          c.close();
        }
      }),
    );
    let best: NodeId | undefined;
    for (const [id, n] of votes) if (best === undefined || n > votes.get(best)!) best = id;
    return best;
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
