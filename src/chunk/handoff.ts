/**
 * Handoff placement (pure logic): where a shard goes when its home bucket cannot take it (node
 * down, disk failed), so that a write completes with its redundancy kept, and where readers and
 * health checks find it later.
 *
 * Every disk reserves bucket number HANDOFF_BUCKET (0xffff) of its bucket-id space as its handoff
 * bucket: shards stored there are guests, each a complete self-describing shard file (hash,
 * scheme, index) of a chunk whose home is elsewhere. The candidate disks for shard i of chunk H
 * are every data disk of the map except the home disk of slot i, in rendezvous order of
 * SHA-256(H, i, disk) (Swift's handoff nodes, Dynamo's preference list): deterministic, so a
 * reader or the catch-up job finds a guest by asking the first few candidates, with nothing
 * recorded in the metadata. The guests themselves are the record of what a returning disk
 * missed: catch-up walks the handoff buckets, never the whole disk.
 *
 * The chooser (chooseHandoffs) keeps the promise "what is acknowledged survives the loss of any
 * one more disk": it puts each missing shard on a live disk that holds no shard of the chunk,
 * and where there is none (3 disks, one down: the 2 live ones already hold a shard each) it adds
 * copies until no single live disk holds a shard that exists nowhere else among k distinct ones
 * — with EC 2+1 on 2 live disks, each then holds 2 of the 3 shards: the degraded layout of
 * replicas, found by the same lookup.
 */
import { createHash } from 'node:crypto';
import { bucketId as makeBucketId, diskKeyOf, type BucketId } from '../diskmap/bucket-id.js';
import type { Diskmap } from '../diskmap/types.js';

import { HANDOFF_BUCKET } from '../diskmap/layout.js';

/** Bucket number reserved on every disk for guest shards; the diskmap never allocates it (one constant, src/diskmap/layout.ts). */
export { HANDOFF_BUCKET };

/** How many candidate disks a reader asks for one missing shard (the writer chooses among these). */
export const HANDOFF_CANDIDATES = 8;

export interface HandoffDisk {
  /** diskKeyOf the disk (location + incarnation). */
  key: string;
  /** The disk's handoff bucket. */
  bucket: BucketId;
}

/** Where shards go when their home fails: what the writer, reader and health checks are given. */
export interface HandoffOptions {
  /** Candidate disks for shard `index`, best first (handoffCandidates). */
  candidates(index: number): readonly HandoffDisk[];
  /** host:port of the chunk service holding this bucket's disk. */
  addressOf(bucket: BucketId): string;
}

/**
 * The handoff options of one chunk: candidates for its shards from the map's disks (computed
 * once per map), excluding each slot's home disk.
 */
export function handoffFor(dm: Diskmap, hash: string, homes: readonly BucketId[], addressOf: (b: BucketId) => string): HandoffOptions {
  let disks = diskCache.get(dm);
  if (disks === undefined) {
    disks = handoffDisks(dm);
    diskCache.set(dm, disks);
  }
  const list = disks;
  const memo = new Map<number, HandoffDisk[]>();
  return {
    candidates: (index) => {
      let c = memo.get(index);
      if (c === undefined) {
        const home = homes[index];
        c = handoffCandidates(list, hash, index, home === undefined ? '' : diskKeyOf(home));
        memo.set(index, c);
      }
      return c;
    },
    addressOf,
  };
}

const diskCache = new WeakMap<Diskmap, HandoffDisk[]>();

/** True when the bucket is a handoff bucket (guests only). */
export function isHandoffBucket(b: BucketId): boolean {
  return b.bucket === HANDOFF_BUCKET;
}

/** The data disks of a map (not removed), each with its handoff bucket. */
export function handoffDisks(dm: Diskmap): HandoffDisk[] {
  const out: HandoffDisk[] = [];
  for (const m of dm.topology.machines) {
    for (const d of m.disks) {
      if (d.class !== dm.dataClass || d.state === 'removed') continue;
      const bucket = makeBucketId({ dc: m.dc, row: m.row, rack: m.rack, machine: m.machine, disk: d.disk, bucket: HANDOFF_BUCKET, incarnation: d.incarnation });
      out.push({ key: diskKeyOf(bucket), bucket });
    }
  }
  return out;
}

/** The candidate disks for shard `index` of chunk `hash`, best first, without the slot's home disk. */
export function handoffCandidates(disks: readonly HandoffDisk[], hash: string, index: number, homeDiskKey: string, limit = HANDOFF_CANDIDATES): HandoffDisk[] {
  return disks
    .filter((d) => d.key !== homeDiskKey)
    .map((d) => ({ d, score: createHash('sha256').update(`${hash}:${index}:${d.key}`).digest().readUInt32BE(0) }))
    .sort((a, b) => b.score - a.score || (a.d.key < b.d.key ? -1 : 1))
    .slice(0, limit)
    .map((x) => x.d);
}

/** Shards stored so far, by disk key: which shard indexes each disk holds. */
export type Placement = Map<string, Set<number>>;

/** Would the chunk still be readable (k distinct shards) after losing any one of the disks holding it? */
export function survivesOneLoss(placed: Placement, k: number): { ok: boolean; reason?: string } {
  const all = new Set<number>();
  for (const s of placed.values()) for (const i of s) all.add(i);
  if (all.size < k) return { ok: false, reason: `only ${all.size} of the ${k} shards needed to read are stored` };
  for (const [disk] of placed) {
    const rest = new Set<number>();
    for (const [other, s] of placed) if (other !== disk) for (const i of s) rest.add(i);
    if (rest.size < k) {
      return { ok: false, reason: `losing disk ${disk} would leave ${rest.size} of the ${k} shards needed (${placed.size} live disk${placed.size === 1 ? '' : 's'} hold the chunk)` };
    }
  }
  return { ok: true };
}

export interface HandoffChoice {
  index: number;
  disk: HandoffDisk;
}

/**
 * Which guest shards to store next. `placed`: what is stored (home and guests); `missing`:
 * shard indexes stored nowhere; `candidates(i)`: handoffCandidates for shard i; `dead`: disks
 * that failed a put in this write. Returns the guests to store; an empty list when nothing more
 * can help (the caller then checks survivesOneLoss for the verdict).
 */
export function chooseHandoffs(
  placed: Placement,
  missing: readonly number[],
  k: number,
  candidates: (index: number) => readonly HandoffDisk[],
  dead: ReadonlySet<string>,
): HandoffChoice[] {
  const sim: Placement = new Map([...placed].map(([d, s]) => [d, new Set(s)]));
  const out: HandoffChoice[] = [];
  const add = (index: number, disk: HandoffDisk): void => {
    out.push({ index, disk });
    const s = sim.get(disk.key) ?? new Set<number>();
    s.add(index);
    sim.set(disk.key, s);
  };
  const load = (key: string): number => sim.get(key)?.size ?? 0;
  // 1. Each missing shard on a live disk holding nothing of the chunk, else on the least loaded one.
  for (const i of missing) {
    const live = candidates(i).filter((c) => !dead.has(c.key) && !(sim.get(c.key)?.has(i) ?? false));
    const free = live.find((c) => load(c.key) === 0);
    const pick = free ?? [...live].sort((a, b) => load(a.key) - load(b.key))[0];
    if (pick !== undefined) add(i, pick);
  }
  // 2. Copies until no single disk's loss leaves fewer than k distinct shards.
  for (let round = 0; round < 64; round++) {
    if (survivesOneLoss(sim, k).ok) break;
    let progressed = false;
    for (const [disk, held] of [...sim]) {
      const rest = new Set<number>();
      for (const [other, s] of sim) if (other !== disk) for (const i of s) rest.add(i);
      if (rest.size >= k) continue;
      // A shard only this disk holds goes to another live disk.
      for (const i of held) {
        if (rest.has(i)) continue;
        const to = candidates(i)
          .filter((c) => c.key !== disk && !dead.has(c.key) && !(sim.get(c.key)?.has(i) ?? false))
          .sort((a, b) => load(a.key) - load(b.key))[0];
        if (to === undefined) continue;
        add(i, to);
        progressed = true;
        break;
      }
      if (progressed) break;
    }
    if (!progressed) break;
  }
  return out;
}

/** How long a home shard put may run past the first put of its chunk that finished before it is given up on (handed off). */
export const HEDGE_AFTER_MS = 5_000;
/** How long a home given up on stays "slow": its puts are skipped (one probe at a time) for this long. */
export const SLOW_FOR_MS = 10_000;

/** Addresses whose shard puts hung (a paused, not dead, node): until when, and whether a probe put is out. */
const slowHomes = new Map<string, { untilMs: number; probing: boolean }>();

/** Is this address marked slow now (tests, status)? */
export function isSlowHome(address: string, now = Date.now()): boolean {
  const s = slowHomes.get(address);
  return s !== undefined && s.untilMs > now;
}

/**
 * Hedged home puts of one chunk (a paused node must not cost every chunk its full deadline): a
 * put still running HEDGE_AFTER_MS after another put of the chunk finished is given up on — it
 * resolves as ETIMEDOUT, so the writer hands the shard off — and its address is marked slow for
 * SLOW_FOR_MS. While slow, puts to it are not sent (they resolve as ETIMEDOUT at once) except one
 * probe at a time, whose success clears the mark. A put given up on keeps running in the
 * background (its payload buffer stays referenced; the writer then does not recycle the buffers).
 */
export function hedgeGroup<E>(hedgeAfterMs: number, slowError: (address: string, why: string) => E): {
  run(address: string, put: () => Promise<E | undefined>): Promise<E | undefined>;
} {
  const settledAddresses = new Set<string>();
  const waiters: Array<() => void> = [];
  const settled = (address: string): void => {
    settledAddresses.add(address);
    for (const w of waiters.splice(0)) w();
  };
  return {
    run(address, put) {
      const now = Date.now();
      const slow = slowHomes.get(address);
      if (slow !== undefined && slow.untilMs > now) {
        if (!slow.probing) {
          slow.probing = true;
          void put().then((e) => {
            if (e === undefined) slowHomes.delete(address);
            else slow.probing = false;
          });
        }
        return Promise.resolve(slowError(address, `node ${address} was slow to answer a shard put (paused or overloaded): skipped for up to ${SLOW_FOR_MS} ms`));
      }
      if (slow !== undefined) slowHomes.delete(address);
      return new Promise<E | undefined>((resolve) => {
        let done = false;
        let timer: NodeJS.Timeout | undefined;
        const finish = (e: E | undefined): void => {
          if (done) return;
          done = true;
          if (timer !== undefined) clearTimeout(timer);
          resolve(e);
        };
        void put().then((e) => {
          if (!done) settled(address);
          else if (e === undefined) slowHomes.delete(address); // it answered after all
          else {
            const s = slowHomes.get(address);
            if (s !== undefined) s.probing = false;
          }
          finish(e);
        });
        // The hedge clock starts once a put of this chunk to another address has finished.
        const arm = (): void => {
          if (done) return;
          if ([...settledAddresses].some((a) => a !== address)) {
            timer = setTimeout(() => {
              if (done) return;
              slowHomes.set(address, { untilMs: Date.now() + SLOW_FOR_MS, probing: true });
              finish(slowError(address, `node ${address} did not store its shard within ${hedgeAfterMs} ms of the others (paused or overloaded): handed off`));
            }, hedgeAfterMs);
            timer.unref?.();
          } else waiters.push(arm);
        };
        arm();
      });
    },
  };
}
