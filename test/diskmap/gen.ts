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

/** Active data disks of a map's topology that hold buckets: key → {buckets, domain ids}. */
function dataDisks(dm: Diskmap): Map<string, { buckets: number; domains: readonly string[] }> {
  const out = new Map<string, { buckets: number; domains: readonly string[] }>();
  for (const e of diskEntries(dm.topology)) {
    const buckets = Math.floor(e.d.capacityBytes / dm.bucketSizeBytes);
    if (e.d.class !== dm.dataClass || e.d.state !== 'active' || buckets === 0) continue;
    out.set(e.key, { buckets, domains: e.domains });
  }
  return out;
}

/**
 * A lower bound on moved / minimum that holds for ANY plan of this growth that moves keys only
 * to new groups (the addressing rule) and gives every group ⌊V/G'⌋ or ⌈V/G'⌉ key slots
 * (docs/diskmap.md, "Where 1.1× is out of reach"). EC only: shard i of a key stays on its disk
 * only if its old and new group have the same disk at position i.
 *
 * Every key of a new group B comes from an old group A, which can give at most
 * supply(A) = before(A) − ⌊V/G'⌋ of them in all. Take one position i. The new groups with an old
 * disk at i hold together at least (ΔG − x_i)·⌊V/G'⌋ keys (x_i = new groups with a new disk at i);
 * a key keeps its shard i only if its donor had the same disk at i, and the donors of disk d at
 * position i supply at most supply(d, i) = Σ_{A: A[i] = d} supply(A); the new groups use at most
 * ΔG − x_i distinct disks at i. So at least
 *     f_i(x_i) = (ΔG − x_i)·⌊V/G'⌋ − (sum of the ΔG − x_i largest supply(·, i))
 * shards cross onto an old disk at position i. A new group has at most n_B new disks (≤ the new
 * disks, ≤ cap per failure domain), so Σ x_i ≤ ΔG·n_B; the plan may place them where they save
 * most (f_i is convex, so taking the largest saving first is optimal). What crosses onto an old
 * disk is above the minimum unless that disk's share grows: at most slack = Σ_old disks
 * max(0, min(buckets, G')·⌈V/G'⌉ − held before) of it (0 when every old disk was full).
 * moved ≥ minimum + Σ_i f_i(x_i) − slack. Undefined when the bound does not apply.
 */
export function growthLowerBound(old: Diskmap, next: Diskmap): number | undefined {
  if (old.scheme.kind !== 'ec' || next.scheme.kind !== 'ec') return undefined;
  const scale = 2 ** (next.vslotBits - old.vslotBits);
  if (!Number.isInteger(scale)) return undefined;
  const before = new Map<number, number>();
  for (const g of old.vslotGroup) before.set(g, (before.get(g) ?? 0) + scale);
  const V = next.vslotGroup.length;
  const G = next.groups.filter((g) => !g.retired).length;
  const floorAfter = Math.floor(V / G);
  const ceilAfter = Math.ceil(V / G);
  const added = next.diff?.addedGroups ?? [];
  const dG = added.length;
  if (dG === 0) return undefined;
  const w = widthOfMap(next);
  const oldDisks = dataDisks(old);
  const newDisks = dataDisks(next);
  // Slack: what old disks could gain in the best case.
  const heldBefore = new Map<string, number>();
  const supplyAt: Map<string, number>[] = Array.from({ length: w }, () => new Map());
  old.groups.forEach((g) => {
    if (g.retired) return;
    const n = before.get(g.id) ?? 0;
    const supply = Math.max(0, n - floorAfter);
    g.buckets.forEach((b, i) => {
      const k = diskKeyOf(b);
      heldBefore.set(k, (heldBefore.get(k) ?? 0) + n);
      const m = supplyAt[i] as Map<string, number>;
      m.set(k, (m.get(k) ?? 0) + supply);
    });
  });
  let slack = 0;
  for (const [k, d] of newDisks) {
    if (!oldDisks.has(k)) continue;
    slack += Math.max(0, Math.min(d.buckets, G) * ceilAfter - (heldBefore.get(k) ?? 0));
  }
  // n_B: new disks a new group can hold (distinct disks, at most cap per failure domain).
  const level = ['disk', 'machine', 'rack', 'row', 'dc'].indexOf(next.failureDomain);
  const freshPerDomain = new Map<string, number>();
  for (const [k, d] of newDisks) {
    if (oldDisks.has(k) && (heldBefore.get(k) ?? 0) > 0) continue;
    const dom = level <= 0 ? k : (d.domains[level] as string);
    freshPerDomain.set(dom, (freshPerDomain.get(dom) ?? 0) + 1);
  }
  let nB = 0;
  for (const c of freshPerDomain.values()) nB += level <= 0 ? c : Math.min(c, next.maxShardsPerDomain);
  nB = Math.min(nB, w);
  const top = supplyAt.map((m) => {
    const sorted = [...m.values()].sort((a, b) => b - a);
    const prefix = [0];
    for (let k = 0; k < dG; k++) prefix.push((prefix[k] as number) + (sorted[k] ?? 0));
    return prefix;
  });
  const f = (i: number, x: number): number => Math.max(0, (dG - x) * floorAfter - ((top[i] as number[])[dG - x] as number));
  const x = new Array<number>(w).fill(0);
  for (let budget = dG * nB; budget > 0; budget--) {
    let best = -1;
    let bestGain = 0;
    for (let i = 0; i < w; i++) {
      if ((x[i] as number) >= dG) continue;
      const gain = f(i, x[i] as number) - f(i, (x[i] as number) + 1);
      if (gain > bestGain) {
        bestGain = gain;
        best = i;
      }
    }
    if (best < 0) break;
    x[best] = (x[best] as number) + 1;
  }
  let crossing = -slack;
  for (let i = 0; i < w; i++) crossing += f(i, x[i] as number);
  const minimumSlots = movementBetween(old, next).minimumShare * V * w;
  return minimumSlots > 0 ? 1 + Math.max(0, crossing) / minimumSlots : undefined;
}

function widthOfMap(dm: Diskmap): number {
  return dm.groups.find((g) => !g.retired)?.buckets.length ?? 0;
}

/**
 * The least share of the data that must arrive at the new disks in ANY plan of this growth that
 * ends with next's G' groups and is balanced (docs/diskmap.md, "Growth inside a machine: the
 * minimum"). Failure domain = machine, cap c, width w. Machine m can hold at most
 * cap_m = min(c·G', Σ_d min(buckets_d, G')) slots, so a machine M with new disks holds at least
 * S_M = w·G' − Σ_{m≠M} cap_m. Balance spreads a machine's slots over its disks by buckets, within
 * one bucket, so each new disk d of M holds at least min(G', S_M·buckets_d / buckets_M) − 1
 * slots, and every slot holds at least ⌊V/G'⌋ of the V key slots — all of it arriving on a disk
 * that held nothing. 0 when the failure domain is not the machine.
 */
export function balancedArrivalBound(old: Diskmap, next: Diskmap): number {
  if (next.failureDomain !== 'machine') return 0;
  const G = next.groups.filter((g) => !g.retired).length;
  const w = next.groups.find((g) => !g.retired)?.buckets.length ?? 0;
  if (G === 0 || w === 0) return 0;
  const used = slotsPerDisk(old);
  const machines = new Map<string, { key: string; buckets: number }[]>();
  for (const [key, d] of dataDisks(next)) {
    const m = d.domains[1] as string;
    const l = machines.get(m);
    if (l === undefined) machines.set(m, [{ key, buckets: d.buckets }]);
    else l.push({ key, buckets: d.buckets });
  }
  const capOf = (ds: { buckets: number }[]): number => Math.min(next.maxShardsPerDomain * G, ds.reduce((a, d) => a + Math.min(d.buckets, G), 0));
  let total = 0;
  for (const ds of machines.values()) total += capOf(ds);
  let slots = 0;
  for (const ds of machines.values()) {
    const fresh = ds.filter((d) => (used.get(d.key) ?? 0) === 0);
    if (fresh.length === 0) continue;
    const S = Math.max(0, w * G - (total - capOf(ds)));
    const B = ds.reduce((a, d) => a + d.buckets, 0);
    for (const d of fresh) slots += Math.max(0, Math.min(G, (S * d.buckets) / B) - 1);
  }
  const V = next.vslotGroup.length;
  return (slots * Math.floor(V / G)) / (V * w);
}
