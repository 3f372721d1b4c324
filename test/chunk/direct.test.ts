/**
 * Direct calls (src/chunk/client.ts): a store served by this process — a node daemon's own disks —
 * is called without the RPC transport. The answers must be the service's answers: the same data,
 * the same errors, the same checks; and a caller that gave up never sees its buffer written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { startCluster, nodeOf, type TestCluster } from './cluster.js';
import { writeChunk } from '../../src/chunk/writer.js';
import { readChunk } from '../../src/chunk/reader.js';
import { ChunkClients } from '../../src/chunk/client.js';
import { shardPathOn } from '../../src/chunk/store.js';
import { SHARD_HEADER_BYTES, payloadCrc } from '../../src/chunk/format.js';
import { formatBucketId } from '../../src/diskmap/bucket-id.js';
import type { Scheme, ShardKey, ShardTarget } from '../../src/chunk/types.js';
import { CairnError } from '../../src/common/errors.js';
import { registry } from '../../src/common/metrics.js';

let cl: TestCluster;
/** Clients for which node 0's store is this process's own. */
let direct: ChunkClients;
beforeAll(async () => {
  cl = await startCluster(3, 1);
  direct = new ChunkClients({ shortCircuit: false, local: [{ address: cl.nodes[0]!.address, store: cl.nodes[0]!.store }] });
});
afterAll(async () => {
  direct?.close();
  await cl?.close();
});

const ec: Scheme = { kind: 'ec', k: 2, m: 1 };
let nextBucket = 1;

async function directCalls(op: string): Promise<number> {
  const m = await registry.getSingleMetric('cairn_chunk_client_direct_calls_total')?.get();
  return m?.values.find((v) => v.labels.op === op)?.value ?? 0;
}

function keyOf(hash: string, scheme: Scheme, targets: ShardTarget[], index: number): ShardKey {
  return { bucket: formatBucketId(targets[index]!.bucketId), hash, scheme, index };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return err instanceof CairnError ? err.code : `not a CairnError: ${String(err)}`;
  }
}

describe('direct calls to a store of this process', () => {
  it('store and read a chunk on the own store with no socket: its server can be stopped', async () => {
    const targets = cl.targets(3, nextBucket++);
    expect(targets[0]!.address).toBe(cl.nodes[0]!.address);
    const puts = await directCalls('PutShard');
    const gets = await directCalls('GetShard');
    await cl.stopNode(0);
    try {
      const data = randomBytes(1_500_000);
      const w = await writeChunk(direct, data, ec, targets);
      expect(w.failed).toEqual([]);
      expect(w.stored).toBe(3);
      // Through the transport, node 0 does not answer.
      const viaRpc = new ChunkClients({ shortCircuit: false });
      try {
        expect(await codeOf(viaRpc.get(targets[0]!.address).statShard(keyOf(w.hash, ec, targets, 0), { timeoutMs: 2_000 }))).toMatch(/EUNAVAIL|ECONNREFUSED|ETIMEDOUT/);
      } finally {
        viaRpc.close();
      }
      expect(Buffer.compare(await readChunk(direct, w.hash, ec, targets), data)).toBe(0);
      expect(await directCalls('PutShard')).toBe(puts + 1);
      expect(await directCalls('GetShard')).toBe(gets + 1);
      // The shard on disk is what the service would have stored: header, CRC, payload.
      const s = await cl.nodes[0]!.store.readShard(keyOf(w.hash, ec, targets, 0));
      expect(s.info.chunkLength).toBe(data.length);
      expect(Buffer.compare(s.payload, data.subarray(0, s.payload.length))).toBe(0);
    } finally {
      await cl.startNode(0);
    }
  });

  it('answer as the service does: the same errors for the same calls', async () => {
    const targets = cl.targets(3, nextBucket++);
    const data = randomBytes(200_000);
    const w = await writeChunk(cl.clients, data, ec, targets);
    expect(w.failed).toEqual([]);
    const rpc = cl.clients.get(targets[0]!.address);
    const own = direct.get(targets[0]!.address);
    const key = keyOf(w.hash, ec, targets, 0);
    const missing = { ...key, hash: 'ab'.repeat(32) };
    const shard = (await cl.nodes[0]!.store.readShard(key)).payload;
    const head = { key, payloadLength: shard.length, chunkLength: data.length, payloadCrc32: payloadCrc(shard), diskmapEpoch: 0 };
    const other = Buffer.from(shard);
    other[0] = (other[0] as number) ^ 1;
    const cases: Array<[string, (c: typeof rpc) => Promise<unknown>]> = [
      ['get of a missing shard', (c) => c.getShard(missing)],
      ['stat of a missing shard', (c) => c.statShard(missing)],
      ['a bucket of no disk here', (c) => c.statShard({ ...key, bucket: formatBucketId(targets[1]!.bucketId) })],
      ['a put of the same shard again', (c) => c.putShard(head, shard)],
      ['a put of other bytes under the same key', (c) => c.putShard({ ...head, payloadCrc32: payloadCrc(other) }, other)],
      ['a put whose bytes do not match its CRC', (c) => c.putShard({ ...head, key: { ...key, hash: 'cd'.repeat(32) } }, other)],
      ['a range past the end', (c) => c.getShard(key, { offset: shard.length, length: 10 })],
    ];
    for (const [what, run] of cases) {
      const viaRpc = await codeOf(run(rpc));
      expect(await codeOf(run(own)), what).toBe(viaRpc);
      expect(viaRpc, what).not.toMatch(/not a CairnError/);
    }
    expect(await codeOf(own.getShard(missing))).toBe('ENOENT');
    expect(await codeOf(own.putShard({ ...head, payloadCrc32: payloadCrc(other) }, other))).toBe('ECONFLICT');
    // A range read gives the same bytes both ways.
    const a = await rpc.getShard(key, { offset: 1000, length: 5000 });
    const b = await own.getShard(key, { offset: 1000, length: 5000 });
    expect(Buffer.compare(a.data, b.data)).toBe(0);
    expect(Buffer.compare(b.data, shard.subarray(1000, 6000))).toBe(0);
  });

  it('refuse a damaged shard (CRC-32) and the reader reads around it', async () => {
    const targets = cl.targets(3, nextBucket++);
    const data = randomBytes(600_000);
    const w = await writeChunk(direct, data, ec, targets);
    expect(w.failed).toEqual([]);
    const key = keyOf(w.hash, ec, targets, 0);
    const file = shardPathOn(nodeOf(cl, targets[0]!).diskPaths[0]!, key);
    const fh = await open(file, 'r+');
    try {
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, SHARD_HEADER_BYTES + 777);
      b[0] = (b[0] as number) ^ 0x10;
      await fh.write(b, 0, 1, SHARD_HEADER_BYTES + 777);
    } finally {
      await fh.close();
    }
    expect(await codeOf(direct.get(targets[0]!.address).getShard(key))).toBe('ECORRUPT');
    expect(Buffer.compare(await readChunk(direct, w.hash, ec, targets), data)).toBe(0);
  });

  it('never write into the destination of a call that was given up', async () => {
    const targets = cl.targets(3, nextBucket++);
    const w = await writeChunk(direct, randomBytes(400_000), ec, targets);
    expect(w.failed).toEqual([]);
    const dest = Buffer.alloc(200_000, 0x5a);
    const ac = new AbortController();
    ac.abort();
    const code = await codeOf(direct.get(targets[0]!.address).getShard(keyOf(w.hash, ec, targets, 0), { signal: ac.signal, into: () => dest }));
    expect(code).toBe('ECANCELED');
    await new Promise((r) => setTimeout(r, 50));
    expect(dest.every((x) => x === 0x5a)).toBe(true);
  });

  it('CAIRN_CHUNK_DIRECT=0 sends them through the service', async () => {
    const before = process.env.CAIRN_CHUNK_DIRECT;
    process.env.CAIRN_CHUNK_DIRECT = '0';
    const off = new ChunkClients({ shortCircuit: false, local: [{ address: cl.nodes[0]!.address, store: cl.nodes[0]!.store }] });
    if (before === undefined) delete process.env.CAIRN_CHUNK_DIRECT;
    else process.env.CAIRN_CHUNK_DIRECT = before;
    try {
      const puts = await directCalls('PutShard');
      const w = await writeChunk(off, randomBytes(100_000), ec, cl.targets(3, nextBucket++));
      expect(w.failed).toEqual([]);
      expect(await directCalls('PutShard')).toBe(puts);
    } finally {
      off.close();
    }
  });
});
