/**
 * The diskmap's public types: the topology it is built from, the redundancy scheme, the
 * placement groups, and the diskmap document itself (THE authoritative placement document that
 * the metadata service stores and versions by epoch). Other layers import these types only;
 * the logic lives in the other files of src/diskmap.
 */
import type { BucketId } from './bucket-id.js';
import type { Headroom } from './layout.js';

export type { BucketId } from './bucket-id.js';
export type { Headroom } from './layout.js';

export type DiskClass = 'hdd' | 'ssd';

/**
 * active   — holds buckets, takes new data.
 * draining — the operator asked to empty it; its buckets are moved elsewhere, it takes nothing new.
 * failed   — unreadable; groups with a bucket on it are degraded until repaired.
 * removed  — gone for good; allowed only once it holds no buckets of any group.
 */
export type DiskState = 'active' | 'draining' | 'failed' | 'removed';

export interface TopologyDisk {
  /** Disk number within the machine (16 bits in the bucket id). */
  readonly disk: number;
  readonly capacityBytes: number;
  readonly class: DiskClass;
  readonly state: DiskState;
  /** 64-bit incarnation tag (the low 64 bits of every bucket id on this disk). */
  readonly incarnation: bigint;
}

export interface TopologyMachine {
  /** Human name (unique in the topology); defaults to "m<machine>". */
  readonly name: string;
  readonly dc: number;
  readonly row: number;
  readonly rack: number;
  readonly machine: number;
  readonly disks: readonly TopologyDisk[];
}

/** Datacenter → row → rack → machine → disk, flattened: each machine carries its location. */
export interface Topology {
  readonly name: string;
  readonly machines: readonly TopologyMachine[];
}

/** Failure-domain levels, from the smallest to the largest. */
export const DOMAIN_LEVELS = ['disk', 'machine', 'rack', 'row', 'dc'] as const;
export type DomainLevel = (typeof DOMAIN_LEVELS)[number];

/**
 * How a chunk is stored in a placement group: k data + m parity shards on k+m buckets, or n full
 * replicas on n buckets. Shard i of a chunk lives in group.buckets[i].
 */
export type Scheme = { readonly kind: 'ec'; readonly k: number; readonly m: number } | { readonly kind: 'replica'; readonly n: number };

export interface PlacementGroup {
  /** Dense group number, stable across epochs (retired groups keep their id, with no buckets). */
  readonly id: number;
  /** Shard i lives in buckets[i]; all on distinct disks. Empty when retired. */
  readonly buckets: readonly BucketId[];
  /** A retired group (after a drain had to shrink the map) receives no keys. */
  readonly retired: boolean;
  /**
   * Shard positions whose bucket is lost and not yet rebuilt: its disk failed, or was removed from
   * the topology (then buckets[i] names a disk that is no longer there). Absent when none.
   */
  readonly lost?: readonly number[];
}

/** One redundancy option evaluated against a topology. */
export interface RedundancyCandidate {
  readonly scheme: Scheme;
  /** The largest failure domain whose loss (any one of them) every group survives. */
  readonly failureDomain: DomainLevel;
  /** At most this many shards of one group in one domain of that level. */
  readonly maxShardsPerDomain: number;
  /** Placement groups that fit (capacity bound), and the bytes of user data they hold. */
  readonly groups: number;
  readonly usableBytes: number;
  /** usableBytes / raw bytes of all data disks. */
  readonly efficiency: number;
  readonly feasible: boolean;
  /** The repair headroom this evaluation keeps (groups and usable capacity are counted with it). */
  readonly headroom: Headroom;
  /** Why it is infeasible or why it was not chosen (for people). */
  readonly note: string;
}

export interface RedundancyChoice {
  readonly chosen: RedundancyCandidate;
  readonly candidates: readonly RedundancyCandidate[];
  /** Largest share of all buckets held by one disk (the design note's 5% rule). */
  readonly maxDiskShare: number;
  /** True when maxDiskShare ≤ 5%: a disk loss is routine and repair may start by itself. */
  readonly routineDiskLoss: boolean;
  /** True when the choice has no redundancy (one disk, forced with unsafe). */
  readonly unsafe: boolean;
  /** The repair headroom chosen (see Headroom): `disk` when a lost disk can be rebuilt by itself. */
  readonly headroom: Headroom;
  /** One sentence for people: what happens when a disk is lost, and why. */
  readonly repairNote: string;
}

/** What changed between the previous epoch and this one. */
export interface DiskmapDiff {
  readonly fromEpoch: number;
  readonly reason: string;
  readonly addedDisks: readonly string[];
  readonly removedDisks: readonly string[];
  readonly stateChanges: readonly { readonly disk: string; readonly from: DiskState; readonly to: DiskState }[];
  readonly addedGroups: readonly number[];
  readonly retiredGroups: readonly number[];
  /** Group slots whose bucket changed: shard `index` of `group` now lives in `to`. */
  readonly slotMoves: readonly SlotMove[];
  /** Ranges of the key space handed from one group to another. */
  readonly keyMoves: readonly KeyMove[];
}

export type MoveKind =
  /** copy the shard bucket from `from` to `to` (both readable), then drop `from` */
  | 'move'
  /** `from` is lost: rebuild the shards of `to` from the group's other buckets */
  | 'repair'
  /** a new group's bucket: filled by the key moves that point at the group */
  | 'new';

export interface SlotMove {
  readonly kind: MoveKind;
  readonly group: number;
  readonly index: number;
  readonly from: BucketId | null;
  readonly to: BucketId;
}

export interface KeyMove {
  readonly fromGroup: number;
  readonly toGroup: number;
  /** Key-space slots (of 2^vslotBits) that moved. */
  readonly vslots: number;
}

export interface Diskmap {
  readonly format: 1;
  /** +1 on every change; the metadata service compares-and-sets on it. */
  readonly epoch: number;
  readonly topology: Topology;
  readonly bucketSizeBytes: number;
  /** Disks of this class hold data buckets (others, e.g. SSDs next to HDDs, hold metadata and cache). */
  readonly dataClass: DiskClass;
  readonly scheme: Scheme;
  readonly failureDomain: DomainLevel;
  readonly maxShardsPerDomain: number;
  /** The map was built with `unsafe` (no redundancy). */
  readonly unsafe: boolean;
  /** Repair headroom the map keeps (growth keeps it too); absent (= `none`) in documents written before it existed. */
  readonly headroom?: Headroom;
  readonly groups: readonly PlacementGroup[];
  /** The key space is cut into 2^vslotBits slots; vslotGroup[v] is the group of slot v. */
  readonly vslotBits: number;
  readonly vslotGroup: Uint32Array;
  /** Change from the previous epoch (null for epoch 1). */
  readonly diff: DiskmapDiff | null;
}

export interface BuildOptions {
  /** Default 64 GiB. */
  readonly bucketSizeBytes?: number;
  /** Force a scheme instead of choosing one (still checked for feasibility). */
  readonly scheme?: Scheme;
  /** Allow a map with no redundancy (one disk). */
  readonly unsafe?: boolean;
  /** Which disk class holds data; default hdd when any active hdd exists, else ssd. */
  readonly dataClass?: DiskClass;
  /**
   * Repair headroom: `auto` (default) keeps room to rebuild any one disk when that costs at most
   * 40% of the capacity, keeps the failure domain and tolerates as many lost shards (the rule in
   * docs/diskmap.md); `disk` always (refused when nothing fits); `none` never.
   */
  readonly headroom?: 'auto' | Headroom;
}

/** A failure to analyse: disks and/or whole machines (see parseDiskRef for the text forms). */
export interface FailureSet {
  readonly disks?: readonly string[];
  readonly machines?: readonly string[];
}
