/** Failure analysis: degraded vs lost groups, unreadable share, whether writes may continue. */
import { describe, expect, it } from 'vitest';
import { analyzeFailure, buildDiskmap, type Diskmap } from '../../src/diskmap/index.js';
import { BUCKET, topo } from './gen.js';

const opts = { bucketSizeBytes: BUCKET };

describe('failure analysis', () => {
  const box: Diskmap = buildDiskmap(topo([[30, 30, 30]]), opts); // 2+1 per disk
  const three: Diskmap = buildDiskmap(topo([[30, 30], [30, 30], [30, 30]]), opts); // 4+2 per machine

  it('nothing failed: all healthy, writes continue', () => {
    const r = analyzeFailure(box, {});
    expect(r.healthyGroups).toBe(box.groups.length);
    expect(r.writeState).toBe('full');
    expect(r.writesMayContinue).toBe(true);
    expect(r.unreadableShare).toBe(0);
  });

  it('one disk of a 2+1 box: every group degraded, nothing lost, new writes unprotected', () => {
    const r = analyzeFailure(box, { disks: ['m0/1'] });
    expect(r.degradedGroups.length).toBe(box.groups.length);
    expect(r.lostGroups).toEqual([]);
    expect(r.degradedShare).toBeCloseTo(1, 10);
    expect(r.minShardsLeft).toBe(2);
    expect(r.writeState).toBe('unprotected');
    expect(r.writesMayContinue).toBe(true);
    expect(r.newWritesProtected).toBe(false);
  });

  it('two disks of a 2+1 box: everything lost, writes blocked', () => {
    const r = analyzeFailure(box, { disks: ['m0/0', 'm0/2'] });
    expect(r.lostGroups.length).toBe(box.groups.length);
    expect(r.unreadableShare).toBe(1);
    expect(r.writeState).toBe('blocked');
    expect(r.writesMayContinue).toBe(false);
    expect(r.summary.join(' ')).toMatch(/100\.0% of the data is unreadable/);
  });

  it('one disk of 4+2 over 3 machines: degraded, new writes still protected', () => {
    const r = analyzeFailure(three, { disks: ['m1/0'] });
    expect(r.lostGroups).toEqual([]);
    expect(r.degradedGroups.length).toBeGreaterThan(0);
    expect(r.writeState).toBe('reduced');
    expect(r.newWritesProtected).toBe(true);
  });

  it('a whole machine of 4+2 over 3 machines: readable; a second machine: lost', () => {
    const one = analyzeFailure(three, { machines: ['m2'] });
    expect(one.lostGroups).toEqual([]);
    expect(one.minShardsLeft).toBe(4);
    const two = analyzeFailure(three, { machines: ['m0', 'm2'] });
    expect(two.lostGroups.length).toBe(three.groups.length);
    expect(two.failedDisks.length).toBe(4);
  });

  it('part of the data lost: the unreadable share is that of the lost groups', () => {
    // 12 disks, 2 replicas: losing two disks loses only the groups on exactly that pair.
    const dm = buildDiskmap(topo([Array(12).fill(30)]), { ...opts, scheme: { kind: 'replica', n: 2 } });
    const r = analyzeFailure(dm, { disks: ['m0/0', 'm0/1'] });
    const onBoth = dm.groups.filter((g) => {
      const disks = new Set(g.buckets.map((b) => b.disk));
      return disks.has(0) && disks.has(1);
    });
    expect(r.lostGroups.length).toBe(onBoth.length);
    expect(r.unreadableShare).toBeGreaterThanOrEqual(0);
    expect(r.unreadableShare).toBeLessThan(0.5);
    expect(r.unreadableShare === 0).toBe(onBoth.length === 0);
  });

  it('disks already failed in the topology count as failed', () => {
    const r = analyzeFailure(buildDiskmap(topo([[30, 30, 30]]), opts), { disks: [] });
    expect(r.failedDisks).toEqual([]);
    expect(() => analyzeFailure(box, { disks: ['m9/0'] })).toThrow(/no machine/);
  });
});
