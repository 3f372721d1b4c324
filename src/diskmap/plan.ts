/**
 * Change planning: from the current diskmap and a new topology, the next diskmap (epoch + 1),
 * the moves that take the cluster there, and the recorded diff.
 *
 *  - Removing or shrinking a disk that still holds buckets is refused: drain it first.
 *  - A failed disk's slots are rebuilt on disks with free buckets ("repair" moves).
 *  - A draining disk: the groups the remaining disks cannot hold are retired (keys handed to the
 *    others); its other slots move to disks with free buckets (with one chained move if needed).
 *  - Added capacity is used automatically. A new group B is made from an existing group A of a
 *    frequent disk combination by putting one of its shards on the new disk; the buckets B needs
 *    on A's other disks are freed by moving shards of A's siblings to the new disk (more new disks
 *    in B where the placement rule allows and that makes more old groups agree with B). B's keys
 *    come from the old groups that share the most positions with it, handed out best pair first
 *    over all new groups, so their shards stay on the same disks (a copy inside one disk) except
 *    where B has a new disk: data crosses disks only to go to the new capacity — the minimum,
 *    about C/(T+C) — as long as enough old groups agree with B (docs/diskmap.md has the measured
 *    cases where they do not, and a lower bound that no plan can beat). A machine that cannot
 *    fill the disks added to it (it already gives groups their cap) is spread over all its disks
 *    by moves inside the machine onto its new disks (balance; all of it minimum movement). When
 *    no family is large enough to feed a new group alone, the templates are capacitated medoids
 *    of the old groups instead of the largest families.
 */
import { CairnError } from '../common/errors.js';
import { diskKeyOf, type BucketId } from './bucket-id.js';
import { targetGroups, toDiskmap, vslotBitsFor, MAX_VSLOT_BITS } from './build.js';
import { groupBound, Layout, levelIndex, type Headroom, type LDisk, type LGroup } from './layout.js';
import { chooseRedundancy, schemeText, widthOf } from './redundancy.js';
import { diskEntries, diskKey, diskLabel, resolveDiskRef, resolveMachineRef } from './topology.js';
import { movementBetween } from './movement.js';
import type { Diskmap, DiskState, KeyMove, SlotMove, Topology, TopologyDisk } from './types.js';

export interface PlanResult {
  /** The next diskmap; the old one unchanged when refused or when nothing changed. */
  readonly diskmap: Diskmap;
  readonly moves: readonly SlotMove[];
  readonly keyMoves: readonly KeyMove[];
  /** Why the change was refused (nothing is applied then). */
  readonly refused?: readonly string[];
  /** Things the operator should know (e.g. slots that could not be repaired). */
  readonly warnings: readonly string[];
}

export interface PlanOptions {
  /** Free text recorded in the diff. */
  readonly reason?: string;
  /**
   * Bytes of user data stored now (the runtime knows it): a plan whose usable capacity would fall
   * below it (a drain that retires groups) is refused instead of planned.
   */
  readonly storedBytes?: number;
  /**
   * Disk pairs "MACHINE/DISK" old → new: the old disk's slots go to the new one first (a
   * replacement: the same failure domains, one copy per slot). Used by planReplace.
   */
  readonly prefer?: ReadonlyMap<string, string>;
}

/** Rebuild the working layout of a diskmap over a (possibly new) topology. Lost slots get disk -1. */
function loadLayout(old: Diskmap, topology: Topology, refusals: string[]): Layout {
  const layout = new Layout(topology, old.bucketSizeBytes, old.dataClass, levelIndex(old.failureDomain), old.maxShardsPerDomain);
  const oldState = new Map<string, TopologyDisk>();
  const oldLabel = new Map<string, string>();
  for (const e of diskEntries(old.topology)) {
    oldState.set(e.key, e.d);
    oldLabel.set(e.key, diskLabel(e));
  }
  const gone = new Map<string, number>();
  const shrunk = new Map<string, number>();
  // Disk index by incarnation, checked against the location (diskKeyOf per bucket is slow).
  const byInc = new Map<bigint, number[]>();
  for (const d of layout.disks) {
    const l = byInc.get(d.entry.d.incarnation);
    if (l === undefined) byInc.set(d.entry.d.incarnation, [d.idx]);
    else l.push(d.idx);
  }
  const find = (b: BucketId): number | undefined =>
    byInc.get(b.incarnation)?.find((i) => {
      const e = (layout.disks[i] as LDisk).entry;
      return e.d.disk === b.disk && e.machine.machine === b.machine && e.machine.rack === b.rack && e.machine.row === b.row && e.machine.dc === b.dc;
    });
  for (const g of old.groups) {
    const lg: LGroup = { disks: [], buckets: [], retired: g.retired };
    for (const [pos, b] of g.buckets.entries()) {
      // A slot recorded as lost whose disk is gone stays lost (rebuilt below); if its disk is in
      // the topology again and not failed (the same incarnation: it came back), it is live again,
      // as a failed disk set back to active always was (catch-up brings it up to date).
      const idx = find(b);
      const key = idx === undefined ? diskKeyOf(b) : (layout.disks[idx] as LDisk).entry.key;
      const wasFailed = oldState.get(key)?.state === 'failed' || g.lost?.includes(pos) === true;
      const disk = idx === undefined ? undefined : layout.disks[idx];
      if (disk === undefined || disk.entry.d.state === 'failed' || b.bucket >= disk.buckets) {
        (lg.lostIds ??= new Map()).set(lg.disks.length, b);
        if (wasFailed || disk?.entry.d.state === 'failed') {
          lg.disks.push(-1);
          lg.buckets.push(-1);
          continue;
        }
        if (disk === undefined) gone.set(key, (gone.get(key) ?? 0) + 1);
        else shrunk.set(key, Math.max(shrunk.get(key) ?? 0, b.bucket + 1));
        lg.disks.push(-1);
        lg.buckets.push(-1);
        continue;
      }
      layout.take(disk.idx, b.bucket);
      lg.disks.push(disk.idx);
      lg.buckets.push(b.bucket);
    }
    layout.groups.push(lg);
  }
  for (const [key, n] of gone) {
    refusals.push(`disk ${oldLabel.get(key) ?? key} (${key}) holds ${n} bucket(s) of placement groups and is missing or removed in the new topology: drain it first (set its state to "draining", apply, then remove it)`);
  }
  for (const [key, n] of shrunk) {
    refusals.push(`disk ${oldLabel.get(key) ?? key} (${key}) shrank below bucket ${n - 1}, which is in use: drain it first (shrinking is never automatic)`);
  }
  return layout;
}

/** Most free buckets first; ties by disk order. Returns -1 when no receiver fits. */
function bestReceiver(layout: Layout, others: readonly number[], free: (d: number) => number): number {
  let best = -1;
  let bestFree = 0;
  for (const d of layout.disks) {
    if (!d.receiver) continue;
    const f = free(d.idx);
    if (f > bestFree && layout.fits(others, d.idx)) {
      best = d.idx;
      bestFree = f;
    }
  }
  return best;
}

function without<T>(arr: readonly T[], i: number): T[] {
  return arr.filter((_, j) => j !== i);
}

class Planner {
  readonly moves: SlotMove[] = [];
  readonly warnings: string[] = [];
  readonly addedGroups: number[] = [];
  readonly retiredGroups: number[] = [];
  /** For a new group: the groups whose keys it should take first (same disks in the old map). */
  readonly donorHint = new Map<number, number[]>();

  /** 1 for disks that held no bucket before this plan (new capacity). */
  private readonly fresh: Uint8Array;

  /** Each group's disks before this plan (shard i on oldDisks[g][i]); -1 for lost slots. */
  private readonly oldDisks: number[][];

  constructor(
    readonly layout: Layout,
    /** Replicas are interchangeable: a copy on the same disk at another position need not move. */
    readonly replicas: boolean,
    /** The map's repair headroom: growth keeps it. */
    readonly headroom: Headroom = 'none',
  ) {
    this.oldDisks = layout.groups.map((g) => [...g.disks]);
    this.fresh = Uint8Array.from(layout.disks, (d) => (d.usedCount === 0 ? 1 : 0));
  }

  /**
   * Donors for group B with the number of positions they share with it (same disk at the same
   * position; for replicas the same disk anywhere), most first: keys taken from them keep those
   * shards where they are.
   */
  private donorsByOverlap(B: number, isDonor: (g: number) => boolean): [number, number][] {
    const disks = (this.layout.groups[B] as LGroup).disks;
    const index = this.diskIndex();
    const overlap = new Map<number, number>();
    disks.forEach((d, i) => {
      for (const g of index.get(this.replicas ? d : d * 64 + i) ?? []) {
        if (g !== B && isDonor(g)) overlap.set(g, (overlap.get(g) ?? 0) + 1);
      }
    });
    return [...overlap.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  }

  /** (disk, position) → old groups with that disk there (replicas: disk → old groups on it). */
  private diskIndex(): Map<number, number[]> {
    if (this.index === undefined) {
      const m = new Map<number, number[]>();
      this.oldDisks.forEach((ds, g) =>
        ds.forEach((d, i) => {
          if (d < 0) return;
          const k = this.replicas ? d : d * 64 + i;
          const l = m.get(k);
          if (l === undefined) m.set(k, [g]);
          else l.push(g);
        }),
      );
      this.index = m;
    }
    return this.index;
  }

  private index: Map<number, number[]> | undefined;

  private moveSlot(g: number, i: number, to: number, kind: 'move' | 'repair'): void {
    const lg = this.layout.groups[g] as LGroup;
    const fromDisk = lg.disks[i] as number;
    const fromBucket = lg.buckets[i] as number;
    const from = fromDisk >= 0 ? this.layout.bucketIdOf(fromDisk, fromBucket) : (lg.lostIds?.get(i) ?? null);
    if (fromDisk >= 0) this.layout.release(fromDisk, fromBucket);
    const b = this.layout.alloc(to);
    lg.disks[i] = to;
    lg.buckets[i] = b;
    lg.lostIds?.delete(i);
    this.moves.push({ kind, group: g, index: i, from, to: this.layout.bucketIdOf(to, b) });
  }

  private retire(g: number): void {
    const lg = this.layout.groups[g] as LGroup;
    lg.disks.forEach((d, i) => {
      if (d >= 0) this.layout.release(d, lg.buckets[i] as number);
    });
    lg.disks = [];
    lg.buckets = [];
    lg.retired = true;
    this.retiredGroups.push(g);
  }

  /**
   * Rebuild every lost slot (disk -1) on a disk with a free bucket that keeps the rules, if need
   * be through one extra move (chainMove). Slots that fit nowhere stay lost, and the warning
   * says plainly that the cluster stays degraded until the disk is replaced.
   */
  repair(): void {
    const L = this.layout;
    const unrepaired: string[] = [];
    L.groups.forEach((lg, g) => {
      if (lg.retired) return;
      lg.disks.forEach((d, i) => {
        if (d >= 0) return;
        const others = without(lg.disks, i);
        const lostFrom = lg.lostIds?.get(i);
        const pref = lostFrom === undefined ? -1 : this.preferred(g, i, this.lostDisk(lostFrom));
        const r = pref >= 0 ? pref : bestReceiver(L, others, (x) => L.free(x));
        if (r >= 0) this.moveSlot(g, i, r, 'repair');
        else if (!this.chainMove(g, i, 'repair')) unrepaired.push(`${g}/${i}`);
      });
    });
    this.unrepaired = unrepaired.length;
    if (unrepaired.length > 0) {
      const shown = unrepaired.slice(0, 8).join(', ');
      this.warnings.push(
        `${unrepaired.length} lost shard(s) cannot be rebuilt (group/shard ${shown}${unrepaired.length > 8 ? ', …' : ''}): no active disk with a free bucket fits the placement rule, so those groups stay degraded until the disk is replaced (put a new disk in its place) or capacity is added`,
      );
    }
  }

  /** Lost slots that repair() could not rebuild. */
  unrepaired = 0;

  /** The layout index of the (failed) disk a lost bucket was on, or -1 when it is gone. */
  private lostDisk(b: BucketId): number {
    for (const d of this.layout.disks) {
      const e = d.entry;
      if (e.d.incarnation === b.incarnation && e.d.disk === b.disk && e.machine.machine === b.machine && e.machine.rack === b.rack && e.machine.row === b.row && e.machine.dc === b.dc) return d.idx;
    }
    return -1;
  }

  /** Disk index → the disk its slots should go to first (a replacement). */
  prefer = new Map<number, number>();

  /** The preferred receiver of slot (g, i) coming from disk `from`, or -1. */
  private preferred(g: number, i: number, from: number): number {
    const to = this.prefer.get(from);
    if (to === undefined) return -1;
    const lg = this.layout.groups[g] as LGroup;
    return this.layout.free(to) > 0 && this.layout.fits(without(lg.disks, i), to) ? to : -1;
  }

  /** Move every slot off draining disks; retire groups when the rest is full. */
  drain(width: number): void {
    const L = this.layout;
    const draining = L.disks.filter((d) => d.entry.d.state === 'draining').map((d) => d.idx);
    if (draining.length === 0) return;
    // Retire up front as many groups as the remaining disks cannot hold (those on the draining
    // disks first), so the drain does not retire more than it must and growth re-create them.
    const targetG = groupBound(
      L.disks.filter((d) => d.receiver && d.buckets > 0),
      width,
      L.level,
      L.cap,
    );
    if (targetG === 0) {
      throw new CairnError(
        'ENOSPC',
        `cannot drain ${draining.map((d) => diskLabel((L.disks[d] as LDisk).entry)).join(', ')}: the other disks cannot hold even one placement group of ${width} shards with at most ${L.cap} per ${['disk', 'machine', 'rack', 'row', 'dc'][L.level] ?? 'domain'}; add a disk (or machine) first, or replace the disk (cairn disk replace) instead of draining it`,
      );
    }
    let excess = L.activeGroups() - targetG;
    for (const g of this.retireOrder(draining, excess)) {
      if (excess <= 0) break;
      this.retire(g);
      excess--;
    }
    for (const disk of L.disks) {
      if (disk.entry.d.state !== 'draining') continue;
      for (let g = 0; g < L.groups.length; g++) {
        const lg = L.groups[g] as LGroup;
        const i = lg.disks.indexOf(disk.idx);
        if (lg.retired || i < 0) continue;
        const pref = this.preferred(g, i, disk.idx);
        const r = pref >= 0 ? pref : bestReceiver(L, without(lg.disks, i), (x) => L.free(x));
        if (r >= 0) {
          this.moveSlot(g, i, r, 'move');
          continue;
        }
        if (this.chainMove(g, i)) continue;
        if (L.activeGroups() <= 1) {
          throw new CairnError('ENOSPC', `cannot drain ${diskLabel(disk.entry)}: the other disks cannot hold even one placement group; add a disk first, or replace this one instead of draining it`);
        }
        this.retire(g);
      }
    }
    if (this.retiredGroups.length > 0) {
      this.warnings.push(`the drain retired ${this.retiredGroups.length} placement group(s): usable capacity shrinks; make sure the data fits before applying`);
    }
  }

  /**
   * Which groups on the draining disks to retire: their keys go to the groups that stay, each of
   * which takes some (even shares), at a cost of the positions where giver and taker differ. So
   * choose them like medoids: one by one, the group that most raises, summed over the staying
   * groups, the best agreement (same disk at the same position, the draining disks left out)
   * with a chosen one. Small maps only (else: in group order, as before).
   */
  private retireOrder(draining: readonly number[], n: number): number[] {
    const L = this.layout;
    const on: number[] = [];
    L.groups.forEach((lg, g) => {
      if (!lg.retired && lg.disks.some((d) => draining.includes(d))) on.push(g);
    });
    if (n <= 0 || on.length <= n || L.groups.length * on.length * n > 20_000_000) return on;
    const stay = L.groups.map((lg, g) => ({ lg, g })).filter(({ lg }) => !lg.retired);
    const agree = (a: LGroup, b: LGroup): number => {
      let k = 0;
      for (let i = 0; i < a.disks.length; i++) if (a.disks[i] === b.disks[i] && !draining.includes(a.disks[i] as number)) k++;
      return k;
    };
    const best = new Map<number, number>(stay.map(({ g }) => [g, -1]));
    const chosen: number[] = [];
    const left = new Set(on);
    while (chosen.length < n) {
      let top = -1;
      let topGain = -Infinity;
      for (const r of left) {
        const R = L.groups[r] as LGroup;
        let gain = 0;
        for (const { lg, g } of stay) {
          if (g === r || chosen.includes(g)) continue;
          gain += Math.max(0, agree(R, lg) - (best.get(g) as number));
        }
        if (gain > topGain) {
          topGain = gain;
          top = r;
        }
      }
      chosen.push(top);
      left.delete(top);
      const R = L.groups[top] as LGroup;
      for (const { lg, g } of stay) best.set(g, Math.max(best.get(g) as number, agree(R, lg)));
    }
    return chosen;
  }

  /**
   * Slot (g, i) fits no disk with a free bucket. Make room with one extra move: some disk Y that
   * fits g is full, but a group h on Y can move its shard from Y to a disk Z with a free bucket;
   * then g's shard goes to Y. Costs one more bucket copy, far less than retiring a group.
   */
  private chainMove(g: number, i: number, kind: 'move' | 'repair' = 'move'): boolean {
    // Depth 1 first (one extra move), then longer chains of up to three extra moves.
    for (let depth = 1; depth <= 3; depth++) {
      this.chainBudget = 50_000;
      const path = this.findChain(g, i, depth, new Set([g]));
      if (path === undefined) continue;
      // Apply from the end of the chain (the move into a free bucket) back to (g, i).
      for (let at = path.length - 1; at >= 0; at--) {
        const step = path[at] as { g: number; i: number; to: number };
        this.moveSlot(step.g, step.i, step.to, at === 0 ? kind : 'move');
      }
      return true;
    }
    return false;
  }

  /**
   * A chain of moves that makes room for slot (g, i): [(g, i) → Y, (h, p) → Z, …], the last one
   * into a free bucket, each keeping the placement rule, at most `depth` moves after the first.
   */
  private chainBudget = 0;

  private findChain(g: number, i: number, depth: number, used: Set<number>): { g: number; i: number; to: number }[] | undefined {
    const L = this.layout;
    if (--this.chainBudget < 0) return undefined;
    const lg = L.groups[g] as LGroup;
    const others = without(lg.disks, i);
    for (const Y of L.disks) {
      if (!Y.receiver || L.free(Y.idx) > 0 || !L.fits(others, Y.idx)) continue;
      for (let h = 0; h < L.groups.length; h++) {
        if (used.has(h)) continue;
        if (--this.chainBudget < 0) return undefined;
        const hg = L.groups[h] as LGroup;
        const p = hg.disks.indexOf(Y.idx);
        if (hg.retired || p < 0) continue;
        const Z = bestReceiver(L, without(hg.disks, p), (x) => L.free(x));
        if (Z >= 0) return [{ g, i, to: Y.idx }, { g: h, i: p, to: Z }];
        if (depth > 1) {
          used.add(h);
          const rest = this.findChain(h, p, depth - 1, used);
          used.delete(h);
          if (rest !== undefined) return [{ g, i, to: Y.idx }, ...rest];
        }
      }
    }
    return undefined;
  }

  /** Use free buckets on active disks for new groups (see the header comment). */
  grow(width: number): void {
    const L = this.layout;
    const targetG = targetGroups(L, width, this.headroom);
    let need = targetG - L.activeGroups();
    if (need <= 0) return;
    // Frequent disk combinations (copysets) of the current map and their members.
    const tuples = new Map<string, number[]>();
    L.groups.forEach((lg, g) => {
      if (lg.retired || lg.disks.includes(-1)) return;
      const k = lg.disks.join(',');
      const list = tuples.get(k);
      if (list === undefined) tuples.set(k, [g]);
      else list.push(g);
    });
    const activeG = L.activeGroups();
    const order = [...tuples.entries()]
      .map(([k, members]) => ({ k, members, original: [...members], quota: (members.length * need) / Math.max(1, activeG), units: 0 }))
      .sort((a, b) => b.quota - a.quota);
    // Largest-remainder rounding of the quotas.
    let assigned = 0;
    for (const t of order) {
      t.units = Math.floor(t.quota);
      assigned += t.units;
    }
    const byRemainder = [...order].sort((a, b) => b.quota - Math.floor(b.quota) - (a.quota - Math.floor(a.quota)));
    for (const t of byRemainder) {
      if (assigned >= need) break;
      t.units++;
      assigned++;
    }
    this.medoidUnits(order, need);
    let unitNo = 0;
    for (const t of order) {
      for (let u = 0; u < t.units && need > 0; u++) {
        if (!this.growUnit(t.k, t.members, t.original, unitNo++)) break;
        need--;
      }
    }
    // Quotas that could not be met: any combination that still fits, largest first.
    while (need > 0) {
      let made = false;
      order.sort((a, b) => b.members.length - a.members.length);
      for (const t of order) {
        if (need === 0) break;
        if (this.growUnit(t.k, t.members, t.original, unitNo++)) {
          need--;
          made = true;
        }
      }
      if (!made) break;
    }
    // Whatever capacity is left (e.g. combinations that were too small): plain greedy groups.
    if (need > 0) {
      const made = L.fillGreedy(width, need);
      for (const g of made) {
        const lg = L.groups[g] as LGroup;
        lg.disks.forEach((d, i) => this.moves.push({ kind: 'new', group: g, index: i, from: null, to: L.bucketIdOf(d, lg.buckets[i] as number) }));
        this.addedGroups.push(g);
      }
    }
  }

  /**
   * Balance inside each machine after growth. A machine that holds its cap of shards in (nearly)
   * every group cannot fill the disks added to it: the capacity bound leaves buckets free there.
   * Balance (every disk's share of slots matches its share of buckets) then asks for the slots of
   * that machine to be spread over all its disks by capacity, not for the old disks to stay full
   * and the new ones to take the rest. So slots move from the machine's fuller disks to its new
   * disks (never to an old disk: data crossing between two old disks is never needed) until no
   * such move brings the two closer, each to a disk not yet in the group (a move inside the
   * machine keeps every failure-domain count). Of the slots on a disk, the one that moves the
   * least data goes: a slot whose keys were just handed over from another group and sat on
   * another old disk there moves nothing extra (those keys cross disks anyway), a slot of an
   * old group that kept its keys moves all of them. Run after the key hand-out (it needs it).
   */
  level(): void {
    const L = this.layout;
    // Per failure domain (a machine, or a rack when racks are the domain: a machine added to a
    // rack whose every group already holds its cap there takes a share of the rack's slots).
    const byMachine = new Map<number, number[]>();
    const lvl = Math.max(1, L.level);
    for (const d of L.disks) {
      if (!d.receiver || d.buckets === 0) continue;
      const m = d.dom[lvl] as number;
      const l = byMachine.get(m);
      if (l === undefined) byMachine.set(m, [d.idx]);
      else l.push(d.idx);
    }
    const machines = [...byMachine.values()].filter((ds) => ds.some((x) => this.fresh[x] === 1 && L.free(x) > 0) && ds.length > 1);
    if (machines.length === 0) return;
    const w = L.groups.find((g) => !g.retired)?.disks.length ?? 0;
    if (w === 0) return;
    // cost[g·w + i]: 1 when moving slot i of g moves data that could stay (an old group keeps its
    // keys there), 0 for a new group (its keys arrive from other groups anyway).
    const added = new Set(this.addedGroups);
    const cost = new Float64Array(L.groups.length * w);
    L.groups.forEach((lg, g) => {
      if (!added.has(g)) for (let i = 0; i < lg.disks.length; i++) cost[g * w + i] = 1;
    });
    const onDisk = new Map<number, Set<number>>();
    L.groups.forEach((lg, g) => {
      if (lg.retired) return;
      for (const x of lg.disks) {
        if (x < 0) continue;
        const s = onDisk.get(x);
        if (s === undefined) onDisk.set(x, new Set([g]));
        else s.add(g);
      }
    });
    const earlier = new Map<number, number>();
    this.moves.forEach((m, at) => earlier.set(m.group * 64 + m.index, at));
    for (const ds of machines) {
      // A disk's deviation from its share of the machine's slots (slots · buckets / machine buckets).
      let slots = 0;
      let buckets = 0;
      for (const x of ds) {
        slots += (L.disks[x] as LDisk).usedCount;
        buckets += (L.disks[x] as LDisk).buckets;
      }
      const dev = (d: number): number => (L.disks[d] as LDisk).usedCount - (slots * (L.disks[d] as LDisk).buckets) / buckets;
      for (;;) {
        const targets = ds.filter((x) => this.fresh[x] === 1 && L.free(x) > 0).sort((a, b) => dev(a) - dev(b) || a - b);
        const sources = ds.filter((x) => (L.disks[x] as LDisk).usedCount > 0).sort((a, b) => dev(b) - dev(a) || a - b);
        let done = false;
        search: for (const N of targets) {
          for (const X of sources) {
            if (X === N) continue;
            // Only while it brings the two closer (the sum of squared deviations falls).
            if (dev(X) - dev(N) <= 1 + 1e-9) break;
            let best = -1;
            let bestI = -1;
            for (const g of onDisk.get(X) ?? []) {
              const lg = L.groups[g] as LGroup;
              const i = lg.disks.indexOf(X);
              if (i < 0 || lg.disks.includes(N) || !L.fits(without(lg.disks, i), N)) continue;
              if (best < 0 || (cost[g * w + i] as number) < (cost[best * w + bestI] as number) || ((cost[g * w + i] as number) === (cost[best * w + bestI] as number) && g < best)) {
                best = g;
                bestI = i;
              }
            }
            if (best < 0) continue;
            const lg = L.groups[best] as LGroup;
            const from = L.bucketIdOf(X, lg.buckets[bestI] as number);
            L.release(X, lg.buckets[bestI] as number);
            const b = L.alloc(N);
            lg.disks[bestI] = N;
            lg.buckets[bestI] = b;
            cost[best * w + bestI] = 0;
            onDisk.get(X)?.delete(best);
            const s = onDisk.get(N);
            if (s === undefined) onDisk.set(N, new Set([best]));
            else s.add(best);
            const to = L.bucketIdOf(N, b);
            const at = earlier.get(best * 64 + bestI);
            if (at !== undefined) {
              // Planned already (a new group's bucket, or a move to a new disk): it goes here instead.
              this.moves[at] = { ...(this.moves[at] as SlotMove), to };
            } else {
              earlier.set(best * 64 + bestI, this.moves.length);
              this.moves.push({ kind: 'move', group: best, index: bestI, from, to });
            }
            done = true;
            break search;
          }
        }
        if (!done) break;
      }
    }
  }

  /**
   * When no combination is frequent enough to feed a new group alone (a new group needs about
   * G/ΔG donors and every family is smaller), every old group ends up giving keys to a new group
   * that differs from it at some positions. Then choose the templates as capacitated medoids:
   * start from the greedy picks (each next one raising most the best agreement of every old
   * group with a chosen template; agreement = positions with the same disk, on machines that got
   * no new disk), then a few rounds of: assign every old group to a template, at most ⌈G/ΔG⌉ each,
   * by the cheapest assignment; move each template to the combination that agrees most with its
   * old groups. Small maps only.
   */
  private medoidUnits(order: { k: string; members: number[]; units: number }[], need: number): void {
    const L = this.layout;
    if (this.replicas || order.length === 0 || need <= 0) return;
    const olds = L.groups.filter((g) => !g.retired && !g.disks.includes(-1)).map((g) => g.disks);
    const G = olds.length;
    if (order.some((t) => t.members.length * need * 2 > G)) return;
    const w = olds[0]?.length ?? 0;
    if (w === 0 || order.length * G * w > 4_000_000 || G > 1_000 || G * need > 5_000) return;
    const freshMachine = new Set<number>();
    for (const d of L.disks) if (this.fresh[d.idx] === 1 && d.receiver && d.buckets > 0) freshMachine.add(d.dom[1] as number);
    const tuplesOf = order.map((t) => t.k.split(',').map(Number));
    const agree = (a: readonly number[], b: readonly number[]): number => {
      let n = 0;
      for (let i = 0; i < w; i++) if (a[i] === b[i] && !freshMachine.has((L.disks[a[i] as number] as LDisk).dom[1] as number)) n++;
      return n;
    };
    const best = new Int32Array(G);
    const chosen: number[] = [];
    for (let u = 0; u < need; u++) {
      let top = -1;
      let topGain = -1;
      tuplesOf.forEach((tp, ti) => {
        if (chosen.includes(ti)) return;
        let gain = 0;
        olds.forEach((od, a) => {
          gain += Math.max(0, agree(od, tp) - (best[a] as number));
        });
        if (gain > topGain) {
          topGain = gain;
          top = ti;
        }
      });
      if (top < 0) break;
      chosen.push(top);
      olds.forEach((od, a) => {
        best[a] = Math.max(best[a] as number, agree(od, tuplesOf[top] as number[]));
      });
    }
    const capacity = Math.ceil(G / Math.max(1, chosen.length));
    for (let round = 0; round < 3 && chosen.length > 1; round++) {
      const pairs: { A: number; B: number; o: number }[] = [];
      olds.forEach((od, a) => chosen.forEach((ti, c) => pairs.push({ A: a, B: c, o: agree(od, tuplesOf[ti] as number[]) })));
      const flows = cheapestAssignment(pairs, () => 1, () => capacity);
      const members: number[][] = chosen.map(() => []);
      pairs.forEach((p, at) => {
        if ((flows[at] as number) > 0) (members[p.B] as number[]).push(p.A);
      });
      let changed = false;
      chosen.forEach((ti, c) => {
        let top = ti;
        let topScore = -1;
        tuplesOf.forEach((tp, tj) => {
          if (tj !== ti && chosen.includes(tj)) return;
          let score = 0;
          for (const a of members[c] as number[]) score += agree(olds[a] as number[], tp);
          if (score > topScore || (score === topScore && tj === ti)) {
            topScore = score;
            top = tj;
          }
        });
        if (top !== ti) changed = true;
        chosen[c] = top;
      });
      if (!changed) break;
    }
    for (const t of order) t.units = 0;
    for (const ti of chosen) (order[ti] as { units: number }).units = 1;
    order.sort((a, b) => b.units - a.units);
  }

  /**
   * Say so when active disks keep free buckets that no group can use (beyond the repair
   * headroom), and when the headroom left cannot absorb the loss of another disk.
   */
  reportUnused(width: number): void {
    const L = this.layout;
    let spare = 0;
    for (const d of L.disks) if (d.receiver) spare += L.free(d.idx);
    const active = L.activeGroups();
    const byRule = groupBound(
      L.disks.filter((d) => d.receiver && d.buckets > 0),
      width,
      L.level,
      L.cap,
    );
    // Buckets the rule could use for groups but the headroom keeps free are not "unused".
    const kept = this.headroom === 'disk' ? Math.max(0, byRule - targetGroups(L, width, 'disk')) * width : 0;
    if (spare - kept >= width) {
      this.warnings.push(
        `${spare - kept} bucket(s) on active disks stay unused: more groups would break the rule of at most ${L.cap} shard(s) per ${['disk', 'machine', 'rack', 'row', 'dc'][L.level] ?? 'domain'} or need more disks of that size; add capacity to other ${['disks', 'machines', 'racks', 'rows', 'dcs'][L.level] ?? 'domains'}`,
      );
    }
    if (this.headroom === 'disk' && active > 0 && targetGroups(L, width, 'disk') < active) {
      this.warnings.push('the spare buckets left cannot take the shards of another lost disk: until a disk is added or the lost one replaced, a second disk loss stays degraded');
    }
  }

  /** disk → groups with a shard on it (built on first use, checked lazily: entries may be stale). */
  private onDisk: Map<number, number[]> | undefined;

  private anyGroupOn(
    d: number,
    taken: readonly { g: number }[],
    target: (g: number, i: number) => number,
    template: number,
  ): { g: number; i: number; to: number } | undefined {
    if (this.onDisk === undefined) {
      this.onDisk = new Map();
      this.layout.groups.forEach((lg, g) => {
        if (lg.retired) return;
        for (const x of lg.disks) {
          if (x < 0) continue;
          const l = this.onDisk?.get(x);
          if (l === undefined) this.onDisk?.set(x, [g]);
          else l.push(g);
        }
      });
    }
    const list = this.onDisk.get(d) ?? [];
    for (let at = list.length - 1; at >= 0; at--) {
      const g = list[at] as number;
      const lg = this.layout.groups[g] as LGroup;
      const i = lg.disks.indexOf(d);
      if (lg.retired || i < 0) {
        list.splice(at, 1);
        continue;
      }
      if (g === template || taken.some((t) => t.g === g)) continue;
      const to = target(g, i);
      if (to < 0) continue;
      list.splice(at, 1);
      return { g, i, to };
    }
    return undefined;
  }

  /** One new group from a template combination; false when it does not fit. */
  private growUnit(key: string, members: number[], original: readonly number[], unitNo: number): boolean {
    const L = this.layout;
    // Members whose shards were moved by earlier units no longer have the combination's disks.
    const same = (g: number): boolean => {
      const lg = L.groups[g] as LGroup;
      return !lg.retired && lg.disks.join(',') === key;
    };
    while (members.length > 0 && !same(members[0] as number)) members.shift();
    const A = members[0];
    if (A === undefined) return false;
    const S = [...(L.groups[A] as LGroup).disks];
    const w = S.length;
    const free = new Map<number, number>();
    const fr = (d: number): number => free.get(d) ?? L.free(d);
    const use = (d: number): void => void free.set(d, fr(d) - 1);
    // The receiver of B's replaced shard: most free buckets, fits with S minus one position.
    let R = -1;
    let j = -1;
    for (let t = 0; t < w && R < 0; t++) {
      const jj = (unitNo + t) % w;
      const r = bestReceiver(L, without(S, jj), fr);
      if (r >= 0 && !S.includes(r)) {
        R = r;
        j = jj;
      }
    }
    if (R < 0) return false;
    use(R);
    // More new disks in B (as the placement rule allows) where each makes more old groups agree
    // with B on all of B's old disks: keys from those move no shard between old disks.
    const newAt = new Map<number, number>([[j, R]]);
    if (!this.replicas) {
      const index = this.diskIndex();
      for (;;) {
        const ov = new Map<number, number>();
        for (let i = 0; i < w; i++) {
          if (newAt.has(i)) continue;
          for (const g of index.get((S[i] as number) * 64 + i) ?? []) ov.set(g, (ov.get(g) ?? 0) + 1);
        }
        const tally = new Int32Array(w);
        const oldPositions = w - newAt.size;
        for (const [g, c] of ov) {
          if (c !== oldPositions - 1) continue;
          const od = this.oldDisks[g] as number[];
          for (let i = 0; i < w; i++) if (!newAt.has(i) && od[i] !== S[i]) tally[i] = (tally[i] as number) + 1;
        }
        const Bt = S.map((d, i) => newAt.get(i) ?? d);
        let bestT = 0;
        let bestP = -1;
        let bestR = -1;
        for (let p = 0; p < w; p++) {
          if (newAt.has(p) || (tally[p] as number) <= bestT) continue;
          const r = bestReceiver(L, without(Bt, p), (x) => (this.fresh[x] === 1 && !Bt.includes(x) ? fr(x) : 0));
          if (r < 0) continue;
          bestT = tally[p] as number;
          bestP = p;
          bestR = r;
        }
        if (bestP < 0 || oldPositions <= 1) break;
        newAt.set(bestP, bestR);
        use(bestR);
      }
    }
    // Room on S[i] for i ≠ j: a free bucket, or move a sibling's shard off it.
    const room: { g: number; i: number; to: number }[] = [];
    const siblings = members.slice(1);
    for (let i = 0; i < w; i++) {
      if (newAt.has(i)) continue;
      const d = S[i] as number;
      if (fr(d) > 0) {
        use(d);
        continue;
      }
      // A sibling's shard at the same position, else any other group's shard on that disk.
      const target = (g: number, p: number): number => {
        const sd = (L.groups[g] as LGroup).disks;
        const others = without(sd, p);
        // Only to a disk that held nothing before (new capacity): a shard moved between two old
        // disks is data that crosses disks for nothing.
        const to = fr(R) > 0 && L.fits(others, R) ? R : bestReceiver(L, others, (x) => (this.fresh[x] === 1 ? fr(x) : 0));
        return to >= 0 && !sd.includes(to) ? to : -1;
      };
      let mover: { g: number; i: number; to: number } | undefined;
      let sib = siblings.shift();
      while (sib !== undefined && (room.some((r) => r.g === sib) || !same(sib))) sib = siblings.shift();
      if (sib !== undefined) {
        const to = target(sib, i);
        if (to >= 0) mover = { g: sib, i, to };
      }
      mover ??= this.anyGroupOn(d, room, target, A);
      if (mover === undefined) return false;
      use(mover.to);
      room.push(mover);
    }
    // Apply.
    for (const r of room) {
      this.moveSlot(r.g, r.i, r.to, 'move');
      const at = members.indexOf(r.g);
      if (at >= 0) members.splice(at, 1);
    }
    const B: LGroup = { disks: [], buckets: [], retired: false };
    const id = L.groups.length;
    for (let i = 0; i < w; i++) {
      const d = newAt.get(i) ?? (S[i] as number);
      const b = L.alloc(d);
      B.disks.push(d);
      B.buckets.push(b);
      this.moves.push({ kind: 'new', group: id, index: i, from: null, to: L.bucketIdOf(d, b) });
    }
    L.groups.push(B);
    this.addedGroups.push(id);
    this.donorHint.set(id, [...original]);
    return true;
  }

  /**
   * Hand key-space slots to new (or under-filled) groups so every active group holds V/G of them
   * (±1), taking first from the groups named in donorHint. Returns the aggregated key moves.
   */
  rebalance(table: Uint32Array): KeyMove[] {
    const L = this.layout;
    const G = L.groups.length;
    const V = table.length;
    const count = new Int32Array(G);
    for (let v = 0; v < V; v++) (count[table[v] as number] as number)++;
    const active: number[] = [];
    L.groups.forEach((lg, g) => {
      if (!lg.retired) active.push(g);
    });
    const target = new Int32Array(G);
    const base = Math.floor(V / active.length);
    let extra = V - base * active.length;
    // Groups that hold the most keep the extra slot: fewer moves.
    const byCount = [...active].sort((a, b) => (count[b] as number) - (count[a] as number) || a - b);
    for (const g of byCount) {
      target[g] = base + (extra > 0 ? 1 : 0);
      if (extra > 0) extra--;
    }
    // Slots of each donor, highest first taken.
    const start = new Int32Array(G + 1);
    for (let g = 0; g < G; g++) start[g + 1] = (start[g] as number) + (count[g] as number);
    const fillPos = Int32Array.from(start.subarray(0, G));
    const slots = new Uint32Array(V);
    for (let v = 0; v < V; v++) {
      const g = table[v] as number;
      slots[(fillPos[g] as number)++] = v;
    }
    const left = Int32Array.from(count); // slots the donor still holds (its list is slots[start, start+left))
    const surplus = (g: number): number => (left[g] as number) - (target[g] as number);
    const needers = active.filter((g) => (count[g] as number) < (target[g] as number)).sort((a, b) => (this.donorHint.has(b) ? 1 : 0) - (this.donorHint.has(a) ? 1 : 0) || a - b);
    const donors: number[] = [];
    for (let g = 0; g < G; g++) if ((count[g] as number) > (target[g] as number)) donors.push(g);
    let donorPos = 0;
    const moved = new Map<string, KeyMove>();
    const gotten = new Map<number, number>();
    const give = (from: number, to: number, n: number): void => {
      for (let t = 0; t < n; t++) {
        const idx = (start[from] as number) + (left[from] as number) - 1;
        left[from] = (left[from] as number) - 1;
        table[slots[idx] as number] = to;
      }
      const k = `${from}>${to}`;
      const prev = moved.get(k);
      moved.set(k, { fromGroup: from, toGroup: to, vslots: (prev?.vslots ?? 0) + n });
    };
    // Every (donor, group in need) pair by shared positions, best first over all the groups in
    // need (one group after the other would let the first take the donors the next matches
    // better). Each group considers about 4× the donors it needs, so the pairs stay bounded.
    let totalSurplus = 0;
    for (const A of donors) totalSurplus += surplus(A);
    const perDonor = Math.max(1, totalSurplus / Math.max(1, donors.length));
    const pairs: { A: number; B: number; o: number }[] = [];
    for (const B of needers) {
      const want = (target[B] as number) - (count[B] as number);
      const keep = 16 + Math.ceil((4 * want) / perDonor);
      for (const [A, o] of this.donorsByOverlap(B, (g) => surplus(g) > 0).slice(0, keep)) pairs.push({ A, B, o });
    }
    pairs.sort((x, y) => y.o - x.o || x.B - y.B || x.A - y.A);
    // Small plans: the cheapest assignment (fewest shards crossing disks), not just best pair
    // first; greedy can leave a group only donors that match another group better.
    const flows = pairs.length <= MAX_EXACT_PAIRS ? cheapestAssignment(pairs, surplus, (B) => (target[B] as number) - (count[B] as number)) : undefined;
    pairs.forEach(({ A, B }, at) => {
      const want = (target[B] as number) - (count[B] as number) - (gotten.get(B) ?? 0);
      const n = Math.min(want, surplus(A), flows === undefined ? Infinity : (flows[at] as number));
      if (n > 0) {
        give(A, B, n);
        gotten.set(B, (gotten.get(B) ?? 0) + n);
      }
    });
    for (const B of needers) {
      let want = (target[B] as number) - (count[B] as number) - (gotten.get(B) ?? 0);
      if (want === 0) continue;
      const hint = this.donorHint.get(B) ?? [];
      const ranked = this.donorsByOverlap(B, (g) => surplus(g) > 0).map(([g]) => g);
      for (const A of [...hint, ...ranked]) {
        if (want === 0) break;
        const n = Math.min(want, surplus(A));
        if (n > 0) {
          give(A, B, n);
          want -= n;
        }
      }
      while (want > 0 && donorPos < donors.length) {
        const A = donors[donorPos] as number;
        const n = Math.min(want, surplus(A));
        if (n > 0) {
          give(A, B, n);
          want -= n;
        }
        if (surplus(A) <= 0) donorPos++;
      }
    }
    return [...moved.values()];
  }
}

/** Above this many (donor, group) pairs the key hand-out is greedy (best pair first). */
const MAX_EXACT_PAIRS = 20_000;

/**
 * Min-cost flow from donors (supply: their surplus slots) to groups in need (demand: the slots
 * they lack) over the given pairs, a unit costing the positions where the two differ (so the
 * shards that cross disks). Successive shortest paths (Bellman–Ford on the residual graph);
 * returns the slots per pair. Deterministic: pairs and nodes in the order given.
 */
function cheapestAssignment(pairs: readonly { A: number; B: number; o: number }[], supply: (A: number) => number, demand: (B: number) => number): number[] {
  const aIdx = new Map<number, number>();
  const bIdx = new Map<number, number>();
  for (const { A, B } of pairs) {
    if (!aIdx.has(A)) aIdx.set(A, aIdx.size);
    if (!bIdx.has(B)) bIdx.set(B, bIdx.size);
  }
  let maxO = 0;
  for (const p of pairs) maxO = Math.max(maxO, p.o);
  const nA = aIdx.size;
  const N = 2 + nA + bIdx.size;
  const S = 0;
  const T = N - 1;
  const to: number[] = [];
  const cap: number[] = [];
  const cost: number[] = [];
  const next: number[] = [];
  const head = new Int32Array(N).fill(-1);
  const edge = (u: number, v: number, c: number, w: number): number => {
    to.push(v, u);
    cap.push(c, 0);
    cost.push(w, -w);
    next.push(head[u] as number, head[v] as number);
    head[u] = to.length - 2;
    head[v] = to.length - 1;
    return to.length - 2;
  };
  for (const [A, i] of aIdx) edge(S, 1 + i, supply(A), 0);
  for (const [B, i] of bIdx) edge(1 + nA + i, T, demand(B), 0);
  const pairEdge = pairs.map(({ A, B, o }) => edge(1 + (aIdx.get(A) as number), 1 + nA + (bIdx.get(B) as number), Number.MAX_SAFE_INTEGER, maxO - o));
  const dist = new Float64Array(N);
  const inQueue = new Uint8Array(N);
  const via = new Int32Array(N);
  for (;;) {
    dist.fill(Infinity);
    via.fill(-1);
    dist[S] = 0;
    const queue = [S];
    inQueue[S] = 1;
    for (let qi = 0; qi < queue.length; qi++) {
      const u = queue[qi] as number;
      inQueue[u] = 0;
      for (let e = head[u] as number; e !== -1; e = next[e] as number) {
        if ((cap[e] as number) <= 0) continue;
        const v = to[e] as number;
        const d = (dist[u] as number) + (cost[e] as number);
        if (d < (dist[v] as number)) {
          dist[v] = d;
          via[v] = e;
          if (inQueue[v] === 0) {
            inQueue[v] = 1;
            queue.push(v);
          }
        }
      }
    }
    if (dist[T] === Infinity) break;
    let f = Infinity;
    for (let v = T; v !== S; v = to[(via[v] as number) ^ 1] as number) f = Math.min(f, cap[via[v] as number] as number);
    for (let v = T; v !== S; v = to[(via[v] as number) ^ 1] as number) {
      cap[via[v] as number] = (cap[via[v] as number] as number) - f;
      cap[(via[v] as number) ^ 1] = (cap[(via[v] as number) ^ 1] as number) + f;
    }
  }
  return pairEdge.map((e) => cap[e ^ 1] as number);
}

function stateDiff(old: Topology, next: Topology): { added: string[]; removed: string[]; changes: { disk: string; from: DiskState; to: DiskState }[] } {
  const o = new Map(diskEntries(old).map((e) => [e.key, e.d.state]));
  const n = new Map(diskEntries(next).map((e) => [e.key, e.d.state]));
  const added = [...n.keys()].filter((k) => !o.has(k));
  const removed = [...o.keys()].filter((k) => !n.has(k));
  const changes: { disk: string; from: DiskState; to: DiskState }[] = [];
  for (const [k, s] of n) {
    const p = o.get(k);
    if (p !== undefined && p !== s) changes.push({ disk: k, from: p, to: s });
  }
  return { added, removed, changes };
}

/** Plan the change from `old` to a new topology: the next epoch, its moves, or a refusal. */
export function planChange(old: Diskmap, newTopology: Topology, opts: PlanOptions = {}): PlanResult {
  const refusals: string[] = [];
  const layout = loadLayout(old, newTopology, refusals);
  if (refusals.length > 0) return { diskmap: old, moves: [], keyMoves: [], refused: refusals, warnings: [] };
  const planner = new Planner(layout, old.scheme.kind === 'replica', old.headroom ?? 'none');
  for (const [from, to] of opts.prefer ?? []) {
    const f = resolveDiskRef(newTopology, from).map((e) => layout.byKey.get(e.key));
    const t = resolveDiskRef(newTopology, to).map((e) => layout.byKey.get(e.key));
    for (const fi of f) if (fi !== undefined && t[0] !== undefined) planner.prefer.set(fi, t[0]);
  }
  planner.repair();
  try {
    planner.drain(widthOf(old.scheme));
  } catch (err) {
    if (err instanceof CairnError && err.code === 'ENOSPC') return { diskmap: old, moves: [], keyMoves: [], refused: [err.message], warnings: [] };
    throw err;
  }
  planner.grow(widthOf(old.scheme));
  if (stateDiff(old.topology, newTopology).added.length > 0) planner.level();
  planner.reportUnused(widthOf(old.scheme));
  if (stateDiff(old.topology, newTopology).added.length > 0 && opts.prefer === undefined) recommendScheme(old, newTopology, planner.warnings);
  // The slot table: grow it (which moves no key) if groups got too few slots each.
  let bits = old.vslotBits;
  let table = old.vslotGroup;
  const wantBits = Math.max(bits, Math.min(MAX_VSLOT_BITS, vslotBitsFor(layout.activeGroups())));
  if (wantBits > bits) {
    const f = 2 ** (wantBits - bits);
    const t2 = new Uint32Array(table.length * f);
    for (let v = 0; v < t2.length; v++) t2[v] = table[Math.floor(v / f)] as number;
    table = t2;
    bits = wantBits;
  } else {
    table = Uint32Array.from(table);
  }
  const keyMoves = planner.rebalance(table);
  if (opts.storedBytes !== undefined) {
    const usable = layout.activeGroups() * (old.scheme.kind === 'ec' ? old.scheme.k : 1) * old.bucketSizeBytes;
    if (usable < opts.storedBytes) {
      return {
        diskmap: old,
        moves: [],
        keyMoves: [],
        refused: [
          `after this change the map holds ${usable} bytes of user data but ${opts.storedBytes} are stored (the change retires ${planner.retiredGroups.length} placement group(s)): add capacity first, or delete data, then plan again`,
        ],
        warnings: planner.warnings,
      };
    }
  }
  const sd = stateDiff(old.topology, newTopology);
  const changed =
    planner.moves.length > 0 || keyMoves.length > 0 || sd.added.length > 0 || sd.removed.length > 0 || sd.changes.length > 0 || bits !== old.vslotBits ||
    JSON.stringify(diskEntries(old.topology).map((e) => [e.key, e.d.capacityBytes, e.d.class, e.machine.name])) !==
      JSON.stringify(diskEntries(newTopology).map((e) => [e.key, e.d.capacityBytes, e.d.class, e.machine.name]));
  if (!changed) return { diskmap: old, moves: [], keyMoves: [], warnings: planner.warnings };
  const diff = {
    fromEpoch: old.epoch,
    reason: opts.reason ?? describe(sd),
    addedDisks: sd.added,
    removedDisks: sd.removed,
    stateChanges: sd.changes,
    addedGroups: planner.addedGroups,
    retiredGroups: planner.retiredGroups,
    slotMoves: planner.moves,
    keyMoves,
  };
  const diskmap = toDiskmap(layout, { epoch: old.epoch + 1, scheme: old.scheme, unsafe: old.unsafe, diff, headroom: old.headroom ?? 'none' }, bits, table);
  return { diskmap, moves: planner.moves, keyMoves, warnings: planner.warnings };
}

/** After growth: say so when the rule would now choose another scheme or failure domain. */
function recommendScheme(old: Diskmap, topology: Topology, warnings: string[]): void {
  let rec;
  try {
    rec = chooseRedundancy(topology, { bucketSizeBytes: old.bucketSizeBytes, dataClass: old.dataClass }).chosen;
  } catch {
    return; // no recommendation (e.g. one usable disk)
  }
  if (JSON.stringify(rec.scheme) !== JSON.stringify(old.scheme) || rec.failureDomain !== old.failureDomain) {
    warnings.push(
      `for this topology the rule would now choose ${schemeText(rec.scheme)} per ${rec.failureDomain} (the map keeps ${schemeText(old.scheme)} per ${old.failureDomain}); changing the scheme re-encodes all data and is never automatic`,
    );
  }
}

function describe(sd: ReturnType<typeof stateDiff>): string {
  const parts: string[] = [];
  if (sd.added.length > 0) parts.push(`added ${sd.added.length} disk(s)`);
  if (sd.removed.length > 0) parts.push(`removed ${sd.removed.length} disk(s)`);
  for (const c of sd.changes) parts.push(`${c.disk} ${c.from}→${c.to}`);
  return parts.length > 0 ? parts.join('; ') : 'topology update';
}

/** The topology with some disks ("box1/0") put in a state. */
export function withDiskState(t: Topology, refs: readonly string[], state: DiskState): Topology {
  const keys = new Set(refs.flatMap((r) => resolveDiskRef(t, r).map((e) => e.key)));
  return {
    name: t.name,
    machines: t.machines.map((m) => ({
      ...m,
      disks: m.disks.map((d) => (keys.has(diskKey(m, d.disk, d.incarnation)) ? { ...d, state } : d)),
    })),
  };
}

/** Plan draining disks ("box1/0"): every bucket on them moves elsewhere. */
export function planDrain(diskmap: Diskmap, diskRefs: string | readonly string[]): PlanResult {
  const refs = typeof diskRefs === 'string' ? [diskRefs] : diskRefs;
  return planChange(diskmap, withDiskState(diskmap.topology, refs, 'draining'), { reason: `drain ${refs.join(', ')}` });
}

/** Plan the repair of failed disks: their slots are rebuilt on disks with free buckets. */
export function planRepair(diskmap: Diskmap, diskRefs: string | readonly string[]): PlanResult {
  const refs = typeof diskRefs === 'string' ? [diskRefs] : diskRefs;
  return planChange(diskmap, withDiskState(diskmap.topology, refs, 'failed'), { reason: `repair ${refs.join(', ')}` });
}

/** What a map can do about a lost disk or machine, from its spare room (repairOutlook). */
export interface RepairOutlook {
  readonly headroom: Headroom;
  /** The spare buckets can take the shards of any one lost disk under the rules. */
  readonly anyOneDisk: boolean;
  /** … of any one lost machine (false when every group needs every machine). */
  readonly anyOneMachine: boolean;
  /** Spare buckets on active data disks. */
  readonly spareBuckets: number;
  /** For people: what happens when a disk (and a machine) is lost. */
  readonly summary: string;
}

/**
 * Whether a lost disk (or machine) of this map can be rebuilt by itself: the groups must still
 * fit on the disks that remain (the capacity bound, which the planner reaches with its chain
 * moves; property-tested in test/diskmap/headroom.test.ts).
 */
export function repairOutlook(dm: Diskmap): RepairOutlook {
  const L = loadLayout(dm, dm.topology, []);
  const width = widthOf(dm.scheme);
  const active = L.activeGroups();
  const receivers = L.disks.filter((d) => d.receiver && d.buckets > 0);
  let spare = 0;
  for (const d of receivers) spare += L.free(d.idx);
  const anyOneDisk = active > 0 && targetGroups(L, width, 'disk') >= active;
  const machines = [...new Set(receivers.map((d) => d.dom[1] as number))];
  const anyOneMachine =
    active > 0 &&
    machines.length > 1 &&
    machines.every((m) => groupBound(receivers.filter((d) => d.dom[1] !== m), width, L.level, L.cap) >= active);
  const summary = anyOneDisk
    ? `a lost disk is rebuilt by itself on the spare buckets (${spare} kept)${anyOneMachine ? ', and so is a lost machine' : '; a machine down stays degraded until it returns or is replaced (the other machines cannot hold its shards under the rules)'}`
    : `a lost disk cannot be rebuilt elsewhere (${spare} spare bucket(s), not enough under the rules): the cluster stays degraded until the disk is replaced`;
  return { headroom: dm.headroom ?? 'none', anyOneDisk, anyOneMachine, spareBuckets: spare, summary };
}

/** The new device of a replacement. */
export interface NewDisk {
  /** Disk number in the machine (a free slot unless the old disk failed and leaves it). */
  readonly disk: number;
  readonly capacityBytes: number;
  /** From the new disk's label; a fresh random one must be given for a real disk. */
  readonly incarnation: bigint;
  readonly class?: 'hdd' | 'ssd';
  /** Machine name or DC.ROW.RACK.MACHINE; default the old disk's machine. */
  readonly machine?: string;
}

const refusedPlan = (dm: Diskmap, why: string): PlanResult => ({ diskmap: dm, moves: [], keyMoves: [], refused: [why], warnings: [] });

/**
 * Plan "replace OLD with NEW", the new device in first: NEW joins (active) and OLD is drained
 * into it in the same epoch — every slot of OLD goes to NEW where the rules allow (same machine:
 * always), one bucket copy per slot, so the data that moves is OLD's share (1.0×). A failed OLD
 * is rebuilt on NEW instead (repair moves). NEW larger than OLD: the rest becomes new groups as
 * growth does. Afterwards (once the moves are done) `planRemove(map, OLD)` retires OLD.
 * Refused, with what to do instead: NEW in OLD's slot while OLD is alive (its data would be
 * dropped before it is copied), NEW smaller than what OLD holds, NEW already in the map.
 */
export function planReplace(dm: Diskmap, oldRef: string, nd: NewDisk, opts: PlanOptions = {}): PlanResult {
  const t = dm.topology;
  const olds = resolveDiskRef(t, oldRef);
  const old = olds[0] as (typeof olds)[number];
  if (olds.length !== 1) return refusedPlan(dm, `disk "${oldRef}" names ${olds.length} disks; name one`);
  const machine = nd.machine === undefined ? old.machine : resolveMachineRef(t, nd.machine)[0];
  if (machine === undefined) return refusedPlan(dm, `machine "${nd.machine ?? ''}" is not in the topology`);
  if (!Number.isInteger(nd.disk) || nd.disk < 0 || nd.disk > 0xffff) return refusedPlan(dm, `new disk number ${nd.disk} must be 0..65535`);
  if (!Number.isSafeInteger(nd.capacityBytes) || nd.capacityBytes <= 0) return refusedPlan(dm, `new disk capacity ${nd.capacityBytes} must be a positive number of bytes`);
  const used = dm.groups.reduce((n, g) => n + g.buckets.filter((b, i) => diskKeyOf(b) === old.key && g.lost?.includes(i) !== true).length, 0);
  const lostHere = dm.groups.reduce((n, g) => n + g.buckets.filter((b) => diskKeyOf(b) === old.key).length, 0);
  const newBuckets = Math.min(0xffff, Math.floor(nd.capacityBytes / dm.bucketSizeBytes));
  const need = old.d.state === 'failed' ? lostHere : used;
  if (newBuckets < need) {
    return refusedPlan(
      dm,
      `the new disk holds ${newBuckets} bucket(s) of ${dm.bucketSizeBytes} bytes, ${diskLabel(old)} holds ${need}: use a disk of at least ${need * dm.bucketSizeBytes} bytes, or drain ${diskLabel(old)} instead (cairn disk drain; capacity shrinks if the others cannot take it)`,
    );
  }
  const sameSlot = machine === old.machine && nd.disk === old.d.disk;
  const taken = machine.disks.find((d) => d.disk === nd.disk);
  if (sameSlot && old.d.state !== 'failed') {
    return refusedPlan(
      dm,
      `the new disk would take ${diskLabel(old)}'s slot while ${diskLabel(old)} is ${old.d.state} and still holds ${used} bucket(s): put the new disk in a free slot (the new device in first, then the old one retired), or, if ${diskLabel(old)} is dead, mark it failed first (its shards are then rebuilt from the others)`,
    );
  }
  if (taken !== undefined && !sameSlot) return refusedPlan(dm, `slot ${machine.name}/${nd.disk} already holds a disk: choose a free disk number`);
  if (diskEntries(t).some((e) => e.d.incarnation === nd.incarnation)) return refusedPlan(dm, `incarnation ${nd.incarnation.toString(16)} is already in the map: a new disk needs a new incarnation`);
  const newDisk: TopologyDisk = { disk: nd.disk, capacityBytes: nd.capacityBytes, class: nd.class ?? old.d.class, state: 'active', incarnation: nd.incarnation };
  const topology: Topology = {
    name: t.name,
    machines: t.machines.map((m) => {
      let disks = m.disks.map((d) => (diskKey(m, d.disk, d.incarnation) === old.key && d.state !== 'failed' ? { ...d, state: 'draining' as const } : d));
      if (m === machine) disks = sameSlot ? disks.map((d) => (d.disk === nd.disk ? newDisk : d)) : [...disks, newDisk];
      return { ...m, disks };
    }),
  };
  const newLabel = `${machine.name}/${nd.disk}`;
  const prefer = sameSlot ? new Map<string, string>() : new Map([[diskLabel(old), newLabel]]);
  return planChange(dm, topology, { reason: opts.reason ?? `replace ${diskLabel(old)} with ${newLabel}`, ...(opts.storedBytes !== undefined ? { storedBytes: opts.storedBytes } : {}), prefer });
}

/** Plan draining every disk of machines (`cairn node drain N`): as planDrain, machine by machine. */
export function planNodeDrain(dm: Diskmap, machineRefs: string | readonly string[], opts: PlanOptions = {}): PlanResult {
  const refs = typeof machineRefs === 'string' ? [machineRefs] : machineRefs;
  const ms = refs.flatMap((r) => resolveMachineRef(dm.topology, r));
  const disks = diskEntries(dm.topology).filter((e) => ms.includes(e.machine) && e.d.state === 'active');
  if (disks.length === 0) return { diskmap: dm, moves: [], keyMoves: [], warnings: [`${refs.join(', ')}: no active disk to drain`] };
  return planChange(dm, withDiskState(dm.topology, disks.map(diskLabel), 'draining'), { ...opts, reason: opts.reason ?? `drain node ${refs.join(', ')}` });
}

/**
 * Plan removing disks and machines from the topology (`cairn node remove`, the last step of a
 * drain or replacement). Refused while any of them holds a bucket that is not lost: drain first.
 * A failed disk may be removed: its unrebuilt slots stay recorded as lost (group.lost) and are
 * rebuilt when room appears (e.g. a disk put in its place).
 */
export function planRemove(dm: Diskmap, what: { disks?: readonly string[]; machines?: readonly string[] }, opts: PlanOptions = {}): PlanResult {
  const t = dm.topology;
  const keys = new Set((what.disks ?? []).flatMap((r) => resolveDiskRef(t, r).map((e) => e.key)));
  const ms = new Set((what.machines ?? []).flatMap((r) => resolveMachineRef(t, r)));
  const topology: Topology = {
    name: t.name,
    machines: t.machines.filter((m) => !ms.has(m)).map((m) => ({ ...m, disks: m.disks.filter((d) => !keys.has(diskKey(m, d.disk, d.incarnation))) })),
  };
  if (topology.machines.length === 0) return refusedPlan(dm, 'removing every machine leaves no topology');
  const names = [...(what.disks ?? []), ...(what.machines ?? [])].join(', ');
  return planChange(dm, topology, { ...opts, reason: opts.reason ?? `remove ${names}` });
}

/** A plan in figures, for `cairn disk drain/replace` and `diskmap plan`: what moves, from where to where. */
export interface PlanSummary {
  readonly fromEpoch: number;
  readonly toEpoch: number;
  readonly bucketSizeBytes: number;
  /** Bucket copies (readable source), rebuilds (from the group's other shards), new-group buckets. */
  readonly copies: number;
  readonly rebuilds: number;
  readonly newBuckets: number;
  /** Upper bound of the bytes written by copies and rebuilds: every bucket full. */
  readonly maxBytes: number;
  /**
   * Share of all stored shard data that crosses disks (keys handed between groups included):
   * bytes to move = movedShare × the shard bytes stored (user bytes × width / k).
   */
  readonly movedShare: number;
  /** Buckets (and at most bytes) leaving each disk and arriving at each disk, by label. */
  readonly from: readonly { readonly disk: string; readonly buckets: number; readonly maxBytes: number }[];
  readonly to: readonly { readonly disk: string; readonly buckets: number; readonly maxBytes: number }[];
  readonly usableBytesBefore: number;
  readonly usableBytesAfter: number;
  readonly retiredGroups: number;
}

export function summarizePlan(old: Diskmap, plan: PlanResult): PlanSummary {
  const next = plan.diskmap;
  const labels = new Map<string, string>();
  for (const e of [...diskEntries(old.topology), ...diskEntries(next.topology)]) labels.set(e.key, diskLabel(e));
  const label = (b: BucketId): string => labels.get(diskKeyOf(b)) ?? `${b.dc}.${b.row}.${b.rack}.${b.machine}.${b.disk} (removed)`;
  const from = new Map<string, number>();
  const to = new Map<string, number>();
  let copies = 0;
  let rebuilds = 0;
  let fresh = 0;
  for (const m of plan.moves) {
    if (m.kind === 'new') {
      fresh++;
      continue;
    }
    if (m.kind === 'move') copies++;
    else rebuilds++;
    if (m.from !== null) from.set(label(m.from), (from.get(label(m.from)) ?? 0) + 1);
    to.set(label(m.to), (to.get(label(m.to)) ?? 0) + 1);
  }
  const k = old.scheme.kind === 'ec' ? old.scheme.k : 1;
  const usable = (dm: Diskmap): number => dm.groups.filter((g) => !g.retired).length * k * dm.bucketSizeBytes;
  const rows = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([disk, buckets]) => ({ disk, buckets, maxBytes: buckets * old.bucketSizeBytes }));
  return {
    fromEpoch: old.epoch,
    toEpoch: next.epoch,
    bucketSizeBytes: old.bucketSizeBytes,
    copies,
    rebuilds,
    newBuckets: fresh,
    maxBytes: (copies + rebuilds) * old.bucketSizeBytes,
    movedShare: next === old ? 0 : movementBetween(old, next).movedShare,
    from: rows(from),
    to: rows(to),
    usableBytesBefore: usable(old),
    usableBytesAfter: usable(next),
    retiredGroups: next.diff?.retiredGroups.length ?? 0,
  };
}
