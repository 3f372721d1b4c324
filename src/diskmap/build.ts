/**
 * Building a diskmap from a topology (epoch 1) and addressing keys: a content hash or a path
 * hash picks one of 2^vslotBits key-space slots by its leading bits, and the slot table says
 * which placement group holds it. Only the table moves keys, so adding groups moves only the
 * slots handed to them, and every node computes the same answer from the document alone.
 */
import { createHash } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import { groupBound, headroomBound, Layout, type Headroom } from './layout.js';
import { chooseFor, layoutFor, widthOf } from './redundancy.js';
import type { BucketId, BuildOptions, Diskmap, DiskmapDiff, PlacementGroup, RedundancyChoice, Scheme, Topology } from './types.js';
import { DOMAIN_LEVELS } from './types.js';

/** Key-space slots per group aimed for (balance of keys between groups is within 1/this). */
export const VSLOTS_PER_GROUP = 64;
/** The slot table never grows beyond 2^22 entries (16 MiB in memory). */
export const MAX_VSLOT_BITS = 22;
export const MIN_VSLOT_BITS = 8;

export function vslotBitsFor(groups: number): number {
  let bits = MIN_VSLOT_BITS;
  while (bits < MAX_VSLOT_BITS && 2 ** bits < groups * VSLOTS_PER_GROUP) bits++;
  return bits;
}

/** Contiguous, balanced initial assignment of slots to the active groups. */
export function initialVslots(bits: number, active: readonly number[]): Uint32Array {
  const V = 2 ** bits;
  const table = new Uint32Array(V);
  const G = active.length;
  for (let v = 0; v < V; v++) table[v] = active[Math.floor((v * G) / V)] as number;
  return table;
}

/** Turn the working layout into the (immutable) document. */
export function toDiskmap(
  layout: Layout,
  meta: { epoch: number; scheme: Scheme; unsafe: boolean; diff: DiskmapDiff | null; headroom: Headroom },
  vslotBits: number,
  vslotGroup: Uint32Array,
): Diskmap {
  const groups: PlacementGroup[] = layout.groups.map((g, id) => {
    const lost = g.retired ? [] : g.disks.flatMap((d, i) => (d < 0 ? [i] : []));
    return Object.freeze({
      id,
      buckets: Object.freeze(
        g.retired ? [] : g.disks.map((d, i) => (d >= 0 ? layout.bucketIdOf(d, g.buckets[i] as number) : (g.lostIds?.get(i) as BucketId))),
      ),
      retired: g.retired,
      ...(lost.length > 0 ? { lost: Object.freeze(lost) } : {}),
    });
  });
  return Object.freeze({
    format: 1 as const,
    epoch: meta.epoch,
    topology: layout.topology,
    bucketSizeBytes: layout.bucketSizeBytes,
    dataClass: layout.dataClass,
    scheme: meta.scheme,
    failureDomain: DOMAIN_LEVELS[layout.level] ?? 'disk',
    maxShardsPerDomain: layout.cap,
    unsafe: meta.unsafe,
    headroom: meta.headroom,
    groups: Object.freeze(groups),
    vslotBits,
    vslotGroup,
    diff: meta.diff,
  });
}

/** Build the first diskmap (epoch 1) of a topology. */
export function buildDiskmap(topology: Topology, opts: BuildOptions = {}): Diskmap {
  const { layout, choice } = buildLayout(topology, opts);
  const active = layout.groups.map((_, i) => i);
  const bits = vslotBitsFor(active.length);
  return toDiskmap(layout, { epoch: 1, scheme: choice.chosen.scheme, unsafe: choice.unsafe, diff: null, headroom: choice.headroom }, bits, initialVslots(bits, active));
}

export function buildLayout(topology: Topology, opts: BuildOptions = {}): { layout: Layout; choice: RedundancyChoice } {
  const layout = layoutFor(topology, opts);
  const choice = chooseFor(layout, opts);
  layout.level = DOMAIN_LEVELS.indexOf(choice.chosen.failureDomain);
  layout.cap = choice.chosen.maxShardsPerDomain;
  layout.fillGreedy(widthOf(choice.chosen.scheme), choice.headroom === 'disk' ? choice.chosen.groups : Number.MAX_SAFE_INTEGER);
  if (layout.groups.length === 0) {
    throw new CairnError('EINVAL', `topology "${topology.name}": no placement group fits ${JSON.stringify(choice.chosen.scheme)}`);
  }
  return { layout, choice };
}

/** The key-space slot of a key hash: its leading 32 bits, top `bits` of them. */
export function vslotOf(keyHash: Uint8Array, bits: number): number {
  if (keyHash.length < 8) throw new CairnError('EINVAL', `key hash must be at least 8 bytes (a SHA-256 is 32), got ${keyHash.length}`);
  const u32 = ((keyHash[0] as number) * 0x1000000 + ((keyHash[1] as number) << 16) + ((keyHash[2] as number) << 8) + (keyHash[3] as number)) >>> 0;
  return bits === 0 ? 0 : u32 >>> (32 - bits);
}

/** The placement group of a content hash or path hash (32-byte SHA-256). */
export function groupForKey(diskmap: Diskmap, keyHash: Uint8Array): PlacementGroup {
  const g = diskmap.groups[diskmap.vslotGroup[vslotOf(keyHash, diskmap.vslotBits)] as number];
  if (g === undefined) throw new CairnError('ECORRUPT', `diskmap epoch ${diskmap.epoch}: slot table points at a missing group`);
  return g;
}

/** The key hash of a path (the note's second addressing): SHA-256 of "path:" + the path. */
export function keyHashOfPath(path: string): Uint8Array {
  return createHash('sha256').update(`path:${path}`).digest();
}

/**
 * The groups a layout may hold under its rules and headroom: the capacity bound of its active
 * disks, or with headroom `disk` the least bound left after losing any one of them.
 */
export function targetGroups(layout: Layout, width: number, headroom: Headroom): number {
  const receivers = layout.disks.filter((d) => d.receiver && d.buckets > 0);
  return headroom === 'disk' ? headroomBound(receivers, width, layout.level, layout.cap) : groupBound(receivers, width, layout.level, layout.cap);
}
