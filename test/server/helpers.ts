/**
 * Test plumbing for whole node daemons: configs of an n-node cluster on 127.0.0.1 with small
 * directory disks (fast Raft ticks, GC and scrub off unless asked), started in this process
 * with startNode over real gRPC.
 */
import { join } from 'node:path';
import { nodeConfigSchema, type NodeConfig } from '../../src/common/config.js';
import { startNode, type CairnNode } from '../../src/server/node.js';
import { FileClient } from '../../src/server/file-client.js';
import { eventually, freePort } from '../helpers/env.js';

export const DISK_BYTES = 256 * 1024 * 1024;

export async function clusterConfigs(
  dir: string,
  n: number,
  disksPerNode = 1,
  gc?: { intervalMs: number; graceMs: number },
  scrub?: { intervalMs: number; rateBytesPerSec: number },
): Promise<NodeConfig[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const peers = ports.map((p, i) => ({ id: i + 1, address: `127.0.0.1:${p}` }));
  return peers.map((p, i) =>
    nodeConfigSchema.parse({
      clusterName: 'test',
      nodeId: p.id,
      listen: p.address,
      peers,
      dataDir: join(dir, `node${p.id}`, 'data'),
      cacheDir: join(dir, `node${p.id}`, 'cache'),
      location: { machine: i },
      disks: Array.from({ length: disksPerNode }, (_, d) => ({ path: join(dir, `node${p.id}`, `disk${d}`), disk: d, capacityBytes: DISK_BYTES })),
      raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 2 },
      daemon: {
        controllerIntervalMs: 200,
        file: { idleCommitDelayMs: 100, chunkSizeBytes: 1024 * 1024 },
        gc: gc === undefined ? { enabled: false } : { enabled: true, ...gc },
        scrub: scrub === undefined ? { enabled: false } : { enabled: true, ...scrub },
      },
    }),
  );
}

export async function startAll(cfgs: NodeConfig[]): Promise<CairnNode[]> {
  const nodes = await Promise.all(cfgs.map((c) => startNode(c)));
  await eventually(() => nodes.some((x) => x.raft.isLeader()), 20_000);
  return nodes;
}

/** Wait until the cluster (as node `via` sees it) has a diskmap at `epoch` or later. */
export async function waitForDiskmap(via: FileClient, epoch = 1, timeoutMs = 30_000): Promise<Awaited<ReturnType<FileClient['cluster']>>> {
  return eventually(async () => {
    const c = await via.cluster();
    return c.diskmapEpoch >= epoch ? c : undefined;
  }, timeoutMs, 100);
}

export async function* randomPieces(total: number, seed: number): AsyncGenerator<Buffer> {
  // Deterministic pseudo-random bytes (xorshift), generated piece by piece.
  let x = seed >>> 0 || 1;
  for (let at = 0; at < total; at += 256 * 1024) {
    const n = Math.min(256 * 1024, total - at);
    const b = Buffer.alloc(n + 3);
    for (let i = 0; i < n; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      b.writeUInt32LE(x >>> 0, i);
    }
    yield b.subarray(0, n);
  }
}

/** Shard files on a set of disk directories (what GC may delete). */
export async function countShardFiles(diskPaths: string[], match: (name: string) => boolean = () => true): Promise<number> {
  const { readdir } = await import('node:fs/promises');
  let n = 0;
  for (const d of diskPaths) {
    for (const b of await readdir(d).catch(() => [] as string[])) {
      for (const hh of await readdir(join(d, b, 'shards')).catch(() => [] as string[])) {
        n += (await readdir(join(d, b, 'shards', hh)).catch(() => [] as string[])).filter(match).length;
      }
    }
  }
  return n;
}
