/** The chunk service over real gRPC: bad requests get EINVAL (never a crash), and the plain RPCs work. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startCluster, type TestCluster } from './cluster.js';
import { grpc, serviceOf, call, fromServiceError, CLIENT_OPTIONS } from '../../src/rpc/grpc.js';
import { CHUNK_PROTO, CHUNK_SERVICE, fastChunkDefinition, keyToWire } from '../../src/chunk/wire.js';
import { writeChunk } from '../../src/chunk/writer.js';
import { payloadCrc } from '../../src/chunk/format.js';
import { formatBucketId } from '../../src/diskmap/bucket-id.js';
import { CairnError } from '../../src/common/errors.js';
import type { ShardKey } from '../../src/chunk/types.js';

let cl: TestCluster;
let raw: grpc.Client;
let bucket: string;
beforeAll(async () => {
  cl = await startCluster(1, 1);
  // The service's own wire definition: protobuf for the first message, raw bytes for data pieces.
  const def = fastChunkDefinition(serviceOf(CHUNK_PROTO, CHUNK_SERVICE).service as unknown as Record<string, unknown>) as unknown as grpc.ServiceDefinition;
  const ctor = grpc.makeGenericClientConstructor(def, 'Chunk');
  raw = new ctor(cl.nodes[0]!.address, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
  bucket = formatBucketId(cl.targets(1, 3)[0]!.bucketId);
});
afterAll(async () => {
  raw?.close();
  await cl?.close();
});

const goodKey = (): ShardKey => ({ bucket, hash: 'ab'.repeat(32), scheme: { kind: 'replica', n: 1 }, index: 0 });

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'ok',
    (e: unknown) => (e instanceof CairnError ? e.code : `not a CairnError: ${String(e)}`),
  );
}

function rawPut(msgs: unknown[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const s = (raw as unknown as Record<string, Function>).PutShard!.call(raw, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: unknown) =>
      err ? reject(fromServiceError(err)) : resolve(res),
    ) as grpc.ClientWritableStream<unknown>;
    s.on('error', () => undefined);
    for (const m of msgs) s.write(m);
    s.end();
  });
}

function rawGet(req: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const s = (raw as unknown as Record<string, Function>).GetShard!.call(raw, req, { deadline: Date.now() + 5000 }) as grpc.ClientReadableStream<unknown>;
    s.on('data', () => undefined);
    s.on('error', (e: grpc.ServiceError) => reject(fromServiceError(e)));
    s.on('end', () => resolve(undefined));
  });
}

describe('chunk service validation', () => {
  it('unary RPCs with bad fields get EINVAL', async () => {
    expect(await code(call(raw, 'StatShard', {}))).toBe('EINVAL');
    expect(await code(call(raw, 'StatShard', { key: { ...keyToWire(goodKey()), hash: 'xyz' } }))).toBe('EINVAL');
    expect(await code(call(raw, 'StatShard', { key: { ...keyToWire(goodKey()), bucket: 'not-a-bucket' } }))).toBe('EINVAL');
    expect(await code(call(raw, 'StatShard', { key: { ...keyToWire(goodKey()), index: 5 } }))).toBe('EINVAL');
    expect(await code(call(raw, 'StatShard', { key: { ...keyToWire(goodKey()), scheme: { kind: 'ec', k: 0, m: 1 } } }))).toBe('EINVAL');
    expect(await code(call(raw, 'StatShard', { key: { ...keyToWire(goodKey()), scheme: { kind: 'ec', k: 30, m: 9 } } }))).toBe('EINVAL');
    expect(await code(call(raw, 'StatShard', { key: { ...keyToWire(goodKey()), scheme: { kind: 'raid5' } } }))).toBe('EINVAL');
    expect(await code(call(raw, 'DeleteShard', { key: null }))).toBe('EINVAL');
    expect(await code(call(raw, 'ListBucket', { bucket: '../../etc', after: '', limit: 10 }))).toBe('EINVAL');
    expect(await code(call(raw, 'SlotPrepare', { bucket, slot: 'short', ballot: { counter: 1, proposer: 'p' } }))).toBe('EINVAL');
    expect(await code(call(raw, 'SlotAccept', { bucket, slot: 'ab'.repeat(32), ballot: { counter: 1, proposer: 'bad proposer!' } }))).toBe('EINVAL');
    // A well-formed key for a shard that is not there is ENOENT; a bucket on no disk of the node is ENOENT too.
    expect(await code(call(raw, 'StatShard', { key: keyToWire(goodKey()) }))).toBe('ENOENT');
    expect(await code(call(raw, 'StatShard', { key: keyToWire({ ...goodKey(), bucket: '01020304-0005-0006-0000000000000007' }) }))).toBe('ENOENT');
  });

  it('streaming RPCs with bad input get EINVAL and store nothing', async () => {
    const head = { key: keyToWire(goodKey()), payload_length: 4, chunk_length: 4, payload_crc32: payloadCrc(Buffer.from('abcd')), diskmap_epoch: 0, repair: false };
    expect(await code(rawPut([]))).toBe('EINVAL');
    expect(await code(rawPut([{ data: Buffer.from('abcd') }]))).toBe('EINVAL');
    expect(await code(rawPut([{ head: { ...head, key: { ...head.key, hash: 'nope' } } }]))).toBe('EINVAL');
    expect(await code(rawPut([{ head: { ...head, payload_length: 2 ** 40 } }]))).toBe('EINVAL');
    expect(await code(rawPut([Buffer.from('garbage, not a protobuf head')]))).toBe('EINVAL');
    expect(await code(rawPut([{ head }, Buffer.from('abcdef')]))).toBe('EINVAL'); // longer than declared
    expect(await code(rawPut([{ head }, Buffer.from('ab')]))).toBe('EINVAL'); // shorter than declared
    expect(await code(rawPut([{ head }, { head }]))).toBe('EINVAL');
    expect(await code(rawPut([{ head }, { data: Buffer.from('abcd') }]))).toBe('EINVAL'); // a protobuf data piece is not the raw bytes
    expect(await code(rawPut([{ head }, Buffer.from('abce')]))).toBe('ECORRUPT'); // CRC mismatch
    expect(await code(call(raw, 'StatShard', { key: keyToWire(goodKey()) }))).toBe('ENOENT');
    expect(await code(rawGet({ key: { ...keyToWire(goodKey()), hash: 'zz' } }))).toBe('EINVAL');
    expect(await code(rawGet({}))).toBe('EINVAL');
    // A good put, then an out-of-range GetShard.
    expect(await code(rawPut([{ head }, Buffer.from('abcd')]))).toBe('ok');
    expect(await code(rawGet({ key: keyToWire(goodKey()), offset: 3, length: 5 }))).toBe('EINVAL');
    // The server still serves after all that.
    const st = await cl.clients.get(cl.nodes[0]!.address).statShard(goodKey(), { verify: true });
    expect(st.payloadLength).toBe(4);
  });

  it('same key with different content is ECONFLICT unless it is a repair', async () => {
    const c = cl.clients.get(cl.nodes[0]!.address);
    const key: ShardKey = { ...goodKey(), hash: 'cd'.repeat(32) };
    const a = Buffer.from('first');
    const b = Buffer.from('other');
    const head = (p: Buffer, repair = false) => ({ key, payloadLength: p.length, chunkLength: p.length, payloadCrc32: payloadCrc(p), diskmapEpoch: 1, repair });
    expect((await c.putShard(head(a), a)).created).toBe(true);
    expect((await c.putShard(head(a), a)).created).toBe(false);
    expect(await code(c.putShard(head(b), b))).toBe('ECONFLICT');
    expect((await c.getShard(key)).data.toString()).toBe('first');
    expect((await c.putShard(head(b, true), b)).created).toBe(true);
    expect((await c.getShard(key)).data.toString()).toBe('other');
    expect((await c.getShard(key, { offset: 1, length: 3 })).data.toString()).toBe('the');
  });

  it('lists a bucket page by page, stats, deletes, and reports disks', async () => {
    const c = cl.clients.get(cl.nodes[0]!.address);
    const targets = cl.targets(1, 40);
    const b40 = formatBucketId(targets[0]!.bucketId);
    const hashes = new Set<string>();
    for (let i = 0; i < 7; i++) hashes.add((await writeChunk(cl.clients, randomBytes(10 + i), { kind: 'replica', n: 1 }, targets)).hash);
    const seen: string[] = [];
    let after = '';
    let pages = 0;
    do {
      const page = await c.listBucket(b40, after, 3);
      seen.push(...page.shards.map((s) => s.key.hash));
      after = page.next;
      pages++;
    } while (after !== '' && pages < 10);
    expect(new Set(seen)).toEqual(hashes);
    expect(seen.length).toBe(7);
    expect(pages).toBe(3);
    const first = [...hashes][0]!;
    const key: ShardKey = { bucket: b40, hash: first, scheme: { kind: 'replica', n: 1 }, index: 0 };
    expect((await c.statShard(key)).hash).toBe(first);
    expect(await c.deleteShard(key)).toBe(true);
    expect(await c.deleteShard(key)).toBe(false);
    const disks = await c.diskStatus();
    expect(disks).toHaveLength(1);
    expect(disks[0]!.state).toBe('ok');
  });

  it('large shards stream in pieces and come back intact, several at once', async () => {
    const c = cl.clients.get(cl.nodes[0]!.address);
    const shards = Array.from({ length: 3 }, () => randomBytes(12 * 1024 * 1024 + 333));
    const keys = shards.map((_, i): ShardKey => ({ ...goodKey(), hash: `${i}`.repeat(64) }));
    await Promise.all(shards.map((p, i) => c.putShard({ key: keys[i]!, payloadLength: p.length, chunkLength: p.length, payloadCrc32: payloadCrc(p), diskmapEpoch: 0 }, p)));
    for (let round = 0; round < 2; round++) {
      const back = await Promise.all(keys.map((k) => c.getShard(k)));
      back.forEach((b, i) => expect(b.data.equals(shards[i]!)).toBe(true));
    }
    const part = await c.getShard(keys[1]!, { offset: 5 * 1024 * 1024 + 1, length: 3 * 1024 * 1024 });
    expect(part.data.equals(shards[1]!.subarray(5 * 1024 * 1024 + 1, 8 * 1024 * 1024 + 1))).toBe(true);
  });
});
