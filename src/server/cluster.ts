/**
 * The cluster side of a node daemon (one NodeServiceFactory, no gRPC of its own):
 *  - registers the node (address, location, disks with capacity/class/incarnation) in the
 *    registry once Raft runs, retrying until it lands;
 *  - on the Raft leader, runs the diskmap controller every `daemon.controllerIntervalMs`;
 *  - keeps a ClusterView (the current diskmap and registry, read from the local replica) that
 *    the file service's ChunkAdapter places chunks with: bucket → machine location → address;
 *  - executes the slot moves of every new diskmap epoch for the buckets it holds (src/server/
 *    mover.ts; the last epoch done is kept in <dataDir>/mover.json, and the last 16 epochs' moves
 *    are run again with every GC pass for writers that still used an older map);
 *  - runs chunk GC (referenced chunks from the metadata's current layouts, with a grace period)
 *    and a throttled scrub, with metrics.
 */
import { CairnError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { counter, gauge } from '../common/metrics.js';
import { MetaClient } from '../meta/client.js';
import { ChunkClients } from '../chunk/client.js';
import { collectGarbage } from '../chunk/gc.js';
import { Scrubber } from '../chunk/scrub.js';
import type { ChunkStore } from '../chunk/store.js';
import { formatBucketId, groupForKey, type BucketId, type Diskmap, type PlacementGroup } from '../diskmap/index.js';
import { schemeEquals, type Scheme as ChunkScheme } from '../chunk/types.js';
import { addressResolver, listNodes, registerNode, type NodeRecord, type RegistrySource } from './registry.js';
import { controllerStep, loadDiskmap } from './diskmap-controller.js';
import { chunkStoreOf } from './chunk-node.js';
import { executeMoves, movesOfDiff } from './mover.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurable } from '../common/durable.js';
import type { NodeContext, NodeServiceFactory } from './services.js';
import { catchUpPass, type CatchUpReport } from './catch-up.js';
import { RepairJob, findLostDisks, type RepairProgress } from './repair-job.js';

const metrics = {
  gcRuns: counter('cairn_node_gc_runs_total', 'Chunk GC passes run by the node daemon, by result', ['result']),
  gcReferenced: gauge('cairn_node_gc_referenced_chunks', 'Chunks referenced by current file layouts at the last GC pass'),
  inlineCorrupt: gauge('cairn_node_inline_corrupt_files', 'Files whose inline content failed its checksum at the last inline scrub of this node'),
  registered: gauge('cairn_node_registered', 'Whether this node\'s registry record is written (1) or not yet (0)'),
};

/** The node's current picture of the cluster: the diskmap and where each bucket is served. */
export class ClusterView {
  private dm: Diskmap | undefined;
  /** bucket text → group, built on first use per epoch. */
  private byBucket: Map<string, PlacementGroup> | undefined;
  private epoch = 0;
  private nodes: NodeRecord[] = [];
  private resolve: (b: BucketId) => string = () => {
    throw new CairnError('EUNAVAIL', 'no node registry read yet');
  };

  constructor(
    private readonly src: RegistrySource,
    private readonly readDiskmap: () => Promise<{ epoch: number; documentJson: string }>,
    private readonly log: Logger,
  ) {}

  /** Re-read the diskmap (when its epoch moved) and the registry. */
  async refresh(): Promise<void> {
    // Registry first: every disk of a map is registered before the map is proposed, so a map
    // read after the registry never names a node the registry read missed. Both are installed
    // together (no await in between), so readers never see a new map with an old registry.
    // Nodes taken out by `cairn node remove` neither serve buckets nor count as down.
    const nodes = (await listNodes(this.src, this.log)).filter((n) => n.removed !== true);
    const rec = await this.readDiskmap();
    const dm = rec.epoch !== this.epoch ? loadDiskmap(rec) : this.dm;
    this.nodes = nodes;
    this.resolve = addressResolver(nodes);
    if (rec.epoch !== this.epoch) {
      this.dm = dm;
      this.byBucket = undefined;
      this.epoch = rec.epoch;
      this.log.info({ epoch: rec.epoch }, 'diskmap loaded');
    }
  }

  /** The current diskmap; EAGAIN while the cluster has none yet. */
  diskmap(): Diskmap {
    if (this.dm === undefined) throw new CairnError('EAGAIN', 'the cluster has no diskmap yet: waiting for every initial node to register its disks');
    return this.dm;
  }

  /** The placement group a bucket (text form) belongs to in the current map, if any. */
  groupOfBucket(bucket: string): PlacementGroup | undefined {
    if (this.dm === undefined) return undefined;
    if (this.byBucket === undefined) {
      this.byBucket = new Map();
      for (const g of this.dm.groups) if (!g.retired) for (const b of g.buckets) this.byBucket.set(formatBucketId(b), g);
    }
    return this.byBucket.get(bucket);
  }

  hasDiskmap(): boolean {
    return this.dm !== undefined;
  }

  addressOf(b: BucketId): string {
    return this.resolve(b);
  }

  registry(): readonly NodeRecord[] {
    return this.nodes;
  }
}

export interface ClusterParts {
  view: ClusterView;
  clients: ChunkClients;
  /** A MetaClient that tries this node first, then its peers (closed when the cluster part stops). */
  meta: MetaClient;
  /** This node's address first, then its peers: for services that need their own MetaClient. */
  endpoints: string[];
  store: ChunkStore;
  /** The last catch-up pass of this node (guest shards held for homes that are down). */
  catchUp(): CatchUpReport | undefined;
}

const parts = new WeakMap<NodeContext, ClusterParts>();

/** How many past epochs' moves each GC pass runs again (cheap: listing emptied buckets). */
const MOVER_RERUN_EPOCHS = 16;

/** How often a node with a draining disk runs the recent epochs' moves again. */
const DRAIN_SWEEP_MS = 2_000;

/** The cluster parts of a node (for services listed after clusterFactory in NODE_SERVICES). */
export function clusterPartsOf(ctx: NodeContext): ClusterParts {
  const p = parts.get(ctx);
  if (p === undefined) throw new CairnError('EINVAL', 'clusterFactory must come before the services that use it in NODE_SERVICES');
  return p;
}

function nodeRecord(ctx: NodeContext, store: ChunkStore, address: string, repair?: RepairProgress): NodeRecord {
  const status = store.diskStatus();
  return {
    ...(repair !== undefined ? { repair } : {}),
    v: 1,
    nodeId: ctx.cfg.nodeId,
    address,
    location: { dc: ctx.cfg.location.dc, row: ctx.cfg.location.row, rack: ctx.cfg.location.rack, machine: ctx.cfg.location.machine },
    disks: ctx.cfg.disks.map((d) => {
      const s = status.find((x) => x.path === d.path);
      return {
        disk: s?.label?.disk ?? d.disk,
        path: d.path,
        capacityBytes: d.capacityBytes,
        class: d.class,
        incarnation: s?.label?.incarnation ?? '',
        state: s?.state === 'ok' ? ('ok' as const) : ('failed' as const),
        reason: (s?.reason ?? 'not opened').slice(0, 2000),
      };
    }),
    registeredAtMs: Date.now(),
  };
}

export const clusterFactory: NodeServiceFactory = async (ctx) => {
  const store = chunkStoreOf(ctx);
  const cfg = ctx.cfg;
  const log = ctx.log.child({ component: 'cluster' });
  const self = cfg.advertise ?? cfg.listen;
  const endpoints = [self, ...cfg.peers.map((p) => p.address).filter((a) => a !== self)];
  const meta = new MetaClient({ endpoints, timeoutMs: 5_000, retryBudgetMs: 10_000 });
  // This node's own disks are written and read without a socket (src/chunk/client.ts, direct calls).
  const clients = new ChunkClients({ local: [...new Set([self, cfg.listen])].map((address) => ({ address, store })) });
  const src: RegistrySource = () => ctx.meta.nodeRecords();
  const view = new ClusterView(src, () => ctx.meta.diskmap(), log);
  let lastCatchUp: CatchUpReport | undefined;
  parts.set(ctx, { view, clients, meta, store, endpoints, catchUp: () => lastCatchUp });

  const timers: NodeJS.Timeout[] = [];
  let stopped = false;
  const running = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    running.add(p);
    void p.finally(() => running.delete(p)).catch(() => undefined);
    return p;
  };
  let registered = false;
  let removedLogged = false;
  let registeredStates = '';
  let stepping = false;
  const d = cfg.daemon;

  const tick = async (): Promise<void> => {
    if (stopped || stepping) return;
    stepping = true;
    try {
      const raft = ctx.raft();
      // A disk that failed (or came back) since the last registration: register again, so that
      // the map's controller and the repair job see it.
      const diskStates = (await store.checkDisks()).map((x) => `${x.path}:${x.state}`).join(',');
      if (registered && raft !== undefined && diskStates !== registeredStates) registered = false;
      if (!registered && raft !== undefined) {
        // A node an operator removed (cairn node remove) stays out: it never registers again.
        if ((await listNodes(src, log)).some((n) => n.nodeId === cfg.nodeId && n.removed === true)) {
          if (!removedLogged) log.error('this node was removed from the cluster (cairn node remove): it does not register its disks; stop it');
          removedLogged = true;
          return;
        }
        clients.addLocal(raft.listenAddress, store);
        await registerNode(meta, nodeRecord(ctx, store, raft.listenAddress, repairJob.status().state === 'idle' ? undefined : repairJob.status()));
        registeredStates = diskStates;
        registered = true;
        metrics.registered.set(1);
        log.info({ disks: store.diskStatus().map((s) => `${s.path}:${s.state}`) }, 'node registered');
      }
      if (raft?.isLeader() === true) {
        await controllerStep(
          meta,
          () => listNodes(src, log),
          {
            initialPeers: cfg.peers.map((p) => p.id),
            bucketSizeBytes: d.bucketSizeBytes,
            clusterName: cfg.clusterName,
            // A drained disk is retired once its node lists every bucket of it empty.
            bucketEmpty: async (b) => (await clients.get(view.addressOf(b)).listBucket(formatBucketId(b), '', 1, { timeoutMs: 5_000 })).shards.length === 0,
          },
          log,
        );
      }
      await view.refresh();
      if (view.hasDiskmap() && view.diskmap().epoch > movedEpoch) void track(runMover(false));
      else if (view.hasDiskmap() && Date.now() - lastSweepMs > DRAIN_SWEEP_MS && drainingHere(view.diskmap())) {
        // While a disk of this node drains, the recent epochs' moves run again every few seconds:
        // a writer (or catch-up) with an older map may have put a shard into a bucket its slot
        // left after the first pass; the disk is retired only once it holds nothing.
        lastSweepMs = Date.now();
        void track(runMover(true));
      }
    } catch (err) {
      const code = err instanceof CairnError ? err.code : 'EIO';
      // Before a leader exists every step fails; say so quietly.
      if (code === 'EUNAVAIL' || code === 'ENOTLEADER' || code === 'ETIMEDOUT' || code === 'EAGAIN') log.debug({ err: String(err) }, 'cluster step postponed');
      else log.warn({ err: String(err) }, 'cluster step failed; retrying');
    } finally {
      stepping = false;
    }
  };

  // ---- the data mover
  const moverFile = join(cfg.dataDir, 'mover.json');
  let movedEpoch = await readFile(moverFile, 'utf8').then(
    (t) => {
      const v = (JSON.parse(t) as { epoch?: unknown }).epoch;
      return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : 0;
    },
    () => 0,
  );
  let moving = false;
  let lastSweepMs = 0;
  const drainingHere = (dm: Diskmap): boolean =>
    dm.topology.machines.some(
      (m) => m.dc === cfg.location.dc && m.row === cfg.location.row && m.rack === cfg.location.rack && m.machine === cfg.location.machine && m.disks.some((x) => x.state === 'draining'),
    );
  const moveEpoch = async (e: number): Promise<boolean> => {
    if (e < 2) return true;
    const change = await ctx.meta.diskmapChange(e);
    if (change === undefined) return true;
    const dm = view.diskmap();
    const holderOf = (g: number, i: number): string | undefined => {
      const b = dm.groups[g]?.buckets[i];
      return b === undefined ? undefined : formatBucketId(b);
    };
    const r = await executeMoves(movesOfDiff(change.diffJson, log), { change: e, current: dm.epoch }, store, clients, (b) => view.addressOf(b), holderOf, log);
    return r.failed === 0;
  };
  /**
   * Run the moves of every epoch not done yet; with `again`, also those of the last
   * MOVER_RERUN_EPOCHS epochs (shards a writer with an older map put into a bucket since left).
   */
  const runMover = async (again: boolean): Promise<void> => {
    if (moving || !view.hasDiskmap()) return;
    moving = true;
    try {
      const current = view.diskmap().epoch;
      if (again) for (let e = Math.max(2, movedEpoch - MOVER_RERUN_EPOCHS + 1); e <= movedEpoch; e++) await moveEpoch(e);
      while (movedEpoch < current) {
        if (!(await moveEpoch(movedEpoch + 1))) return; // retried on the next tick
        movedEpoch += 1;
        await writeFileDurable(moverFile, `${JSON.stringify({ epoch: movedEpoch })}\n`);
      }
    } catch (err) {
      log.warn({ err: String(err) }, 'data mover pass failed; retrying');
    } finally {
      moving = false;
    }
  };

  const gcPass = async (): Promise<void> => {
    const raft = ctx.raft();
    if (raft === undefined) return;
    try {
      await raft.readIndex({ timeoutMs: 10_000 });
      // The chunks of every current layout (a set: bounded by the number of live chunks).
      const referenced = new Set<string>();
      let after = 0;
      for (;;) {
        const rows = await ctx.meta.scanLayouts(after, 1000);
        for (const r of rows) for (const e of r.extents) referenced.add(e.chunkHash);
        if (rows.length < 1000) break;
        after = (rows[rows.length - 1] as { ino: number }).ino;
      }
      // Versions pinned by open handles (superseded or unlinked since), and the safe point of
      // commits in flight: every shard stored since the oldest live write lease was granted.
      for (const r of await ctx.meta.retainedLayouts()) for (const e of r.extents) referenced.add(e.chunkHash);
      const safePoint = await ctx.meta.gcSafePointMs(Date.now());
      metrics.gcReferenced.set(referenced.size);
      const report = await collectGarbage(store, {
        graceMs: d.gc.graceMs,
        // Minus a minute for clock differences between the leader (lease times) and this node (mtimes).
        ...(safePoint !== undefined ? { keepNewerThanMs: safePoint - 60_000 } : {}),
        isReferenced: async (hashes) => new Set(hashes.filter((h) => referenced.has(h))),
      });
      metrics.gcRuns.inc({ result: 'ok' });
      await runMover(true);
      if (report.deleted > 0) log.info({ deleted: report.deleted, bytesFreed: report.bytesFreed, scanned: report.scanned }, 'chunk GC pass');
    } catch (err) {
      metrics.gcRuns.inc({ result: 'error' });
      log.warn({ err: String(err) }, 'chunk GC pass failed');
    }
  };

  const scrubInline = async (): Promise<void> => {
    try {
      const r = await ctx.meta.scrubInline();
      metrics.inlineCorrupt.set(r.bad.length);
      if (r.bad.length > 0) {
        log.error({ inodes: r.bad.slice(0, 20), bad: r.bad.length, checked: r.checked }, 'inline file content in this node\'s metadata fails its checksum; wipe this node and let it rejoin from a snapshot (docs/meta.md)');
      }
    } catch (err) {
      log.warn({ err: String(err) }, 'inline scrub failed');
    }
  };

  // ---- repair: the shards of lost disks rebuilt elsewhere (the leader runs it)
  const downSince = new Map<number, number>();
  const repairJob = new RepairJob({
    clients,
    diskmap: () => view.diskmap(),
    addressOf: (b) => view.addressOf(b),
    scanLayouts: (after, limit) => ctx.meta.scanLayouts(after, limit),
    dataDir: cfg.dataDir,
    rateBytesPerSec: d.repair.rateBytesPerSec,
    log,
    stopped: () => stopped || ctx.raft()?.isLeader() !== true,
    publish: async (p) => {
      const raft = ctx.raft();
      if (raft !== undefined) await registerNode(meta, nodeRecord(ctx, store, raft.listenAddress, p));
    },
  });
  const repairStep = async (): Promise<void> => {
    if (stopped || !view.hasDiskmap() || ctx.raft()?.isLeader() !== true) {
      downSince.clear(); // a new leader starts the grace afresh: it may delay a rebuild, never hasten one
      return;
    }
    try {
      const lost = await findLostDisks(view.registry(), (n) => clients.get(n.address).diskStatus({ timeoutMs: 2_000 }), downSince, d.repair.downGraceMs);
      await repairJob.step(lost);
    } catch (err) {
      log.warn({ err: String(err) }, 'repair step failed; retrying');
    }
  };

  // ---- catch-up: guest shards (written while their home was down) go home
  let catchingUp = false;
  const catchUp = async (): Promise<void> => {
    if (catchingUp || stopped || !view.hasDiskmap()) return;
    catchingUp = true;
    try {
      lastCatchUp = await catchUpPass(store, clients, view.diskmap(), (b) => view.addressOf(b), log, { stopped: () => stopped });
    } catch (err) {
      log.warn({ err: String(err) }, 'catch-up pass failed; retrying');
    } finally {
      catchingUp = false;
    }
  };

  const scrubber = new Scrubber(store, {
    rateBytesPerSec: d.scrub.rateBytesPerSec,
    clients,
    checkPeers: false,
    // The shard's own bucket names its group (a bucket belongs to one group); the key's group
    // under the current map is only the fallback, since growth may have moved the key since.
    locate: async (hash, scheme, bucket) => {
      if (!view.hasDiskmap()) return undefined;
      const dm = view.diskmap();
      if (!schemeEquals(dm.scheme as ChunkScheme, scheme)) return undefined;
      const g = view.groupOfBucket(bucket) ?? groupForKey(dm, Buffer.from(hash, 'hex'));
      return { scheme: scheme as ChunkScheme, targets: g.buckets.map((b) => ({ bucketId: b, address: view.addressOf(b) })) };
    },
  });

  return {
    name: 'cluster',
    definitions: [],
    started: () => {
      void track(tick());
      timers.push(setInterval(() => void track(tick()), d.controllerIntervalMs));
      if (d.gc.enabled) timers.push(setInterval(() => void track(gcPass()), d.gc.intervalMs));
      timers.push(setInterval(() => void track(catchUp()), d.repair.catchUpIntervalMs));
      timers.push(setInterval(() => void track(repairStep()), d.repair.catchUpIntervalMs));
      if (d.scrub.enabled) {
        // The first pass after one interval, not at start-up (a restart should not cost a full read).
        timers.push(setTimeout(() => scrubber.start(d.scrub.intervalMs), d.scrub.intervalMs));
        // Inline file content in this node's metadata replica: every blob against its SHA-256.
        timers.push(setInterval(() => void track(scrubInline()), d.scrub.intervalMs));
      }
      for (const t of timers) t.unref();
    },
    stop: async () => {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      await scrubber.stop();
      await Promise.allSettled([...running]);
      meta.close();
      clients.close();
    },
  };
};

