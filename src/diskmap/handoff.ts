/**
 * Writes while part of a group is down (pure): where a chunk of group g goes when some of its
 * slots are on a down disk or machine, and what that placement survives.
 *
 *  1. handoff — each down slot's shard goes to a live disk outside the group, in that disk's
 *     handoff bucket (bucket number HANDOFF_BUCKET, never part of a group), keeping the map's
 *     failure-domain rule where some disk allows it, else the strongest separation left (fewest
 *     shards on any one machine, then rack, …). Same encoding as home: moving home later is a
 *     plain copy. Slots that find no live disk outside the group are left missing (rebuilt from
 *     the others later). Used whenever what is written still survives one more disk
 *     (live + handed-off shards ≥ k + 1).
 *  2. replicas — otherwise (too few live disks, e.g. EC 2+1 on three disks with one down): the
 *     chunk is stored whole as 2 copies on distinct live disks, on distinct failure domains where
 *     possible, in the group's own live buckets first; re-encoded to the scheme when home returns.
 *  3. refuse — fewer than two live disks: a write would survive no further loss.
 * docs/diskmap.md ("Writes with a disk or machine down") has the choice and its figures.
 */
import { diskKeyOf, type BucketId } from './bucket-id.js';
import { HANDOFF_BUCKET } from './layout.js';
import { dataShardsOf, toleranceOf, widthOf } from './redundancy.js';
import { diskEntries, diskLabel, resolveDiskRef, resolveMachineRef, type DiskEntry } from './topology.js';
import type { Diskmap, FailureSet } from './types.js';
import { DOMAIN_LEVELS } from './types.js';

/** What a placement survives from now on. */
export interface Survival {
  /** Any this many more disks may be lost and the chunk stays readable. */
  readonly disks: number;
  /** Any one more machine may be lost (false when one machine holds more shards than the slack). */
  readonly machine: boolean;
  /** For people: "survives the loss of any 2 more disks, or of any one machine". */
  readonly text: string;
}

export interface HandoffSlot {
  readonly index: number;
  /** The slot's home bucket (on the down disk). */
  readonly home: BucketId;
  /** Where the shard goes meanwhile: the handoff bucket of a live disk. */
  readonly target: BucketId;
  readonly targetDisk: string;
}

export type DegradedWrite =
  | { readonly kind: 'home'; readonly group: number; readonly survives: Survival }
  | {
      readonly kind: 'handoff';
      readonly group: number;
      /** Down slots whose shard goes to a handoff bucket meanwhile. */
      readonly slots: readonly HandoffSlot[];
      /** Down slots written nowhere now (no live disk left outside the group): rebuilt later. */
      readonly missing: readonly number[];
      /** Every shard placed keeps the map's failure-domain rule. */
      readonly keepsRule: boolean;
      readonly survives: Survival;
    }
  | { readonly kind: 'replicas'; readonly group: number; readonly copies: readonly BucketId[]; readonly survives: Survival }
  | { readonly kind: 'refuse'; readonly group: number; readonly reason: string };

/** The handoff bucket of a disk (bucket number HANDOFF_BUCKET). */
export function handoffBucketOf(e: DiskEntry): BucketId {
  const m = e.machine;
  return Object.freeze({ dc: m.dc, row: m.row, rack: m.rack, machine: m.machine, disk: e.d.disk, bucket: HANDOFF_BUCKET, incarnation: e.d.incarnation });
}

/** Disk keys that are down: asked for, machines asked for, and failed/removed in the topology. */
export function downDiskKeys(dm: Diskmap, down: FailureSet): Set<string> {
  const t = dm.topology;
  const keys = new Set<string>();
  for (const r of down.disks ?? []) for (const e of resolveDiskRef(t, r)) keys.add(e.key);
  const ms = new Set((down.machines ?? []).flatMap((r) => resolveMachineRef(t, r)));
  for (const e of diskEntries(t)) if (ms.has(e.machine) || e.d.state === 'failed' || e.d.state === 'removed') keys.add(e.key);
  return keys;
}

/** Shards per domain id at a level (1 machine … 4 dc) for a list of disks. */
function maxPer(es: readonly DiskEntry[], level: number): number {
  const n = new Map<string, number>();
  for (const e of es) n.set(e.domains[level] as string, (n.get(e.domains[level] as string) ?? 0) + 1);
  return Math.max(0, ...n.values());
}

/** What shards on these (distinct) disks survive, with `slack` more losses allowed in all. */
export function survivalOf(es: readonly DiskEntry[], slack: number): Survival {
  const disks = Math.max(0, slack);
  const machines = new Set(es.map((e) => e.domains[1])).size;
  const machine = disks > 0 && machines > 1 && maxPer(es, 1) <= disks;
  const text =
    disks === 0
      ? 'survives no further loss'
      : `survives the loss of any ${disks === 1 ? 'one more disk' : `${disks} more disks`}${machine ? ', or of any one machine' : ' (not of a whole machine)'}`;
  return { disks, machine, text };
}

/**
 * Where a chunk of group `groupId` is written while `down` (and the disks failed in the map) are
 * unavailable; see the header comment for the rule. Pure: the same answer on every node.
 */
export function planDegradedWrite(dm: Diskmap, groupId: number, down: FailureSet = {}): DegradedWrite {
  // Called per chunk while something is down: answers are cached per map, outage and group.
  const k = JSON.stringify([[...(down.disks ?? [])].sort(), [...(down.machines ?? [])].sort(), groupId]);
  let perMap = cache.get(dm);
  if (perMap === undefined) cache.set(dm, (perMap = new Map()));
  const hit = perMap.get(k);
  if (hit !== undefined) return hit;
  const w = Object.freeze(decide(dm, groupId, down));
  if (perMap.size >= 100_000) perMap.clear();
  perMap.set(k, w);
  return w;
}

const cache = new WeakMap<Diskmap, Map<string, DegradedWrite>>();

function decide(dm: Diskmap, groupId: number, down: FailureSet): DegradedWrite {
  const g = dm.groups[groupId];
  if (g === undefined || g.retired) return { kind: 'refuse', group: groupId, reason: `group ${groupId} does not exist or is retired in diskmap epoch ${dm.epoch}` };
  const keys = downDiskKeys(dm, down);
  const entries = diskEntries(dm.topology);
  const byKey = new Map(entries.map((e) => [e.key, e]));
  const t = toleranceOf(dm.scheme);
  const width = widthOf(dm.scheme);
  const downSlots: number[] = [];
  const live: DiskEntry[] = [];
  g.buckets.forEach((b, i) => {
    const e = byKey.get(diskKeyOf(b));
    if (e === undefined || keys.has(e.key) || g.lost?.includes(i) === true) downSlots.push(i);
    else live.push(e);
  });
  if (downSlots.length === 0) return { kind: 'home', group: groupId, survives: survivalOf(live, t) };
  const level = DOMAIN_LEVELS.indexOf(dm.failureDomain);
  const cap = dm.maxShardsPerDomain;
  const candidates = entries.filter((e) => e.d.class === dm.dataClass && e.d.state === 'active' && !keys.has(e.key));
  // 1. Handoff: one distinct live disk per down slot, the rule kept where possible.
  const placed = [...live];
  const slots: HandoffSlot[] = [];
  let keepsRule = true;
  for (const i of downSlots) {
    const free = candidates.filter((c) => !placed.includes(c));
    if (free.length === 0) break;
    const fitsRule = (c: DiskEntry): boolean => {
      for (let lv = 1; lv <= level; lv++) if (placed.filter((p) => p.domains[lv] === c.domains[lv]).length >= cap) return false;
      return true;
    };
    // Score: the rule kept first, then the fewest shards already on its machine, rack, row, dc.
    const score = (c: DiskEntry): number[] => [fitsRule(c) ? 0 : 1, ...[1, 2, 3, 4].map((lv) => placed.filter((p) => p.domains[lv] === c.domains[lv]).length)];
    let best = free[0] as DiskEntry;
    let bestScore = score(best);
    for (const c of free.slice(1)) {
      const sc = score(c);
      const cmp = sc.findIndex((v, j) => v !== bestScore[j]);
      if (cmp >= 0 && (sc[cmp] as number) < (bestScore[cmp] as number)) {
        best = c;
        bestScore = sc;
      }
    }
    if (bestScore[0] !== 0) keepsRule = false;
    placed.push(best);
    slots.push({ index: i, home: g.buckets[i] as BucketId, target: handoffBucketOf(best), targetDisk: diskLabel(best) });
  }
  // Written: the live home shards and the handed-off ones; the slack is what may still be lost.
  const slack = placed.length - dataShardsOf(dm.scheme);
  if (slack >= 1) {
    const missing = downSlots.filter((i) => !slots.some((s) => s.index === i));
    return { kind: 'handoff', group: groupId, slots, missing, keepsRule: keepsRule && missing.length === 0, survives: survivalOf(placed, slack) };
  }
  // 2. Two whole copies on distinct live disks, spread over domains: the group's live buckets first.
  const liveDisks = candidates.length;
  const n = Math.min(2, liveDisks);
  if (n < 2) {
    return {
      kind: 'refuse',
      group: groupId,
      reason: `only ${liveDisks} live ${dm.dataClass} disk(s) for group ${groupId}: a write would not survive the loss of one more disk (${schemeName(dm)} needs ${dataShardsOf(dm.scheme) + 1} of its ${width} disks, or 2 live disks for replicas); bring a disk or machine back first`,
    };
  }
  const chosen: DiskEntry[] = [];
  const copies: BucketId[] = [];
  const pool = [...live.map((e) => ({ e, home: true })), ...candidates.filter((c) => !live.includes(c)).map((e) => ({ e, home: false }))];
  while (chosen.length < n) {
    let pick = -1;
    let pickScore: number[] = [];
    pool.forEach((p, at) => {
      if (chosen.includes(p.e)) return;
      const sc = [...[4, 3, 2, 1].map((lv) => chosen.filter((c) => c.domains[lv] === p.e.domains[lv]).length), p.home ? 0 : 1];
      const cmp = pick < 0 ? 0 : sc.findIndex((v, j) => v !== pickScore[j]);
      if (pick < 0 || (cmp >= 0 && (sc[cmp] as number) < (pickScore[cmp] as number))) {
        pick = at;
        pickScore = sc;
      }
    });
    const p = pool[pick] as { e: DiskEntry; home: boolean };
    chosen.push(p.e);
    copies.push(p.home ? (g.buckets.find((b) => diskKeyOf(b) === p.e.key) as BucketId) : handoffBucketOf(p.e));
  }
  return { kind: 'replicas', group: groupId, copies, survives: survivalOf(chosen, n - 1) };
}

function schemeName(dm: Diskmap): string {
  return dm.scheme.kind === 'ec' ? `EC ${dm.scheme.k}+${dm.scheme.m}` : `${dm.scheme.n} replicas`;
}
