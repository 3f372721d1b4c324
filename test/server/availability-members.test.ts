/**
 * `cairn node remove N` on real processes (four `cairn start` daemons, one directory disk each):
 * refused while the node holds data (saying to drain first, with the drain plan); after
 * `cairn node drain 4 --yes` has emptied and retired its disk, it shows its plan, then (--yes)
 * takes node 4 out of the diskmap, the registry and the Raft group — checked by what the
 * cluster does after: with node 4 stopped and node 3 killed, two of the three voters left still
 * make a quorum (with four voters they would not), so a strong write goes through. Every file's
 * SHA-256 is checked through every running node.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileClient } from '../../src/server/file-client.js';
import { AvailCluster, eventually, runCairn } from './availability-cluster.js';

let c: AvailCluster;

beforeAll(async () => {
  c = await AvailCluster.make({ nodes: 4, disks: 1, diskBytes: 512 * 1024 * 1024, daemon: { repair: { catchUpIntervalMs: 300 } } });
  const via = new FileClient(c.nodes[0]!.listen);
  await eventually(async () => (await via.cluster()).diskmapEpoch >= 1, 60_000, 100);
  via.close();
}, 180_000);

afterAll(async () => {
  await c?.close();
});

describe('cairn node remove', () => {
  it('refuses while the node holds data, removes it once drained, and the Raft group no longer counts it', async () => {
    const n1 = c.nodes[0]!;
    const ep = ['--endpoint', n1.listen];
    const via = new FileClient(n1.listen);
    for (let i = 0; i < 8; i++) await c.putOne(via, 'before');

    const refused = await runCairn(['node', 'remove', '4', ...ep, '--yes'], { timeoutMs: 120_000 });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/EBUSY: node 4 holds data \(node4\/0 \(active\)\): drain it first \(cairn node drain 4 --yes\)/);
    expect(refused.stdout).toMatch(/plan: drain node4\/0/); // the plan of the drain it asks for
    expect(await c.diskState(n1, 'node4/0')).toBe('active');

    const drain = await runCairn(['node', 'drain', '4', ...ep, '--yes'], { timeoutMs: 120_000 });
    expect(drain.code, drain.stderr).toBe(0);
    await eventually(async () => (await c.diskState(n1, 'node4/0')) === 'removed', 120_000, 200);

    const plan = await runCairn(['node', 'remove', '4', ...ep], { timeoutMs: 120_000 });
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toMatch(/plan: remove node 4 — out of the Raft group, machine node4 out of the diskmap/);
    expect(plan.stdout).toMatch(/nothing applied/);
    const r = await runCairn(['node', 'remove', '4', ...ep, '--yes'], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/node 4 removed: out of the Raft group, its machine out of the diskmap \(epoch \d+\)/);
    await eventually(async () => !(await c.diskmap(n1)).topology.machines.some((m) => m.name === 'node4'), 30_000, 200);
    await eventually(async () => (await via.cluster()).nodes.every((n) => n.nodeId !== 4), 30_000, 200);
    const again = await runCairn(['node', 'remove', '4', ...ep, '--yes'], { timeoutMs: 120_000 });
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/ENOENT: node 4 is neither a member of the Raft group nor a registered node/);

    // Node 4 stopped: nothing of any file was on it.
    await c.stop(c.nodes[3]!, 'SIGTERM');
    await c.checkAll();
    // Node 3 killed too: nodes 1 and 2 are a majority of the three voters left (not of four).
    await c.stop(c.nodes[2]!, 'SIGKILL');
    await c.putOne(via, 'after');
    await c.checkAll({ durable: false }); // node 3's shards are missing until it returns: readable, not durable
    via.close();
  }, 300_000);
});
