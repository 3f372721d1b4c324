/**
 * The metadata service on a real 3-node Raft group over real gRPC on 127.0.0.1 (nodes run
 * in this process through startNode, the same code `cairn start` runs): linearizable reads
 * on followers, leader-only lease operations hidden by the client, watch resume across a
 * leader change and a node restart, persistence across a restart of every node, and a
 * snapshot installed on a node whose data directory was wiped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { nodeConfigSchema, type NodeConfig } from '../../src/common/config.js';
import { startNode, type CairnNode } from '../../src/server/node.js';
import { MetaClient, type WatchEvent } from '../../src/meta/client.js';
import { eventually, freePort, tempDir } from '../helpers/env.js';

interface Member {
  cfg: NodeConfig;
  node?: CairnNode;
}

let base: { path: string; remove: () => Promise<void> };
const members: Member[] = [];

async function start(m: Member, join = false): Promise<void> {
  m.node = await startNode(m.cfg, { join });
}

async function stop(m: Member): Promise<void> {
  const n = m.node;
  m.node = undefined;
  await n?.stop();
}

function endpoints(): string[] {
  return members.map((m) => m.cfg.listen);
}

async function leader(): Promise<Member> {
  return eventually(() => members.find((m) => m.node?.raft.isLeader()), 20_000);
}

beforeAll(async () => {
  base = await tempDir('cairn-meta-cluster-');
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => ({ id: i + 1, address: `127.0.0.1:${p}` }));
  for (let i = 0; i < 3; i++) {
    const dir = join(base.path, `n${i + 1}`);
    members.push({
      cfg: nodeConfigSchema.parse({
        clusterName: 'test',
        nodeId: i + 1,
        listen: peers[i]!.address,
        peers,
        dataDir: join(dir, 'data'),
        cacheDir: join(dir, 'cache'),
        location: { machine: i },
        raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 2, snapshotEntries: 40, compactionMarginEntries: 5 },
      }),
    });
  }
  await Promise.all(members.map((m) => start(m)));
  await leader();
});

afterAll(async () => {
  await Promise.all(members.map((m) => stop(m)));
  await base?.remove();
});

describe('metadata service on a 3-node cluster', () => {
  it('serves writes from any node and linearizable reads on a follower', async () => {
    const l = await leader();
    const follower = members.find((m) => m !== l)!;
    const toLeader = new MetaClient({ endpoints: [l.cfg.listen] });
    const toFollower = new MetaClient({ endpoints: [follower.cfg.listen] });
    try {
      await toLeader.mkdir('/lin');
      for (let i = 0; i < 20; i++) {
        await toLeader.create(`/lin/f${i}`);
        // acknowledged by the leader → a linearizable read on the follower sees it
        const a = await toFollower.stat(`/lin/f${i}`);
        expect(a.type).toBe('file');
      }
      // a write sent to the follower (redirected to the leader by the client)
      const d = await toFollower.mkdir('/lin/sub', { mode: 0o700 });
      expect((await toLeader.stat('/lin/sub')).ino).toBe(d.ino);
      // a lease through the follower: the client is redirected to the leader
      const f = await toFollower.stat('/lin/f0');
      const lease = await toFollower.leaseAcquire(f.ino, 'writer-1', 5_000);
      expect(lease.token).toBeGreaterThan(0);
      const c = await toFollower.commitVersion({ ino: f.ino, expectedVersion: 0, fence: lease.token, size: 3, extents: [] });
      expect(c.record.state).toBe('visible');
      await expect(
        toFollower.commitVersion({ ino: f.ino, expectedVersion: 0, fence: lease.token, size: 3, extents: [] }),
      ).rejects.toMatchObject({ code: 'ECONFLICT' });
      await toFollower.markDurable(f.ino, 1);
      expect((await toFollower.commitStatus(f.ino, 1)).state).toBe('durable');
      // bad input is rejected by name, not by a crash
      await expect(toLeader.mkdir('/lin/' + 'x'.repeat(256))).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
      await expect(toLeader.mkdir('/lin/../etc')).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(toLeader.mkdir('/lin/a\0b')).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(toLeader.mkdir('relative')).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(toLeader.stat('/lin/missing')).rejects.toMatchObject({ code: 'ENOENT' });
      const names: string[] = [];
      for await (const e of toFollower.readdirAll('/lin', { pageSize: 7 })) names.push(e.name);
      expect(names.length).toBe(21);
    } finally {
      toLeader.close();
      toFollower.close();
    }
  });

  it('resumes a watch across a leader change and a node restart with no missed or repeated event', async () => {
    const client = new MetaClient({ endpoints: endpoints() });
    const watcher = new MetaClient({ endpoints: endpoints() });
    const ac = new AbortController();
    const seen: WatchEvent[] = [];
    try {
      await client.mkdir('/w');
      await client.stat('/w'); // linearizable: this node has applied the mkdir
      const from = (await client.status()).revision + 1;
      const consumer = (async () => {
        for await (const ev of watcher.watch('/w', { fromRevision: from, signal: ac.signal })) seen.push(ev);
      })();
      for (let i = 0; i < 10; i++) await client.create(`/w/a${i}`);
      await eventually(() => seen.length >= 10);
      // the leader goes away: a new one is elected, the watch moves to a live node
      const old = await leader();
      await stop(old);
      for (let i = 0; i < 10; i++) await client.create(`/w/b${i}`);
      await start(old);
      for (let i = 0; i < 10; i++) await client.create(`/w/c${i}`);
      // restart every node in turn (the watcher's node among them)
      for (const m of members) {
        await stop(m);
        await start(m);
        await leader();
      }
      for (let i = 0; i < 10; i++) await client.create(`/w/d${i}`);
      await eventually(() => seen.length >= 40, 30_000);
      ac.abort();
      await consumer.catch(() => undefined);
      const paths = seen.map((e) => e.path).filter((p) => p.startsWith('/w/'));
      expect(new Set(paths).size).toBe(paths.length); // no repeats
      const want = ['a', 'b', 'c', 'd'].flatMap((p) => Array.from({ length: 10 }, (_, i) => `/w/${p}${i}`));
      expect(paths).toEqual(want); // none missed, in order
      const revs = seen.map((e) => e.revision);
      expect([...revs].sort((x, y) => x - y)).toEqual(revs);
    } finally {
      ac.abort();
      client.close();
      watcher.close();
    }
  });

  it('keeps everything across a restart of all nodes', async () => {
    const client = new MetaClient({ endpoints: endpoints() });
    try {
      await client.mkdir('/p');
      await client.create('/p/file');
      await client.symlink('/p/link', '/p/file');
      await client.setxattr('/p/file', 'user.tag', Buffer.from('blue'));
      const before = await client.stat('/p/file');
      await Promise.all(members.map((m) => stop(m)));
      await Promise.all(members.map((m) => start(m)));
      await leader();
      expect(await client.stat('/p/file')).toEqual(before);
      expect(await client.readlink('/p/link')).toBe('/p/file');
      expect((await client.getxattr('/p/file', 'user.tag')).toString()).toBe('blue');
    } finally {
      client.close();
    }
  });

  it('installs a snapshot on a node whose data directory was wiped', async () => {
    const client = new MetaClient({ endpoints: endpoints() });
    try {
      const l = await leader();
      const victim = members.find((m) => m !== l)!;
      await stop(victim);
      await rm(victim.cfg.dataDir, { recursive: true, force: true });
      // A wiped node is a new member: node ids are never reused (its old promises are gone).
      await l.node!.raft.remove(victim.cfg.nodeId);
      victim.cfg = { ...victim.cfg, nodeId: 10 + victim.cfg.nodeId };
      await client.mkdir('/snap');
      // more entries than snapshotEntries, so the leader compacts its log past the start
      for (let i = 0; i < 120; i++) await client.create(`/snap/f${i}`);
      await start(victim, true);
      await l.node!.raft.addVoter(victim.cfg.nodeId, victim.cfg.listen);
      const direct = new MetaClient({ endpoints: [victim.cfg.listen] });
      try {
        await eventually(async () => (await direct.stat('/snap/f119', { serializable: true })).type === 'file', 30_000);
        expect((await direct.stat('/p/file', { serializable: true })).type).toBe('file');
        // and it keeps following new writes
        await client.create('/snap/after');
        expect((await direct.stat('/snap/after')).type).toBe('file');
        expect(victim.node!.raft.status().snapshotIndex).toBeGreaterThan(0);
      } finally {
        direct.close();
      }
    } finally {
      client.close();
    }
  });
});
