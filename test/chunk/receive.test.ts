/**
 * The chunk service's bulk data on the lane without fresh buffers: PutShard pieces are received
 * into the piece pool and given back, GetShard pieces land straight in the caller's buffer, the
 * pool never lends one buffer twice, and a cancelled GetShard stops writing into the caller's
 * buffer at once (a late piece must never scribble over memory its caller has moved on from).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { startCluster, type TestCluster } from './cluster.js';
import { grpc, makeClient, openServerStream, serviceOf } from '../../src/rpc/grpc.js';
import { laneReceiveInto } from '../../src/rpc/lane.js';
import { CHUNK_PROTO, CHUNK_SERVICE, fastChunkDefinition, keyToWire } from '../../src/chunk/wire.js';
import { PiecePool, piecePool } from '../../src/chunk/pool.js';
import { payloadCrc } from '../../src/chunk/format.js';
import { formatBucketId } from '../../src/diskmap/bucket-id.js';
import { PIECE_BYTES, type Scheme, type ShardKey } from '../../src/chunk/types.js';
import { writeChunk } from '../../src/chunk/writer.js';
import { readChunkDetailed } from '../../src/chunk/reader.js';

let cl: TestCluster;
let bucket: string;
beforeAll(async () => {
  delete process.env.CAIRN_RPC;
  cl = await startCluster(3, 1);
  bucket = formatBucketId(cl.targets(1, 5)[0]!.bucketId);
});
afterAll(async () => {
  await cl?.close();
});

function key(tag: string): ShardKey {
  return { bucket, hash: payloadCrc(Buffer.from(tag)).toString(16).padStart(8, '0').repeat(8), scheme: { kind: 'replica', n: 1 }, index: 0 };
}

async function put(k: ShardKey, payload: Buffer): Promise<void> {
  await cl.clients.get(cl.nodes[0]!.address).putShard({ key: k, payloadLength: payload.length, chunkLength: payload.length, payloadCrc32: payloadCrc(payload), diskmapEpoch: 1 }, payload);
}

describe('piece pool', () => {
  it('lends each buffer once, takes back only its own, and keeps at most maxFree', () => {
    const pool = new PiecePool(1024, 2);
    const a = pool.take(1000)!;
    const b = pool.take(1024)!;
    expect(a.length).toBe(1000);
    expect(pool.take(1025)).toBeUndefined();
    pool.give(a);
    pool.give(a); // a second give of the same buffer is ignored
    pool.give(Buffer.alloc(1024)); // a foreign buffer is ignored
    expect(pool.freeCount).toBe(1);
    const c = pool.take(10)!;
    const d = pool.take(10)!;
    expect(c.buffer).toBe(a.buffer);
    expect(d.buffer).not.toBe(a.buffer);
    for (const x of [b, c, d, pool.take(1)!]) pool.give(x);
    expect(pool.freeCount).toBe(2);
  });
});

describe('bulk data on the lane', () => {
  it('receives PutShard pieces into pooled buffers and gives them back once written', async () => {
    const before = piecePool.freeCount;
    const payload = randomBytes(3 * PIECE_BYTES + 12345);
    await put(key('pooled'), payload);
    // The server (this process) received the pieces into the pool and returned them.
    expect(piecePool.freeCount).toBeGreaterThan(before);
    const got = await cl.clients.get(cl.nodes[0]!.address).getShard(key('pooled'));
    expect(got.data.equals(payload)).toBe(true);
  });

  it('puts GetShard pieces straight into the buffer the caller gives', async () => {
    const payload = randomBytes(3 * PIECE_BYTES + 777);
    await put(key('in-place'), payload);
    const dest = Buffer.alloc(payload.length + 100);
    let given: Buffer | undefined;
    const got = await cl.clients.get(cl.nodes[0]!.address).getShard(key('in-place'), {
      into: (_info, n) => (given = dest.subarray(50, 50 + n)),
    });
    expect(got.data).toBe(given);
    expect(dest.subarray(50, 50 + payload.length).equals(payload)).toBe(true);
    expect(dest.subarray(0, 50).every((x) => x === 0)).toBe(true);
  });

  it('stops writing into the caller\'s buffer as soon as the call is cancelled', async () => {
    const size = 24 * PIECE_BYTES;
    const payload = Buffer.alloc(size, 0x5a);
    await put(key('cancel'), payload);
    const def = fastChunkDefinition(serviceOf(CHUNK_PROTO, CHUNK_SERVICE).service as unknown as Record<string, unknown>) as unknown as grpc.ServiceDefinition;
    const client = makeClient<grpc.Client>(grpc.makeGenericClientConstructor(def, 'Chunk') as unknown as grpc.ServiceClientConstructor, cl.nodes[0]!.address);
    try {
      const stream = openServerStream(client, 'GetShard', { key: keyToWire(key('cancel')), offset: 0, length: 0 }, { deadline: Date.now() + 10_000 });
      stream.on('error', () => undefined);
      const dest = Buffer.alloc(size, 0xee);
      let next = 0;
      let cancelled = false;
      let atCancel: Buffer | undefined;
      const cancel = (): void => {
        atCancel = Buffer.from(dest);
        cancelled = true;
        stream.cancel();
      };
      expect(
        laneReceiveInto(stream, (n) => {
          if (next + n > size) return undefined;
          // Cancel as the third piece starts to arrive: none of it may be written.
          if (next === 2 * PIECE_BYTES) cancel();
          return dest.subarray(next, (next += n));
        }),
      ).toBe(true);
      stream.on('data', () => undefined);
      while (!cancelled) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 300));
      expect(dest.equals(atCancel!)).toBe(true);
      // The first two pieces arrived in place; the third, whose call was over, was not written.
      expect(dest.subarray(0, 2 * PIECE_BYTES).every((x) => x === 0x5a)).toBe(true);
      expect(dest.subarray(2 * PIECE_BYTES).every((x) => x === 0xee)).toBe(true);
    } finally {
      client.close();
    }
  });
});

describe('reading a chunk into the caller\'s buffer', () => {
  it('returns a view of the given buffer when the read is whole, a new buffer when it had to reconstruct', async () => {
    for (const scheme of [{ kind: 'ec', k: 2, m: 1 }, { kind: 'replica', n: 3 }] as Scheme[]) {
      const targets = cl.targets(3, 6);
      const data = randomBytes(2 * PIECE_BYTES + 1001);
      const w = await writeChunk(cl.clients, data, scheme, targets);
      expect(w.failed).toEqual([]);
      const into = Buffer.alloc(data.length + 64, 0xee);
      const r = await readChunkDetailed(cl.clients, w.hash, scheme, targets, { into });
      expect(r.data.equals(data)).toBe(true);
      expect(r.data.buffer).toBe(into.buffer);
      // Too small a buffer: the chunk comes back in a new one, and the given one is not touched.
      const small = Buffer.alloc(100, 0xee);
      const r2 = await readChunkDetailed(cl.clients, w.hash, scheme, targets, { into: small });
      expect(r2.data.equals(data)).toBe(true);
      expect(small.every((x) => x === 0xee)).toBe(true);
      // Shard 0 gone: EC reconstructs (a new buffer), replicas read another copy; both verified.
      const t0 = targets[0]!;
      await cl.nodes[0]!.store.deleteShard({ bucket: formatBucketId(t0.bucketId), hash: w.hash, scheme, index: 0 });
      const r3 = await readChunkDetailed(cl.clients, w.hash, scheme, targets, { into: Buffer.alloc(data.length + 64) });
      expect(r3.data.equals(data)).toBe(true);
      expect(r3.degraded).toBe(true);
    }
  });
});
