/**
 * The redundancy rule as a table (docs/diskmap.md "Choosing the redundancy"): each row is a
 * topology and the scheme and failure domain it must get.
 */
import { describe, expect, it } from 'vitest';
import { buildDiskmap, chooseRedundancy, schemeText, analyzeFailure, type Scheme } from '../../src/diskmap/index.js';
import { topo } from './gen.js';

const TB = 1e12;
const GiB64 = 64 * 2 ** 30;
const tbTopo = (machines: number[][]) => topo(machines.map((ds) => ds.map((tb) => Math.floor((tb * TB) / 2 ** 20))));
const opts = { bucketSizeBytes: GiB64 };

// [name, disks (TB per disk, per machine), chosen scheme, failure domain, headroom, the scheme without headroom]
const rows: [string, number[][], Scheme, string, string, Scheme][] = [
  ['2 disks', [[6, 6]], { kind: 'replica', n: 2 }, 'disk', 'none', { kind: 'replica', n: 2 }],
  ['3 equal disks in one box', [[6, 6, 6]], { kind: 'ec', k: 2, m: 1 }, 'disk', 'none', { kind: 'ec', k: 2, m: 1 }],
  ['3 uneven disks 1,1,6 TB', [[1, 1, 6]], { kind: 'replica', n: 2 }, 'disk', 'none', { kind: 'replica', n: 2 }],
  ['4 equal disks in one box', [[6, 6, 6, 6]], { kind: 'ec', k: 2, m: 1 }, 'disk', 'disk', { kind: 'ec', k: 3, m: 1 }],
  ['2 machines x 3 disks', [[6, 6, 6], [6, 6, 6]], { kind: 'replica', n: 2 }, 'machine', 'disk', { kind: 'replica', n: 2 }],
  ['3 machines x 1 disk', [[6], [6], [6]], { kind: 'ec', k: 2, m: 1 }, 'machine', 'none', { kind: 'ec', k: 2, m: 1 }],
  ['3 machines x 2 disks', [[6, 6], [6, 6], [6, 6]], { kind: 'ec', k: 4, m: 2 }, 'machine', 'none', { kind: 'ec', k: 4, m: 2 }],
  ['3 machines x 3 disks', [[6, 6, 6], [6, 6, 6], [6, 6, 6]], { kind: 'ec', k: 4, m: 2 }, 'machine', 'disk', { kind: 'ec', k: 6, m: 3 }],
  ['24 disks in one box', [Array(24).fill(6)], { kind: 'ec', k: 8, m: 2 }, 'disk', 'disk', { kind: 'ec', k: 8, m: 2 }],
  ['4 machines x 6 disks', Array.from({ length: 4 }, () => Array(6).fill(12)), { kind: 'ec', k: 8, m: 3 }, 'machine', 'disk', { kind: 'ec', k: 12, m: 4 }],
  ['12 machines x 5 disks', Array.from({ length: 12 }, () => Array(5).fill(6)), { kind: 'ec', k: 8, m: 2 }, 'machine', 'disk', { kind: 'ec', k: 8, m: 2 }],
];

describe('redundancy rule', () => {
  it.each(rows)('%s → %j per %s, headroom %s (without: %j)', (_name, machines, scheme, domain, headroom, withoutHeadroom) => {
    const c = chooseRedundancy(tbTopo(machines), opts);
    expect(c.chosen.scheme).toEqual(scheme);
    expect(c.chosen.failureDomain).toBe(domain);
    expect(c.headroom).toBe(headroom);
    expect(c.repairNote).toMatch(headroom === 'disk' ? /rebuilt on the other disks by themselves/ : /degraded until the disk is replaced/);
    const none = chooseRedundancy(tbTopo(machines), { ...opts, headroom: 'none' });
    expect(none.chosen.scheme).toEqual(withoutHeadroom);
    expect(none.headroom).toBe('none');
    // Every candidate reports its usable capacity; the chosen one keeps the most at its level.
    for (const cand of c.candidates) {
      expect(cand.usableBytes).toBeGreaterThanOrEqual(0);
      if (cand.feasible && cand.failureDomain === c.chosen.failureDomain && cand.headroom === c.chosen.headroom) {
        expect(cand.usableBytes).toBeLessThanOrEqual(c.chosen.usableBytes * 1.01);
      }
    }
  });

  it('one disk is refused unless unsafe', () => {
    const t = tbTopo([[6]]);
    expect(() => chooseRedundancy(t, opts)).toThrow(expect.objectContaining({ code: 'EUNSAFE' }));
    expect(() => buildDiskmap(t, opts)).toThrow(/--unsafe/);
    const c = chooseRedundancy(t, { ...opts, unsafe: true });
    expect(c.unsafe).toBe(true);
    expect(c.chosen.scheme).toEqual({ kind: 'replica', n: 1 });
    const dm = buildDiskmap(t, { ...opts, unsafe: true });
    expect(dm.unsafe).toBe(true);
    expect(analyzeFailure(dm, { disks: ['m0/0'] }).unreadableShare).toBe(1);
  });

  it('uneven 1,1,6 keeps the most usable capacity while surviving any one disk', () => {
    const c = chooseRedundancy(tbTopo([[1, 1, 6]]), opts);
    const feasible = c.candidates.filter((x) => x.feasible);
    const best = Math.max(...feasible.map((x) => x.usableBytes));
    expect(c.chosen.usableBytes).toBeGreaterThanOrEqual(best * 0.99);
    // 2+1 keeps the same (2 TB): the tie goes to replicas because a disk is far above 5% of the map.
    const ec21 = c.candidates.find((x) => schemeText(x.scheme) === 'EC 2+1');
    expect(ec21?.usableBytes).toBe(c.chosen.usableBytes);
    expect(c.routineDiskLoss).toBe(false);
  });

  it('the 5% rule: a disk loss is routine only when no disk holds more than 5% of the buckets', () => {
    expect(chooseRedundancy(tbTopo([Array(19).fill(6)]), opts).routineDiskLoss).toBe(false);
    expect(chooseRedundancy(tbTopo([Array(20).fill(6)]), opts).routineDiskLoss).toBe(true);
  });

  it('20+ even disks use wider EC than small boxes', () => {
    for (const n of [20, 24, 30]) {
      const c = chooseRedundancy(tbTopo([Array(n).fill(6)]), opts);
      expect(c.chosen.scheme.kind).toBe('ec');
      expect(c.chosen.scheme.kind === 'ec' && c.chosen.scheme.k + c.chosen.scheme.m).toBeGreaterThanOrEqual(10);
    }
  });

  it('a map has a bounded number of buckets', () => {
    const t = topo([Array(70).fill(1)]); // 70 disks of ~1 MiB: with 1-byte buckets each holds 65,536
    expect(() => buildDiskmap(t, { bucketSizeBytes: 1 })).toThrow(/more than 4000000 buckets .* larger bucket size/);
  });

  it('a forced scheme that does not fit is refused', () => {
    expect(() => chooseRedundancy(tbTopo([[6, 6, 6]]), { ...opts, scheme: { kind: 'ec', k: 4, m: 2 } })).toThrow(/no redundancy scheme fits/);
    expect(chooseRedundancy(tbTopo([[6, 6, 6]]), { ...opts, scheme: { kind: 'replica', n: 3 } }).chosen.scheme).toEqual({ kind: 'replica', n: 3 });
  });
});

describe('example topologies (examples/topologies)', () => {
  it.each([
    ['three-disk-box.json', { kind: 'ec', k: 2, m: 1 }, 'disk'],
    ['uneven-1-1-6.json', { kind: 'replica', n: 2 }, 'disk'],
    ['three-machines-two-disks.json', { kind: 'ec', k: 4, m: 2 }, 'machine'],
    ['four-machines-24-disks.json', { kind: 'ec', k: 8, m: 3 }, 'machine'],
  ])('%s builds with %j per %s', async (file, scheme, domain) => {
    const { readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { REPO_ROOT } = await import('../helpers/env.js');
    const { parseTopology } = await import('../../src/diskmap/index.js');
    const path = join(REPO_ROOT, 'examples', 'topologies', file);
    const dm = buildDiskmap(parseTopology(JSON.parse(await readFile(path, 'utf8')), path));
    expect(dm.scheme).toEqual(scheme);
    expect(dm.failureDomain).toBe(domain);
  });
});
