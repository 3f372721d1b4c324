/**
 * Retiring a drained disk and removing a node from the registry's topology (pure: the diskmap
 * controller's decideDiskmap/drainedDisks and registry.topologyOf). A draining disk is a retire
 * candidate only once no group holds a bucket on it; it is retired (state "removed") only when
 * the caller found it empty; growth never adds a retired disk or a removed node back.
 */
import { describe, expect, it } from 'vitest';
import { decideDiskmap, drainedDisks } from '../../src/server/diskmap-controller.js';
import { nodeRecordSchema, topologyOf, type NodeRecord } from '../../src/server/registry.js';
import { diskEntries, diskLabel, formatBucketId, HANDOFF_BUCKET, parseDiskmap, planDrain, serializeDiskmap, type Diskmap } from '../../src/diskmap/index.js';

const GIB = 1024 ** 3;
const inc = (n: number): string => n.toString(16).padStart(16, '0');

function rec(nodeId: number, disks: number, extra: Partial<NodeRecord> = {}): NodeRecord {
  return nodeRecordSchema.parse({
    v: 1,
    nodeId,
    address: `127.0.0.1:${7400 + nodeId}`,
    location: { dc: 0, row: 0, rack: 0, machine: nodeId - 1 },
    disks: Array.from({ length: disks }, (_, d) => ({ disk: d, path: `/d/${nodeId}/${d}`, capacityBytes: 4 * GIB, class: 'hdd', incarnation: inc(nodeId * 16 + d), state: 'ok', reason: '' })),
    registeredAtMs: 0,
    ...extra,
  });
}

const opts = { initialPeers: [1, 2, 3], clusterName: 't' };
const nodes = [rec(1, 3), rec(2, 3), rec(3, 3)];

function first(): Diskmap {
  const d = decideDiskmap(undefined, nodes, opts);
  if (d.kind !== 'propose') throw new Error(d.why);
  return parseDiskmap(serializeDiskmap(d.diskmap));
}

describe('retiring drained disks', () => {
  it('a drained disk is a candidate with every bucket and its handoff bucket; retired only when found empty', () => {
    const dm0 = first();
    expect(drainedDisks(dm0)).toEqual([]);
    const plan = planDrain(dm0, 'node2/1');
    expect(plan.refused).toBeUndefined();
    const dm1 = parseDiskmap(serializeDiskmap(plan.diskmap));
    const cands = drainedDisks(dm1);
    expect(cands.map((c) => c.ref)).toEqual(['node2/1']);
    const buckets = cands[0]!.buckets;
    expect(buckets.at(-1)!.bucket).toBe(HANDOFF_BUCKET);
    expect(new Set(buckets.map((b) => `${b.machine}/${b.disk}`))).toEqual(new Set(['1/1']));
    expect(buckets.length).toBe(Math.floor((4 * GIB) / dm1.bucketSizeBytes) + 1);
    expect(new Set(buckets.map(formatBucketId)).size).toBe(buckets.length);
    // Not found empty: nothing to do.
    expect(decideDiskmap(dm1, nodes, opts).kind).toBe('none');
    // Found empty: the next epoch has it removed, nothing else changed.
    const d = decideDiskmap(dm1, nodes, { ...opts, emptyDrained: ['node2/1'] });
    expect(d.kind).toBe('propose');
    if (d.kind !== 'propose') return;
    expect(d.diskmap.epoch).toBe(dm1.epoch + 1);
    const states = new Map(diskEntries(d.diskmap.topology).map((e) => [diskLabel(e), e.d.state]));
    expect(states.get('node2/1')).toBe('removed');
    expect([...states.values()].filter((s) => s !== 'active')).toEqual(['removed']);
    expect(d.diskmap.groups.map((g) => g.buckets.map(formatBucketId))).toEqual(dm1.groups.map((g) => g.buckets.map(formatBucketId)));
    // The node still registers the disk: growth does not add the retired disk back.
    expect(decideDiskmap(parseDiskmap(serializeDiskmap(d.diskmap)), nodes, opts).kind).toBe('none');
  });

  it('a removed node brings no machine to the topology (growth never adds it back)', () => {
    const t = topologyOf([...nodes, rec(4, 1, { removed: true, disks: [] })]);
    expect(t.machines.map((m) => m.name)).toEqual(['node1', 'node2', 'node3']);
    const t2 = topologyOf([...nodes, rec(4, 1, { removed: true })]);
    expect(t2.machines.map((m) => m.name)).toEqual(['node1', 'node2', 'node3']);
  });
});
