/**
 * The node's metrics read at scrape time (prom-client gauges with a collect hook): Raft state,
 * disk fill, the repair job's progress, and the write cache's dirty bytes and commit states.
 * (Guest shards held for rebalance/catch-up: cairn_catchup_guests_held, set by catch-up.ts.)
 * Counters that count events (metadata ops, shard I/O, scrub, mover, GC, RPC refusals) live
 * beside the code that counts them; docs/operations.md lists every metric name, and
 * ops/grafana and ops/prometheus use only those (test/server/metrics.test.ts checks it).
 *
 * Several nodes may share a process (tests, one-process clusters): each registers a source and
 * every gauge carries a `node` label.
 */
import { Gauge } from 'prom-client';
import { registry } from '../common/metrics.js';
import type { CairnFs } from '../client/fs.js';
import { diskFill } from './health.js';
import { chunkStoreOf } from './chunk-node.js';
import { clusterPartsOf } from './cluster.js';
import type { NodeContext, NodeServiceFactory } from './services.js';

type Setter = (g: Record<string, Gauge<string>>) => Promise<void> | void;
const sources = new Set<Setter>();

/** A gauge whose collect hook (run by prom-client before it reads the gauge) refreshes all of them once per scrape. */
function metric(name: string, help: string, labelNames: string[]): Gauge<string> {
  const existing = registry.getSingleMetric(name) as Gauge<string> | undefined;
  return existing ?? new Gauge({ name, help, labelNames, registers: [registry], collect: refresh });
}

/** Refresh every gauge from every source (the gauges of one scrape share one refresh). */
async function refresh(): Promise<void> {
  refreshing ??= (async () => {
    const g = gauges;
    if (g === undefined) return;
    for (const x of Object.values(g)) x.reset();
    for (const s of sources) await Promise.resolve(s(g)).catch(() => undefined);
  })().finally(() => (refreshing = undefined));
  await refreshing;
}

let gauges: Record<string, Gauge<string>> | undefined;
let refreshing: Promise<void> | undefined;

/** The gauges, made once per process; the first one's collect refreshes all of them. */
function all(): Record<string, Gauge<string>> {
  if (gauges !== undefined) return gauges;
  const g: Record<string, Gauge<string>> = {
    raftTerm: metric('cairn_raft_term', 'Current Raft term of this node', ['node']),
    raftCommit: metric('cairn_raft_commit_index', 'Highest Raft log index known committed', ['node']),
    raftApplied: metric('cairn_raft_applied_index', 'Highest Raft log index applied to the metadata state machine', ['node']),
    raftLast: metric('cairn_raft_last_index', 'Last index in this node\'s Raft log', ['node']),
    raftSnapshot: metric('cairn_raft_snapshot_index', 'Index of the newest Raft snapshot (log compacted up to it)', ['node']),
    raftLeader: metric('cairn_raft_leader_id', 'The leader this node knows (0: none)', ['node']),
    raftIsLeader: metric('cairn_raft_is_leader', 'Whether this node is the Raft leader (1) or not (0)', ['node']),
    raftVoters: metric('cairn_raft_voters', 'Voters in the Raft configuration', ['node']),
    raftLearners: metric('cairn_raft_learners', 'Learners in the Raft configuration', ['node']),
    diskCapacity: metric('cairn_disk_capacity_bytes', 'Configured capacity of a data disk', ['node', 'disk']),
    diskUsed: metric('cairn_disk_used_bytes', 'Bytes of a data disk\'s capacity in use (src/server/health.ts diskFill)', ['node', 'disk']),
    diskFree: metric('cairn_disk_free_bytes', 'Bytes of a data disk\'s capacity still free (never more than its file system has)', ['node', 'disk']),
    diskFill: metric('cairn_disk_fill_ratio', 'Used / capacity of a data disk (0..1)', ['node', 'disk']),
    repairRunning: metric('cairn_repair_running', 'Whether the repair job is counting or rebuilding (1) or not (0), as the newest published progress says', ['node']),
    repairProgress: metric('cairn_repair_progress_ratio', 'Bytes checked / bytes to check of the running repair (1 when none runs)', ['node']),
    repairEta: metric('cairn_repair_eta_seconds', 'Estimated seconds left of the running repair (-1: unknown or none)', ['node']),
    dirty: metric('cairn_client_dirty_bytes', 'Bytes written to this node\'s write cache and not yet durable in the chunk store', ['node']),
    files: metric('cairn_client_cached_files', 'Files in this node\'s write cache, by commit state', ['node', 'state']),
    readCache: metric('cairn_client_read_cache_bytes', 'Bytes of chunks in this node\'s read cache', ['node']),
  };
  gauges = g;
  return g;
}

/** Raft, disks, repair and catch-up of one node, as gauges (a service with no RPCs of its own). */
export const nodeMetricsFactory: NodeServiceFactory = async (ctx: NodeContext) => {
  const node = String(ctx.cfg.nodeId);
  all();
  const setter: Setter = async (g) => {
    const st = ctx.raft()?.status();
    if (st !== undefined) {
      g.raftTerm!.set({ node }, st.term);
      g.raftCommit!.set({ node }, st.commit);
      g.raftApplied!.set({ node }, st.applied);
      g.raftLast!.set({ node }, st.lastIndex);
      g.raftSnapshot!.set({ node }, st.snapshotIndex);
      g.raftLeader!.set({ node }, st.leader);
      g.raftIsLeader!.set({ node }, st.leader === st.id ? 1 : 0);
      g.raftVoters!.set({ node }, st.conf.voters.length);
      g.raftLearners!.set({ node }, st.conf.learners.length);
    }
    let store;
    try {
      store = chunkStoreOf(ctx);
    } catch {
      store = undefined;
    }
    if (store !== undefined) {
      const disks = store.diskStatus();
      const space = await store.diskSpace();
      disks.forEach((d, i) => {
        const cap = ctx.cfg.disks.find((c) => c.path === d.path)?.capacityBytes;
        if (cap === undefined) return;
        g.diskCapacity!.set({ node, disk: d.path }, cap);
        const f = d.state === 'ok' ? diskFill(cap, space[i]) : undefined;
        if (f === undefined) return;
        g.diskUsed!.set({ node, disk: d.path }, f.usedBytes);
        g.diskFree!.set({ node, disk: d.path }, f.freeBytes);
        g.diskFill!.set({ node, disk: d.path }, f.fill);
      });
    }
    let parts;
    try {
      parts = clusterPartsOf(ctx);
    } catch {
      parts = undefined;
    }
    if (parts !== undefined) {
      const rp = parts.view
        .registry()
        .map((n) => n.repair)
        .filter((r) => r !== undefined)
        .sort((a, b) => b.updatedAtMs - a.updatedAtMs)[0];
      const running = rp !== undefined && (rp.state === 'counting' || rp.state === 'repairing');
      g.repairRunning!.set({ node }, running ? 1 : 0);
      g.repairProgress!.set({ node }, running && rp.bytesTotal > 0 ? rp.bytesDone / rp.bytesTotal : 1);
      g.repairEta!.set({ node }, running && rp.etaSec !== null ? rp.etaSec : -1);
    }
  };
  return {
    name: 'metrics',
    definitions: [],
    started: () => void sources.add(setter),
    stop: async () => void sources.delete(setter),
  };
};

/** The write cache's dirty bytes, files by commit state and read cache of one node's CairnFs; returns the unregister. */
export function fileSystemMetrics(nodeId: number, fs: CairnFs): () => void {
  const node = String(nodeId);
  all();
  const setter: Setter = (g) => {
    const files = fs.cachedFiles();
    g.dirty!.set({ node }, files.reduce((s, f) => s + f.pendingBytes, 0));
    const byState = new Map<string, number>();
    for (const f of files) byState.set(f.state, (byState.get(f.state) ?? 0) + 1);
    for (const [state, n] of byState) g.files!.set({ node, state }, n);
    g.readCache!.set({ node }, fs.readCache.sizeBytes);
  };
  sources.add(setter);
  return () => void sources.delete(setter);
}
