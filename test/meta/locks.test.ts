/**
 * The metadata's lock table through the real service (gRPC on 127.0.0.1, one-voter Raft group,
 * LevelDB): sessions, conflicts answered with the holder, releases, the expiry of a dead
 * session's locks by the leader's sweep (EFENCED on its late renewal), and the lock table going
 * with its inode.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { MetaClient } from '../../src/meta/client.js';
import { nodeConfigSchema } from '../../src/common/config.js';
import { startNode, type CairnNode } from '../../src/server/node.js';
import { metaServiceWith } from '../../src/server/services.js';
import { CairnError } from '../../src/common/errors.js';
import { LOCK_EOF } from '../../src/meta/lock-table.js';
import { eventually, freePort, tempDir } from '../helpers/env.js';

let dir: { path: string; remove: () => Promise<void> };
let node: CairnNode;
let client: MetaClient;

beforeAll(async () => {
  dir = await tempDir('cairn-meta-locks-');
  const address = `127.0.0.1:${await freePort()}`;
  const cfg = nodeConfigSchema.parse({
    clusterName: 'locks',
    nodeId: 1,
    listen: address,
    peers: [{ id: 1, address }],
    dataDir: join(dir.path, 'data'),
    cacheDir: join(dir.path, 'cache'),
    location: { machine: 0 },
    raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 2 },
  });
  node = await startNode(cfg, { services: [metaServiceWith({ leaseSweepMs: 100 })] });
  client = new MetaClient({ endpoints: [address] });
  await eventually(() => node.raft.isLeader());
});

afterAll(async () => {
  client?.close();
  await node?.stop();
  await dir?.remove();
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof CairnError) return err.code;
    throw err;
  }
}

describe('the lock table in the metadata', () => {
  it('grants, refuses naming the holder, releases by owner and by session', async () => {
    const f = await client.create('/db', { mode: 0o644 });
    const ino = f.attr.ino;
    await client.lockSession('node-a', 10_000, true);
    await client.lockSession('node-b', 10_000, true);
    const base = { ino, kind: 'posix' as const, start: 0, end: 100, pid: 7 };
    await client.lock({ ...base, session: 'node-a', owner: 'p1', mode: 'write' });
    const refused = await client.lock({ ...base, session: 'node-b', owner: 'p1', mode: 'read', start: 50, end: 60 });
    expect(refused.granted).toBe(false);
    expect(refused.conflict).toMatchObject({ session: 'node-a', owner: 'p1', mode: 'write', start: 0, end: 100, pid: 7 });
    // Past the holder's range there is no conflict; flock locks never meet POSIX ones.
    await client.lock({ ...base, session: 'node-b', owner: 'p1', mode: 'write', start: 100, end: LOCK_EOF });
    await client.lock({ ...base, kind: 'flock', session: 'node-b', owner: 'f1', mode: 'write' });
    expect((await client.lock({ ...base, kind: 'flock', session: 'node-a', owner: 'f9', mode: 'read' })).granted).toBe(false);
    // A downgrade splits: a's write [0,100) becomes write [0,50) + read [50,100).
    await client.lock({ ...base, session: 'node-a', owner: 'p1', mode: 'read', start: 50, end: 100 });
    await client.lock({ ...base, session: 'node-b', owner: 'p2', mode: 'read', start: 60, end: 70 });
    const table = await client.lockList(ino);
    expect(table.filter((l) => l.session === 'node-a' && l.kind === 'posix').map((l) => [l.start, l.end, l.mode])).toEqual([
      [0, 50, 'write'],
      [50, 100, 'read'],
    ]);
    expect(await client.lockRelease(ino, 'node-a', 'p1')).toBe(2);
    await client.lock({ ...base, session: 'node-b', owner: 'p3', mode: 'write', start: 0, end: 50 });
    expect(await client.lockSessionEnd('node-b')).toBe(1);
    expect(await client.lockList(ino)).toEqual([]);
  });

  it('a session that is not renewed loses its locks (the sweep), and may not come back', async () => {
    const f = await client.create('/sess', { mode: 0o644 });
    const ino = f.attr.ino;
    await client.lockSession('dying', 2_000, true);
    await client.lockSession('alive', 30_000, true);
    await client.lock({ ino, session: 'dying', owner: 'o', kind: 'posix', mode: 'write', start: 0, end: LOCK_EOF, pid: 1 });
    expect((await client.lock({ ino, session: 'alive', owner: 'o', kind: 'posix', mode: 'write', start: 0, end: 10, pid: 2 })).granted).toBe(false);
    // The ttl (2 s) plus the safety margin (1 s) later, the leader's sweep drops the session.
    await eventually(async () => (await client.lockList(ino)).length === 0, 15_000);
    expect((await client.lock({ ino, session: 'alive', owner: 'o', kind: 'posix', mode: 'write', start: 0, end: 10, pid: 2 })).granted).toBe(true);
    expect(await code(client.lockSession('dying', 2_000, false))).toBe('EFENCED');
    expect(await code(client.lock({ ino, session: 'dying', owner: 'o', kind: 'posix', mode: 'read', start: 20, end: 30, pid: 1 }))).toBe('EFENCED');
  });

  it('refuses bad requests with EINVAL and drops the table with its inode', async () => {
    const f = await client.create('/gone', { mode: 0o644 });
    await client.lockSession('s3', 10_000, true);
    expect(await code(client.lock({ ino: f.attr.ino, session: 's3', owner: 'o', kind: 'posix', mode: 'read', start: 10, end: 10, pid: 1 }))).toBe('EINVAL');
    expect(await code(client.lock({ ino: f.attr.ino, session: 'bad\u0000id', owner: 'o', kind: 'posix', mode: 'read', start: 0, end: 10, pid: 1 }))).toBe('EINVAL');
    expect(await code(client.lock({ ino: 999_999, session: 's3', owner: 'o', kind: 'posix', mode: 'read', start: 0, end: 10, pid: 1 }))).toBe('ESTALE');
    await client.lock({ ino: f.attr.ino, session: 's3', owner: 'o', kind: 'posix', mode: 'write', start: 0, end: 10, pid: 1 });
    await client.unlink('/gone');
    expect(await client.lockList(f.attr.ino)).toEqual([]);
    // The session's index no longer names the inode: ending it releases nothing.
    expect(await client.lockSessionEnd('s3')).toBe(0);
  });
});
