/**
 * The scheme table of docs/diskmap.md ("3 machines × 3 disks: the scheme side by side"): for each
 * scheme and headroom on 3 machines × 3 disks of 6 TB, capacity, repair of a lost disk, drain of a
 * disk, writes with a machine down, and a machine lost after a disk was lost and repaired.
 * Run: npx tsx test/diskmap/measure-appliance.ts
 */
import { buildDiskmap, planRepair, planDrain, planDegradedWrite, movementBetween, analyzeFailure, schemeText, type Scheme } from '../../src/diskmap/index.js';
import { topo } from './gen.js';
const GiB64 = 64 * 2 ** 30;
const TB6 = Math.floor(6e12 / 2 ** 20);
const ms = [[TB6, TB6, TB6], [TB6, TB6, TB6], [TB6, TB6, TB6]];
const opts: [Scheme, 'none' | 'disk'][] = [
  [{ kind: 'ec', k: 6, m: 3 }, 'none'], [{ kind: 'ec', k: 4, m: 2 }, 'none'], [{ kind: 'ec', k: 4, m: 2 }, 'disk'], [{ kind: 'ec', k: 2, m: 1 }, 'disk'], [{ kind: 'replica', n: 3 }, 'none'], [{ kind: 'replica', n: 2 }, 'disk'],
];
for (const [scheme, headroom] of opts) {
  const dm = buildDiskmap(topo(ms), { bucketSizeBytes: GiB64, scheme, headroom });
  const k = scheme.kind === 'ec' ? scheme.k : 1;
  const usable = dm.groups.length * k * GiB64;
  const raw = 9 * 6e12;
  const lost = dm.groups.filter((g) => g.buckets.some((b) => b.machine === 0 && b.disk === 0)).length;
  const r = planRepair(dm, 'm0/0');
  const rebuilt = r.moves.filter((m) => m.kind === 'repair').length;
  const d = planDrain(dm, 'm0/0');
  const drain = d.refused ? 'refused' : `${d.diskmap.diff?.retiredGroups.length ?? 0} groups retired, ${(movementBetween(dm, d.diskmap).movedShare * 100).toFixed(1)}% of data moves`;
  const g = dm.groups.find((x) => x.buckets.some((b) => b.machine === 0))!;
  const w = planDegradedWrite(dm, g.id, { machines: ['m0'] });
  const after = analyzeFailure(r.diskmap, { machines: ['m1'] });
  console.log(`| ${schemeText(scheme)} ≤${dm.maxShardsPerDomain}/${dm.failureDomain}, headroom ${headroom} | ${(usable / 1e12).toFixed(1)} TB (${(100 * usable / raw).toFixed(1)}%) | ${dm.groups.length} | ${rebuilt} of ${lost} | ${drain} | ${w.kind}: ${'survives' in w ? w.survives.text : ''} | after disk repair, a machine loss: ${after.lostGroups.length} lost groups |`);
}
