/**
 * How much data a change moves, measured from two diskmaps alone: every key-space slot holds an
 * equal share of the data (keys are hashes), and each slot has one shard per group position.
 * A shard "moves across disks" when its position's disk differs between the old and the new
 * group of its slot; it "moves locally" when only the bucket on the same disk differs. The
 * minimum is what must arrive at disks whose share grows.
 */
import { diskKeyOf } from './bucket-id.js';
import type { Diskmap } from './types.js';

export interface MovementStats {
  /** Share of all shard data that changes disk. */
  readonly movedShare: number;
  /** Share that only changes bucket on the same disk (a local copy). */
  readonly localShare: number;
  /** The least share that must change disk for the new map's balance. */
  readonly minimumShare: number;
}

export function movementBetween(old: Diskmap, next: Diskmap): MovementStats {
  const bits = Math.max(old.vslotBits, next.vslotBits);
  const V = 2 ** bits;
  const ids = new Map<string, number>();
  const intern = (k: string): number => {
    let i = ids.get(k);
    if (i === undefined) {
      i = ids.size;
      ids.set(k, i);
    }
    return i;
  };
  const tuples = (dm: Diskmap): Int32Array[] => dm.groups.map((g) => Int32Array.from(g.buckets.map((b) => intern(diskKeyOf(b)))));
  const buckets = (dm: Diskmap): number[][] => dm.groups.map((g) => g.buckets.map((b) => b.bucket));
  const to = tuples(old);
  const tn = tuples(next);
  const bo = buckets(old);
  const bn = buckets(next);
  const so = 2 ** (bits - old.vslotBits);
  const sn = 2 ** (bits - next.vslotBits);
  const replicas = old.scheme.kind === 'replica' && next.scheme.kind === 'replica';
  let moved = 0;
  let local = 0;
  let shards = 0;
  const heldOld = new Float64Array(ids.size);
  const heldNew = new Float64Array(ids.size);
  for (let v = 0; v < V; v++) {
    const go = old.vslotGroup[Math.floor(v / so)] as number;
    const gn = next.vslotGroup[Math.floor(v / sn)] as number;
    const a = to[go] as Int32Array;
    const b = tn[gn] as Int32Array;
    for (let i = 0; i < b.length; i++) {
      shards++;
      heldNew[b[i] as number] = (heldNew[b[i] as number] as number) + 1;
      if (i < a.length) heldOld[a[i] as number] = (heldOld[a[i] as number] as number) + 1;
      // Replicas are interchangeable: a copy already on that disk (any position) stays.
      const j = replicas ? a.indexOf(b[i] as number) : a[i] === b[i] ? i : -1;
      if (j < 0) moved++;
      else if (go !== gn || (bo[go] as number[])[j] !== (bn[gn] as number[])[i]) local++;
    }
  }
  let minimum = 0;
  for (let d = 0; d < ids.size; d++) minimum += Math.max(0, (heldNew[d] as number) - (heldOld[d] as number));
  return { movedShare: moved / shards, localShare: local / shards, minimumShare: minimum / shards };
}
