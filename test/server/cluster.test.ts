/**
 * A whole cluster of node daemons in this process (startNode, real gRPC on 127.0.0.1, real
 * LevelDB and directory disks): registration, the diskmap built by the leader's controller, a
 * file stored through one node and read back through another, restarts that keep disks and the
 * map, growth by a disk added to one node's config, and bad file-service requests.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { loadDiskmap } from '../../src/server/diskmap-controller.js';
import { formatBucketId } from '../../src/diskmap/index.js';
import { registry } from '../../src/common/metrics.js';
import { join } from 'node:path';
import type { NodeConfig } from '../../src/common/config.js';
import { startNode, type CairnNode } from '../../src/server/node.js';
import { FileClient } from '../../src/server/file-client.js';
import { call, makeClient, serviceOf, type grpc } from '../../src/rpc/grpc.js';
import { CairnError } from '../../src/common/errors.js';
import { SHARD_HEADER_BYTES } from '../../src/chunk/format.js';
import { eventually, tempDir } from '../helpers/env.js';
import { clusterConfigs, countShardFiles, DISK_BYTES, randomPieces, startAll, waitForDiskmap } from './helpers.js';

const MIB = 1024 * 1024;

async function collect(src: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const b of src) out.push(b);
  return Buffer.concat(out);
}

async function sha256Of(src: AsyncIterable<Buffer>): Promise<{ hex: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const b of src) {
    h.update(b);
    bytes += b.length;
  }
  return { hex: h.digest('hex'), bytes };
}

describe('a 3-node cluster of daemons', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cfgs: NodeConfig[];
  let nodes: CairnNode[];
  const clients: FileClient[] = [];
  const fc = (i: number): FileClient => {
    const c = new FileClient(cfgs[i]!.listen);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    dir = await tempDir('cairn-server-');
    // GC every 500 ms with a 10 s grace period (a commit in flight is never that old here).
    // Scrub every second, unthrottled for the test's few MiB.
    cfgs = await clusterConfigs(dir.path, 3, 1, { intervalMs: 500, graceMs: 10_000 }, { intervalMs: 1_000, rateBytesPerSec: 1 << 30 });
    nodes = await startAll(cfgs);
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await dir.remove();
  }, 60_000);

  it('registers every node and builds one diskmap holding every disk', async () => {
    const c = await waitForDiskmap(fc(1));
    expect(c.diskmapEpoch).toBe(1);
    expect(c.nodes.map((n) => n.nodeId)).toEqual([1, 2, 3]);
    // Each node's own role and term, asked of each node (retried: a node may be busy or in an election).
    const roles = await eventually(async () => {
      const now = await fc(1).cluster();
      return now.nodes.every((n) => ['leader', 'follower'].includes(n.role) && n.term > 0) ? now.nodes.map((n) => n.role) : undefined;
    }, 20_000, 200);
    expect(roles.filter((r) => r === 'leader').length).toBeLessThanOrEqual(1);
    for (const n of c.nodes) {
      expect(n.disks).toHaveLength(1);
      expect(n.disks[0]!.state).toBe('ok');
      expect(n.disks[0]!.inDiskmap).toBe(true);
      expect(n.disks[0]!.capacityBytes).toBe(DISK_BYTES);
    }
    expect(c.scheme).not.toBe('');
    expect(c.groups).toBeGreaterThan(0);
  }, 60_000);

  it('stores a multi-chunk file through node 1 (strong) and reads it back byte for byte through node 3', async () => {
    await waitForDiskmap(fc(0));
    const size = 5 * MIB + 12_345;
    const want = await sha256Of(randomPieces(size, 7));
    const directPuts = async (): Promise<number> =>
      (await registry.getSingleMetric('cairn_chunk_client_direct_calls_total')?.get())?.values.find((v) => v.labels.op === 'PutShard')?.value ?? 0;
    const before = await directPuts();
    const put = await fc(0).put('/dir/a/file.bin', randomPieces(size, 7), { mode: 'strong', mkdirs: true });
    expect(put.size).toBe(size);
    // Every chunk has a shard on each node: node 1 stored its own without a socket.
    expect(await directPuts()).toBeGreaterThan(before);
    expect(put.state).toBe('durable');
    const got = await fc(2).get('/dir/a/file.bin');
    expect(got.stat.size).toBe(size);
    const seen = await sha256Of(got.data);
    expect(seen).toEqual(want);
    // A range read through node 2.
    const range = await fc(1).get('/dir/a/file.bin', { offset: MIB - 10, length: 20 });
    const rbytes = await collect(range.data);
    let all = Buffer.alloc(0);
    for await (const b of randomPieces(MIB + 10, 7)) all = Buffer.concat([all, b]);
    expect(rbytes.equals(all.subarray(MIB - 10, MIB + 10))).toBe(true);
    const st = await fc(2).commitStatus('/dir/a/file.bin');
    expect(st.state).toBe('durable');
    expect(st.pendingBytes).toBe(0);
  }, 120_000);

  it('a weak put becomes visible at once and durable with commit --wait durable', async () => {
    const put = await fc(1).put('/weak.txt', [Buffer.from('hello weak world\n')], { mode: 'weak' });
    expect(['visible', 'durable', 'committing']).toContain(put.state);
    const c = await fc(1).commit('/weak.txt', 'durable');
    expect(c.state).toBe('durable');
    const got = await fc(0).get('/weak.txt');
    expect((await collect(got.data)).toString()).toBe('hello weak world\n');
  }, 60_000);

  it('answers bad requests with EINVAL and keeps serving', async () => {
    const c = fc(0);
    const bad = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
      } catch (err) {
        return err instanceof CairnError ? err.code : String(err);
      }
      return 'no error';
    };
    expect(await bad(c.stat('relative/path'))).toBe('EINVAL');
    expect(await bad(c.stat('/a/../b'))).toBe('EINVAL');
    expect(await bad(c.commit('/x', 'bogus' as 'durable'))).toBe('EINVAL');
    expect(await bad(c.get('/'))).toBe('EINVAL');
    expect(await bad(c.put('/', [Buffer.from('x')]))).toBe('EINVAL');
    expect(await bad(c.put('/dir', [Buffer.from('x')]))).toBe('EISDIR');
    expect(await bad(c.stat('/no/such/file'))).toBe('ENOENT');
    // A raw stream whose first message is data, not the head.
    const raw = makeClient<grpc.Client>(serviceOf('file.proto', 'cairn.file.Files'), cfgs[0]!.listen);
    const code = await new Promise<string>((resolve) => {
      const s = (raw as unknown as { Put: Function }).Put({}, (err: grpc.ServiceError | null) => resolve(err ? String(err.metadata.get('cairn-code')[0]) : 'no error'));
      s.write({ data: Buffer.from('no head') });
      s.end();
    });
    raw.close();
    expect(code).toBe('EINVAL');
    // Oversized piece.
    const raw2 = makeClient<grpc.Client>(serviceOf('file.proto', 'cairn.file.Files'), cfgs[0]!.listen);
    const code2 = await new Promise<string>((resolve) => {
      const s = (raw2 as unknown as { Put: Function }).Put({}, (err: grpc.ServiceError | null) => resolve(err ? String(err.metadata.get('cairn-code')[0]) : 'no error'));
      s.write({ head: { path: '/big', mode: 'strong' } });
      s.write({ data: Buffer.alloc(2 * MIB) });
      s.end();
    });
    raw2.close();
    expect(code2).toBe('EINVAL');
    expect(await call(makeClient<grpc.Client>(serviceOf('file.proto', 'cairn.file.Files'), cfgs[0]!.listen), 'Stat', { path: 42 }).catch((e: CairnError) => e.code)).toBe('EINVAL');
    // The failed upload left nothing behind, and the node still serves.
    expect(await bad(c.stat('/big'))).toBe('ENOENT');
    expect((await c.stat('/weak.txt')).size).toBe(17);
  }, 60_000);

  it('a restarted node keeps its disks (same incarnation) and the diskmap stays at its epoch', async () => {
    const before = await waitForDiskmap(fc(0));
    const label = JSON.parse(await readFile(join(cfgs[1]!.disks[0]!.path, 'cairn-disk.json'), 'utf8')) as { incarnation: string };
    await nodes[1]!.stop();
    nodes[1] = await startNode(cfgs[1]!);
    const after = await eventually(async () => {
      const c = await fc(1).cluster();
      return c.leaderId !== 0 && c.diskmapEpoch > 0 ? c : undefined;
    }, 30_000);
    const label2 = JSON.parse(await readFile(join(cfgs[1]!.disks[0]!.path, 'cairn-disk.json'), 'utf8')) as { incarnation: string };
    expect(label2.incarnation).toBe(label.incarnation);
    // Give the controller several rounds to (wrongly) change the map.
    await new Promise((r) => setTimeout(r, 1_000));
    expect((await fc(0).cluster()).diskmapEpoch).toBe(before.diskmapEpoch);
    expect(after.nodes.find((n) => n.nodeId === 2)!.disks[0]!.incarnation).toBe(label.incarnation);
    // The file is still readable through the restarted node.
    const got = await fc(1).get('/weak.txt');
    expect((await collect(got.data)).toString()).toBe('hello weak world\n');
  }, 90_000);

  it('a disk added to one node\'s config grows the diskmap by one epoch, automatically; the data mover executes later slot moves', async () => {
    const before = await waitForDiskmap(fc(0));
    await nodes[2]!.stop();
    const c3 = cfgs[2]!;
    cfgs[2] = { ...c3, disks: [...c3.disks, { path: join(dir.path, 'node3', 'disk1'), disk: 1, capacityBytes: DISK_BYTES, class: 'hdd' }] };
    nodes[2] = await startNode(cfgs[2]!);
    const grown = await waitForDiskmap(fc(0), before.diskmapEpoch + 1);
    expect(grown.diskmapEpoch).toBe(before.diskmapEpoch + 1);
    const n3 = grown.nodes.find((n) => n.nodeId === 3)!;
    expect(n3.disks.map((d) => d.inDiskmap)).toEqual([true, true]);
    await new Promise((r) => setTimeout(r, 1_000));
    expect((await fc(0).cluster()).diskmapEpoch).toBe(before.diskmapEpoch + 1);
    // A second disk on the other two machines too: now the planner moves group slots onto the
    // new disks, and the data mover executes those moves: every shard of the file stored before
    // the growth ends up in the bucket its group names now (full health, not degraded).
    for (const i of [0, 1]) {
      await nodes[i]!.stop();
      const c = cfgs[i]!;
      cfgs[i] = { ...c, disks: [...c.disks, { path: join(dir.path, `node${i + 1}`, 'disk1'), disk: 1, capacityBytes: DISK_BYTES, class: 'hdd' }] };
      nodes[i] = await startNode(cfgs[i]!);
    }
    const all = await eventually(async () => {
      const c = await fc(2).cluster();
      return c.nodes.every((n) => n.disks.length === 2 && n.disks.every((d) => d.inDiskmap)) ? c : undefined;
    }, 30_000, 200);
    expect(all.diskmapEpoch).toBeGreaterThan(before.diskmapEpoch + 1);
    const dm = loadDiskmap(await nodes[0]!.meta.diskmap())!;
    expect(dm.epoch).toBe(all.diskmapEpoch);
    const layout = await nodes[0]!.meta.layout({ path: '/dir/a/file.bin' });
    const diskPaths = cfgs.flatMap((c) => c.disks.map((d) => d.path));
    const where = async (bucket: string, name: string): Promise<boolean> => {
      for (const d of diskPaths) if (await stat(join(d, bucket, 'shards', name.slice(0, 2), name)).then(() => true, () => false)) return true;
      return false;
    };
    await eventually(async () => {
      for (const e of layout.extents) {
        const g = dm.groups[e.pg]!;
        for (let i = 0; i < g.buckets.length; i++) {
          if (!(await where(formatBucketId(g.buckets[i]!), `${e.chunkHash}.${e.scheme}.${i}`))) return false;
        }
      }
      return true;
    }, 30_000, 200);
    const moved = (await registry.getSingleMetric('cairn_mover_shards_moved_total')?.get())?.values.reduce((a, v) => a + v.value, 0) ?? 0;
    expect(moved).toBeGreaterThan(0);
    expect(await sha256Of((await fc(2).get('/dir/a/file.bin')).data)).toEqual(await sha256Of(randomPieces(5 * MIB + 12_345, 7)));
  }, 120_000);

  it('chunk GC deletes the shards of a replaced file after the grace period and keeps the live ones', async () => {
    const disks = () => cfgs.flatMap((c) => c.disks.map((d) => d.path));
    // Count exactly the shards of one file version (its 1 MiB chunks' hashes name them), so that
    // other tests' files and the data mover's copies cannot blur the figure.
    const hashesOf = async (size: number, seed: number): Promise<string[]> => {
      const parts: Buffer[] = [];
      for await (const p of randomPieces(size, seed)) parts.push(Buffer.from(p));
      const all = Buffer.concat(parts);
      const out: string[] = [];
      for (let at = 0; at < all.length; at += MIB) out.push(createHash('sha256').update(all.subarray(at, at + MIB)).digest('hex'));
      return out;
    };
    const shardsOf = (hashes: string[]) => countShardFiles(disks(), (name) => hashes.some((h) => name.startsWith(h)));
    const keep = await hashesOf(MIB + 5, 13);
    const oldV = await hashesOf(2 * MIB, 11);
    const newV = await hashesOf(2 * MIB, 12);
    // A file that stays: its shards must survive every GC pass.
    await fc(1).put('/gc/keep.bin', randomPieces(MIB + 5, 13), { mode: 'strong', mkdirs: true });
    await fc(0).put('/gc/f.bin', randomPieces(2 * MIB, 11), { mode: 'strong', mkdirs: true });
    expect(await shardsOf(oldV)).toBeGreaterThanOrEqual(oldV.length * 3);
    await fc(0).put('/gc/f.bin', randomPieces(2 * MIB, 12), { mode: 'strong' });
    // The old version's shards go once they are past the grace period; the new ones stay.
    await eventually(async () => (await shardsOf(oldV)) === 0, 80_000, 500);
    expect(await shardsOf(newV)).toBeGreaterThanOrEqual(newV.length * 3);
    expect(await shardsOf(keep)).toBeGreaterThanOrEqual(keep.length * 3);
    const want = await sha256Of(randomPieces(2 * MIB, 12));
    expect(await sha256Of((await fc(2).get('/gc/f.bin')).data)).toEqual(want);
    expect(await sha256Of((await fc(1).get('/gc/keep.bin')).data)).toEqual(await sha256Of(randomPieces(MIB + 5, 13)));
  }, 120_000);

  it('scrub in the daemon quarantines a corrupted shard and rebuilds it from the others', async () => {
    const { readdir, writeFile: wf, readFile: rf } = await import('node:fs/promises');
    await fc(0).put('/scrub/f.bin', randomPieces(MIB, 21), { mode: 'strong', mkdirs: true });
    // The file is one 1 MiB chunk (1 MiB chunker): its hash names its shards. Flip a byte of the
    // shard on node 1's disk near its end (in the payload).
    const chunkHash = (await sha256Of(randomPieces(MIB, 21))).hex;
    let victim = '';
    let disk = '';
    for (const d of cfgs[0]!.disks.map((x) => x.path)) {
      for (const b of await readdir(d)) {
        const hh = join(d, b, 'shards', chunkHash.slice(0, 2));
        for (const f of await readdir(hh).catch(() => [] as string[])) {
          if (f.startsWith(chunkHash)) {
            victim = join(hh, f);
            disk = d;
          }
        }
      }
    }
    expect(victim).not.toBe('');
    const good = await rf(victim);
    const bad = Buffer.from(good);
    bad[bad.length - 1] = (bad[bad.length - 1]! ^ 0xff) & 0xff;
    await wf(victim, bad);
    const quarantined = async (): Promise<number> => {
      let n = 0;
      const walk = async (d: string): Promise<void> => {
        for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
          if (e.isDirectory()) await walk(join(d, e.name));
          else n++;
        }
      };
      await walk(join(disk, 'quarantine'));
      return n;
    };
    await eventually(async () => (await quarantined()) > 0, 30_000, 200);
    // Rebuilt in place: the same payload again (the header is new: it records when it was written).
    await eventually(async () => {
      const now = await rf(victim).catch(() => Buffer.alloc(0));
      return now.length === good.length && now.subarray(SHARD_HEADER_BYTES).equals(good.subarray(SHARD_HEADER_BYTES));
    }, 30_000, 200);
    expect(await sha256Of((await fc(1).get('/scrub/f.bin')).data)).toEqual(await sha256Of(randomPieces(MIB, 21)));
  }, 90_000);
});
