/**
 * Test fixture for the chunk layer: N chunk servers in this process, each with its own
 * formatted directory disks under a private temp dir, on 127.0.0.1 ports from freePort().
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir, freePort } from '../helpers/env.js';
import { ChunkStore } from '../../src/chunk/store.js';
import { startChunkServer } from '../../src/chunk/service.js';
import { ChunkClients } from '../../src/chunk/client.js';
import type { StartedServer } from '../../src/rpc/grpc.js';
import type { ShardTarget } from '../../src/chunk/types.js';

export interface TestNode {
  index: number;
  diskPaths: string[];
  store: ChunkStore;
  server: StartedServer | undefined;
  address: string;
}

export interface TestCluster {
  root: string;
  nodes: TestNode[];
  clients: ChunkClients;
  /** n shard targets, round-robin over nodes and their disks (shard i on node i % nodes). */
  targets(n: number, bucket?: number): ShardTarget[];
  stopNode(i: number): Promise<void>;
  startNode(i: number): Promise<void>;
  close(): Promise<void>;
}

export async function startCluster(nodeCount: number, disksPerNode = 1): Promise<TestCluster> {
  const dir = await tempDir('cairn-chunk-');
  const nodes: TestNode[] = [];
  for (let i = 0; i < nodeCount; i++) {
    const diskPaths: string[] = [];
    for (let d = 0; d < disksPerNode; d++) {
      const p = join(dir.path, `node${i}`, `disk${d}`);
      await ChunkStore.formatDisk(p, { dc: 0, row: 0, rack: 0, machine: i + 1, disk: d });
      diskPaths.push(p);
    }
    const store = await ChunkStore.open(diskPaths);
    const port = await freePort();
    const server = await startChunkServer(`127.0.0.1:${port}`, store);
    nodes.push({ index: i, diskPaths, store, server, address: server.address });
  }
  const clients = new ChunkClients();
  return {
    root: dir.path,
    nodes,
    clients,
    targets(n, bucket = 1) {
      const out: ShardTarget[] = [];
      for (let i = 0; i < n; i++) {
        const node = nodes[i % nodeCount] as TestNode;
        const disk = node.diskPaths[Math.floor(i / nodeCount) % disksPerNode] as string;
        out.push({ bucketId: node.store.bucketIdOn(disk, bucket), address: node.address });
      }
      return out;
    },
    async stopNode(i) {
      const node = nodes[i] as TestNode;
      await node.server?.stop();
      node.server = undefined;
    },
    async startNode(i) {
      const node = nodes[i] as TestNode;
      const port = Number(node.address.slice(node.address.lastIndexOf(':') + 1));
      node.server = await startChunkServer(`127.0.0.1:${port}`, node.store);
    },
    async close() {
      clients.close();
      for (const n of nodes) await n.server?.stop();
      // A handler whose caller already has its answer (a quorum's third replica, a call the
      // client gave up on) may still be writing its file: retry the removal until it is done.
      await rm(dir.path, { recursive: true, force: true, maxRetries: 20, retryDelay: 50 });
    },
  };
}

/** The node serving a target. */
export function nodeOf(cl: TestCluster, t: ShardTarget): TestNode {
  const n = cl.nodes.find((x) => x.address === t.address);
  if (n === undefined) throw new Error(`no node at ${t.address}`);
  return n;
}
