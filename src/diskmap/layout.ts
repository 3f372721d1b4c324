/**
 * The working state behind a diskmap: data disks carved into buckets (which bucket numbers are
 * used), placement groups as (disk, bucket) slots, failure-domain ids, the placement constraint
 * check, the capacity bound used to compare redundancy candidates, and the greedy group builder.
 * Internal to src/diskmap; other layers see only the Diskmap document.
 */
import { assert, CairnError } from '../common/errors.js';
import type { BucketId } from './bucket-id.js';
import { diskEntries, type DiskEntry } from './topology.js';
import type { DiskClass, DomainLevel, Topology } from './types.js';
import { DOMAIN_LEVELS } from './types.js';

/** Bound on the buckets of one map (memory and planning time grow with it): 244 PiB of 64 GiB buckets. */
export const MAX_TOTAL_BUCKETS = 4_000_000;

/**
 * Bucket numbers are 16 bits: a disk holds at most this many buckets (numbers 0..0xfffe), the
 * rest is unused. Number 0xffff is every disk's handoff bucket (HANDOFF_BUCKET: guest shards,
 * src/chunk/handoff.ts), never in a group.
 */
export const MAX_BUCKETS_PER_DISK = 0xffff;
export const HANDOFF_BUCKET = 0xffff;

export const levelIndex = (l: DomainLevel): number => DOMAIN_LEVELS.indexOf(l);

/** Buckets a disk of this capacity holds: whole buckets only; the remainder stays unused. */
export function bucketsOf(capacityBytes: number, bucketSizeBytes: number): number {
  return Math.min(MAX_BUCKETS_PER_DISK, Math.floor(capacityBytes / bucketSizeBytes));
}

export interface LDisk {
  readonly idx: number;
  readonly entry: DiskEntry;
  /** Buckets carved on the disk. */
  buckets: number;
  /** used[b] = 1 when bucket number b belongs to a group. */
  used: Uint8Array;
  usedCount: number;
  /** Integer domain id per level (0 disk … 4 dc). */
  readonly dom: Int32Array;
  /** Active disks take new slots; draining/failed ones do not. */
  readonly receiver: boolean;
}

export interface LGroup {
  /** Disk index per shard; -1 for a slot whose disk is lost (failed or gone) and not yet repaired. */
  disks: number[];
  buckets: number[];
  retired: boolean;
  /** The bucket ids of lost slots, kept in the document until repaired. */
  lostIds?: Map<number, BucketId>;
}

export class Layout {
  readonly disks: LDisk[] = [];
  readonly byKey = new Map<string, number>();
  readonly groups: LGroup[] = [];
  /** Domains per level. */
  readonly domainCount: number[] = [0, 0, 0, 0, 0];

  constructor(
    readonly topology: Topology,
    readonly bucketSizeBytes: number,
    readonly dataClass: DiskClass,
    /** Constrained levels are 1..level (level 0 = disk: distinct disks only). */
    public level: number,
    public cap: number,
  ) {
    const ids: Map<string, number>[] = DOMAIN_LEVELS.map(() => new Map());
    let total = 0;
    for (const e of diskEntries(topology)) {
      if (e.d.class !== dataClass || e.d.state === 'removed') continue;
      const buckets = bucketsOf(e.d.capacityBytes, bucketSizeBytes);
      total += buckets;
      if (total > MAX_TOTAL_BUCKETS) {
        throw new CairnError('EINVAL', `topology "${topology.name}" has more than ${MAX_TOTAL_BUCKETS} buckets of ${bucketSizeBytes} bytes: use a larger bucket size`);
      }
      const dom = new Int32Array(5);
      e.domains.forEach((s, lv) => {
        const m = ids[lv] as Map<string, number>;
        let id = m.get(s);
        if (id === undefined) {
          id = m.size;
          m.set(s, id);
        }
        dom[lv] = id;
      });
      const idx = this.disks.length;
      this.disks.push({ idx, entry: e, buckets, used: new Uint8Array(buckets), usedCount: 0, dom, receiver: e.d.state === 'active' });
      this.byKey.set(e.key, idx);
    }
    ids.forEach((m, lv) => (this.domainCount[lv] = m.size));
  }

  free(d: number): number {
    const disk = this.disks[d] as LDisk;
    return disk.buckets - disk.usedCount;
  }

  /** Lowest free bucket number of a disk. */
  alloc(d: number): number {
    const disk = this.disks[d] as LDisk;
    for (let b = 0; b < disk.buckets; b++) {
      if (disk.used[b] === 0) {
        disk.used[b] = 1;
        disk.usedCount++;
        return b;
      }
    }
    throw new Error(`invariant violated: alloc on full disk ${disk.entry.key}`);
  }

  /** Mark a specific bucket used (when loading an existing map). */
  take(d: number, b: number): void {
    const disk = this.disks[d] as LDisk;
    if (!(b < disk.buckets && disk.used[b] === 0)) assert(false, `bucket ${b} of ${disk.entry.key} taken twice or out of range`);
    disk.used[b] = 1;
    disk.usedCount++;
  }

  release(d: number, b: number): void {
    const disk = this.disks[d] as LDisk;
    if (b < disk.buckets && disk.used[b] === 1) {
      disk.used[b] = 0;
      disk.usedCount--;
    }
  }

  /**
   * May disk d join a group whose other disks are `others` (the slot being replaced already
   * left out)? Distinct disks, and at most `cap` shards per domain at every constrained level.
   */
  fits(others: readonly number[], d: number): boolean {
    const dd = this.disks[d] as LDisk;
    for (const o of others) if (o === d) return false;
    for (let lv = 1; lv <= this.level; lv++) {
      const id = dd.dom[lv];
      let n = 0;
      for (const o of others) if (o >= 0 && (this.disks[o] as LDisk).dom[lv] === id) n++;
      if (n >= this.cap) return false;
    }
    return true;
  }

  bucketIdOf(d: number, b: number): BucketId {
    const e = (this.disks[d] as LDisk).entry;
    const m = e.machine;
    // The location was validated with the topology and b < buckets ≤ 65535: no second check.
    if (!(b >= 0 && b < MAX_BUCKETS_PER_DISK)) assert(false, `bucket number ${b} out of range`);
    return Object.freeze({ dc: m.dc, row: m.row, rack: m.rack, machine: m.machine, disk: e.d.disk, bucket: b, incarnation: e.d.incarnation });
  }

  activeGroups(): number {
    let n = 0;
    for (const g of this.groups) if (!g.retired) n++;
    return n;
  }

  /**
   * Each disk's home shard position (-1: none yet): the position it took in the first group it
   * joined. Groups put their disks at their home positions where they can, so groups over
   * overlapping disks also agree position by position. That is what lets growth hand keys from
   * an old group to a new one without moving shards between old disks (shard i of a key stays
   * on the disk of position i): the greedy order alone rotates a disk through every position.
   */
  private home: Int32Array | undefined;

  /** Each disk's second position: the one it took the first time its home was taken. */
  private home2: Int32Array | undefined;

  /** Order a new group's disks: home positions first, the rest in the free positions in order. */
  aligned(picked: readonly number[]): number[] {
    if (this.home === undefined) {
      this.home = new Int32Array(this.disks.length).fill(-1);
      // Loaded maps: a disk's home is its most frequent position in the existing groups.
      const w = this.groups.find((g) => !g.retired)?.disks.length ?? 0;
      if (w > 0) {
        const count = new Int32Array(this.disks.length * w);
        for (const g of this.groups) {
          g.disks.forEach((d, i) => {
            if (d >= 0 && i < w) count[d * w + i] = (count[d * w + i] as number) + 1;
          });
        }
        for (let d = 0; d < this.disks.length; d++) {
          let best = -1;
          for (let i = 0; i < w; i++) if ((count[d * w + i] as number) > 0 && (best < 0 || (count[d * w + i] as number) > (count[d * w + best] as number))) best = i;
          this.home[d] = best;
        }
      }
    }
    const home = this.home;
    const home2 = (this.home2 ??= new Int32Array(this.disks.length).fill(-1));
    const w = picked.length;
    const out = new Array<number>(w).fill(-1);
    const rest: number[] = [];
    // Two disks with the same home: the lower disk number keeps it, whatever the order they were
    // picked in, and the other goes to its second home (the position it took the first time it
    // lost its home) — so every group over the same disks puts them at the same positions.
    for (const d of [...picked].sort((a, b) => a - b)) {
      const h = home[d] as number;
      if (h >= 0 && h < w && out[h] === -1) out[h] = d;
      else rest.push(d);
    }
    const rest2: number[] = [];
    for (const d of rest) {
      const h = home2[d] as number;
      if (h >= 0 && h < w && out[h] === -1) out[h] = d;
      else rest2.push(d);
    }
    let p = 0;
    for (const d of rest2) {
      while (out[p] !== -1) p++;
      out[p] = d;
      if ((home[d] as number) < 0) home[d] = p;
      else if ((home2[d] as number) < 0) home2[d] = p;
    }
    return out;
  }

  /**
   * Greedy builder: repeatedly form a group from the eligible disks with the most free buckets
   * (ties: the least recently used first, so equal disks rotate through the same few disk
   * combinations — few copysets), under the placement constraint. Stops when no group fits or
   * `maxGroups` were made. Returns the ids of the new groups.
   */
  fillGreedy(width: number, maxGroups: number): number[] {
    return this.level === 0 ? this.fillByDisk(width, maxGroups) : this.fillByDomain(width, maxGroups);
  }

  /**
   * The greedy builder when shards are spread over domains (machines, racks, …): slot by slot,
   * take the domain with the most free buckets per shard it already gives this group (at most
   * `cap`), and in it the disk with the most free buckets. Ties: least recently used first.
   */
  private fillByDomain(width: number, maxGroups: number): number[] {
    const lv = this.level;
    const elig = this.disks.filter((d) => d.receiver && d.buckets - d.usedCount > 0);
    const domIds = [...new Set(elig.map((d) => d.dom[lv] as number))];
    const domIndex = new Map(domIds.map((id, i) => [id, i]));
    const D = domIds.length;
    const members: LDisk[][] = domIds.map(() => []);
    for (const d of elig) (members[domIndex.get(d.dom[lv] as number) as number] as LDisk[]).push(d);
    const domRem = new Float64Array(D);
    const domLast = new Float64Array(D).fill(-1);
    const rem = new Int32Array(this.disks.length);
    const last = new Float64Array(this.disks.length).fill(-1);
    for (const d of elig) {
      rem[d.idx] = d.buckets - d.usedCount;
      const di = domIndex.get(d.dom[lv] as number) as number;
      domRem[di] = (domRem[di] as number) + (rem[d.idx] as number);
    }
    const created: number[] = [];
    const taken = new Int32Array(D);
    const excluded = new Uint8Array(D);
    const picked: number[] = [];
    let stamp = 0;
    while (created.length < maxGroups) {
      taken.fill(0);
      picked.length = 0;
      excluded.fill(0);
      while (picked.length < width) {
        // The best domain first (cheap), then its best disk; a domain with no fitting disk is
        // left out for the rest of this group.
        let best = -1;
        let bestDisk = -1;
        for (;;) {
          best = -1;
          for (let di = 0; di < D; di++) {
            const t = taken[di] as number;
            const r = domRem[di] as number;
            if (t >= this.cap || r <= 0 || excluded[di] === 1) continue;
            if (best >= 0) {
              const bt = taken[best] as number;
              const br = domRem[best] as number;
              const lhs = r * (bt + 1);
              const rhs = br * (t + 1);
              if (lhs < rhs || (lhs === rhs && (domLast[di] as number) >= (domLast[best] as number))) continue;
            }
            best = di;
          }
          if (best < 0) break;
          // Not yet in the group; lower levels within cap (checked above machine level only).
          let cand = -1;
          const checkLower = lv > 1;
          for (const d of members[best] as LDisk[]) {
            const x = d.idx;
            const rd = rem[x] as number;
            if (rd <= 0) continue;
            if (cand >= 0) {
              const rc = rem[cand] as number;
              if (rd < rc || (rd === rc && (last[x] as number) >= (last[cand] as number))) continue;
            }
            if (picked.includes(x) || (checkLower && !this.fits(picked, x))) continue;
            cand = x;
          }
          if (cand >= 0) {
            bestDisk = cand;
            break;
          }
          excluded[best] = 1;
        }
        if (bestDisk < 0) break;
        picked.push(bestDisk);
        taken[best] = (taken[best] as number) + 1;
      }
      if (picked.length < width) break;
      const g: LGroup = { disks: this.aligned(picked), buckets: [], retired: false };
      for (const d of g.disks) {
        g.buckets.push(this.alloc(d));
        rem[d] = (rem[d] as number) - 1;
        last[d] = stamp++;
        const di = domIndex.get((this.disks[d] as LDisk).dom[lv] as number) as number;
        domRem[di] = (domRem[di] as number) - 1;
        domLast[di] = stamp;
      }
      created.push(this.groups.length);
      this.groups.push(g);
    }
    return created;
  }

  private fillByDisk(width: number, maxGroups: number): number[] {
    const elig = this.disks.filter((d) => d.receiver && d.buckets - d.usedCount > 0);
    // Interleave machines: disk rank within its machine first, so consecutive disks differ in machine.
    const rank = new Map<number, number>();
    const perMachine = new Map<number, number>();
    for (const d of elig) {
      const m = d.dom[1] as number;
      const r = perMachine.get(m) ?? 0;
      perMachine.set(m, r + 1);
      rank.set(d.idx, r);
    }
    elig.sort((a, b) => (rank.get(a.idx) as number) - (rank.get(b.idx) as number) || (a.dom[1] as number) - (b.dom[1] as number) || a.idx - b.idx);
    const created: number[] = [];
    if (elig.length < width || maxGroups <= 0) return created;
    const n = this.disks.length;
    const rem = new Int32Array(n);
    let top = 0;
    for (const d of elig) {
      rem[d.idx] = d.buckets - d.usedCount;
      top = Math.max(top, rem[d.idx] as number);
    }
    // Per remaining-count level a FIFO doubly linked list of disks.
    const head = new Int32Array(top + 1).fill(-1);
    const tail = new Int32Array(top + 1).fill(-1);
    const next = new Int32Array(n).fill(-1);
    const prev = new Int32Array(n).fill(-1);
    const push = (d: number, lv: number): void => {
      prev[d] = tail[lv] as number;
      next[d] = -1;
      if (tail[lv] !== -1) next[tail[lv] as number] = d;
      else head[lv] = d;
      tail[lv] = d;
    };
    const unlink = (d: number, lv: number): void => {
      const p = prev[d] as number;
      const q = next[d] as number;
      if (p !== -1) next[p] = q;
      else head[lv] = q;
      if (q !== -1) prev[q] = p;
      else tail[lv] = p;
    };
    for (const d of elig) push(d.idx, rem[d.idx] as number);
    const picked: number[] = [];
    while (created.length < maxGroups) {
      while (top > 0 && head[top] === -1) top--;
      if (top === 0) break;
      picked.length = 0;
      for (let lv = top; lv > 0 && picked.length < width; lv--) {
        for (let d = head[lv] as number; d !== -1 && picked.length < width; d = next[d] as number) {
          if (this.fits(picked, d)) picked.push(d);
        }
      }
      if (picked.length < width) break;
      const g: LGroup = { disks: this.aligned(picked), buckets: [], retired: false };
      for (const d of g.disks) {
        g.buckets.push(this.alloc(d));
        const r = rem[d] as number;
        unlink(d, r);
        rem[d] = r - 1;
        if (r - 1 > 0) push(d, r - 1);
      }
      created.push(this.groups.length);
      this.groups.push(g);
    }
    return created;
  }
}

/**
 * Upper bound on the number of groups of `width` slots that fit: each disk gives at most one slot
 * per group and at most `cap` slots of a group come from one domain of level `level`. It is the
 * largest G with  Σ_domains min(cap·G, Σ_disks min(buckets, G)) ≥ width·G  (concave in G, so a
 * binary search finds it).
 */
export function groupBound(disks: readonly { buckets: number; dom: Int32Array }[], width: number, level: number, cap: number): number {
  let total = 0;
  for (const d of disks) total += d.buckets;
  const f = (G: number): boolean => {
    if (level === 0) {
      let s = 0;
      for (const d of disks) s += Math.min(d.buckets, G);
      return s >= width * G;
    }
    const per = new Map<number, number>();
    for (const d of disks) {
      const id = d.dom[level] as number;
      per.set(id, (per.get(id) ?? 0) + Math.min(d.buckets, G));
    }
    let s = 0;
    for (const v of per.values()) s += Math.min(cap * G, v);
    return s >= width * G;
  };
  let lo = 0;
  let hi = Math.floor(total / width);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (f(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Repair headroom: how much room the map keeps so that a failed disk's slots can be rebuilt on
 * the other disks under the same rules (as Ceph keeps full ratios).
 *   none — every bucket that fits a group is used; a disk loss stays degraded until the disk is
 *          replaced (or capacity is added).
 *   disk — the map holds only as many groups as would still fit with any one data disk gone, so
 *          the spare buckets can take the slots of any one lost (or drained) disk.
 */
export type Headroom = 'none' | 'disk';

/**
 * The groups that fit with headroom `disk`: the least, over every data disk d, of the capacity
 * bound of the disks without d. Disks with the same bucket count in the same domain of `level`
 * give the same bound, so each such class is evaluated once.
 */
export function headroomBound(disks: readonly { buckets: number; dom: Int32Array }[], width: number, level: number, cap: number): number {
  let best = Number.MAX_SAFE_INTEGER;
  const seen = new Set<string>();
  disks.forEach((d, i) => {
    if (d.buckets <= 0) return;
    const k = `${level === 0 ? 0 : (d.dom[level] as number)}:${d.buckets}`;
    if (seen.has(k)) return;
    seen.add(k);
    const rest = disks.filter((_, j) => j !== i);
    best = Math.min(best, groupBound(rest, width, level, cap));
  });
  return best === Number.MAX_SAFE_INTEGER ? 0 : best;
}
