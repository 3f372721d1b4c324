/**
 * Which disks the repair job treats as lost (src/server/repair-job.ts findLostDisks, pure over an
 * injected "does the node answer" function): a failed disk at once; a node that does not answer
 * only after the grace (a reboot must not start a rebuild); a node that answers again is cleared.
 */
import { describe, expect, it } from 'vitest';
import { findLostDisks, planLostSlots, registeredDiskKey } from '../../src/server/repair-job.js';
import type { NodeRecord } from '../../src/server/registry.js';
import { bucketId } from '../../src/diskmap/bucket-id.js';

function node(id: number): NodeRecord {
  return {
    v: 1,
    nodeId: id,
    address: `127.0.0.1:${7000 + id}`,
    location: { dc: 0, row: 0, rack: 0, machine: id - 1 },
    disks: [{ disk: 0, path: `/d${id}`, capacityBytes: 1 << 30, class: 'hdd', incarnation: `${id}`.padStart(16, '0'), state: 'ok', reason: '' }],
    registeredAtMs: 0,
  };
}

describe('repair job: lost disks', () => {
  const nodes = [node(1), node(2), node(3)];
  const ok = (n: NodeRecord) => [{ diskKey: registeredDiskKey(n, n.disks[0]!), path: n.disks[0]!.path, state: 'ok', reason: '' }];

  it('a failed disk is lost at once; a silent node only after the grace; an answering node is cleared', async () => {
    const down = new Map<number, number>();
    const GRACE = 600_000;
    // Node 2's disk failed, node 3 silent since t=1000.
    const answer = async (n: NodeRecord) =>
      n.nodeId === 3 ? undefined : n.nodeId === 2 ? [{ ...ok(n)[0]!, state: 'failed', reason: 'disk label vanished' }] : ok(n);
    let l = await findLostDisks(nodes, answer, down, GRACE, 1_000);
    expect([...l.keys]).toEqual([registeredDiskKey(nodes[1]!, nodes[1]!.disks[0]!)]);
    expect(l.down).toEqual([{ nodeId: 3, sinceMs: 1_000 }]);
    expect(l.reason).toMatch(/disk \/d2 of node 2 failed \(disk label vanished\)/);
    // A reboot's worth of silence later: still not lost.
    l = await findLostDisks(nodes, answer, down, GRACE, 1_000 + 120_000);
    expect(l.keys.has(registeredDiskKey(nodes[2]!, nodes[2]!.disks[0]!))).toBe(false);
    // Past the grace: every disk of node 3 is lost.
    l = await findLostDisks(nodes, answer, down, GRACE, 1_000 + GRACE);
    expect(l.keys.has(registeredDiskKey(nodes[2]!, nodes[2]!.disks[0]!))).toBe(true);
    expect(l.reason).toMatch(/node 3 down for 600 s \(grace 600 s\)/);
    // It answers again: cleared, and its grace starts afresh next time.
    l = await findLostDisks(nodes, async (n) => (n.nodeId === 2 ? answer(n) : ok(n)), down, GRACE, 2_000_000);
    expect(l.keys.size).toBe(1);
    expect(down.has(3)).toBe(false);
  });

  it('the slots of a group on lost disks', () => {
    const b = (m: number) => bucketId({ dc: 0, row: 0, rack: 0, machine: m, disk: 0, bucket: 1, incarnation: BigInt(m + 1) });
    const g = { id: 0, buckets: [b(0), b(1), b(2)], retired: false };
    const lost = new Set([registeredDiskKey(node(2), node(2).disks[0]!)]); // machine 1, incarnation 2
    expect(planLostSlots(g, lost)).toEqual([1]);
    expect(planLostSlots({ ...g, retired: true }, lost)).toEqual([]);
    expect(planLostSlots(undefined, lost)).toEqual([]);
  });
});
