/** The health verdict (src/server/health.ts) from what a node reports of its cluster. */
import { describe, expect, it } from 'vitest';
import { assessHealth, diskFill, toleratedDomains } from '../../src/server/health.js';
import type { ClusterInfo, ClusterNode } from '../../src/server/file-client.js';

function node(id: number, role: string, diskStates: string[] = ['ok', 'ok', 'ok']): ClusterNode {
  return {
    nodeId: id, address: `127.0.0.1:${7400 + id}`, location: `0.0.0.${id}`, role, term: 3,
    disks: diskStates.map((state, d) => ({ path: `/d${id}/${d}`, disk: d, capacityBytes: 1 << 30, class: 'hdd', incarnation: 'ab', state, reason: '', inDiskmap: true, usedBytes: 1 << 28, freeBytes: 3 << 28 })),
  };
}

function cluster(nodes: ClusterNode[], over: Partial<ClusterInfo> = {}): ClusterInfo {
  return { answeredBy: 1, leaderId: 1, term: 3, diskmapEpoch: 1, scheme: 'EC 2+1', failureDomain: 'machine', groups: 8, bucketSizeBytes: 1 << 26, nodes, cachedFiles: [], repair: null, ...over };
}

const codes = (h: ReturnType<typeof assessHealth>): string[] => h.checks.filter((c) => !c.muted).map((c) => c.code);

describe('assessHealth', () => {
  it('tolerated failure domains follow the scheme and the spread', () => {
    expect(toleratedDomains('EC 2+1', 3)).toBe(1);
    expect(toleratedDomains('EC 6+3', 3)).toBe(1); // 3 shards per machine, 3 parity: one machine
    expect(toleratedDomains('EC 4+2', 6)).toBe(2);
    expect(toleratedDomains('3 replicas', 3)).toBe(2);
    expect(toleratedDomains('single copy (unsafe)', 1)).toBe(0);
  });

  it('healthy when everything answers over TLS', () => {
    const h = assessHealth(cluster([node(1, 'leader'), node(2, 'follower'), node(3, 'follower')]), { secure: true });
    expect(h.verdict).toBe('healthy');
    expect(h.checks).toEqual([]);
    expect(h.capacity).toEqual({ disks: 9, okDisks: 9, totalBytes: 9 * 2 ** 30, okBytes: 9 * 2 ** 30, usedBytes: 9 * 2 ** 28, freeBytes: 27 * 2 ** 28, fill: 0.25 });
  });

  it('a node down under EC 2+1 over three machines: at risk, naming the node', () => {
    const h = assessHealth(cluster([node(1, 'leader'), node(2, 'unreachable'), node(3, 'follower')]), { secure: true });
    expect(h.verdict).toBe('at risk');
    expect(codes(h)).toEqual(['REDUNDANCY_EXHAUSTED', 'NODE_DOWN']);
    expect(h.checks.find((c) => c.code === 'NODE_DOWN')?.detail).toEqual(['node 2 (127.0.0.1:7402)']);
  });

  it('a failed disk under 3 replicas: degraded; two machines out and no leader: down', () => {
    expect(assessHealth(cluster([node(1, 'leader', ['ok', 'failed', 'ok']), node(2, 'follower'), node(3, 'follower')], { scheme: '3 replicas' }), { secure: true }).verdict).toBe('degraded');
    const h = assessHealth(cluster([node(1, 'follower'), node(2, 'unreachable'), node(3, 'unreachable')], { leaderId: 0 }), { secure: true });
    expect(h.verdict).toBe('down');
    expect(codes(h).slice(0, 2).sort()).toEqual(['DATA_UNAVAILABLE', 'NO_LEADER']);
  });

  it('insecure transport and a missing diskmap degrade; pending commits are information', () => {
    const h = assessHealth(
      cluster([node(1, 'leader')], { diskmapEpoch: 0, cachedFiles: [{ path: '/f', state: 'visible', pendingBytes: 10, version: 1, size: 10, error: '' }] }),
      { secure: false },
    );
    expect(h.verdict).toBe('degraded');
    expect(codes(h)).toEqual(['INSECURE_TRANSPORT', 'NO_DISKMAP', 'PENDING_COMMITS']);
    expect(h.pending).toEqual({ files: 1, bytes: 10 });
  });

  it('a muted check is listed but does not count until its mute ends', () => {
    const c = cluster([node(1, 'leader', ['ok', 'failed', 'ok']), node(2, 'follower'), node(3, 'follower')], { scheme: '3 replicas' });
    const muted = assessHealth(c, { secure: true, mutes: [{ code: 'DISK_FAILED', untilMs: 2_000 }], nowMs: 1_000 });
    expect(muted.verdict).toBe('healthy');
    expect(muted.checks.map((x) => [x.code, x.muted])).toEqual([['DISK_FAILED', true]]);
    expect(assessHealth(c, { secure: true, mutes: [{ code: 'DISK_FAILED', untilMs: 2_000 }], nowMs: 3_000 }).verdict).toBe('degraded');
  });

  it('disk fill: a folder disk is full when its capacity or its file system is; the thresholds give check codes', () => {
    // A folder disk of 1 GiB holding 300 MiB on a file system with plenty free.
    expect(diskFill(1 << 30, { fsTotalBytes: 2 ** 40, fsAvailBytes: 2 ** 39, storedBytes: 300 << 20, ownFs: false })).toEqual({ usedBytes: 300 << 20, freeBytes: (1 << 30) - (300 << 20), fill: 300 / 1024 });
    // The same disk on a file system with only 10 MiB left: nearly all of it counts as used.
    expect(diskFill(1 << 30, { fsTotalBytes: 2 ** 40, fsAvailBytes: 10 << 20, storedBytes: 300 << 20, ownFs: false })?.freeBytes).toBe(10 << 20);
    // No figure from the node: no fill.
    expect(diskFill(1 << 30, undefined)).toBeUndefined();
    const at = (used: number) => (id: number, role: string) => {
      const n = node(id, role);
      n.disks = n.disks.map((d, i) => (id === 1 && i === 0 ? { ...d, usedBytes: used, freeBytes: (1 << 30) - used } : d));
      return n;
    };
    const nodes = (used: number) => [at(used)(1, 'leader'), at(used)(2, 'follower'), at(used)(3, 'follower')];
    const near = assessHealth(cluster(nodes(Math.ceil(0.9 * 2 ** 30))), { secure: true });
    expect(near.verdict).toBe('degraded');
    expect(codes(near)).toEqual(['DISK_NEARFULL']);
    expect(near.checks[0]?.detail[0]).toMatch(/^node 1 disk 0 \(\/d1\/0\): 90% full/);
    const full = assessHealth(cluster(nodes(2 ** 30)), { secure: true });
    expect(full.verdict).toBe('at risk');
    expect(codes(full)).toEqual(['DISK_FULL']);
    // Every disk 96% full: the cluster too.
    const all = [1, 2, 3].map((id) => {
      const n = node(id, id === 1 ? 'leader' : 'follower');
      n.disks = n.disks.map((d) => ({ ...d, usedBytes: 96, freeBytes: 4 }));
      return n;
    });
    const h = assessHealth(cluster(all), { secure: true });
    expect(codes(h)).toEqual(['CLUSTER_FULL', 'DISK_FULL']);
    expect(h.capacity.fill).toBeCloseTo(0.96);
    // A disk of an unreachable node does not count for the fill.
    const down = assessHealth(cluster([node(1, 'leader'), { ...all[1]!, role: 'unreachable' }, node(3, 'follower')]), { secure: true });
    expect(codes(down)).not.toContain('DISK_FULL');
    expect(down.capacity.fill).toBe(0.25);
  });
});
