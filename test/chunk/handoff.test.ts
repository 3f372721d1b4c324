/**
 * Handoff placement (src/chunk/handoff.ts), pure logic: the candidate list is deterministic and
 * never holds the slot's home disk; the chooser puts a missing shard on a disk that holds nothing
 * of the chunk when there is one, adds copies when the live disks are too few, and the result
 * survives the loss of any one more disk exactly when enough disks are live.
 */
import { describe, expect, it } from 'vitest';
import { bucketId, diskKeyOf } from '../../src/diskmap/bucket-id.js';
import { HANDOFF_BUCKET, chooseHandoffs, handoffCandidates, survivesOneLoss, type HandoffDisk, type Placement } from '../../src/chunk/handoff.js';

function disks(n: number): HandoffDisk[] {
  return Array.from({ length: n }, (_, i) => {
    const b = bucketId({ dc: 0, row: 0, rack: 0, machine: i, disk: 0, bucket: HANDOFF_BUCKET, incarnation: BigInt(i + 1) });
    return { key: diskKeyOf(b), bucket: b };
  });
}

const HASH = 'ab'.repeat(32);

/** Apply the choices to a placement. */
function apply(placed: Placement, choices: Array<{ index: number; disk: HandoffDisk }>): Placement {
  const out: Placement = new Map([...placed].map(([d, s]) => [d, new Set(s)]));
  for (const c of choices) out.set(c.disk.key, new Set([...(out.get(c.disk.key) ?? []), c.index]));
  return out;
}

describe('handoff placement', () => {
  it('lists candidates deterministically, without the home disk', () => {
    const ds = disks(6);
    const a = handoffCandidates(ds, HASH, 1, ds[2]!.key);
    expect(a.map((d) => d.key)).toEqual(handoffCandidates(ds, HASH, 1, ds[2]!.key).map((d) => d.key));
    expect(a).toHaveLength(5);
    expect(a.some((d) => d.key === ds[2]!.key)).toBe(false);
    // Another chunk gets another order (the load spreads).
    const orders = new Set(Array.from({ length: 20 }, (_, i) => handoffCandidates(ds, `${i}`.padStart(64, '0'), 1, ds[2]!.key)[0]!.key));
    expect(orders.size).toBeGreaterThan(1);
  });

  it('EC 2+1 on 3 disks, one down: copies until each live disk holds 2 of the 3 shards', () => {
    const ds = disks(3);
    const home = [ds[0]!, ds[1]!, ds[2]!];
    const placed: Placement = new Map([
      [ds[0]!.key, new Set([0])],
      [ds[1]!.key, new Set([1])],
    ]);
    expect(survivesOneLoss(placed, 2).ok).toBe(false);
    const dead = new Set([ds[2]!.key]);
    const choices = chooseHandoffs(placed, [2], 2, (i) => handoffCandidates(ds, HASH, i, home[i]!.key), dead);
    const after = apply(placed, choices);
    expect(choices.every((c) => !dead.has(c.disk.key))).toBe(true);
    expect(survivesOneLoss(after, 2).ok).toBe(true);
    expect(new Set([...after.values()].flatMap((s) => [...s]))).toEqual(new Set([0, 1, 2]));
    expect([...after.values()].map((s) => s.size)).toEqual([2, 2]);
  });

  it('EC 2+1 with a spare disk: the missing shard goes to the disk that holds nothing, no extra copies', () => {
    const ds = disks(4);
    const home = [ds[0]!, ds[1]!, ds[2]!];
    const placed: Placement = new Map([
      [ds[0]!.key, new Set([0])],
      [ds[1]!.key, new Set([1])],
    ]);
    const choices = chooseHandoffs(placed, [2], 2, (i) => handoffCandidates(ds, HASH, i, home[i]!.key), new Set([ds[2]!.key]));
    expect(choices).toEqual([{ index: 2, disk: ds[3] }]);
    expect(survivesOneLoss(apply(placed, choices), 2).ok).toBe(true);
  });

  it('one live disk cannot protect a chunk, and says why', () => {
    const ds = disks(3);
    const home = [ds[0]!, ds[1]!, ds[2]!];
    const placed: Placement = new Map([[ds[0]!.key, new Set([0])]]);
    const dead = new Set([ds[1]!.key, ds[2]!.key]);
    const after = apply(placed, chooseHandoffs(placed, [1, 2], 2, (i) => handoffCandidates(ds, HASH, i, home[i]!.key), dead));
    const v = survivesOneLoss(after, 2);
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/losing disk .* would leave 0 of the 2 shards needed \(1 live disk hold/);
  });

  it('EC 4+2 on 9 disks with 2 down: guests on disks that hold nothing of the chunk', () => {
    const ds = disks(9);
    const home = ds.slice(0, 6);
    const placed: Placement = new Map(home.slice(0, 4).map((d, i) => [d.key, new Set([i])]));
    const dead = new Set([home[4]!.key, home[5]!.key]);
    const choices = chooseHandoffs(placed, [4, 5], 4, (i) => handoffCandidates(ds, HASH, i, home[i]!.key), dead);
    expect(choices).toHaveLength(2);
    for (const c of choices) expect(placed.has(c.disk.key) || dead.has(c.disk.key)).toBe(false);
    expect(new Set(choices.map((c) => c.disk.key)).size).toBe(2);
    expect(survivesOneLoss(apply(placed, choices), 4).ok).toBe(true);
  });
});
