/**
 * Failure analysis: given a diskmap and failed disks or machines, which placement groups are
 * degraded (some shards lost, still readable), which are lost (more than the scheme tolerates),
 * what share of the key space is unreadable, and whether writes may continue.
 */
import { diskKeyOf } from './bucket-id.js';
import { dataShardsOf, toleranceOf, widthOf } from './redundancy.js';
import { diskEntries, resolveDiskRef, resolveMachineRef } from './topology.js';
import type { Diskmap, FailureSet } from './types.js';

/**
 * full        — no group is degraded.
 * reduced     — some groups are degraded but every group can still store enough shards that a new
 *               write survives one more disk loss; writes continue.
 * unprotected — some group can store only the bare minimum (k shards, or 1 replica): writes may
 *               continue, but new data survives no further loss until repair, so commits (which
 *               wait for full health) stay pending and strong-mode writers block.
 * blocked     — some group is lost: keys that map to it can be neither read nor written.
 */
export type WriteState = 'full' | 'reduced' | 'unprotected' | 'blocked';

export interface FailureReport {
  readonly epoch: number;
  /** Disk keys counted as failed (asked for, or already failed in the topology). */
  readonly failedDisks: readonly string[];
  readonly activeGroups: number;
  readonly healthyGroups: number;
  readonly degradedGroups: readonly number[];
  readonly lostGroups: readonly number[];
  /** Share of the key space (so of the data, which hashing spreads evenly) in lost groups. */
  readonly unreadableShare: number;
  /** Share of the key space in degraded groups (readable, needs repair). */
  readonly degradedShare: number;
  /** True unless a group is lost: every group can still store at least k shards (or one replica). */
  readonly writesMayContinue: boolean;
  /** True when new writes still survive one more disk loss (state full or reduced). */
  readonly newWritesProtected: boolean;
  /** Fewest shards still available in any group (of width). */
  readonly minShardsLeft: number;
  readonly width: number;
  readonly writeState: WriteState;
  /** One sentence per finding, for people. */
  readonly summary: readonly string[];
}

export function analyzeFailure(diskmap: Diskmap, failed: FailureSet): FailureReport {
  const t = diskmap.topology;
  const keys = new Set<string>();
  for (const r of failed.disks ?? []) for (const e of resolveDiskRef(t, r)) keys.add(e.key);
  const machines = new Set((failed.machines ?? []).flatMap((r) => resolveMachineRef(t, r)));
  for (const e of diskEntries(t)) {
    if (machines.has(e.machine) || e.d.state === 'failed' || e.d.state === 'removed') keys.add(e.key);
  }
  const tol = toleranceOf(diskmap.scheme);
  const width = widthOf(diskmap.scheme);
  const needForWrite = dataShardsOf(diskmap.scheme) + 1;
  const V = diskmap.vslotGroup.length;
  const count = new Int32Array(diskmap.groups.length);
  for (let v = 0; v < V; v++) (count[diskmap.vslotGroup[v] as number] as number)++;
  const degraded: number[] = [];
  const lost: number[] = [];
  let active = 0;
  let minLeft = width;
  let unreadable = 0;
  let degradedSlots = 0;
  for (const g of diskmap.groups) {
    if (g.retired) continue;
    active++;
    let down = 0;
    // Slots recorded as lost (their disk failed or was removed) count as down too.
    g.buckets.forEach((b, i) => {
      if (keys.has(diskKeyOf(b)) || g.lost?.includes(i) === true) down++;
    });
    minLeft = Math.min(minLeft, width - down);
    if (down > tol) {
      lost.push(g.id);
      unreadable += count[g.id] as number;
    } else if (down > 0) {
      degraded.push(g.id);
      degradedSlots += count[g.id] as number;
    }
  }
  const writeState: WriteState =
    lost.length > 0 ? 'blocked' : degraded.length === 0 ? 'full' : minLeft >= needForWrite ? 'reduced' : 'unprotected';
  const pct = (x: number): string => `${(100 * x).toFixed(x > 0 && x < 0.001 ? 3 : 1)}%`;
  const summary: string[] = [];
  summary.push(`${keys.size} disk(s) failed; ${active} active group(s): ${active - degraded.length - lost.length} healthy, ${degraded.length} degraded, ${lost.length} lost`);
  if (lost.length > 0) summary.push(`${pct(unreadable / V)} of the data is unreadable (groups that lost more than ${tol} of ${width} shards)`);
  else summary.push(degraded.length > 0 ? `all data is readable; ${pct(degradedSlots / V)} of it needs repair` : 'all data is readable and fully redundant');
  summary.push(
    {
      full: 'writes continue normally',
      reduced: 'writes continue; new data still survives one more disk loss',
      unprotected: 'writes may continue, but some groups can store only the minimum: new data survives no further loss, so commits wait for repair (repair or add a disk)',
      blocked: 'writes that map to the lost groups fail; the system should stop accepting writes until the operator acknowledges the loss',
    }[writeState],
  );
  return {
    epoch: diskmap.epoch,
    failedDisks: [...keys].sort(),
    activeGroups: active,
    healthyGroups: active - degraded.length - lost.length,
    degradedGroups: degraded,
    lostGroups: lost,
    unreadableShare: unreadable / V,
    degradedShare: degradedSlots / V,
    minShardsLeft: minLeft,
    width,
    writeState,
    writesMayContinue: writeState !== 'blocked',
    newWritesProtected: writeState === 'full' || writeState === 'reduced',
    summary,
  };
}
