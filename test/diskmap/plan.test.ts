/**
 * Change planning: growth is automatic and moves close to the minimum, removal and shrinking are
 * refused until drained, a drain empties the disk, failed disks are repaired, every change is a
 * new epoch with its diff, and keys move only to where they must.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  analyzeFailure,
  buildDiskmap,
  chooseRedundancy,
  diskEntries,
  diskLabel,
  movementBetween,
  parseDiskmap,
  parseTopology,
  planChange,
  planDrain,
  planRepair,
  serializeDiskmap,
  topologyToJson,
  vslotOf,
  widthOf,
  type Diskmap,
  type Topology,
} from '../../src/diskmap/index.js';
import { diskKeyOf } from '../../src/diskmap/bucket-id.js';
import { balancedArrivalBound, BUCKET, evenTopologyArb, growthLowerBound, machineOf, slotsPerDisk, topo, topologyArb } from './gen.js';

const opts = { bucketSizeBytes: BUCKET, headroom: 'none' } as const; // full maps: growth and drain measured without repair headroom (test/diskmap/headroom.test.ts has it)
const tryBuild = (t: Topology): Diskmap | undefined => {
  try {
    return buildDiskmap(t, opts);
  } catch {
    return undefined;
  }
};

/** Invariants every diskmap must keep, whatever the change. */
function checkInvariants(dm: Diskmap): void {
  const w = widthOf(dm.scheme);
  const bad: string[] = [];
  const seen = new Set<string>();
  for (const g of dm.groups) {
    if (g.retired) continue;
    if (g.buckets.length !== w) bad.push(`group ${g.id} has ${g.buckets.length} buckets`);
    if (new Set(g.buckets.map(diskKeyOf)).size !== g.buckets.length) bad.push(`group ${g.id} repeats a disk`);
    for (const b of g.buckets) {
      const k = `${diskKeyOf(b)}#${b.bucket}`;
      if (seen.has(k)) bad.push(`bucket ${k} in two groups`);
      seen.add(k);
    }
  }
  for (let v = 0; v < dm.vslotGroup.length; v++) {
    if (dm.groups[dm.vslotGroup[v] as number]?.retired !== false) bad.push(`slot ${v} points at a retired or missing group`);
  }
  // Single-disk survival.
  for (const e of diskEntries(dm.topology)) {
    if (e.d.state === 'failed' || e.d.state === 'removed') continue;
    if (analyzeFailure(dm, { disks: [diskLabel(e)] }).lostGroups.length > 0) bad.push(`losing ${diskLabel(e)} loses data`);
  }
  expect(bad.slice(0, 5)).toEqual([]);
  expect(serializeDiskmap(parseDiskmap(serializeDiskmap(dm)))).toBe(serializeDiskmap(dm));
}

/** The topology plus disks: on a new machine, or appended to the first one. */
function grown(ms: number[][], add: number[], newMachine: boolean): number[][] {
  const out = ms.map((m) => [...m]);
  if (newMachine) out.push(add);
  else (out[0] as number[]).push(...add);
  return out;
}

describe('growth', () => {
  it('is applied automatically: new epoch, diff, invariants kept, keys move only to new groups', () => {
    fc.assert(
      fc.property(topologyArb, fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 4 }), fc.boolean(), (ms, add, newMachine) => {
        const old = tryBuild(topo(ms));
        if (old === undefined) return;
        const p = planChange(old, topo(grown(ms, add, newMachine)));
        expect(p.refused).toBeUndefined();
        const dm = p.diskmap;
        expect(dm.epoch).toBe(old.epoch + 1);
        expect(dm.diff?.fromEpoch).toBe(old.epoch);
        expect(dm.diff?.addedDisks.length).toBe(add.length);
        expect(dm.scheme).toEqual(old.scheme);
        checkInvariants(dm);
        const added = new Set(dm.diff?.addedGroups);
        expect(dm.groups.length).toBe(old.groups.length + added.size);
        // A key changes group only to go to a new group.
        const shift = dm.vslotBits - old.vslotBits;
        let strayKeys = 0;
        for (let v = 0; v < dm.vslotGroup.length; v++) {
          const before = old.vslotGroup[v >>> shift] as number;
          const after = dm.vslotGroup[v] as number;
          if (before !== after && !added.has(after)) strayKeys++;
        }
        expect(strayKeys).toBe(0);
        // Bucket moves of existing groups only go to disks that gained room (new or with spare buckets).
        const oldUsed = slotsPerDisk(old);
        const oldKeys = new Set(diskEntries(old.topology).map((e) => e.key));
        for (const m of p.moves) {
          if (m.kind !== 'move') continue;
          const to = diskKeyOf(m.to);
          const cap = Math.floor((diskEntries(dm.topology).find((e) => e.key === to)?.d.capacityBytes ?? 0) / BUCKET);
          expect(!oldKeys.has(to) || (oldUsed.get(to) ?? 0) < cap).toBe(true);
        }
        // Whatever the shape, the plan never moves much more than the minimum (measured worst
        // over 4,000 random uneven growths: 1.53×; docs/diskmap.md, "Movement").
        const mv = movementBetween(old, dm);
        expect(mv.movedShare).toBeLessThanOrEqual(1.6 * mv.minimumShare + 1e-9);
        // And never less than the lower bound that holds for any plan (a check of the argument).
        const lb = growthLowerBound(old, dm);
        if (lb !== undefined) expect(mv.movedShare).toBeGreaterThanOrEqual(lb * mv.minimumShare - 1e-9);
      }),
      { numRuns: 40 },
    );
  });

  // Equal disks with the disk as failure domain: every growth within 10% of the minimum (measured
  // over 4 × 1,000 draws: every case 1.00×). Spread over machines the bound is not met (76-80% of
  // the growths by a new machine, 31-38% of the growths inside an existing machine that add
  // groups, worst seen 1.63× over 4 × 1,000 draws; docs/diskmap.md, "Movement"), and for some of
  // them no plan can meet it (the lower bound below, "Where 1.1× is out of reach"): there the
  // median must stay within 10%, every case within 1.65×, and no case below the lower bound.
  it('moves within 10% of the minimum on equal-disk growth (every case per disk, median per machine)', () => {
    const byMachine: number[] = [];
    let perDisk = 0;
    fc.assert(
      fc.property(evenTopologyArb, fc.integer({ min: 1, max: 4 }), fc.boolean(), (ms, n, newMachine) => {
        const old = tryBuild(topo(ms));
        if (old === undefined) return;
        const size = ms[0]?.[0] as number;
        const dm = planChange(old, topo(grown(ms, Array(n).fill(size), newMachine))).diskmap;
        const mv = movementBetween(old, dm);
        if (old.failureDomain === 'disk') {
          perDisk++;
          expect(mv.movedShare).toBeLessThanOrEqual(1.1 * mv.minimumShare + 1e-9);
        } else {
          expect(mv.movedShare).toBeLessThanOrEqual(1.65 * mv.minimumShare + 1e-9);
          if (mv.minimumShare > 0) byMachine.push(mv.movedShare / mv.minimumShare);
        }
        const lb = growthLowerBound(old, dm);
        if (lb !== undefined) expect(mv.movedShare).toBeGreaterThanOrEqual(lb * mv.minimumShare - 1e-9);
      }),
      { numRuns: 150 },
    );
    byMachine.sort((a, b) => a - b);
    expect(perDisk).toBeGreaterThan(10);
    expect(byMachine.length).toBeGreaterThan(40);
    expect(byMachine[Math.floor(byMachine.length / 2)]).toBeLessThanOrEqual(1.1);
  });

  // The same 300 draws as the table in docs/diskmap.md (fast-check seed 42): per disk every case
  // within 10%; a new machine: at least 70% of the cases (72% measured); inside a machine: at
  // least 90% of all (95% measured; most only spread the machine's slots over its disks, which
  // is all minimum), and where groups are added the median within 1.12× (1.10× measured; 1.32×
  // before the machine's slots were spread over its new disks) and every case within 1.25×
  // (1.22× measured; 1.60× before).
  it('fixed draws (seed 42): the measured shares of docs/diskmap.md hold', () => {
    let newMachine = 0;
    let newMachineWithin = 0;
    let inside = 0;
    let insideWithin = 0;
    const insideAdded: number[] = [];
    const draws = fc.sample(fc.tuple(evenTopologyArb, fc.integer({ min: 1, max: 4 }), fc.boolean()), { seed: 42, numRuns: 300 });
    for (const [ms, n, onNewMachine] of draws) {
      const old = tryBuild(topo(ms));
      if (old === undefined) continue;
      const dm = planChange(old, topo(grown(ms, Array(n).fill(ms[0]?.[0] as number), onNewMachine))).diskmap;
      const mv = movementBetween(old, dm);
      if (mv.minimumShare <= 0) continue;
      if (old.failureDomain === 'disk') expect(mv.movedShare).toBeLessThanOrEqual(1.1 * mv.minimumShare + 1e-9);
      else if (onNewMachine) {
        newMachine++;
        if (mv.movedShare <= 1.1 * mv.minimumShare + 1e-9) newMachineWithin++;
      } else {
        inside++;
        if (mv.movedShare <= 1.1 * mv.minimumShare + 1e-9) insideWithin++;
        if ((dm.diff?.addedGroups.length ?? 0) > 0) insideAdded.push(mv.movedShare / mv.minimumShare);
      }
    }
    expect(newMachine).toBeGreaterThan(100);
    expect(newMachineWithin / newMachine).toBeGreaterThanOrEqual(0.7);
    expect(inside).toBeGreaterThan(100);
    expect(insideWithin / inside).toBeGreaterThanOrEqual(0.9);
    insideAdded.sort((a, b) => a - b);
    expect(insideAdded.length).toBeGreaterThan(5);
    expect(insideAdded[Math.floor(insideAdded.length / 2)]).toBeLessThanOrEqual(1.12);
    expect(insideAdded[insideAdded.length - 1]).toBeLessThanOrEqual(1.25);
  });

  // 3 machines × 5 disks of 5 buckets, EC 2+1 one shard per machine (25 groups, every bucket used),
  // plus a machine with one 5-bucket disk: 26 groups. The new group needs 1/26 of the keys and
  // every old group gives it its surplus; at each of its two old positions the old groups with
  // its disk there (at most 5) supply only part of them, the rest cross onto an old disk there.
  // No plan gets below 1.49× here (docs/diskmap.md, "Where 1.1× is out of reach"); 1.53× measured.
  it('where 1.1x is provably out of reach, the plan stays above the lower bound and within 5% of it', () => {
    const before = Array.from({ length: 3 }, () => Array(5).fill(5));
    const old = buildDiskmap(topo(before), opts);
    expect(old.scheme).toEqual({ kind: 'ec', k: 2, m: 1 });
    expect(old.failureDomain).toBe('machine');
    expect(old.groups.length).toBe(25);
    const dm = planChange(old, topo([...before, [5]])).diskmap;
    expect(dm.groups.length).toBe(26);
    const lb = growthLowerBound(old, dm) as number;
    expect(lb).toBeGreaterThan(1.1);
    const mv = movementBetween(old, dm);
    expect(mv.movedShare / mv.minimumShare).toBeGreaterThanOrEqual(lb - 1e-9);
    expect(mv.movedShare / mv.minimumShare).toBeLessThanOrEqual(1.05 * lb);
  });

  it.each([
    ['3-disk box + 1 disk', [[40, 40, 40]], [[40, 40, 40, 40]]],
    ['3-disk box + 3 disks', [[40, 40, 40]], [[40, 40, 40, 40, 40, 40]]],
    ['3 machines x 2 + a machine', [[40, 40], [40, 40], [40, 40]], [[40, 40], [40, 40], [40, 40], [40, 40]]],
    ['3 machines x 2 + a disk each', [[40, 40], [40, 40], [40, 40]], [[40, 40, 40], [40, 40, 40], [40, 40, 40]]],
    ['4 machines x 6 + a machine', Array.from({ length: 4 }, () => Array(6).fill(40)), Array.from({ length: 5 }, () => Array(6).fill(40))],
    ['12-disk box + 12 disks', [Array(12).fill(40)], [Array(24).fill(40)]],
    // 1.42× before shards kept their positions across groups (docs/diskmap.md, "Movement").
    ['12-disk box + 1 disk', [Array(12).fill(40)], [Array(13).fill(40)]],
  ])('%s moves about C/(T+C), within 10%% of the minimum', (_n, before, after) => {
    const old = buildDiskmap(topo(before), opts);
    const p = planChange(old, topo(after));
    const mv = movementBetween(old, p.diskmap);
    const T = before.flat().reduce((a, b) => a + b, 0);
    const C = after.flat().reduce((a, b) => a + b, 0) - T;
    expect(mv.movedShare).toBeLessThanOrEqual(mv.minimumShare * 1.1);
    expect(Math.abs(mv.movedShare - C / (T + C))).toBeLessThan(0.1 * (C / (T + C)));
    // The new buckets are used (all but less than two groups' worth).
    const used = [...slotsPerDisk(p.diskmap).values()].reduce((a, b) => a + b, 0);
    expect(after.flat().reduce((a, b) => a + b, 0) - used).toBeLessThan(2 * widthOf(old.scheme));
  });

  // Every final group holds machine 0 (4+1, one shard per machine): machine 0 can hold 35 slots
  // of its 56 buckets. Balance puts 17-18 on each of its disks, so about half of machine 0's
  // slots must arrive on the new disk — moves inside the machine, all of them minimum. Before
  // (old disk kept full, 7 slots on the new one) this measured 1.23× against a minimum that
  // counted only those 7 slots; now 1.10× (1.09× with the largest families as templates, which
  // do worse elsewhere: docs/diskmap.md).
  it('6 machines x 1 disk + a disk in machine 0 (4+1 per machine) spreads machine 0 and stays within 1.11x', () => {
    const before = Array.from({ length: 6 }, () => [28]);
    const old = buildDiskmap(topo(before), opts);
    expect(old.scheme).toEqual({ kind: 'ec', k: 4, m: 1 });
    const dm = planChange(old, topo([[28, 28], ...before.slice(1)])).diskmap;
    expect(dm.groups.length).toBe(35);
    const onM0 = [...slotsPerDisk(dm)].filter(([k]) => k.startsWith('0.0.0.0.')).map(([, n]) => n);
    expect(onM0.reduce((a, b) => a + b, 0)).toBe(35);
    expect(Math.max(...onM0) - Math.min(...onM0)).toBeLessThanOrEqual(1);
    const mv = movementBetween(old, dm);
    expect(mv.minimumShare).toBeGreaterThanOrEqual(balancedArrivalBound(old, dm) - 1e-12);
    expect(mv.movedShare).toBeLessThanOrEqual(1.11 * mv.minimumShare);
  });

  // The reference for growth inside a machine (docs/diskmap.md, "Growth inside a machine"): a
  // machine that gives (nearly) every group its cap cannot be filled, and balance spreads what it
  // holds over all its disks, so the new disks must receive their share of it. The plan keeps
  // every machine's equal disks within one slot of each other (before, the old disks stayed full
  // and the new ones took the rest: 597 of 1,000 such growths left a machine unbalanced), so its
  // minimum is never below that reference; and it never moves less than the reference either.
  it('growth keeps every machine balanced, so the minimum is at least what balance must move', () => {
    let capped = 0;
    fc.assert(
      fc.property(evenTopologyArb, fc.integer({ min: 1, max: 4 }), fc.boolean(), (ms, n, newMachine) => {
        const old = tryBuild(topo(ms));
        if (old === undefined) return;
        const after = grown(ms, Array(n).fill(ms[0]?.[0] as number), newMachine);
        const dm = planChange(old, topo(after)).diskmap;
        const perMachine = new Map<string, number[]>();
        const counts = slotsPerDisk(dm);
        for (const e of diskEntries(dm.topology)) {
          const l = perMachine.get(machineOf(e.machine)) ?? [];
          l.push(counts.get(e.key) ?? 0);
          perMachine.set(machineOf(e.machine), l);
        }
        for (const l of perMachine.values()) expect(Math.max(...l) - Math.min(...l)).toBeLessThanOrEqual(1);
        const bound = balancedArrivalBound(old, dm);
        const mv = movementBetween(old, dm);
        expect(mv.minimumShare).toBeGreaterThanOrEqual(bound - 1e-12);
        expect(mv.movedShare).toBeGreaterThanOrEqual(bound - 1e-12);
        // A machine that cannot be filled: its new disks keep free buckets.
        const w = widthOf(dm.scheme);
        const used = [...counts.values()].reduce((a, b) => a + b, 0);
        if (bound > 0 && after.flat().reduce((a, b) => a + b, 0) - used >= w) capped++;
      }),
      { numRuns: 120 },
    );
    expect(capped).toBeGreaterThan(10);
  });

  // 6 machines × 3 disks of 37, 8+2 with at most 2 per machine, + 2 disks in machine 0: 69 groups
  // (from 66); the other machines hold at most 555 slots, so machine 0 holds at least 135 of its
  // 185 buckets: 27 a disk when balanced, so at least 2 × 26 slots arrive on the new disks.
  // Keeping the old disks full would have put only 135 − 111 = 24 there: that map is not
  // balanced, and the minimum measured on it was too low a reference (it measured 1.36×). Now
  // 1.11× (1.15× with the largest families as templates for the new groups).
  it('6 machines x 3 disks + 2 disks in machine 0: the balanced reference, and within 1.12x of it', () => {
    const before = Array.from({ length: 6 }, () => [37, 37, 37]);
    const old = buildDiskmap(topo(before), opts);
    expect(old.scheme).toEqual({ kind: 'ec', k: 8, m: 2 });
    expect(old.maxShardsPerDomain).toBe(2);
    const dm = planChange(old, topo([[37, 37, 37, 37, 37], ...before.slice(1)])).diskmap;
    const G = dm.groups.length;
    expect(G).toBe(69);
    const V = dm.vslotGroup.length;
    const perSlot = Math.floor(V / G) / (V * 10);
    const bound = balancedArrivalBound(old, dm);
    expect(bound).toBeGreaterThanOrEqual(52 * perSlot - 1e-12);
    expect(bound).toBeGreaterThan(24 * (Math.ceil(V / G) / (V * 10)));
    const mv = movementBetween(old, dm);
    expect(mv.minimumShare).toBeGreaterThanOrEqual(bound);
    expect(mv.movedShare).toBeLessThanOrEqual(1.12 * mv.minimumShare);
  });

  // 6 machines × 5 disks of 10, 8+2 ≤ 2 per machine, + 1 disk in machine 0: one new group (31 from
  // 30) must take 1/31 of the keys, and every old group must give it its surplus (~2 keys): at
  // each position the old groups with the new group's disk there supply at most 10 × 3 keys of
  // the 66 it needs, so at least 36 of them cross onto an old disk at each of its 9 old positions.
  // No plan gets below 1.57× here.
  it('6 machines x 5 disks + 1 disk in machine 0: 1.1x provably out of reach, the plan close to the bound', () => {
    const before = Array.from({ length: 6 }, () => Array(5).fill(10));
    const old = buildDiskmap(topo(before), opts);
    const dm = planChange(old, topo([Array(6).fill(10), ...before.slice(1)])).diskmap;
    expect(dm.groups.length).toBe(old.groups.length + 1);
    const lb = growthLowerBound(old, dm) as number;
    expect(lb).toBeGreaterThan(1.5);
    const mv = movementBetween(old, dm);
    expect(mv.movedShare / mv.minimumShare).toBeGreaterThanOrEqual(lb - 1e-9);
    expect(mv.movedShare / mv.minimumShare).toBeLessThanOrEqual(1.05 * lb);
  });

  it('the same change planned twice gives the same document', () => {
    const old = buildDiskmap(topo([[30, 30, 30]]), opts);
    const a = planChange(old, topo([[30, 30, 30, 30]]));
    const b = planChange(parseDiskmap(serializeDiskmap(old)), topo([[30, 30, 30, 30]]));
    expect(serializeDiskmap(b.diskmap)).toBe(serializeDiskmap(a.diskmap));
  });

  it('an unchanged topology keeps the epoch', () => {
    const old = buildDiskmap(topo([[30, 30, 30]]), opts);
    const p = planChange(old, old.topology);
    expect(p.diskmap).toBe(old);
    expect(p.moves).toEqual([]);
  });

  it('says when new capacity cannot be used under the failure-domain rule', () => {
    const before = Array.from({ length: 4 }, () => Array(6).fill(40));
    const old = buildDiskmap(topo(before), opts);
    const after = before.map((m, i) => (i === 0 ? [...m, 40] : m));
    const p = planChange(old, topo(after));
    expect(p.warnings.join(' ')).toMatch(/stay unused/);
  });
});

describe('removal, shrinking, drain', () => {
  const base = (): Diskmap => buildDiskmap(topo([[30, 30, 30, 30]]), opts);

  it('refuses to remove a disk that holds buckets, naming it', () => {
    const old = base();
    const p = planChange(old, topo([[30, 30, 30]]));
    expect(p.refused?.join(' ')).toMatch(/disk m0\/3 .* holds \d+ bucket\(s\).*drain it first/);
    expect(p.diskmap).toBe(old);
    const json = topologyToJson(old.topology);
    ((json.machines[0] as { disks: { state?: string }[] }).disks[3] as { state?: string }).state = 'removed';
    expect(planChange(old, parseTopology(json)).refused).toBeDefined();
  });

  it('refuses to shrink a disk below the buckets in use', () => {
    const old = base();
    expect(planChange(old, topo([[30, 30, 30, 10]])).refused?.join(' ')).toMatch(/shrank/);
  });

  it('a drain moves everything off the disk; then removing it is accepted', () => {
    // Spare room first: a fifth disk, so the drain can move buckets instead of retiring groups.
    const grownMap = planChange(base(), topo([[30, 30, 30, 30, 30]])).diskmap;
    const p = planDrain(grownMap, 'm0/1');
    expect(p.refused).toBeUndefined();
    const dm = p.diskmap;
    expect(dm.epoch).toBe(grownMap.epoch + 1);
    const drained = diskEntries(dm.topology).find((e) => diskLabel(e) === 'm0/1');
    expect(drained?.d.state).toBe('draining');
    expect(slotsPerDisk(dm).get(drained?.key as string) ?? 0).toBe(0);
    expect(p.moves.length).toBeGreaterThan(0);
    for (const m of p.moves) expect(diskKeyOf(m.from ?? m.to)).toBe(drained?.key);
    checkInvariants(dm);
    // Now the disk can go.
    const json = topologyToJson(dm.topology);
    (json.machines[0] as { disks: unknown[] }).disks.splice(1, 1);
    const removed = planChange(dm, parseTopology(json));
    expect(removed.refused).toBeUndefined();
    expect(removed.diskmap.epoch).toBe(dm.epoch + 1);
    expect(removed.diskmap.diff?.removedDisks).toEqual([drained?.key]);
  });

  it('a drain of a full map retires groups and hands their keys to the others', () => {
    const old = buildDiskmap(topo([[30, 30, 30, 30]]), { ...opts, scheme: { kind: 'ec', k: 2, m: 1 } });
    expect(old.groups.length).toBe(40); // every bucket used
    const p = planDrain(old, 'm0/0');
    expect(p.refused).toBeUndefined();
    expect(p.diskmap.diff?.retiredGroups.length).toBeGreaterThan(0);
    expect(p.warnings.join(' ')).toMatch(/retired/);
    checkInvariants(p.diskmap);
  });

  it('a drain retires only the groups the other disks cannot hold, and re-creates none', () => {
    const before = Array.from({ length: 4 }, () => Array(6).fill(20)); // 12+4, at most 4 per machine
    const old = buildDiskmap(topo(before), opts);
    const p = planDrain(old, 'm2/3');
    expect(p.refused).toBeUndefined();
    const bound = chooseRedundancy(topo([...before.slice(0, 2), Array(5).fill(20), before[3] as number[]]), { ...opts, scheme: old.scheme }).chosen.groups;
    expect(p.diskmap.groups.filter((g) => !g.retired).length).toBe(bound);
    expect(p.diskmap.diff?.addedGroups).toEqual([]);
    checkInvariants(p.diskmap);
  });

  it('a drain that cannot fit is refused, not half-applied', () => {
    const old = buildDiskmap(topo([[30, 30, 30]]), opts); // 2+1 on exactly 3 disks
    const p = planDrain(old, 'm0/0');
    expect(p.refused?.join(' ')).toMatch(/cannot drain m0\/0/);
    expect(p.diskmap).toBe(old);
  });
});

describe('failed disks', () => {
  it('groups on a failed disk are degraded and repaired onto free buckets', () => {
    // 4+2 over 3 machines (at most 2 shards per machine): a third disk in machine m0 cannot be used
    // by new groups; m0's 40 slots are spread over its three disks, so 20 buckets stay free there —
    // exactly what a repair inside m0 needs.
    const base = buildDiskmap(topo([[20, 20], [20, 20], [20, 20]]), opts);
    const withSpare = planChange(base, topo([[20, 20, 20], [20, 20], [20, 20]])).diskmap;
    expect(withSpare.groups.length).toBe(base.groups.length);
    const before = analyzeFailure(withSpare, { disks: ['m0/0'] });
    expect(before.writeState).toBe('reduced');
    expect(before.degradedGroups.length).toBeGreaterThan(0);
    expect(before.lostGroups).toEqual([]);
    const p = planRepair(withSpare, 'm0/0');
    const failedKey = diskEntries(p.diskmap.topology).find((e) => diskLabel(e) === 'm0/0')?.key as string;
    expect(p.moves.filter((m) => m.kind === 'repair').length).toBeGreaterThan(0);
    for (const m of p.moves.filter((x) => x.kind === 'repair')) expect(diskKeyOf(m.from as never)).toBe(failedKey);
    const left = p.diskmap.groups.filter((g) => g.buckets.some((b) => diskKeyOf(b) === failedKey)).length;
    // Whatever could not be placed is reported, the rest no longer uses the failed disk.
    expect(left).toBe(0);
    expect(p.warnings.join(' ')).not.toMatch(/cannot be repaired/);
    checkInvariants(p.diskmap);
    expect(analyzeFailure(p.diskmap, {}).degradedGroups).toEqual([]);
  });

  it('a replacement disk (same slot, new incarnation) receives the lost buckets', () => {
    const t1 = parseTopology({ machines: [{ name: 'b', machine: 0, disks: [0, 1, 2].map((d) => ({ disk: d, capacity: 30 * BUCKET, incarnation: `a${d}` })) }] });
    const old = buildDiskmap(t1, opts);
    const failed = planRepair(old, 'b/1');
    expect(failed.warnings.join(' ')).toMatch(/cannot be rebuilt.*degraded until the disk is replaced/); // nowhere to go yet
    const t2 = parseTopology({
      machines: [{ name: 'b', machine: 0, disks: [0, 1, 2].map((d) => ({ disk: d, capacity: 30 * BUCKET, incarnation: d === 1 ? 'b1' : `a${d}` })) }],
    });
    const p = planChange(failed.diskmap, t2);
    expect(p.refused).toBeUndefined();
    expect(p.moves.every((m) => m.kind === 'repair')).toBe(true);
    expect(p.moves.length).toBe(old.groups.length);
    checkInvariants(p.diskmap);
    expect(analyzeFailure(p.diskmap, { disks: [] }).degradedGroups).toEqual([]);
  });
});

describe('addressing across epochs', () => {
  it('the slot of a key does not depend on the map, only its group does', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 8, max: 22 }), (key, bits) => {
        const v = vslotOf(key, bits);
        expect(vslotOf(key, bits + 1) >>> 1).toBe(v);
      }),
      { numRuns: 100 },
    );
  });
});
