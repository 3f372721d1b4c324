/**
 * The redundancy rule: from the disks that exist, choose erasure coding k+m or n replicas and
 * the failure domain the groups are spread over. Every candidate is evaluated with the capacity
 * bound of layout.ts and reported with its usable capacity. The rule, as a table, is in
 * docs/diskmap.md ("Choosing the redundancy"); tests in test/diskmap/redundancy.test.ts.
 */
import { CairnError } from '../common/errors.js';
import { groupBound, headroomBound, Layout, type Headroom } from './layout.js';
import { defaultDataClass } from './topology.js';
import type { BuildOptions, DomainLevel, RedundancyCandidate, RedundancyChoice, Scheme, Topology } from './types.js';
import { DOMAIN_LEVELS } from './types.js';

export const DEFAULT_BUCKET_SIZE_BYTES = 64 * 2 ** 30;

/** The schemes considered, narrow to wide. */
export const CANDIDATE_SCHEMES: readonly Scheme[] = [
  { kind: 'replica', n: 2 },
  { kind: 'replica', n: 3 },
  { kind: 'ec', k: 2, m: 1 },
  { kind: 'ec', k: 3, m: 1 },
  { kind: 'ec', k: 4, m: 1 },
  { kind: 'ec', k: 4, m: 2 },
  { kind: 'ec', k: 6, m: 2 },
  { kind: 'ec', k: 6, m: 3 },
  { kind: 'ec', k: 8, m: 2 },
  { kind: 'ec', k: 8, m: 3 },
  { kind: 'ec', k: 10, m: 4 },
  { kind: 'ec', k: 12, m: 4 },
];

/** The design note's threshold: a disk holding at most this share of all buckets is "routine" to lose. */
export const ROUTINE_DISK_SHARE = 0.05;
/** Two candidates whose usable capacity differs by less than this share are a tie. */
export const TIE_SHARE = 0.01;
/** A larger failure domain is chosen only if it keeps at least this share of the best disk-level capacity. */
export const DOMAIN_COST_LIMIT = 0.5;
/** Repair headroom is kept (auto) when it keeps at least this share of the capacity without it. */
export const HEADROOM_COST_LIMIT = 0.6;

export const widthOf = (s: Scheme): number => (s.kind === 'ec' ? s.k + s.m : s.n);
/** Shards of a group that may be lost while every chunk stays readable. */
export const toleranceOf = (s: Scheme): number => (s.kind === 'ec' ? s.m : s.n - 1);
/** Buckets of user data per group. */
export const dataShardsOf = (s: Scheme): number => (s.kind === 'ec' ? s.k : 1);

export function schemeText(s: Scheme): string {
  return s.kind === 'ec' ? `EC ${s.k}+${s.m}` : s.n === 1 ? 'single copy (unsafe)' : `${s.n} replicas`;
}

export function checkScheme(s: Scheme): void {
  const ok =
    s.kind === 'ec'
      ? Number.isInteger(s.k) && Number.isInteger(s.m) && s.k >= 1 && s.m >= 1 && s.k + s.m <= 32
      : Number.isInteger(s.n) && s.n >= 1 && s.n <= 8;
  if (!ok) throw new CairnError('EINVAL', `scheme ${JSON.stringify(s)}: need EC k≥1, m≥1, k+m≤32, or 1..8 replicas`);
}

/**
 * Evaluate one scheme at one failure-domain level. The cap per domain is the scheme's tolerance;
 * a tighter cap (spreading over more domains) is used when it costs no capacity.
 */
export function evaluate(layout: Layout, scheme: Scheme, level: number, headroom: Headroom = 'none'): RedundancyCandidate {
  const disks = layout.disks.filter((d) => d.receiver && d.buckets > 0);
  const width = widthOf(scheme);
  const tol = toleranceOf(scheme);
  const raw = disks.reduce((s, d) => s + d.buckets, 0) * layout.bucketSizeBytes;
  const domains = level === 0 ? disks.length : new Set(disks.map((d) => d.dom[level])).size;
  const failureDomain = DOMAIN_LEVELS[level] as DomainLevel;
  const base = { scheme, failureDomain, headroom };
  const bound = (c: number): number => (headroom === 'disk' ? headroomBound(disks, width, level, c) : groupBound(disks, width, level, c));
  if (level > 0 && tol < 1) {
    return { ...base, maxShardsPerDomain: 1, groups: 0, usableBytes: 0, efficiency: 0, feasible: false, note: 'no redundancy: survives no failure' };
  }
  let cap = level === 0 ? 1 : tol;
  let groups = bound(cap);
  if (level > 0) {
    const tight = Math.max(1, Math.ceil(width / Math.max(1, domains)));
    if (tight < cap) {
      const g2 = bound(tight);
      if (g2 >= groups) {
        cap = tight;
        groups = g2;
      }
    }
  }
  const usableBytes = groups * dataShardsOf(scheme) * layout.bucketSizeBytes;
  const feasible = groups > 0;
  const note = feasible
    ? ''
    : disks.length < width
      ? `needs ${width} disks, has ${disks.length}`
      : headroom === 'disk' && groupBound(disks, width, level, cap) > 0
        ? `no room to rebuild a lost disk: with any one disk gone, ${width} shards with at most ${cap} per ${failureDomain} no longer fit`
        : `cannot place ${width} shards with at most ${cap} per ${failureDomain} over ${domains} ${failureDomain}s`;
  return { ...base, maxShardsPerDomain: cap, groups, usableBytes, efficiency: raw > 0 ? usableBytes / raw : 0, feasible, note };
}

function better(a: RedundancyCandidate, b: RedundancyCandidate, routine: boolean): boolean {
  // true when a beats b
  const hi = Math.max(a.usableBytes, b.usableBytes);
  if (hi > 0 && Math.abs(a.usableBytes - b.usableBytes) >= TIE_SHARE * hi) return a.usableBytes > b.usableBytes;
  const ta = toleranceOf(a.scheme);
  const tb = toleranceOf(b.scheme);
  if (ta !== tb) return ta > tb;
  if (a.scheme.kind !== b.scheme.kind) return routine ? a.scheme.kind === 'ec' : a.scheme.kind === 'replica';
  return widthOf(a.scheme) < widthOf(b.scheme);
}

/** The layout (data disks, domains) a topology gives; shared by chooseRedundancy and buildDiskmap. */
export function layoutFor(topology: Topology, opts: BuildOptions = {}): Layout {
  const bucketSizeBytes = opts.bucketSizeBytes ?? DEFAULT_BUCKET_SIZE_BYTES;
  if (!Number.isSafeInteger(bucketSizeBytes) || bucketSizeBytes < 1) {
    throw new CairnError('EINVAL', `bucket size must be a positive whole number of bytes, got ${String(bucketSizeBytes)}`);
  }
  return new Layout(topology, bucketSizeBytes, opts.dataClass ?? defaultDataClass(topology), 0, 1);
}

/**
 * Choose the redundancy for a topology (the rule in docs/diskmap.md):
 *  1. no data disk → refused; one disk → refused unless `unsafe` (then a single copy);
 *  2. every candidate scheme is evaluated at every failure-domain level with ≥ 2 domains;
 *  3. the level is the largest one whose best candidate keeps ≥ 50% of the best disk-level capacity;
 *  4. at that level the candidate with the most usable capacity wins; ties (< 1%) go to the one
 *     that survives more lost shards, then to EC when a disk is ≤ 5% of all buckets (routine
 *     loss) and to replicas otherwise, then to the narrower one.
 */
export function chooseRedundancy(topology: Topology, opts: BuildOptions = {}): RedundancyChoice {
  const layout = layoutFor(topology, opts);
  return chooseFor(layout, opts);
}

export function chooseFor(layout: Layout, opts: BuildOptions = {}): RedundancyChoice {
  const disks = layout.disks.filter((d) => d.receiver && d.buckets > 0);
  const total = disks.reduce((s, d) => s + d.buckets, 0);
  const maxDiskShare = total > 0 ? Math.max(...disks.map((d) => d.buckets)) / total : 1;
  const routineDiskLoss = maxDiskShare <= ROUTINE_DISK_SHARE;
  if (disks.length === 0) {
    throw new CairnError('EINVAL', `no active ${layout.dataClass} disk of at least one bucket (${layout.bucketSizeBytes} bytes) in topology "${layout.topology.name}"`);
  }
  if (opts.scheme !== undefined) checkScheme(opts.scheme);
  if (disks.length === 1 || (opts.scheme !== undefined && toleranceOf(opts.scheme) === 0)) {
    if (opts.unsafe !== true) {
      throw new CairnError(
        'EUNSAFE',
        disks.length === 1
          ? 'one data disk cannot survive its own loss: add disks (3 or more recommended) or pass --unsafe to accept a single copy'
          : 'a scheme with no redundancy needs --unsafe',
      );
    }
    const one = evaluate(layout, { kind: 'replica', n: 1 }, 0);
    const chosen = { ...one, note: 'chosen: unsafe, no redundancy' };
    return { chosen, candidates: [chosen], maxDiskShare, routineDiskLoss, unsafe: true, headroom: 'none', repairNote: 'a single copy: a lost disk loses its data' };
  }
  const schemes = opts.scheme !== undefined ? [opts.scheme] : CANDIDATE_SCHEMES;
  const pick = (headroom: Headroom): { chosen: RedundancyCandidate | undefined; candidates: RedundancyCandidate[] } => {
    const candidates: RedundancyCandidate[] = [];
    const bestAt: (RedundancyCandidate | undefined)[] = [];
    for (let lv = 0; lv < DOMAIN_LEVELS.length; lv++) {
      if (lv > 0 && layout.domainCount[lv] !== undefined && new Set(disks.map((d) => d.dom[lv])).size < 2) continue;
      let best: RedundancyCandidate | undefined;
      for (const s of schemes) {
        const c = evaluate(layout, s, lv, headroom);
        candidates.push(c);
        if (c.feasible && (best === undefined || better(c, best, routineDiskLoss))) best = c;
      }
      bestAt[lv] = best;
    }
    const diskBest = bestAt[0];
    if (diskBest === undefined) return { chosen: undefined, candidates };
    let chosen = diskBest;
    for (let lv = DOMAIN_LEVELS.length - 1; lv > 0; lv--) {
      const b = bestAt[lv];
      if (b !== undefined && b.usableBytes >= DOMAIN_COST_LIMIT * diskBest.usableBytes) {
        chosen = b;
        break;
      }
    }
    return { chosen, candidates };
  };
  const full = pick('none');
  if (full.chosen === undefined) {
    const why = full.candidates.map((c) => `${schemeText(c.scheme)}: ${c.note}`).join('; ');
    throw new CairnError('EINVAL', `no redundancy scheme fits topology "${layout.topology.name}" (${why})`);
  }
  const want = opts.headroom ?? 'auto';
  const spare = want === 'none' ? { chosen: undefined, candidates: [] } : pick('disk');
  const lvl = (c: RedundancyCandidate): number => DOMAIN_LEVELS.indexOf(c.failureDomain);
  const fc = full.chosen;
  const sc = spare.chosen;
  // Auto: keep the headroom when it costs at most 40% of the capacity, keeps the failure domain
  // and survives as many lost disks, counting up to two (a map that repairs itself is back at
  // full strength within hours, so a third parity shard that can never be rebuilt is worth less
  // than repair); otherwise a disk loss is degraded until replaced.
  const keep =
    sc !== undefined &&
    (want === 'disk' ||
      (sc.usableBytes >= HEADROOM_COST_LIMIT * fc.usableBytes && lvl(sc) >= lvl(fc) && toleranceOf(sc.scheme) >= Math.min(2, toleranceOf(fc.scheme))));
  if (want === 'disk' && sc === undefined) {
    throw new CairnError('ENOSPC', `topology "${layout.topology.name}": no scheme leaves room to rebuild a lost disk (with any one disk gone, no placement group fits); add disks or use headroom none`);
  }
  const chosen = keep ? (sc as RedundancyCandidate) : fc;
  const candidates = [...full.candidates, ...spare.candidates];
  const pctOf = (x: number): string => `${Math.round(100 * x)}%`;
  let repairNote: string;
  if (keep) {
    repairNote = `spare buckets are kept so that a lost disk's shards are rebuilt on the other disks by themselves (costs ${pctOf(1 - chosen.usableBytes / Math.max(1, fc.usableBytes))} of the capacity ${schemeText(fc.scheme)} without spare room would give)`;
  } else if (sc === undefined || want === 'none') {
    repairNote =
      want === 'none'
        ? 'no spare buckets are kept (headroom none): a lost disk stays degraded until the disk is replaced'
        : `a lost disk cannot be rebuilt elsewhere: with any one disk gone, no placement group fits the rules, so the cluster stays degraded until the disk is replaced`;
  } else {
    const why =
      lvl(sc) < lvl(fc)
        ? `only spreading over ${sc.failureDomain}s instead of ${fc.failureDomain}s`
        : toleranceOf(sc.scheme) < Math.min(2, toleranceOf(fc.scheme))
          ? `only with ${schemeText(sc.scheme)}, which survives fewer lost shards than ${schemeText(fc.scheme)}`
          : `only at ${pctOf(sc.usableBytes / fc.usableBytes)} of the capacity (${schemeText(sc.scheme)})`;
    repairNote = `a lost disk is not rebuilt by itself: room for that is possible ${why}, so the cluster stays degraded until the disk is replaced (or build with headroom disk)`;
  }
  const annotated = candidates.map((c) =>
    c === chosen
      ? { ...c, note: 'chosen' }
      : c.feasible && c.note === ''
        ? {
            ...c,
            note:
              c.headroom !== chosen.headroom
                ? c.headroom === 'disk'
                  ? 'with repair room: not chosen (see the repair note)'
                  : 'without repair room'
                : c.failureDomain !== chosen.failureDomain
                  ? `spreads over ${c.failureDomain}s, chosen level is ${chosen.failureDomain}`
                  : c.usableBytes < chosen.usableBytes
                    ? 'less usable capacity'
                    : 'tie, lost on tie-break',
          }
        : c,
  );
  const chosenOut = annotated[candidates.indexOf(chosen)] as RedundancyCandidate;
  return { chosen: chosenOut, candidates: annotated, maxDiskShare, routineDiskLoss, unsafe: false, headroom: keep ? 'disk' : 'none', repairNote };
}
