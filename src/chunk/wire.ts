/**
 * The chunk service's messages as they cross the wire: zod schemas that validate every request
 * the server receives (proto3 defaults filled in by proto-loader), and converters between the
 * proto shapes and the types of src/chunk/types.ts. Defined once, used by service and client.
 */
import { z } from 'zod';
import { ballotSchema, type Ballot, type SlotValue } from './format.js';
import { MAX_SLOT_BYTES, bucketTextSchema, hashHexSchema, schemeSchema, shardCount, type Scheme, type ShardInfo, type ShardKey } from './types.js';

export const CHUNK_PROTO = 'chunk.proto';
export const CHUNK_SERVICE = 'cairn.chunk.Chunk';

export interface WireScheme {
  kind: string;
  k: number;
  m: number;
  n: number;
}
export interface WireKey {
  bucket: string;
  hash: string;
  scheme: WireScheme | null;
  index: number;
}
export interface WireInfo {
  key: WireKey | null;
  payload_length: number;
  chunk_length: number;
  payload_crc32: number;
  diskmap_epoch: number;
  created_ms: number;
  mtime_ms: number;
}

export function schemeToWire(s: Scheme): WireScheme {
  return s.kind === 'ec' ? { kind: 'ec', k: s.k, m: s.m, n: 0 } : { kind: 'replica', k: 0, m: 0, n: s.n };
}

const wireSchemeSchema = z
  .object({ kind: z.enum(['ec', 'replica']), k: z.number(), m: z.number(), n: z.number() }, { error: 'scheme is required' })
  .transform((w) => (w.kind === 'ec' ? { kind: 'ec' as const, k: w.k, m: w.m } : { kind: 'replica' as const, n: w.n }))
  .pipe(schemeSchema);

export const wireKeySchema = z
  .object(
    { bucket: bucketTextSchema, hash: hashHexSchema, scheme: wireSchemeSchema, index: z.number().int().min(0) },
    { error: 'shard key is required' },
  )
  .refine((k) => k.index < shardCount(k.scheme), { message: "shard index must be below the scheme's shard count", path: ['index'] });

export function keyToWire(k: ShardKey): WireKey {
  return { bucket: k.bucket, hash: k.hash, scheme: schemeToWire(k.scheme), index: k.index };
}

const u53 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const putHeadSchema = z.object({
  key: wireKeySchema,
  payload_length: u53,
  chunk_length: u53,
  payload_crc32: z.number().int().min(0).max(0xffff_ffff),
  diskmap_epoch: u53,
  repair: z.boolean(),
});

export const getShardSchema = z.object({ key: wireKeySchema, offset: u53, length: u53 });
export const keyRequestSchema = z.object({ key: wireKeySchema });
export const statShardSchema = z.object({ key: wireKeySchema, verify: z.boolean() });
export const listBucketSchema = z.object({
  bucket: bucketTextSchema,
  after: z.string().max(200),
  limit: z.number().int().min(0).max(10_000).transform((n) => (n === 0 ? 1000 : n)),
});

const wireBallotSchema = z.object({ counter: u53, proposer: z.string() }, { error: 'ballot is required' }).pipe(ballotSchema);
const wireValueSchema = z.object(
  { version: u53, present: z.boolean(), data: z.instanceof(Buffer).refine((b) => b.length <= MAX_SLOT_BYTES, `slot value must be at most ${MAX_SLOT_BYTES} bytes`) },
  { error: 'value is required' },
);
const slotKeySchema = hashHexSchema;
export const slotPrepareSchema = z.object({ bucket: bucketTextSchema, slot: slotKeySchema, ballot: wireBallotSchema });
export const slotAcceptSchema = z.object({ bucket: bucketTextSchema, slot: slotKeySchema, ballot: wireBallotSchema, value: wireValueSchema });

export interface WireValue {
  version: number;
  present: boolean;
  data: Buffer;
}
export function valueToWire(v: SlotValue): WireValue {
  return { version: v.version, present: v.data !== null, data: v.data ?? Buffer.alloc(0) };
}
export function valueFromWire(w: WireValue | null | undefined): SlotValue {
  if (w === null || w === undefined) return { version: 0, data: null };
  return { version: Number(w.version), data: w.present ? w.data : null };
}
export function ballotFromWire(b: { counter: number; proposer: string } | null | undefined): Ballot {
  return b === null || b === undefined ? { counter: 0, proposer: '' } : { counter: Number(b.counter), proposer: b.proposer };
}

export function infoToWire(i: ShardInfo & { mtimeMs?: number }): WireInfo {
  return {
    key: keyToWire(i),
    payload_length: i.payloadLength,
    chunk_length: i.chunkLength,
    payload_crc32: i.payloadCrc32,
    diskmap_epoch: i.diskmapEpoch,
    created_ms: i.createdMs,
    mtime_ms: i.mtimeMs ?? 0,
  };
}

const wireInfoSchema = z.object({
  key: wireKeySchema,
  payload_length: u53,
  chunk_length: u53,
  payload_crc32: z.number().int().min(0).max(0xffff_ffff),
  diskmap_epoch: u53,
  created_ms: u53,
  mtime_ms: z.number(),
});

/** Validate a ShardInfo from a server (the client does not trust the wire either). */
export function infoFromWire(w: unknown): ShardInfo & { mtimeMs: number } {
  const p = wireInfoSchema.parse(w);
  return {
    ...p.key,
    payloadLength: p.payload_length,
    chunkLength: p.chunk_length,
    payloadCrc32: p.payload_crc32,
    diskmapEpoch: p.diskmap_epoch,
    createdMs: p.created_ms,
    mtimeMs: p.mtime_ms,
  };
}

// ---- a copy-light codec for the bulk messages ----
//
// PutShardRequest and GetShardResponse are a oneof of a small message (field 1) and a bytes
// piece (field 2). Data pieces are encoded and decoded here by hand (tag 0x12, varint length,
// bytes; decode returns a view, no copy); anything else goes through protobufjs as usual.

const DATA_TAG = 0x12;

function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

export function encodeDataPiece(data: Buffer): Buffer {
  const vl = varintLength(data.length);
  const out = Buffer.allocUnsafe(1 + vl + data.length);
  out[0] = DATA_TAG;
  let n = data.length;
  let at = 1;
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  data.copy(out, at);
  return out;
}

/** Decode a message that is exactly one data piece; undefined if it is anything else. */
export function decodeDataPiece(buf: Buffer): Buffer | undefined {
  if (buf.length < 2 || buf[0] !== DATA_TAG) return undefined;
  let len = 0;
  let shift = 1;
  let at = 1;
  for (;;) {
    if (at >= buf.length || at > 5) return undefined;
    const b = buf[at++] as number;
    len += (b & 0x7f) * shift;
    shift *= 128;
    if (b < 0x80) break;
  }
  if (at + len !== buf.length) return undefined;
  return buf.subarray(at);
}

interface MethodDef {
  requestSerialize: (v: unknown) => Buffer;
  requestDeserialize: (b: Buffer) => unknown;
  responseSerialize: (v: unknown) => Buffer;
  responseDeserialize: (b: Buffer) => unknown;
}

/** Room to leave in front of a piece so that it can be framed in place (tag + 5-byte varint). */
export const PIECE_HEADROOM_BYTES = 6;

/**
 * Frame a data piece in place: `piece` must be a view into a buffer it owns, with
 * PIECE_HEADROOM_BYTES free in front of it. Returns the encoded message (no copy).
 */
export function encodeDataPieceInPlace(piece: Buffer): Buffer {
  let n = piece.length;
  const varint: number[] = [];
  while (n >= 0x80) {
    varint.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  varint.push(n);
  const start = piece.byteOffset - 1 - varint.length;
  if (start < 0) return encodeDataPiece(piece);
  const out = Buffer.from(piece.buffer, start, 1 + varint.length + piece.length);
  out[0] = DATA_TAG;
  for (let i = 0; i < varint.length; i++) out[1 + i] = varint[i] as number;
  return out;
}

function fastSerialize(orig: (v: unknown) => Buffer): (v: unknown) => Buffer {
  return (v) => {
    const m = v as { data?: unknown; encoded?: unknown };
    if (m.encoded instanceof Buffer) return m.encoded;
    return m.data instanceof Buffer ? encodeDataPiece(m.data) : orig(v);
  };
}

function fastDeserialize(orig: (b: Buffer) => unknown): (b: Buffer) => unknown {
  return (b) => {
    const d = decodeDataPiece(b);
    return d !== undefined ? { part: 'data', data: d } : orig(b);
  };
}

/** The chunk service definition with the bulk codecs swapped in (used by server and client). */
export function fastChunkDefinition<T extends Record<string, unknown>>(def: T): T {
  const put = def.PutShard as MethodDef;
  const get = def.GetShard as MethodDef;
  return {
    ...def,
    PutShard: { ...put, requestSerialize: fastSerialize(put.requestSerialize), requestDeserialize: fastDeserialize(put.requestDeserialize) },
    GetShard: { ...get, responseSerialize: fastSerialize(get.responseSerialize), responseDeserialize: fastDeserialize(get.responseDeserialize) },
  };
}
