/**
 * The real services for client tests: a 3-node metadata cluster (startNode, Raft over gRPC on
 * 127.0.0.1) and three chunk servers with directory disks, plus the client ports bound to
 * them through src/client/adapters.ts. `spec` is a JSON-able description a child process uses
 * to build the same ports (portsFromSpec) — for kill -9 tests against the real services.
 */
import { join } from 'node:path';
import { nodeConfigSchema } from '../../../src/common/config.js';
import { startNode, type CairnNode } from '../../../src/server/node.js';
import { MetaClient } from '../../../src/meta/client.js';
import { ChunkClients } from '../../../src/chunk/client.js';
import { formatBucketId, parseBucketId } from '../../../src/chunk/types.js';
import type { Diskmap, BucketId } from '../../../src/diskmap/index.js';
import { MetaAdapter, ChunkAdapter } from '../../../src/client/adapters.js';
import { eventually, freePort } from '../../helpers/env.js';
import { startCluster, type TestCluster } from '../../chunk/cluster.js';

export interface ServicesSpec {
  metaEndpoints: string[];
  /** Shard i of every chunk goes to buckets[i] (one placement group, EC 2+1). */
  buckets: Array<{ bucket: string; address: string }>;
}

export interface RealServices {
  spec: ServicesSpec;
  metaClient: MetaClient;
  meta: MetaAdapter;
  chunks: ChunkAdapter;
  chunkCluster: TestCluster;
  /** The metadata nodes (their state machines, for GC tests). */
  nodes: CairnNode[];
  close(): Promise<void>;
}

function diskmapOf(spec: ServicesSpec): Diskmap {
  return {
    format: 1,
    epoch: 1,
    topology: { name: 'client-test', machines: [] },
    bucketSizeBytes: 64 * 1024 * 1024,
    dataClass: 'hdd',
    scheme: { kind: 'ec', k: 2, m: 1 },
    failureDomain: 'machine',
    maxShardsPerDomain: 1,
    unsafe: false,
    groups: [{ id: 0, buckets: spec.buckets.map((b) => parseBucketId(b.bucket)), retired: false }],
    vslotBits: 0,
    vslotGroup: new Uint32Array([0]),
    diff: null,
  };
}

/** Client ports for a spec (also used by child processes). */
export function portsFromSpec(spec: ServicesSpec, clients = new ChunkClients()): { metaClient: MetaClient; meta: MetaAdapter; chunks: ChunkAdapter; clients: ChunkClients } {
  const metaClient = new MetaClient({ endpoints: spec.metaEndpoints });
  const dm = diskmapOf(spec);
  const addr = new Map(spec.buckets.map((b) => [b.bucket, b.address]));
  const chunks = new ChunkAdapter(
    clients,
    {
      diskmap: () => dm,
      addressOf: (b: BucketId) => {
        const a = addr.get(formatBucketId(b));
        if (a === undefined) throw new Error(`no chunk server for bucket ${formatBucketId(b)}`);
        return a;
      },
    },
    10_000,
  );
  return { metaClient, meta: new MetaAdapter(metaClient), chunks, clients };
}

/** `daemon`: fields of the nodes' daemon config section (e.g. inlineBudgetBytes). */
export async function startRealServices(baseDir: string, daemon: Record<string, unknown> = {}): Promise<RealServices> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => ({ id: i + 1, address: `127.0.0.1:${p}` }));
  const nodes: CairnNode[] = [];
  for (let i = 0; i < 3; i++) {
    const dir = join(baseDir, `meta${i + 1}`);
    const cfg = nodeConfigSchema.parse({
      clusterName: 'client-test',
      nodeId: i + 1,
      listen: peers[i]!.address,
      peers,
      dataDir: join(dir, 'data'),
      cacheDir: join(dir, 'cache'),
      location: { machine: i },
      raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 2 },
      daemon,
    });
    nodes.push(await startNode(cfg));
  }
  await eventually(() => nodes.some((n) => n.raft.isLeader()), 20_000);
  const chunkCluster = await startCluster(3);
  const spec: ServicesSpec = {
    metaEndpoints: peers.map((p) => p.address),
    buckets: chunkCluster.targets(3).map((t) => ({ bucket: formatBucketId(t.bucketId), address: t.address })),
  };
  const { metaClient, meta, chunks } = portsFromSpec(spec, chunkCluster.clients);
  return {
    spec,
    metaClient,
    meta,
    chunks,
    chunkCluster,
    nodes,
    async close() {
      metaClient.close();
      await chunkCluster.close();
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}
