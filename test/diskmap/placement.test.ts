/**
 * Placement groups and addressing, as properties over random topologies: distinct disks in every
 * group, failure-domain spread, balance by capacity, determinism, document round trip, survival
 * of any single disk (and machine) loss, and stable key → group mapping.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import {
  analyzeFailure,
  buildDiskmap,
  chooseRedundancy,
  diskEntries,
  diskLabel,
  groupForKey,
  keyHashOfPath,
  parseDiskmap,
  serializeDiskmap,
  widthOf,
  type Diskmap,
} from '../../src/diskmap/index.js';
import { diskKeyOf } from '../../src/diskmap/bucket-id.js';
import { BUCKET, evenTopologyArb, machineOf, slotsPerDisk, tolerance, topo, topologyArb } from './gen.js';

const build = (ms: number[][], racks?: number): Diskmap | undefined => {
  try {
    return buildDiskmap(topo(ms, racks !== undefined ? { racks } : {}), { bucketSizeBytes: BUCKET, headroom: 'none' });
  } catch (err) {
    // Only "nothing fits" is acceptable (e.g. two disks of very different sizes still fit 2 replicas).
    expect(String(err)).toMatch(/no redundancy scheme fits|one data disk/);
    return undefined;
  }
};

const RUNS = 40;

describe('placement groups', () => {
  it('every group has width distinct disks, at most cap per failure domain', () => {
    fc.assert(
      fc.property(topologyArb, fc.integer({ min: 1, max: 3 }), (ms, racks) => {
        const dm = build(ms, racks);
        if (dm === undefined) return;
        const w = widthOf(dm.scheme);
        expect(dm.groups.length).toBeGreaterThan(0);
        for (const g of dm.groups) {
          expect(g.buckets.length).toBe(w);
          expect(new Set(g.buckets.map(diskKeyOf)).size).toBe(w);
          const level = dm.failureDomain;
          if (level !== 'disk') {
            const domainOf = (b: (typeof g.buckets)[number]): string =>
              level === 'machine' ? machineOf(b) : level === 'rack' ? `${b.dc}.${b.row}.${b.rack}` : level === 'row' ? `${b.dc}.${b.row}` : `${b.dc}`;
            const per = new Map<string, number>();
            for (const b of g.buckets) per.set(domainOf(b), (per.get(domainOf(b)) ?? 0) + 1);
            for (const n of per.values()) expect(n).toBeLessThanOrEqual(dm.maxShardsPerDomain);
            expect(dm.maxShardsPerDomain).toBeLessThanOrEqual(tolerance(dm));
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('is balanced by capacity: a disk has spare buckets only if it cannot take more', () => {
    fc.assert(
      fc.property(topologyArb, (ms) => {
        const dm = build(ms);
        if (dm === undefined || dm.failureDomain !== 'disk') return;
        const G = dm.groups.length;
        const w = widthOf(dm.scheme);
        const used = slotsPerDisk(dm);
        let spare = 0;
        for (const e of diskEntries(dm.topology)) {
          const buckets = Math.floor(e.d.capacityBytes / BUCKET);
          const u = used.get(e.key) ?? 0;
          expect(u).toBeLessThanOrEqual(buckets);
          // Within one bucket of its capacity share, or in (nearly) every group.
          expect(u).toBeGreaterThanOrEqual(Math.min(buckets, G) - 1);
          spare += Math.max(0, Math.min(buckets, G) - u);
        }
        // Fewer spare slots than one more group would need.
        expect(spare).toBeLessThan(w);
      }),
      { numRuns: RUNS },
    );
  });

  it('builds as many groups as the capacity bound allows, within one', () => {
    fc.assert(
      fc.property(topologyArb, fc.integer({ min: 1, max: 3 }), (ms, racks) => {
        const t = topo(ms, { racks });
        const dm = build(ms, racks);
        if (dm === undefined) return;
        const bound = chooseRedundancy(t, { bucketSizeBytes: BUCKET, headroom: 'none' }).chosen.groups;
        expect(dm.groups.length).toBeLessThanOrEqual(bound);
        expect(dm.groups.length).toBeGreaterThanOrEqual(bound - 1);
      }),
      { numRuns: RUNS },
    );
  });

  it('even topologies use every bucket but less than one group', () => {
    fc.assert(
      fc.property(evenTopologyArb, (ms) => {
        const dm = build(ms);
        if (dm === undefined) return;
        const w = widthOf(dm.scheme);
        const total = ms.flat().reduce((a, b) => a + b, 0);
        const used = [...slotsPerDisk(dm).values()];
        expect(total - used.reduce((a, b) => a + b, 0)).toBeLessThan(w);
        expect(Math.max(...used) - Math.min(...used)).toBeLessThanOrEqual(1);
      }),
      { numRuns: RUNS },
    );
  });

  it('equal disks rotate through few disk combinations (copysets)', () => {
    const dm = build([Array(12).fill(40)]) as Diskmap;
    const combos = new Set(dm.groups.map((g) => g.buckets.map(diskKeyOf).sort().join(' ')));
    // 12 disks, groups of w: about 12/w·(rotation) combinations, far fewer than groups.
    expect(combos.size).toBeLessThanOrEqual(12);
    expect(dm.groups.length).toBeGreaterThan(3 * combos.size);
  });

  it('is deterministic and the document round-trips', () => {
    fc.assert(
      fc.property(topologyArb, (ms) => {
        const a = build(ms);
        if (a === undefined) return;
        const b = build(ms) as Diskmap;
        const text = serializeDiskmap(a);
        expect(serializeDiskmap(b)).toBe(text);
        const back = parseDiskmap(text);
        expect(serializeDiskmap(back)).toBe(text);
        expect(back.groups).toEqual(a.groups);
        expect(Array.from(back.vslotGroup)).toEqual(Array.from(a.vslotGroup));
      }),
      { numRuns: 30 },
    );
  });

  it('survives the loss of any one disk', () => {
    fc.assert(
      fc.property(topologyArb, (ms) => {
        const dm = build(ms);
        if (dm === undefined) return;
        for (const e of diskEntries(dm.topology)) {
          const r = analyzeFailure(dm, { disks: [diskLabel(e)] });
          expect(r.lostGroups).toEqual([]);
          expect(r.unreadableShare).toBe(0);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('survives the loss of any one machine when it spreads over machines', () => {
    fc.assert(
      fc.property(topologyArb, (ms) => {
        const dm = build(ms);
        if (dm === undefined || dm.failureDomain === 'disk') return;
        for (const m of dm.topology.machines) {
          const r = analyzeFailure(dm, { machines: [m.name] });
          expect(r.lostGroups).toEqual([]);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('spreads over machines whenever 3 or more machines of equal size exist', () => {
    fc.assert(
      fc.property(fc.integer({ min: 3, max: 8 }), fc.integer({ min: 1, max: 4 }), (machines, disks) => {
        const dm = build(Array.from({ length: machines }, () => Array(disks).fill(20))) as Diskmap;
        expect(dm.failureDomain).toBe('machine');
      }),
      { numRuns: 20 },
    );
  });
});

describe('addressing', () => {
  const dm = build([[30, 30, 30], [30, 30, 30], [30, 30, 30]]) as Diskmap;

  it('maps the same key to the same group, from a parsed copy too', () => {
    const copy = parseDiskmap(serializeDiskmap(dm));
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (key) => {
        expect(groupForKey(copy, key)).toEqual(groupForKey(dm, key));
      }),
      { numRuns: 200 },
    );
    expect(groupForKey(dm, keyHashOfPath('/etc/app.db'))).toEqual(groupForKey(copy, keyHashOfPath('/etc/app.db')));
  });

  it('spreads keys evenly over groups', () => {
    const counts = new Map<number, number>();
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      const g = groupForKey(dm, createHash('sha256').update(`k${i}`).digest()).id;
      counts.set(g, (counts.get(g) ?? 0) + 1);
    }
    const active = dm.groups.filter((g) => !g.retired).length;
    expect(counts.size).toBe(active);
    const mean = n / active;
    for (const c of counts.values()) expect(Math.abs(c - mean)).toBeLessThan(mean * 0.5);
  });

  it('refuses a key hash that is too short', () => {
    expect(() => groupForKey(dm, new Uint8Array(4))).toThrow(/at least 8 bytes/);
  });
});
