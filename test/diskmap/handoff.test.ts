/**
 * Writes with a disk or machine down (planDegradedWrite): the table of docs/diskmap.md ("Writes
 * with a disk or machine down") and properties over random maps and outages: targets are live,
 * outside the group, on distinct disks; what a placement is said to survive is true.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { buildDiskmap, diskEntries, HANDOFF_BUCKET, planDegradedWrite, widthOf, dataShardsOf, type DegradedWrite, type Diskmap } from '../../src/diskmap/index.js';
import { diskKeyOf } from '../../src/diskmap/bucket-id.js';
import { BUCKET, machineOf, topo, topologyArb } from './gen.js';

const build = (ms: number[][]): Diskmap => buildDiskmap(topo(ms), { bucketSizeBytes: BUCKET });
const groupOn = (dm: Diskmap, machine: number, disk: number): number => dm.groups.find((g) => g.buckets.some((b) => b.machine === machine && b.disk === disk))?.id ?? -1;

const rows: [string, number[][], { disks?: string[]; machines?: string[] }, DegradedWrite['kind'], number, boolean][] = [
  // name, topology, down, kind, more disks survived, survives one more machine
  ['3x3 (EC 4+2), a disk down', [[30, 30, 30], [30, 30, 30], [30, 30, 30]], { disks: ['m0/0'] }, 'handoff', 2, true],
  ['3x3 (EC 4+2), a machine down', [[30, 30, 30], [30, 30, 30], [30, 30, 30]], { machines: ['m0'] }, 'handoff', 2, false],
  ['3x2 (EC 4+2), a disk down', [[30, 30], [30, 30], [30, 30]], { disks: ['m0/0'] }, 'handoff', 1, false],
  ['3x2 (EC 4+2), a machine down', [[30, 30], [30, 30], [30, 30]], { machines: ['m0'] }, 'replicas', 1, true],
  ['3x1 (EC 2+1), a machine down', [[30], [30], [30]], { machines: ['m0'] }, 'replicas', 1, true],
  ['3-disk box (EC 2+1), a disk down', [[30, 30, 30]], { disks: ['m0/0'] }, 'replicas', 1, false],
  ['3x1 (EC 2+1), two machines down', [[30], [30], [30]], { machines: ['m0', 'm1'] }, 'refuse', 0, false],
  ['2 disks (2 replicas), a disk down', [[30, 30]], { disks: ['m0/0'] }, 'refuse', 0, false],
];

describe('writes with a disk or machine down', () => {
  it.each(rows)('%s → %s, survives %i more disk(s), a machine: %s', (_n, ms, down, kind, disks, machine) => {
    const dm = build(ms);
    const w = planDegradedWrite(dm, groupOn(dm, 0, 0), down);
    expect(w.kind).toBe(kind);
    if (w.kind === 'refuse') {
      expect(w.reason).toMatch(/would not survive the loss of one more disk/);
      return;
    }
    expect(w.survives.disks).toBe(disks);
    expect(w.survives.machine).toBe(machine);
    expect(w.survives.text).toMatch(disks === 1 ? /any one more disk/ : new RegExp(`any ${disks} more disks`));
  });

  it('a group with nothing down is written home', () => {
    const dm = build([[30, 30, 30], [30, 30, 30], [30, 30, 30]]);
    const g = dm.groups.find((x) => !x.buckets.some((b) => b.machine === 0 && b.disk === 0));
    expect(planDegradedWrite(dm, g?.id ?? -1, { disks: ['m0/0'] }).kind).toBe('home');
  });

  it('properties: live distinct targets, handoff buckets, and a survival that is true', () => {
    fc.assert(
      fc.property(topologyArb, fc.nat(), fc.nat(), fc.boolean(), (ms, gi, di, wholeMachine) => {
        let dm: Diskmap;
        try {
          dm = build(ms);
        } catch {
          return;
        }
        const es = diskEntries(dm.topology);
        const victim = es[di % es.length];
        if (victim === undefined) return;
        const down = wholeMachine ? { machines: [victim.machine.name] } : { disks: [`${victim.machine.name}/${victim.d.disk}`] };
        const downKeys = new Set(es.filter((e) => (wholeMachine ? e.machine === victim.machine : e === victim)).map((e) => e.key));
        const g = dm.groups[gi % dm.groups.length];
        if (g === undefined) return;
        const w = planDegradedWrite(dm, g.id, down);
        const k = dataShardsOf(dm.scheme);
        const liveInGroup = g.buckets.filter((b) => !downKeys.has(diskKeyOf(b)));
        if (w.kind === 'home') {
          expect(liveInGroup.length).toBe(widthOf(dm.scheme));
          return;
        }
        if (w.kind === 'refuse') {
          // Refused only when fewer than two live disks exist at all, or not even k+1 shards and 2 copies fit.
          expect(es.filter((e) => !downKeys.has(e.key)).length).toBeLessThan(2);
          return;
        }
        const placed = w.kind === 'handoff' ? [...liveInGroup, ...w.slots.map((s) => s.target)] : [...w.copies];
        const keys = placed.map(diskKeyOf);
        expect(new Set(keys).size).toBe(keys.length); // distinct disks
        for (const key of keys) expect(downKeys.has(key)).toBe(false); // all live
        if (w.kind === 'handoff') {
          for (const s of w.slots) expect(s.target.bucket).toBe(HANDOFF_BUCKET);
          expect(placed.length - k).toBe(w.survives.disks);
        } else {
          expect(w.copies.length).toBe(2);
          expect(w.survives.disks).toBe(1);
        }
        expect(w.survives.disks).toBeGreaterThanOrEqual(1);
        // "survives one more machine" is true: no machine holds more than the slack.
        if (w.survives.machine) {
          const per = new Map<string, number>();
          for (const b of placed) per.set(machineOf(b), (per.get(machineOf(b)) ?? 0) + 1);
          expect(Math.max(...per.values())).toBeLessThanOrEqual(w.survives.disks);
        }
      }),
      { numRuns: 300 },
    );
  });
});
