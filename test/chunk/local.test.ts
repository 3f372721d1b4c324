/**
 * Short-circuit local reads (src/chunk/local.ts): a client on the host of a chunk server's disks
 * reads whole shards from the files itself — and still never returns bytes that do not verify:
 * a damaged local file is refused or read around, exactly as through the server. It can be
 * switched off, and it stops while the server does not answer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open, truncate, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startCluster, nodeOf, type TestCluster } from './cluster.js';
import { writeChunk } from '../../src/chunk/writer.js';
import { readChunk, readChunkDetailed } from '../../src/chunk/reader.js';
import { ChunkClients } from '../../src/chunk/client.js';
import { LocalDisks } from '../../src/chunk/local.js';
import { ChunkStore, shardPathOn } from '../../src/chunk/store.js';
import { SHARD_HEADER_BYTES } from '../../src/chunk/format.js';
import { formatBucketId } from '../../src/diskmap/bucket-id.js';
import type { Scheme, ShardKey, ShardTarget } from '../../src/chunk/types.js';
import { CairnError } from '../../src/common/errors.js';
import { registry } from '../../src/common/metrics.js';
import { tempDir } from '../helpers/env.js';

let cl: TestCluster;
beforeAll(async () => {
  cl = await startCluster(3, 1);
});
afterAll(async () => {
  await cl?.close();
});

const ec: Scheme = { kind: 'ec', k: 2, m: 1 };
const rep: Scheme = { kind: 'replica', n: 3 };
let nextBucket = 1;

async function counterValue(name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0;
}
const localOk = (): Promise<number> => counterValue('cairn_chunk_client_local_reads_total', { result: 'ok' });
const localFallback = (): Promise<number> => counterValue('cairn_chunk_client_local_reads_total', { result: 'fallback' });
/** Shard reads the chunk servers served (GetShard through the service, or any store read). */
const serverGets = (): Promise<number> => counterValue('cairn_chunk_shard_ops_total', { op: 'get', result: 'ok' });

async function put(scheme: Scheme, size = 300_000): Promise<{ hash: string; data: Buffer; targets: ShardTarget[] }> {
  const targets = cl.targets(3, nextBucket++);
  const data = randomBytes(size);
  const w = await writeChunk(cl.clients, data, scheme, targets);
  expect(w.failed).toEqual([]);
  return { hash: w.hash, data, targets };
}

function keyOf(hash: string, scheme: Scheme, targets: ShardTarget[], index: number): ShardKey {
  return { bucket: formatBucketId(targets[index]!.bucketId), hash, scheme, index };
}

function fileOf(hash: string, scheme: Scheme, targets: ShardTarget[], index: number): string {
  const node = nodeOf(cl, targets[index]!);
  return shardPathOn(node.diskPaths[0]!, keyOf(hash, scheme, targets, index));
}

async function flipByte(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] = b[0]! ^ 0x01;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

async function learnAll(clients: ChunkClients): Promise<number> {
  let n = 0;
  for (const node of cl.nodes) n += await clients.get(node.address).learnLocalDisks();
  return n;
}

async function rejection(p: Promise<unknown>): Promise<CairnError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CairnError);
  return err as CairnError;
}

describe('short-circuit local reads', () => {
  it('read whole shards from the local files, without the servers, into the caller\'s buffer', async () => {
    expect(await learnAll(cl.clients)).toBe(3);
    for (const scheme of [ec, rep]) {
      const c = await put(scheme);
      const [ok0, gets0] = [await localOk(), await serverGets()];
      const into = Buffer.alloc(c.data.length + 64);
      const back = await readChunk(cl.clients, c.hash, scheme, c.targets, { into });
      expect(back.equals(c.data)).toBe(true);
      expect(back.buffer).toBe(into.buffer);
      expect(await localOk()).toBe(ok0 + (scheme.kind === 'ec' ? 2 : 1));
      expect(await serverGets()).toBe(gets0);
      // A single shard, CRC-checked on arrival.
      const s = await cl.clients.get(c.targets[1]!.address).getShard(keyOf(c.hash, scheme, c.targets, 1));
      expect(s.info.index).toBe(1);
      expect(await serverGets()).toBe(gets0);
    }
  });

  it('a flipped payload bit in the local file is refused (CRC-32) or read around (chunk hash), never returned', async () => {
    await learnAll(cl.clients);
    const c = await put(ec);
    await flipByte(fileOf(c.hash, ec, c.targets, 0), SHARD_HEADER_BYTES + 777);
    const fb0 = await localFallback();
    // getShard checks the CRC-32: the local copy fails it, the server's read fails it too.
    expect((await rejection(cl.clients.get(c.targets[0]!.address).getShard(keyOf(c.hash, ec, c.targets, 0)))).code).toBe('ECORRUPT');
    expect(await localFallback()).toBe(fb0 + 1);
    // The reader: the chunk hash fails, the damaged shard is found by its CRC and read around.
    const r = await readChunkDetailed(cl.clients, c.hash, ec, c.targets);
    expect(r.data.equals(c.data)).toBe(true);
    expect(r.degraded).toBe(true);
    expect(r.problems.map((p) => [p.index, p.error.code])).toEqual([[0, 'ECORRUPT']]);
  });

  it('a damaged replica on the local disk is never returned: the next replica is read', async () => {
    await learnAll(cl.clients);
    const c = await put(rep);
    await flipByte(fileOf(c.hash, rep, c.targets, 0), SHARD_HEADER_BYTES + 5);
    const r = await readChunkDetailed(cl.clients, c.hash, rep, c.targets);
    expect(r.data.equals(c.data)).toBe(true);
    expect(r.problems.map((p) => p.index)).toEqual([0]);
  });

  it('a truncated file or a damaged header falls back to the server, which refuses it too', async () => {
    await learnAll(cl.clients);
    const c = await put(ec);
    const client0 = cl.clients.get(c.targets[0]!.address);
    const client1 = cl.clients.get(c.targets[1]!.address);
    await truncate(fileOf(c.hash, ec, c.targets, 0), SHARD_HEADER_BYTES + 1000);
    await flipByte(fileOf(c.hash, ec, c.targets, 1), 20); // inside the chunk hash of the header
    const fb0 = await localFallback();
    expect((await rejection(client0.getShard(keyOf(c.hash, ec, c.targets, 0), { verifyCrc: false }))).code).toBe('ECORRUPT');
    expect((await rejection(client1.getShard(keyOf(c.hash, ec, c.targets, 1), { verifyCrc: false }))).code).toBe('ECORRUPT');
    expect(await localFallback()).toBe(fb0 + 2);
    // Two of three shards bad at 2+1: an error, not data.
    expect((await rejection(readChunk(cl.clients, c.hash, ec, c.targets))).code).toBe('ECORRUPT');
  });

  it('can be switched off: every read goes through the server', async () => {
    const off = new ChunkClients({ shortCircuit: false });
    try {
      expect(await learnAll(off)).toBe(0);
      const c = await put(rep);
      const [ok0, gets0] = [await localOk(), await serverGets()];
      expect((await readChunk(off, c.hash, rep, c.targets)).equals(c.data)).toBe(true);
      expect(await localOk()).toBe(ok0);
      expect(await serverGets()).toBe(gets0 + 1);
    } finally {
      off.close();
    }
  });

  it('the environment switch CAIRN_CHUNK_SHORT_CIRCUIT=0 turns it off for clients that do not say', async () => {
    const saved = process.env.CAIRN_CHUNK_SHORT_CIRCUIT;
    process.env.CAIRN_CHUNK_SHORT_CIRCUIT = '0';
    const off = new ChunkClients();
    try {
      expect(await learnAll(off)).toBe(0);
    } finally {
      off.close();
      if (saved === undefined) delete process.env.CAIRN_CHUNK_SHORT_CIRCUIT;
      else process.env.CAIRN_CHUNK_SHORT_CIRCUIT = saved;
    }
  });

  it('stops reading a server\'s disks locally once the server does not answer', async () => {
    const clients = new ChunkClients();
    try {
      expect(await learnAll(clients)).toBe(3);
      const c = await put(ec);
      await cl.stopNode(1);
      try {
        // The put to the stopped server fails (it does not answer), which drops its local disks.
        const w = await writeChunk(clients, randomBytes(1000), ec, c.targets, { timeoutMs: 5000 });
        expect(w.failed.map((f) => f.index)).toEqual([1]);
        const r = await readChunkDetailed(clients, c.hash, ec, c.targets, { timeoutMs: 5000 });
        expect(r.data.equals(c.data)).toBe(true);
        expect(r.degraded).toBe(true);
        expect(r.problems.map((p) => p.index)).toEqual([1]);
      } finally {
        await cl.startNode(1);
      }
    } finally {
      clients.close();
    }
  });
});

describe('which disks are local', () => {
  it('only a serving disk whose label here carries the same key (location and incarnation)', async () => {
    const dir = await tempDir('cairn-local-');
    try {
      const same = join(dir.path, 'same');
      const other = join(dir.path, 'other');
      const a = await ChunkStore.formatDisk(same, { dc: 0, row: 0, rack: 0, machine: 9, disk: 0 });
      await ChunkStore.formatDisk(other, { dc: 0, row: 0, rack: 0, machine: 9, disk: 1 });
      const store = await ChunkStore.open([same, other]);
      const [keySame, keyOther] = store.diskStatus().map((d) => d.diskKey) as [string, string];
      await store.close();
      const garbage = join(dir.path, 'garbage');
      await mkdir(garbage);
      await writeFile(join(garbage, 'cairn-disk.json'), '{not json');
      const bucketOn = (disk: number): string => formatBucketId(store.bucketIdOn(disk === 0 ? same : other, 1));
      const disks = new LocalDisks(async () => [
        { path: same, diskKey: keySame, state: 'ok' },
        // The server says disk 1 is at the path that holds disk 0 here: not the same disk.
        { path: same, diskKey: keyOther, state: 'ok' },
        { path: garbage, diskKey: 'x', state: 'ok' },
      ]);
      expect(await disks.learn()).toBe(1);
      expect(disks.rootOf(bucketOn(0))).toBe(same);
      expect(disks.rootOf(bucketOn(1))).toBeUndefined();
      expect(a.incarnation).toMatch(/^[0-9a-f]{16}$/);

      const failed = new LocalDisks(async () => [{ path: same, diskKey: keySame, state: 'failed' }]);
      expect(await failed.learn()).toBe(0);
      const unreachable = new LocalDisks(async () => {
        throw new CairnError('EUNAVAIL', 'down');
      });
      expect(await unreachable.learn()).toBe(0);
      disks.drop();
      expect(disks.rootOf(bucketOn(0))).toBeUndefined();
    } finally {
      await dir.remove();
    }
  });
});
