/**
 * The vocabulary of the object layer, shared by the store, the service, the writer and the
 * reader: redundancy schemes, shard targets and keys, shard metadata. The client translates the
 * diskmap (placement groups) into these shapes; nothing here depends on how the diskmap is built.
 */
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { addressSchema, parseWith } from '../common/config.js';
import { parseBucketId, formatBucketId, type BucketId } from '../diskmap/bucket-id.js';

/** Reed–Solomon limits of @ronomon/reed-solomon. */
export const MAX_EC_DATA_SHARDS = 24;
export const MAX_EC_PARITY_SHARDS = 6;
export const MAX_REPLICAS = 16;

/** Largest chunk the layer accepts (a shard is at most this long too). */
export const MAX_CHUNK_BYTES = 64 * 1024 * 1024;
/** Largest value of a path slot (the path-hash space holds at most one chunk per path). */
export const MAX_SLOT_BYTES = 4 * 1024 * 1024;
/** Bulk data moves in pieces of this size (gRPC messages, file reads): memory stays bounded. */
export const PIECE_BYTES = 1024 * 1024;

/** Same shape as src/diskmap/types.ts: erasure coding k data + m parity, or n full copies. */
export type Scheme = { kind: 'ec'; k: number; m: number } | { kind: 'replica'; n: number };

export const schemeSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('ec'),
    k: z.number().int().min(1).max(MAX_EC_DATA_SHARDS),
    m: z.number().int().min(1).max(MAX_EC_PARITY_SHARDS),
  }),
  z.object({ kind: z.literal('replica'), n: z.number().int().min(1).max(MAX_REPLICAS) }),
]);

/** Number of shards a chunk is stored as. */
export function shardCount(s: Scheme): number {
  return s.kind === 'ec' ? s.k + s.m : s.n;
}

/** Number of shards needed to read a chunk. */
export function shardsNeeded(s: Scheme): number {
  return s.kind === 'ec' ? s.k : 1;
}

/** Short text form used in file names and logs: "ec2+1", "r3". */
export function schemeTag(s: Scheme): string {
  return s.kind === 'ec' ? `ec${s.k}+${s.m}` : `r${s.n}`;
}

export function parseSchemeTag(tag: string): Scheme {
  let m = /^ec(\d{1,2})\+(\d{1,2})$/.exec(tag);
  if (m) return parseWith(schemeSchema, { kind: 'ec', k: Number(m[1]), m: Number(m[2]) }, 'scheme tag');
  m = /^r(\d{1,2})$/.exec(tag);
  if (m) return parseWith(schemeSchema, { kind: 'replica', n: Number(m[1]) }, 'scheme tag');
  throw new CairnError('EINVAL', `"${tag}" is not a scheme tag (ecK+M or rN)`);
}

export function schemeEquals(a: Scheme, b: Scheme): boolean {
  return schemeTag(a) === schemeTag(b);
}

/** Where one shard of a chunk goes: a bucket and the node that serves the bucket's disk. */
export interface ShardTarget {
  bucketId: BucketId;
  /** host:port of the chunk service of the node holding that disk. */
  address: string;
}

/** A 32-byte SHA-256 chunk hash, as 64 lowercase hex characters. */
export const hashHexSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters (SHA-256)');
export const bucketTextSchema = z
  .string()
  .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}$/, 'must be a bucket id DDRRKKMM-DDDD-BBBB-IIIIIIIIIIIIIIII');

/** Identifies one shard file: bucket, chunk, scheme and shard index. */
export interface ShardKey {
  bucket: string;
  /** SHA-256 of the whole chunk, hex. */
  hash: string;
  scheme: Scheme;
  index: number;
}

export const shardKeySchema = z
  .object({ bucket: bucketTextSchema, hash: hashHexSchema, scheme: schemeSchema, index: z.number().int().min(0) })
  .refine((k) => k.index < shardCount(k.scheme), { message: 'shard index must be below the scheme\'s shard count', path: ['index'] });

/** What a shard file says about itself (its header). */
export interface ShardInfo extends ShardKey {
  payloadLength: number;
  chunkLength: number;
  /** CRC-32 of the payload (see docs/chunk.md for why CRC-32). */
  payloadCrc32: number;
  diskmapEpoch: number;
  createdMs: number;
}

export function keyOfTarget(hash: string, scheme: Scheme, index: number, t: ShardTarget): ShardKey {
  return { bucket: formatBucketId(t.bucketId), hash, scheme, index };
}

export function shardKeyText(k: ShardKey): string {
  return `${k.bucket}/${k.hash.slice(0, 16)}….${schemeTag(k.scheme)}.${k.index}`;
}

export const shardTargetSchema = z.object({
  bucketId: z.custom<BucketId>((v) => typeof v === 'object' && v !== null && 'incarnation' in v),
  address: addressSchema,
});

/** Validate a writer/reader call's scheme and targets together. */
export function checkTargets(scheme: Scheme, targets: readonly ShardTarget[]): void {
  parseWith(schemeSchema, scheme, 'scheme');
  if (targets.length !== shardCount(scheme)) {
    throw new CairnError('EINVAL', `scheme ${schemeTag(scheme)} needs ${shardCount(scheme)} shard targets, got ${targets.length}`);
  }
}

export { parseBucketId, formatBucketId };

/** Parse a wire shard key with a schema, turning a mismatch into EIO (a peer sent garbage). */
export function parseWithKey(schema: z.ZodType<ShardKey>, v: unknown): ShardKey {
  const r = schema.safeParse(v);
  if (!r.success) throw new CairnError('EIO', `a chunk server sent an invalid shard key: ${r.error.message}`);
  return r.data;
}

/**
 * Wait until a writable stream can take more ('drain') or has ended ('close', 'error'). Every
 * listener is removed afterwards, and an error is not rethrown (the stream's owner sees it).
 */
export function drainOrClose(stream: import('node:events').EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}
