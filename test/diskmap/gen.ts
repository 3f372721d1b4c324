/**
 * Test helpers for the diskmap: small random topologies (fast-check) in units of buckets, and
 * checks shared by the property tests.
 */
import fc from 'fast-check';
import { diskEntries, movementBetween, parseTopology, type Topology, type Diskmap } from '../../src/diskmap/index.js';
import { diskKeyOf } from '../../src/diskmap/bucket-id.js';

/** Tests use 1 MiB buckets so capacities stay small numbers. */
export const BUCKET = 2 ** 20;

/** machines[m][d] = capacity in buckets. */
export function topo(machines: readonly (readonly number[])[], opts: { racks?: number; name?: string } = {}): Topology {
  return parseTopology({
    name: opts.name ?? 'test',
    machines: machines.map((disks, m) => ({
      name: `m${m}`,
      rack: opts.racks !== undefined ? m % opts.racks : 0,
      machine: m,
      disks: disks.map((buckets, d) => ({ disk: d, capacity: buckets * BUCKET + 1234 })),
    })),
  });
}

export const evenTopologyArb = fc
  .record({ machines: fc.integer({ min: 1, max: 6 }), disks: fc.integer({ min: 1, max: 5 }), buckets: fc.integer({ min: 4, max: 40 }) })
  .filter((r) => r.machines * r.disks >= 2)
  .map((r) => Array.from({ length: r.machines }, () => Array.from({ length: r.disks }, () => r.buckets)));

export const topologyArb = fc
  .array(fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 6 })
  .filter((ms) => ms.flat().length >= 2);

/** Disk key → number of group slots on it. */
export function slotsPerDisk(dm: Diskmap): Map<string, number> {
  const m = new Map<string, number>();
  for (const g of dm.groups) for (const b of g.buckets) m.set(diskKeyOf(b), (m.get(diskKeyOf(b)) ?? 0) + 1);
  return m;
}

export function machineOf(b: { dc: number; row: number; rack: number; machine: number }): string {
  return `${b.dc}.${b.row}.${b.rack}.${b.machine}`;
}

export const tolerance = (dm: Diskmap): number => (dm.scheme.kind === 'ec' ? dm.scheme.m : dm.scheme.n - 1);

/**
 * A lower bound on moved / minimum that holds for ANY plan of this growth that moves keys only
 * to new groups (the addressing rule), when every old data disk was full before it
 * (docs/diskmap.md, "Where 1.1× is out of reach"). A new group B holding n slots takes them all
 * from old groups; an old group can give B a key without moving a shard between two old disks
 * only if it has B's old disks at B's positions, and at most b old groups (b = the most buckets
 * of an old disk) hold any one old disk; each gives at most s = (most slots of an old group
 * before) − (fewest slots of an old group after). So at least n − b·s of B's slots move at least
 * one shard between old disks, on top of the minimum (full old disks cannot gain, so the
 * minimum is exactly what lands on the new disks). Undefined when the bound does not apply.
 */
export function growthLowerBound(old: Diskmap, next: Diskmap): number | undefined {
  const oldKeys = new Set<string>();
  let b = 0;
  const used = slotsPerDisk(old);
  for (const e of diskEntries(old.topology)) {
    const buckets = Math.floor(e.d.capacityBytes / old.bucketSizeBytes);
    if (e.d.class !== old.dataClass || e.d.state !== 'active' || buckets === 0) continue;
    if ((used.get(e.key) ?? 0) !== buckets) return undefined;
    oldKeys.add(e.key);
    b = Math.max(b, buckets);
  }
  const scale = 2 ** (next.vslotBits - old.vslotBits);
  if (!Number.isInteger(scale)) return undefined;
  const before = new Map<number, number>();
  for (const g of old.vslotGroup) before.set(g, (before.get(g) ?? 0) + scale);
  const after = new Map<number, number>();
  for (const g of next.vslotGroup) after.set(g, (after.get(g) ?? 0) + 1);
  const added = new Set(next.diff?.addedGroups ?? []);
  const maxBefore = Math.max(...before.values());
  let minAfterOld = Infinity;
  for (const [g, n] of after) if (!added.has(g)) minAfterOld = Math.min(minAfterOld, n);
  const s = Math.max(0, maxBefore - minAfterOld);
  let crossing = 0;
  for (const g of added) {
    const onOld = next.groups[g]?.buckets.some((x) => oldKeys.has(diskKeyOf(x))) ?? false;
    if (onOld) crossing += Math.max(0, (after.get(g) ?? 0) - b * s);
  }
  const w = next.groups.find((g) => !g.retired)?.buckets.length ?? 1;
  const minimumSlots = movementBetween(old, next).minimumShare * next.vslotGroup.length * w;
  return minimumSlots > 0 ? 1 + crossing / minimumSlots : undefined;
}
