/**
 * Test helpers for the diskmap: small random topologies (fast-check) in units of buckets, and
 * checks shared by the property tests.
 */
import fc from 'fast-check';
import { parseTopology, type Topology, type Diskmap } from '../../src/diskmap/index.js';
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
