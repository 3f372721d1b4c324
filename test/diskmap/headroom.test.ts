/**
 * Repair headroom: a map built with headroom `disk` keeps enough spare buckets that the slots of
 * any one lost disk are rebuilt on the others under the same rules (property-tested over random
 * topologies), growth keeps the room, and a map that cannot repair says so plainly.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  analyzeFailure,
  buildDiskmap,
  diskEntries,
  diskLabel,
  parseDiskmap,
  planChange,
  planRepair,
  repairOutlook,
  serializeDiskmap,
  widthOf,
  type Diskmap,
  type Topology,
} from '../../src/diskmap/index.js';
import { diskKeyOf } from '../../src/diskmap/bucket-id.js';
import { BUCKET, machineOf, topo, topologyArb } from './gen.js';

const tryBuild = (t: Topology, headroom: 'auto' | 'disk' | 'none' = 'disk'): Diskmap | undefined => {
  try {
    return buildDiskmap(t, { bucketSizeBytes: BUCKET, headroom });
  } catch {
    return undefined;
  }
};

/** Every group full width on distinct disks, within the cap per failure domain. */
function rulesKept(dm: Diskmap): string[] {
  const bad: string[] = [];
  for (const g of dm.groups) {
    if (g.retired) continue;
    if ((g.lost ?? []).length > 0) bad.push(`group ${g.id} still lost ${String(g.lost)}`);
    if (new Set(g.buckets.map(diskKeyOf)).size !== widthOf(dm.scheme)) bad.push(`group ${g.id} repeats a disk`);
    if (dm.failureDomain === 'machine') {
      const per = new Map<string, number>();
      for (const b of g.buckets) per.set(machineOf(b), (per.get(machineOf(b)) ?? 0) + 1);
      if (Math.max(...per.values()) > dm.maxShardsPerDomain) bad.push(`group ${g.id} over the cap per machine`);
    }
  }
  return bad;
}

describe('repair headroom', () => {
  it('a map with headroom rebuilds every slot of any one lost disk, keeping the rules', () => {
    let maps = 0;
    fc.assert(
      fc.property(topologyArb, (ms) => {
        const dm = tryBuild(topo(ms));
        if (dm === undefined) return;
        maps++;
        expect(dm.headroom).toBe('disk');
        expect(repairOutlook(dm).anyOneDisk).toBe(true);
        // The largest disk, and the first disk of every machine (all disks is slow and adds little).
        const entries = diskEntries(dm.topology);
        const largest = entries.reduce((a, b) => (b.d.capacityBytes > a.d.capacityBytes ? b : a));
        const probe = new Set([largest, ...dm.topology.machines.map((m) => entries.find((e) => e.machine === m)).filter((e) => e !== undefined)]);
        for (const e of probe) {
          const p = planRepair(dm, diskLabel(e));
          expect(p.refused).toBeUndefined();
          const lost = dm.groups.filter((g) => g.buckets.some((b) => diskKeyOf(b) === e.key)).length;
          expect(p.moves.filter((m) => m.kind === 'repair').length).toBe(lost);
          expect(rulesKept(p.diskmap)).toEqual([]);
          expect(analyzeFailure(p.diskmap, {}).degradedGroups).toEqual([]);
        }
      }),
      { numRuns: 40 },
    );
    expect(maps).toBeGreaterThan(20);
  });

  it('3 machines x 3 disks (the appliance): EC 4+2, any one disk rebuilt, its drain retires nothing', () => {
    const dm = buildDiskmap(topo([[30, 30, 30], [30, 30, 30], [30, 30, 30]]), { bucketSizeBytes: BUCKET });
    expect(dm.scheme).toEqual({ kind: 'ec', k: 4, m: 2 });
    expect(dm.maxShardsPerDomain).toBe(2);
    expect(dm.headroom).toBe('disk');
    const o = repairOutlook(dm);
    expect(o.anyOneDisk).toBe(true);
    expect(o.anyOneMachine).toBe(false);
    expect(o.summary).toMatch(/machine down stays degraded/);
    const lost = dm.groups.filter((g) => g.buckets.some((b) => b.machine === 0 && b.disk === 0)).length;
    const r = planRepair(dm, 'm0/0');
    expect(r.moves.filter((m) => m.kind === 'repair').length).toBe(lost);
    expect(r.warnings.join(' ')).toMatch(/second disk loss stays degraded/);
    // The document with a failed disk round-trips and plans again.
    const again = parseDiskmap(serializeDiskmap(r.diskmap));
    expect(serializeDiskmap(again)).toBe(serializeDiskmap(r.diskmap));
  });

  it('a 250-machine map over 10 racks rebuilds every lost shard of a disk (it rebuilt none before)', () => {
    const ms = Array.from({ length: 250 }, () => [20]);
    const t = topo(ms, { racks: 10 });
    const dm = buildDiskmap(t, { bucketSizeBytes: BUCKET });
    expect(dm.headroom).toBe('disk');
    const lost = dm.groups.filter((g) => g.buckets.some((b) => b.machine === 1 && b.disk === 0)).length;
    expect(lost).toBeGreaterThan(10);
    const r = planRepair(dm, 'm1/0');
    expect(r.moves.filter((m) => m.kind === 'repair').length).toBe(lost);
    expect(rulesKept(r.diskmap)).toEqual([]);
  });

  it('3 disks in all cannot repair and says so: degraded until the disk is replaced', () => {
    for (const ms of [[[30, 30, 30]], [[30], [30], [30]]]) {
      const dm = buildDiskmap(topo(ms), { bucketSizeBytes: BUCKET });
      expect(dm.headroom).toBe('none');
      expect(repairOutlook(dm).summary).toMatch(/degraded until the disk is replaced/);
      const r = planRepair(dm, 'm0/0');
      expect(r.moves.filter((m) => m.kind === 'repair').length).toBe(0);
      expect(r.warnings.join(' ')).toMatch(/stay degraded until the disk is replaced/);
    }
  });

  it('growth keeps the headroom: after adding disks any one disk can still be rebuilt', () => {
    fc.assert(
      fc.property(topologyArb, fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 3 }), fc.boolean(), (ms, add, newMachine) => {
        const dm = tryBuild(topo(ms));
        if (dm === undefined) return;
        const grownMs = ms.map((m) => [...m]);
        if (newMachine) grownMs.push(add);
        else (grownMs[0] as number[]).push(...add);
        const p = planChange(dm, topo(grownMs));
        expect(p.refused).toBeUndefined();
        expect(p.diskmap.headroom).toBe('disk');
        expect(repairOutlook(p.diskmap).anyOneDisk).toBe(true);
      }),
      { numRuns: 40 },
    );
  });
});
