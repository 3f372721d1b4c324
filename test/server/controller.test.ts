/**
 * The diskmap controller's decisions (pure): wait for the initial peers, build once, grow by
 * registered disks only, never shrink, leave replaced disks to the operator; registry topology
 * and bucket → address resolution.
 */
import { describe, expect, it } from 'vitest';
import { autoBucketSizeBytes, decideDiskmap, grownTopology } from '../../src/server/diskmap-controller.js';
import { addressResolver, nodeRecordSchema, topologyOf, type NodeRecord } from '../../src/server/registry.js';
import { diskEntries, parseDiskmap, serializeDiskmap, type Diskmap } from '../../src/diskmap/index.js';

const GIB = 1024 ** 3;

function rec(nodeId: number, disks: Array<{ disk: number; inc: string; state?: 'ok' | 'failed'; capacityBytes?: number }>): NodeRecord {
  return nodeRecordSchema.parse({
    v: 1,
    nodeId,
    address: `127.0.0.1:${7400 + nodeId}`,
    location: { dc: 0, row: 0, rack: 0, machine: nodeId - 1 },
    disks: disks.map((d) => ({
      disk: d.disk, path: `/d/${nodeId}/${d.disk}`, capacityBytes: d.capacityBytes ?? 4 * GIB, class: 'hdd', incarnation: d.inc, state: d.state ?? 'ok', reason: '',
    })),
    registeredAtMs: 0,
  });
}

const inc = (n: number): string => n.toString(16).padStart(16, '0');
const opts = { initialPeers: [1, 2, 3], clusterName: 't' };
const three = [rec(1, [{ disk: 0, inc: inc(11) }]), rec(2, [{ disk: 0, inc: inc(21) }]), rec(3, [{ disk: 0, inc: inc(31) }])];

function first(): Diskmap {
  const d = decideDiskmap(undefined, three, opts);
  if (d.kind !== 'propose') throw new Error(d.why);
  // Through the stored form, as the controller reads it back.
  return parseDiskmap(serializeDiskmap(d.diskmap));
}

describe('diskmap controller', () => {
  it('waits until every initial peer registered, then builds epoch 1 over their disks', () => {
    const wait = decideDiskmap(undefined, three.slice(0, 2), opts);
    expect(wait.kind).toBe('none');
    expect(wait.why).toMatch(/node\(s\) 3/);
    const dm = first();
    expect(dm.epoch).toBe(1);
    expect(diskEntries(dm.topology)).toHaveLength(3);
    expect(dm.bucketSizeBytes).toBe(256 * 1024 * 1024);
  });

  it('does nothing when every registered disk is in the map', () => {
    expect(decideDiskmap(first(), three, opts).kind).toBe('none');
  });

  it('grows by one epoch for a new disk, and ignores failed disks', () => {
    const dm = first();
    const grown = [three[0]!, three[1]!, rec(3, [{ disk: 0, inc: inc(31) }, { disk: 1, inc: inc(32) }, { disk: 2, inc: inc(33), state: 'failed' }])];
    const d = decideDiskmap(dm, grown, opts);
    expect(d.kind).toBe('propose');
    if (d.kind !== 'propose') return;
    expect(d.diskmap.epoch).toBe(2);
    expect(diskEntries(d.diskmap.topology)).toHaveLength(4);
  });

  it('never shrinks: a node or disk missing from the registry stays in the map', () => {
    const dm = first();
    expect(decideDiskmap(dm, three.slice(0, 2), opts).kind).toBe('none');
    const g = grownTopology(dm.topology, topologyOf([three[0]!]));
    expect(g.added).toEqual([]);
    expect(g.topology.machines.flatMap((m) => m.disks)).toHaveLength(3);
  });

  it('leaves a replaced disk (same slot, new incarnation) to the operator', () => {
    const dm = first();
    const replaced = [three[0]!, three[1]!, rec(3, [{ disk: 0, inc: inc(99) }])];
    const d = decideDiskmap(dm, replaced, opts);
    expect(d.kind).toBe('none');
    expect(d.why).toMatch(/replaced disk/);
  });

  it('refuses two nodes claiming one machine location', () => {
    const clash = [three[0]!, { ...three[1]!, location: three[0]!.location }, three[2]!];
    expect(() => topologyOf(clash)).toThrow(/both claim machine location/);
  });

  it('picks the bucket size from the smallest disk', () => {
    expect(autoBucketSizeBytes(topologyOf(three))).toBe(256 * 1024 * 1024);
    expect(autoBucketSizeBytes(topologyOf([rec(1, [{ disk: 0, inc: inc(1), capacityBytes: 10 * 1024 ** 4 }])]))).toBe(64 * GIB);
    expect(autoBucketSizeBytes(topologyOf([rec(1, [{ disk: 0, inc: inc(1), capacityBytes: 8 * 1024 * 1024 }])]))).toBe(1024 * 1024);
  });

  it('resolves a bucket to the address of the node at its machine location', () => {
    const dm = first();
    const at = addressResolver(three);
    const b = dm.groups[0]!.buckets[0]!;
    expect(at(b)).toBe(`127.0.0.1:${7400 + b.machine + 1}`);
    expect(() => addressResolver(three.slice(0, 1))({ ...b, machine: 2 })).toThrow(/no registered node/);
  });
});
