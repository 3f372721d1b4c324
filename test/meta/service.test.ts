/**
 * The metadata gRPC service and MetaClient over real gRPC on 127.0.0.1, on a one-voter Raft
 * group started by startNode (3-node behaviour is in cluster.test.ts): request validation with
 * POSIX error names, attributes, xattrs, truncate, pagination over the wire, and the watch
 * stream's ECOMPACTED answer. Its putFile writes travel as the binary record (binaryPutFile).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { MetaStateMachine } from '../../src/meta/state-machine.js';
import { MetaClient } from '../../src/meta/client.js';
import { nodeConfigSchema } from '../../src/common/config.js';
import { startNode, type CairnNode } from '../../src/server/node.js';
import { metaServiceWith } from '../../src/server/services.js';
import { call, makeClient, serviceOf } from '../../src/rpc/grpc.js';
import { eventually, freePort, tempDir } from '../helpers/env.js';
import { buildDiskmap, parseDiskmap, parseTopology, serializeDiskmap } from '../../src/diskmap/index.js';

let dir: { path: string; remove: () => Promise<void> };
let node: CairnNode;
let sm: MetaStateMachine;
let client: MetaClient;

beforeAll(async () => {
  dir = await tempDir('cairn-meta-svc-');
  const address = `127.0.0.1:${await freePort()}`;
  const cfg = nodeConfigSchema.parse({
    clusterName: 'svc',
    nodeId: 1,
    listen: address,
    peers: [{ id: 1, address }],
    dataDir: join(dir.path, 'data'),
    cacheDir: join(dir.path, 'cache'),
    location: { machine: 0 },
    raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 2 },
  });
  node = await startNode(cfg, { services: [metaServiceWith({ leaseSweepMs: 100, binaryPutFile: () => true })], meta: { maxEvents: 50 } });
  sm = node.meta;
  client = new MetaClient({ endpoints: [address] });
  await eventually(() => node.raft.isLeader());
});

afterAll(async () => {
  client?.close();
  await node?.stop();
  await dir?.remove();
});

describe('metadata service over gRPC', () => {
  it('rejects bad names and requests with POSIX errors', async () => {
    await client.mkdir('/v');
    const cases: Array<[string, string]> = [
      [`/v/${'é'.repeat(128)}`, 'ENAMETOOLONG'], // 256 bytes
      ['/v/../x', 'EINVAL'],
      ['/v/./x', 'EINVAL'],
      ['/v/a\0b', 'EINVAL'],
      ['/v/\uFFFDbad', 'EINVAL'], // what a decoder makes of invalid UTF-8
      ['/v/\uD800x', 'EINVAL'], // a lone surrogate
      ['v/x', 'EINVAL'],
      [`/${'a/'.repeat(2100)}x`, 'ENAMETOOLONG'],
    ];
    for (const [path, code] of cases) await expect(client.mkdir(path), path.slice(0, 20)).rejects.toMatchObject({ code });
    // 255 bytes is fine
    await client.mkdir(`/v/${'é'.repeat(127)}x`);
    // a Ref with two forms at once, or none
    const raw = makeClient(serviceOf('meta.proto', 'cairn.meta.Meta'), node.address);
    try {
      await expect(call(raw, 'Getattr', { node: { ino: 1, path: '/' } })).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(call(raw, 'Getattr', {})).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(call(raw, 'Mkdir', { at: { ino: 1 }, mode: 0o755, uid: 0, gid: 0 })).rejects.toMatchObject({ code: 'EINVAL' });
      // an oversized request: too many extents for one commit
      const extents = Array.from({ length: 100_001 }, (_, i) => ({ offset: i, length: 1, chunk_hash: 'ab'.repeat(16), scheme: 'r', pg: 0 }));
      await expect(call(raw, 'CommitVersion', { ino: 2, expected_version: 0, fence: 1, size: 1, extents }, 20_000)).rejects.toMatchObject({ code: 'EINVAL' });
    } finally {
      raw.close();
    }
    await expect(client.stat({ ino: 999_999 })).rejects.toMatchObject({ code: 'ESTALE' });
    await expect(client.rmdir('/')).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('sets attributes and xattrs, truncates, and pages through a directory', async () => {
    await client.mkdir('/s');
    const { attr } = await client.create('/s/f', { mode: 0o600, uid: 7 });
    expect(attr).toMatchObject({ type: 'file', mode: 0o600, uid: 7, nlink: 1, version: 0 });
    const again = await client.create('/s/f', { exclusive: false });
    expect(again).toMatchObject({ created: false, attr: { ino: attr.ino } });
    expect((await client.setattr('/s/f', { mode: 0o644, mtimeMs: 1234 }))).toMatchObject({ mode: 0o644, mtimeMs: 1234 });
    await client.setxattr('/s/f', 'user.a', Buffer.from([0, 1, 2, 255]));
    await expect(client.setxattr('/s/f', 'user.a', Buffer.from('x'), 'create')).rejects.toMatchObject({ code: 'EEXIST' });
    expect([...(await client.getxattr('/s/f', 'user.a'))]).toEqual([0, 1, 2, 255]);
    expect(await client.listxattr('/s/f')).toEqual(['user.a']);
    await client.removexattr('/s/f', 'user.a');
    await expect(client.getxattr('/s/f', 'user.a')).rejects.toMatchObject({ code: 'ENOENT' });
    // commit with a lease, then truncate (fenced by the same lease)
    const lease = await client.leaseAcquire(attr.ino, 'me', 10_000);
    const ext = [{ offset: 0, length: 100, chunkHash: 'cd'.repeat(32), scheme: 'ec2+1', pg: 3 }];
    await client.commitVersion({ ino: attr.ino, expectedVersion: 0, fence: lease.token, size: 100, extents: ext });
    await expect(client.truncate('/s/f', 10, 1, 0)).rejects.toMatchObject({ code: 'EFENCED' });
    const t = await client.truncate('/s/f', 10, 1, lease.token);
    expect(t.attr).toMatchObject({ size: 10, version: 2 });
    // The cut extent is a slice of its 100-byte chunk (readers fetch and check the whole chunk).
    expect((await client.layout('/s/f')).extents).toEqual([{ ...ext[0], length: 10, chunkOffset: 0, chunkLength: 100 }]);
    expect(await client.leaseRelease(attr.ino, 'me', lease.token)).toBe(true);
    // the GC's view: current layouts of all files
    const all: Array<{ ino: number; version: number }> = [];
    for await (const l of client.scanLayouts({ pageSize: 1 })) all.push({ ino: l.ino, version: l.version });
    expect(all).toContainEqual({ ino: attr.ino, version: 2 });
    // readdir pages
    for (let i = 0; i < 25; i++) await client.create(`/s/n${String(i).padStart(2, '0')}`);
    const p1 = await client.readdir('/s', { limit: 10 });
    expect(p1.entries.map((e) => e.name)).toEqual(['f', ...Array.from({ length: 9 }, (_, i) => `n0${i}`)]);
    expect(p1.more).toBe(true);
    const p2 = await client.readdir('/s', { limit: 10, after: p1.nextAfter });
    expect(p2.entries[0]!.name).toBe('n09');
    let count = 0;
    for await (const _ of client.readdirAll('/s', { pageSize: 4 })) count++;
    expect(count).toBe(26);
    // readdirplus: attributes ride along
    const plus = await client.readdir('/s', { limit: 2, withAttrs: true });
    expect(plus.entries[0]).toMatchObject({ name: 'f', attr: { ino: attr.ino, size: 10, version: 2 } });
    expect(p1.entries[0]!.attr).toBeUndefined();
    // list, then watch from the listing's revision + 1: the next change is the first event
    const listed = await client.readdir('/s', { limit: 1 });
    const ac = new AbortController();
    const first = (async () => {
      for await (const ev of client.watch('/s', { fromRevision: listed.revision + 1, signal: ac.signal })) {
        ac.abort();
        return ev;
      }
      return undefined;
    })();
    await client.create('/s/after-listing');
    expect(await first).toMatchObject({ kind: 'create', path: '/s/after-listing', revision: listed.revision + 1 });
  });

  it('coalesces concurrent writes into few entries, each write with its own result', async () => {
    await client.mkdir('/co');
    const dir = (await client.stat('/co')).ino;
    await client.create({ parent: dir, name: 'taken' });
    const before = node.raft.status().lastIndex;
    // 60 writes issued at once: creates (three of them over an existing name), mkdirs, and a
    // rename of a file created earlier in the same burst
    const names = Array.from({ length: 40 }, (_, i) => (i % 13 === 5 ? 'taken' : `f${i}`));
    const creates = names.map((name) => client.create({ parent: dir, name }).then((r) => r.attr, (e: unknown) => e));
    const mkdirs = Array.from({ length: 19 }, (_, i) => client.mkdir({ parent: dir, name: `d${i}` }).then((a) => a, (e: unknown) => e));
    const renamed = client.rename({ parent: dir, name: 'f0' }, { parent: dir, name: 'g0' });
    const got = await Promise.all(creates);
    got.forEach((r, i) => {
      if (names[i] === 'taken') expect(r, `create ${i}`).toMatchObject({ code: 'EEXIST' });
      else expect(r, `create ${i}`).toMatchObject({ name: names[i], parent: dir, type: 'file' });
    });
    const dirs = await Promise.all(mkdirs);
    dirs.forEach((a, i) => expect(a).toMatchObject({ name: `d${i}`, parent: dir, type: 'dir', nlink: 2 }));
    expect(await renamed).toEqual({ renamed: true, replaced: 0 });
    const inos = [...got, ...dirs].filter((a): a is { ino: number } => typeof (a as { ino?: unknown }).ino === 'number').map((a) => a.ino);
    expect(new Set(inos).size).toBe(37 + 19);
    // far fewer Raft entries than writes
    expect(node.raft.status().lastIndex - before).toBeLessThan(10);
    expect((await client.stat('/co')).size).toBe(1 + 37 + 19);
    await expect(client.stat('/co/g0')).resolves.toMatchObject({ ino: (got[0] as { ino: number }).ino });
  });

  it('answers a raw Batch request op by op, a bad op failing alone', async () => {
    const raw = makeClient(serviceOf('meta.proto', 'cairn.meta.Meta'), node.address);
    try {
      const r = await call<unknown, { results: Array<Record<string, unknown>> }>(raw, 'Batch', {
        ops: [
          { mkdir: { at: { path: '/rb' }, mode: 0o700, uid: 1, gid: 2 } },
          { create: { at: { path: '/rb/../x' }, mode: 0o644, uid: 0, gid: 0, exclusive: true } },
          { create: { at: { path: '/rb/f' }, mode: 0o644, uid: 0, gid: 0, exclusive: true } },
          {},
          { rename: { from: { path: '/rb/f' }, to: { path: '/rb/g' } } },
          { unlink: { at: { path: '/rb/nope' } } },
          { setattr: { node: { path: '/rb/g' }, set_mode: true, mode: 0o600 } },
        ],
      });
      const codes = r.results.map((x) => x.code);
      expect(codes).toEqual(['', 'EINVAL', '', 'EINVAL', '', 'ENOENT', '']);
      expect(r.results[0]!.attr).toMatchObject({ attr: { name: 'rb', mode: 0o700, uid: 1, gid: 2 } });
      expect(r.results[2]!.attr).toMatchObject({ attr: { name: 'f', type: 'file' } });
      expect(r.results[4]!.rename).toMatchObject({ renamed: true });
      expect(r.results[6]!.attr).toMatchObject({ attr: { name: 'g', mode: 0o600 } });
      const tooMany = Array.from({ length: 1025 }, (_, i) => ({ unlink: { at: { path: `/rb/${i}` } } }));
      await expect(call(raw, 'Batch', { ops: tooMany })).rejects.toMatchObject({ code: 'EINVAL' });
    } finally {
      raw.close();
    }
  });

  it('creates a file with its write lease in one operation: the lease fences like an acquired one', async () => {
    const made = await client.create('/leased', { lease: { holder: 'uploader', ttlMs: 10_000 } });
    expect(made.created).toBe(true);
    expect(made.lease).toMatchObject({ ino: made.attr.ino, holder: 'uploader', ttlMs: 10_000 });
    expect(made.lease!.token).toBeGreaterThan(0);
    expect(made.lease!.validUntilMs).toBeGreaterThan(Date.now());
    // another holder cannot take it; the granted token commits
    await expect(client.leaseAcquire(made.attr.ino, 'other', 1_000)).rejects.toMatchObject({ code: 'EBUSY' });
    const ext = [{ offset: 0, length: 10, chunkHash: 'ef'.repeat(32), scheme: 'ec2+1', pg: 1 }];
    const c = await client.commitVersion({ ino: made.attr.ino, expectedVersion: 0, fence: made.lease!.token, size: 10, extents: ext });
    expect(c.record.version).toBe(1);
    // without a lease asked for, none comes (and an existing file gets none either)
    expect((await client.create('/unleased')).lease).toBeUndefined();
    const again = await client.create('/leased', { exclusive: false, lease: { holder: 'x', ttlMs: 1_000 } });
    expect(again.created).toBe(false);
    expect(again.lease).toBeUndefined();
    expect(await client.leaseRelease(made.attr.ino, 'uploader', made.lease!.token)).toBe(true);
  });

  it('keeps an unlinked file while its lease lives and frees it when the lease expires', async () => {
    const { attr } = await client.create('/open-file');
    const lease = await client.leaseAcquire(attr.ino, 'w', 200);
    await client.unlink('/open-file');
    expect((await client.stat({ ino: attr.ino })).nlink).toBe(0);
    // the leader's sweep removes the lease after expiry + safety margin, and the orphan with it
    await eventually(async () => {
      try {
        await client.stat({ ino: attr.ino });
        return false;
      } catch (err) {
        return (err as { code?: string }).code === 'ESTALE';
      }
    }, 10_000);
    await expect(client.leaseRenew(attr.ino, 'w', lease.token, 200)).rejects.toMatchObject({ code: 'EFENCED' });
  });

  it('answers a watch from a compacted revision with ECOMPACTED', async () => {
    for (let i = 0; i < 60; i++) await client.mkdir(`/c${i}`);
    expect(sm.firstRevision()).toBeGreaterThan(1);
    const consume = async (): Promise<void> => {
      for await (const _ of client.watch('/', { fromRevision: 1 })) {
        // nothing: the stream must fail first
      }
    };
    await expect(consume()).rejects.toMatchObject({ code: 'ECOMPACTED' });
    // from a kept revision it delivers in order
    const from = sm.firstRevision();
    const got: number[] = [];
    const ac = new AbortController();
    for await (const ev of client.watch('/', { fromRevision: from, signal: ac.signal })) {
      got.push(ev.revision);
      if (got.length === 5) ac.abort();
    }
    expect(got).toEqual([from, from + 1, from + 2, from + 3, from + 4]);
  });

  it('records diskmap changes by epoch, validated by the diskmap parser', async () => {
    const topo = parseTopology({ machines: [0, 1, 2].map((m) => ({ machine: m, disks: [{ disk: 0, capacity: '1TiB' }] })) });
    const dm1 = buildDiskmap(topo, { bucketSizeBytes: 64 * 2 ** 30 });
    expect(dm1.epoch).toBe(1);
    expect(await client.diskmapGet()).toEqual({ epoch: 0, documentJson: '' });
    // not a diskmap at all / the wrong epoch
    await expect(client.diskmapPropose(0, '{"epoch":1,"groups":[]}')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(client.diskmapPropose(1, serializeDiskmap(dm1))).rejects.toMatchObject({ code: 'EINVAL' });
    await client.diskmapPropose(0, serializeDiskmap(dm1), '{"reason":"initial"}');
    await expect(client.diskmapPropose(0, serializeDiskmap(dm1))).rejects.toMatchObject({ code: 'ECONFLICT' });
    const got = await client.diskmapGet();
    expect(got.epoch).toBe(1);
    expect(parseDiskmap(got.documentJson).groups.length).toBe(dm1.groups.length);
    expect((await client.diskmapChange(1)).diffJson).toBe('{"reason":"initial"}');
  });

  it('maxWritesInFlight: writes issued one turn apart wait for the one in flight and share its next entry', async () => {
    const gated = new MetaClient({ endpoints: [node.address], maxWritesInFlight: 1 });
    try {
      await gated.mkdir('/gated');
      const issue = async (c: MetaClient, prefix: string): Promise<number> => {
        const before = await sm.appliedIndex();
        const all: Array<Promise<unknown>> = [];
        for (let i = 0; i < 30; i++) {
          all.push(c.putFile(`/gated/${prefix}${i}`, Buffer.from(`file ${i}`)));
          await new Promise((r) => setImmediate(r)); // each write in its own event-loop turn
        }
        await Promise.all(all);
        return (await sm.appliedIndex()) - before;
      };
      const apart = await issue(client, 'a'); // without the option: about one entry per write
      const together = await issue(gated, 'g');
      expect(together).toBeLessThan(15);
      expect(together * 2).toBeLessThan(apart);
      for (let i = 0; i < 30; i++) expect((await client.layout(`/gated/g${i}`)).inline?.toString()).toBe(`file ${i}`);
    } finally {
      gated.close();
    }
  });
});
