/**
 * Measurement harness (not a test): the data a growth moves against the minimum, over the same
 * fixed fast-check draws every time, grouped as in docs/diskmap.md ("Movement").
 *   npx tsx test/diskmap/measure-growth.ts [draws=300] [seed=42] [--worst]
 */
import fc from 'fast-check';
import { buildDiskmap, movementBetween, planChange, type Diskmap, type Topology } from '../../src/diskmap/index.js';
import { BUCKET, evenTopologyArb, growthLowerBound, topo, topologyArb } from './gen.js';

const draws = Number(process.argv[2] ?? 300);
const seed = Number(process.argv[3] ?? 42);
const showWorst = process.argv.includes('--worst');

const tryBuild = (t: Topology): Diskmap | undefined => {
  try {
    return buildDiskmap(t, { bucketSizeBytes: BUCKET, headroom: 'none' });
  } catch {
    return undefined;
  }
};

function grown(ms: number[][], add: number[], newMachine: boolean): number[][] {
  const out = ms.map((m) => [...m]);
  if (newMachine) out.push(add);
  else (out[0] as number[]).push(...add);
  return out;
}

type Row = { ratio: number; desc: string; bound?: number };
const groups = new Map<string, Row[]>();
const put = (k: string, r: Row): void => {
  if (r.bound !== undefined && r.ratio < r.bound - 1e-9) belowBound++;
  const l = groups.get(k);
  if (l === undefined) groups.set(k, [r]);
  else l.push(r);
};

let belowBound = 0;
const t0 = Date.now();
const even = fc.sample(fc.tuple(evenTopologyArb, fc.integer({ min: 1, max: 4 }), fc.boolean()), { seed, numRuns: draws });
for (const [ms, n, newMachine] of even) {
  const old = tryBuild(topo(ms));
  if (old === undefined) continue;
  const size = ms[0]?.[0] as number;
  const dm = planChange(old, topo(grown(ms, Array(n).fill(size), newMachine))).diskmap;
  const mv = movementBetween(old, dm);
  if (mv.minimumShare <= 0) continue;
  const ratio = mv.movedShare / mv.minimumShare;
  const lb = growthLowerBound(old, dm);
  const desc = `${lb === undefined ? '' : `(no plan below ${lb.toFixed(3)}) `}` + `${ms.length}x${ms[0]?.length}x${size} ${old.scheme.kind === 'ec' ? `${old.scheme.k}+${old.scheme.m}` : `${old.scheme.n}x`}/${old.failureDomain} +${n}${newMachine ? ' new machine' : ' in m0'}`;
  const r = { ratio, desc, ...(lb === undefined ? {} : { bound: lb }) };
  if (old.failureDomain === 'disk') put('equal disks, per disk', r);
  else if (newMachine) put('equal disks, per machine, a new machine', r);
  else {
    // Inside a machine that already gives (nearly) every group its cap: new groups only when the
    // other machines have room; else the machine's slots are only spread over its disks.
    const added = (dm.diff?.addedGroups.length ?? 0) > 0;
    put(`equal disks, per machine, inside a machine, ${added ? 'groups added' : 'no group added'}`, r);
    put('equal disks, per machine, inside a machine, all', r);
  }
  put('all equal-disk growths', r);
}
const uneven = fc.sample(fc.tuple(topologyArb, fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 4 }), fc.boolean()), { seed, numRuns: draws });
for (const [ms, add, newMachine] of uneven) {
  const old = tryBuild(topo(ms));
  if (old === undefined) continue;
  const dm = planChange(old, topo(grown(ms, add, newMachine))).diskmap;
  const mv = movementBetween(old, dm);
  if (mv.minimumShare <= 0) continue;
  const desc = `${JSON.stringify(ms)} ${old.scheme.kind === 'ec' ? `${old.scheme.k}+${old.scheme.m}` : `${old.scheme.n}x`}/${old.failureDomain} + ${JSON.stringify(add)}${newMachine ? ' new machine' : ' in m0'}`;
  const lb = growthLowerBound(old, dm);
  put('uneven disks (all shapes)', { ratio: mv.movedShare / mv.minimumShare, desc: `${lb === undefined ? '' : `(no plan below ${lb.toFixed(3)}) `}${desc}`, ...(lb === undefined ? {} : { bound: lb }) });
}

console.log(`draws=${draws} seed=${seed} (${((Date.now() - t0) / 1000).toFixed(1)} s)${belowBound > 0 ? ` — ${belowBound} case(s) BELOW THE LOWER BOUND: the bound is wrong` : ''}`);
console.log('| growth | cases | within 10% | median | worst | 1.1× provably out of reach | within 10% of the others |');
for (const [k, rows] of groups) {
  rows.sort((a, b) => a.ratio - b.ratio);
  const within = rows.filter((r) => r.ratio <= 1.1 + 1e-9).length;
  const med = rows[Math.floor(rows.length / 2)]?.ratio ?? NaN;
  const worst = rows[rows.length - 1];
  const reachable = rows.filter((r) => (r.bound ?? 1) <= 1.1);
  const reachWithin = reachable.filter((r) => r.ratio <= 1.1 + 1e-9).length;
  console.log(
    `| ${k} | ${rows.length} | ${((within / rows.length) * 100).toFixed(0)}% | ${med.toFixed(2)} | ${worst?.ratio.toFixed(2)} | ${rows.length - reachable.length} | ${reachable.length === 0 ? '-' : `${((reachWithin / reachable.length) * 100).toFixed(0)}%`} |`,
  );
  if (showWorst) for (const r of rows.slice(-6).reverse()) console.log(`    ${r.ratio.toFixed(3)}  ${r.desc}`);
}
