/**
 * The diskmap controller: from the node registry to the one diskmap. Pure decision
 * (`decideDiskmap`) plus the loop the Raft leader runs (`DiskmapController`).
 *
 *  - No diskmap yet: wait until every node of the initial peer set has registered, then
 *    buildDiskmap over their usable disks (epoch 1).
 *  - A diskmap exists: disks registered that the map does not hold are added (growth is applied
 *    automatically, planChange moves close to the minimum). Nothing is ever removed or shrunk
 *    here: a disk that vanishes from the registry or fails stays in the map until an operator
 *    drains it. A disk slot re-registered with a new incarnation (a replaced disk) is left to the
 *    operator too, and logged.
 *  - A draining disk that no group holds a bucket on any more (its drain is planned) and whose
 *    node says it holds no shard any more (every bucket of it listed empty, the handoff bucket
 *    too: the data movers are done) is retired: its state becomes "removed" in a new epoch, so
 *    it takes nothing, is never re-added by growth, and `cairn node remove` may drop it.
 *  - Every proposal is a compare-and-set on the epoch (DiskmapPropose); a lost race is simply
 *    decided again on the next tick from the new state.
 */
import { CairnError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { counter, gauge } from '../common/metrics.js';
import {
  bucketId,
  bucketsOf,
  buildDiskmap,
  diskEntries,
  diskKeyOf,
  diskLabel,
  withDiskState,
  HANDOFF_BUCKET,
  type BucketId,
  diskmapToJson,
  parseDiskmap,
  planChange,
  serializeDiskmap,
  DEFAULT_BUCKET_SIZE_BYTES,
  type Diskmap,
  type Topology,
  type TopologyMachine,
} from '../diskmap/index.js';
import type { MetaClient } from '../meta/client.js';
import { topologyOf, type NodeRecord } from './registry.js';

const metrics = {
  epoch: gauge('cairn_diskmap_epoch', 'Epoch of the diskmap this node last saw'),
  proposals: counter('cairn_diskmap_proposals_total', 'Diskmap proposals by the controller, by result', ['result']),
};

const MIB = 1024 * 1024;

/** Largest power of two ≤ smallest data disk / 16, within [1 MiB, 64 GiB]. */
export function autoBucketSizeBytes(t: Topology): number {
  const caps = t.machines.flatMap((m) => m.disks.map((d) => d.capacityBytes));
  if (caps.length === 0) return DEFAULT_BUCKET_SIZE_BYTES;
  const target = Math.min(...caps) / 16;
  let size = MIB;
  while (size * 2 <= target && size * 2 <= DEFAULT_BUCKET_SIZE_BYTES) size *= 2;
  return size;
}

export type Decision =
  | { kind: 'none'; why: string }
  | { kind: 'propose'; diskmap: Diskmap; why: string; warnings: string[] }
  | { kind: 'refused'; why: string };

const loc = (m: { dc: number; row: number; rack: number; machine: number }): string => `${m.dc}.${m.row}.${m.rack}.${m.machine}`;

/** The old topology plus every registered disk it does not hold yet (never minus anything). */
export function grownTopology(old: Topology, registered: Topology): { topology: Topology; added: string[]; skipped: string[] } {
  const added: string[] = [];
  const skipped: string[] = [];
  const machines: TopologyMachine[] = old.machines.map((m) => ({ ...m, disks: [...m.disks] }));
  const byLoc = new Map(machines.map((m, i) => [loc(m), i]));
  for (const rm of registered.machines) {
    const i = byLoc.get(loc(rm));
    if (i === undefined) {
      machines.push(rm);
      byLoc.set(loc(rm), machines.length - 1);
      added.push(...rm.disks.map((d) => `${rm.name}/${d.disk}`));
      continue;
    }
    const m = machines[i] as TopologyMachine;
    const disks = [...m.disks];
    for (const d of rm.disks) {
      const have = disks.find((x) => x.disk === d.disk);
      if (have === undefined) {
        disks.push(d);
        added.push(`${m.name}/${d.disk}`);
      } else if (have.incarnation !== d.incarnation) {
        skipped.push(`${m.name}/${d.disk}: registered with incarnation ${d.incarnation.toString(16)}, the map holds ${have.incarnation.toString(16)} (a replaced disk: repair or drain it explicitly)`);
      }
    }
    machines[i] = { ...m, disks };
  }
  return { topology: { name: old.name, machines }, added, skipped };
}

/** A draining disk no group uses any more: what is left is to check its node holds none of its shards. */
export interface DrainedDisk {
  /** "MACHINE/DISK", e.g. node2/1. */
  ref: string;
  key: string;
  /** Every bucket the disk may hold shards in (its carved buckets and its handoff bucket). */
  buckets: BucketId[];
}

/** The draining disks of a map that no (non-retired) group holds a bucket on. */
export function drainedDisks(dm: Diskmap): DrainedDisk[] {
  const used = new Set<string>();
  for (const g of dm.groups) if (!g.retired) for (const b of g.buckets) used.add(diskKeyOf(b));
  const out: DrainedDisk[] = [];
  for (const e of diskEntries(dm.topology)) {
    if (e.d.state !== 'draining' || used.has(e.key)) continue;
    const m = e.machine;
    const at = (bucket: number): BucketId => bucketId({ dc: m.dc, row: m.row, rack: m.rack, machine: m.machine, disk: e.d.disk, bucket, incarnation: e.d.incarnation });
    const n = bucketsOf(e.d.capacityBytes, dm.bucketSizeBytes);
    out.push({ ref: diskLabel(e), key: e.key, buckets: [...Array.from({ length: n }, (_, i) => at(i)), at(HANDOFF_BUCKET)] });
  }
  return out;
}

/** What the controller should do given the current map (or none) and the registry. */
export function decideDiskmap(
  current: Diskmap | undefined,
  nodes: readonly NodeRecord[],
  opts: { initialPeers: readonly number[]; bucketSizeBytes?: number; clusterName: string; emptyDrained?: readonly string[] },
): Decision {
  const registered = topologyOf(nodes, opts.clusterName);
  if (current === undefined) {
    const ids = new Set(nodes.map((n) => n.nodeId));
    const missing = opts.initialPeers.filter((p) => !ids.has(p));
    if (missing.length > 0) return { kind: 'none', why: `waiting for node(s) ${missing.join(', ')} of the initial peer set to register` };
    if (registered.machines.length === 0) return { kind: 'none', why: 'no registered node has a usable disk' };
    const bucketSizeBytes = opts.bucketSizeBytes ?? autoBucketSizeBytes(registered);
    try {
      const dm = buildDiskmap(registered, { bucketSizeBytes });
      return { kind: 'propose', diskmap: dm, why: `first diskmap over ${registered.machines.length} machine(s)`, warnings: [] };
    } catch (err) {
      return { kind: 'refused', why: err instanceof Error ? err.message : String(err) };
    }
  }
  const g = grownTopology(current.topology, registered);
  if (g.added.length === 0 && (opts.emptyDrained ?? []).length > 0) {
    const refs = [...(opts.emptyDrained ?? [])];
    const plan = planChange(current, withDiskState(current.topology, refs, 'removed'), { reason: `retire drained ${refs.join(', ')}` });
    if (plan.refused !== undefined) return { kind: 'refused', why: plan.refused.join('; ') };
    return { kind: 'propose', diskmap: plan.diskmap, why: `retired ${refs.join(', ')} (drained: no shard left on it)`, warnings: [...plan.warnings] };
  }
  if (g.added.length === 0) return { kind: 'none', why: g.skipped.length > 0 ? g.skipped.join('; ') : 'every registered disk is in the map' };
  const plan = planChange(current, g.topology, { reason: `registered: ${g.added.join(', ')}` });
  if (plan.refused !== undefined) return { kind: 'refused', why: plan.refused.join('; ') };
  if (plan.diskmap.epoch === current.epoch) return { kind: 'none', why: 'the plan changes nothing' };
  return { kind: 'propose', diskmap: plan.diskmap, why: `added ${g.added.join(', ')}`, warnings: [...plan.warnings, ...g.skipped] };
}

/** Parse the stored document; undefined for epoch 0 (no map yet). */
export function loadDiskmap(rec: { epoch: number; documentJson: string }): Diskmap | undefined {
  if (rec.epoch === 0 || rec.documentJson === '') return undefined;
  return parseDiskmap(rec.documentJson, `diskmap epoch ${rec.epoch}`);
}

/** One controller step on the leader: read, decide, compare-and-set. Returns what it did. */
export async function controllerStep(
  meta: MetaClient,
  /** The registry, or how to read it: read after the map, it is never older than the map (a removed node is not added back). */
  registry: readonly NodeRecord[] | (() => Promise<readonly NodeRecord[]>),
  opts: {
    initialPeers: readonly number[];
    bucketSizeBytes?: number;
    clusterName: string;
    /** Does this bucket hold no shard? (Asked of its node; a node that does not answer: not known empty.) */
    bucketEmpty?: (b: BucketId) => Promise<boolean>;
  },
  log: Logger,
): Promise<Decision> {
  const rec = await meta.diskmapGet();
  const nodes = typeof registry === 'function' ? await registry() : registry;
  const current = loadDiskmap(rec);
  metrics.epoch.set(rec.epoch);
  const emptyDrained: string[] = [];
  if (current !== undefined && opts.bucketEmpty !== undefined) {
    for (const dd of drainedDisks(current)) {
      let empty = true;
      for (const b of dd.buckets) {
        if (!(await opts.bucketEmpty(b).catch(() => false))) {
          empty = false;
          break;
        }
      }
      if (empty) emptyDrained.push(dd.ref);
    }
  }
  const d = decideDiskmap(current, nodes, { ...opts, emptyDrained });
  if (d.kind === 'refused') {
    metrics.proposals.inc({ result: 'refused' });
    log.warn({ epoch: rec.epoch, why: d.why }, 'diskmap change refused');
    return d;
  }
  if (d.kind === 'none') return d;
  const json = diskmapToJson(d.diskmap);
  try {
    await meta.diskmapPropose(rec.epoch, serializeDiskmap(d.diskmap), JSON.stringify(json.diff ?? {}));
  } catch (err) {
    if (err instanceof CairnError && err.code === 'ECONFLICT') {
      metrics.proposals.inc({ result: 'conflict' });
      return { kind: 'none', why: 'lost a compare-and-set race; deciding again' };
    }
    metrics.proposals.inc({ result: 'error' });
    throw err;
  }
  metrics.proposals.inc({ result: 'applied' });
  metrics.epoch.set(d.diskmap.epoch);
  log.info({ epoch: d.diskmap.epoch, scheme: d.diskmap.scheme, groups: d.diskmap.groups.length, why: d.why, warnings: d.warnings }, 'diskmap proposed');
  return d;
}
