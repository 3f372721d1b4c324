/**
 * The on-disk formats of the object layer, byte by byte: the disk label, the bucket label, the
 * shard file header and the path-slot file. Everything here is pure (bytes in, values out) and
 * every decoder validates what it reads: a disk is outside input, and a bad byte becomes ECORRUPT,
 * never a wrong value.
 *
 * Shard file = 128-byte header + payload. The header carries everything needed to rebuild the
 * cluster from disks alone (chunk hash, scheme, shard index, lengths, bucket id, diskmap epoch)
 * and its own checksum (SHA-256 truncated to 16 bytes); the payload is covered by a CRC-32 held
 * in the header (a flipped bit, or any burst up to 32 bits, is always caught; the chunk's SHA-256
 * then verifies end to end on every read). See docs/chunk.md.
 */
import { createHash } from 'node:crypto';
import { crc32 } from '../common/crc32.js';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { bucketIdFromBytes, bucketIdToBytes, formatBucketId, parseBucketId } from '../diskmap/bucket-id.js';
import { MAX_CHUNK_BYTES, MAX_SLOT_BYTES, schemeSchema, shardCount, type Scheme, type ShardInfo } from './types.js';

export const FORMAT_VERSION = 1;
export const SHARD_MAGIC = Buffer.from('CAIRNSHD', 'ascii');
export const SLOT_MAGIC = Buffer.from('CAIRNSLT', 'ascii');
export const SHARD_HEADER_BYTES = 128;
const HEADER_SUM_AT = 112;

export const DISK_LABEL_FILE = 'cairn-disk.json';
export const BUCKET_LABEL_FILE = 'cairn-bucket.json';

/** CRC-32 (zlib polynomial) of a buffer, continuing from a previous value. */
export function payloadCrc(data: Uint8Array, prev = 0): number {
  return crc32(data, prev) >>> 0;
}

function headerSum(buf: Buffer): Buffer {
  return createHash('sha256').update(buf.subarray(0, HEADER_SUM_AT)).digest().subarray(0, 16);
}

/** Encode a shard header (128 bytes). */
export function encodeShardHeader(info: ShardInfo): Buffer {
  const b = Buffer.alloc(SHARD_HEADER_BYTES);
  SHARD_MAGIC.copy(b, 0);
  b.writeUInt16BE(FORMAT_VERSION, 8);
  if (info.scheme.kind === 'ec') {
    b.writeUInt8(1, 10);
    b.writeUInt8(info.scheme.k, 11);
    b.writeUInt8(info.scheme.m, 12);
  } else {
    b.writeUInt8(2, 10);
    b.writeUInt8(info.scheme.n, 11);
  }
  b.writeUInt8(info.index, 13);
  Buffer.from(info.hash, 'hex').copy(b, 16);
  bucketIdToBytes(parseBucketId(info.bucket)).copy(b, 48);
  b.writeBigUInt64BE(BigInt(info.payloadLength), 64);
  b.writeBigUInt64BE(BigInt(info.chunkLength), 72);
  b.writeBigUInt64BE(BigInt(info.diskmapEpoch), 80);
  b.writeBigUInt64BE(BigInt(info.createdMs), 88);
  b.writeUInt32BE(info.payloadCrc32 >>> 0, 96);
  headerSum(b).copy(b, HEADER_SUM_AT);
  return b;
}

/** Decode and validate a shard header; `where` names the file in errors. */
export function decodeShardHeader(b: Buffer, where: string): ShardInfo {
  const bad = (why: string): never => {
    throw new CairnError('ECORRUPT', `${where}: bad shard header (${why}); the shard will be quarantined by scrub`);
  };
  if (b.length < SHARD_HEADER_BYTES) bad(`only ${b.length} bytes`);
  if (!b.subarray(0, 8).equals(SHARD_MAGIC)) bad('wrong magic');
  if (!headerSum(b).equals(b.subarray(HEADER_SUM_AT, HEADER_SUM_AT + 16))) bad('header checksum mismatch');
  const version = b.readUInt16BE(8);
  if (version !== FORMAT_VERSION) bad(`format version ${version}, this build reads ${FORMAT_VERSION}`);
  const kind = b.readUInt8(10);
  const raw = kind === 1 ? { kind: 'ec', k: b.readUInt8(11), m: b.readUInt8(12) } : kind === 2 ? { kind: 'replica', n: b.readUInt8(11) } : undefined;
  const sp = schemeSchema.safeParse(raw);
  if (!sp.success) return bad('invalid scheme');
  const scheme: Scheme = sp.data;
  const index = b.readUInt8(13);
  if (index >= shardCount(scheme)) bad(`shard index ${index} out of range`);
  const num = (at: number): number => {
    const v = b.readBigUInt64BE(at);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) bad(`field at ${at} too large`);
    return Number(v);
  };
  const payloadLength = num(64);
  const chunkLength = num(72);
  if (payloadLength > MAX_CHUNK_BYTES || chunkLength > MAX_CHUNK_BYTES) bad('length beyond the maximum chunk size');
  let bucket: string;
  try {
    bucket = formatBucketId(bucketIdFromBytes(b.subarray(48, 64)));
  } catch {
    return bad('invalid bucket id');
  }
  return {
    bucket,
    hash: b.subarray(16, 48).toString('hex'),
    scheme,
    index,
    payloadLength,
    chunkLength,
    diskmapEpoch: num(80),
    createdMs: num(88),
    payloadCrc32: b.readUInt32BE(96),
  };
}

// ---- disk and bucket labels (JSON: small, read by people during recovery) ----

export const diskLabelSchema = z.object({
  magic: z.literal('cairn-disk'),
  formatVersion: z.literal(FORMAT_VERSION),
  dc: z.number().int().min(0).max(255),
  row: z.number().int().min(0).max(255),
  rack: z.number().int().min(0).max(255),
  machine: z.number().int().min(0).max(255),
  disk: z.number().int().min(0).max(0xffff),
  /** 64-bit incarnation, 16 lowercase hex digits. */
  incarnation: z.string().regex(/^[0-9a-f]{16}$/),
  formattedAt: z.string(),
});
export type DiskLabel = z.infer<typeof diskLabelSchema>;

export const bucketLabelSchema = z.object({
  magic: z.literal('cairn-bucket'),
  formatVersion: z.literal(FORMAT_VERSION),
  bucketId: z.string(),
  createdAt: z.string(),
});
export type BucketLabel = z.infer<typeof bucketLabelSchema>;

// ---- path slot files (the acceptor state of one path's slot) ----

/** A Paxos ballot: a counter, then the proposer's id to break ties. Compared lexicographically. */
export interface Ballot {
  counter: number;
  proposer: string;
}
export const ZERO_BALLOT: Ballot = { counter: 0, proposer: '' };
export const ballotSchema = z.object({
  counter: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  proposer: z.string().max(64).regex(/^[0-9a-zA-Z_-]*$/),
});

export function compareBallots(a: Ballot, b: Ballot): number {
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  return a.proposer < b.proposer ? -1 : a.proposer > b.proposer ? 1 : 0;
}

/** The value of a slot: a version (0 = never written) and the bytes (null = absent/deleted). */
export interface SlotValue {
  version: number;
  data: Buffer | null;
}

export interface SlotState {
  promised: Ballot;
  accepted: Ballot;
  value: SlotValue;
}

/**
 * Slot file: magic(8) version(2) flags(2) dataLength(4) valueVersion(8) promisedCounter(8)
 * acceptedCounter(8) promisedProposerLen(1) acceptedProposerLen(1) proposers(≤128) data, then a
 * 16-byte truncated SHA-256 of everything before it.
 */
export function encodeSlot(s: SlotState): Buffer {
  const pp = Buffer.from(s.promised.proposer, 'utf8');
  const ap = Buffer.from(s.accepted.proposer, 'utf8');
  const data = s.value.data ?? Buffer.alloc(0);
  const head = Buffer.alloc(42);
  SLOT_MAGIC.copy(head, 0);
  head.writeUInt16BE(FORMAT_VERSION, 8);
  head.writeUInt16BE(s.value.data === null ? 0 : 1, 10);
  head.writeUInt32BE(data.length, 12);
  head.writeBigUInt64BE(BigInt(s.value.version), 16);
  head.writeBigUInt64BE(BigInt(s.promised.counter), 24);
  head.writeBigUInt64BE(BigInt(s.accepted.counter), 32);
  head.writeUInt8(pp.length, 40);
  head.writeUInt8(ap.length, 41);
  const body = Buffer.concat([head, pp, ap, data]);
  const sum = createHash('sha256').update(body).digest().subarray(0, 16);
  return Buffer.concat([body, sum]);
}

export function decodeSlot(b: Buffer, where: string): SlotState {
  const bad = (why: string): never => {
    throw new CairnError('ECORRUPT', `${where}: bad path slot file (${why})`);
  };
  if (b.length < 42 + 16) bad('too short');
  if (!b.subarray(0, 8).equals(SLOT_MAGIC)) bad('wrong magic');
  const sum = createHash('sha256').update(b.subarray(0, b.length - 16)).digest().subarray(0, 16);
  if (!sum.equals(b.subarray(b.length - 16))) bad('checksum mismatch');
  if (b.readUInt16BE(8) !== FORMAT_VERSION) bad('unknown format version');
  const hasData = b.readUInt16BE(10) === 1;
  const dataLength = b.readUInt32BE(12);
  if (dataLength > MAX_SLOT_BYTES) bad('value too large');
  const n = (at: number): number => Number(b.readBigUInt64BE(at));
  const ppl = b.readUInt8(40);
  const apl = b.readUInt8(41);
  if (42 + ppl + apl + dataLength + 16 !== b.length) bad('length mismatch');
  const pp = b.subarray(42, 42 + ppl).toString('utf8');
  const ap = b.subarray(42 + ppl, 42 + ppl + apl).toString('utf8');
  const data = b.subarray(42 + ppl + apl, 42 + ppl + apl + dataLength);
  return {
    promised: { counter: n(24), proposer: pp },
    accepted: { counter: n(32), proposer: ap },
    value: { version: n(16), data: hasData ? Buffer.from(data) : null },
  };
}
