/**
 * Offline reading of a data disk, without a cluster and without changing a byte: its buckets,
 * its shard files with their self-describing headers (format.ts), and the verification of a
 * chunk from whichever of its shards are found (payload CRC-32 of each shard, then the chunk's
 * SHA-256 end to end, Reed–Solomon reconstruction when data shards are missing). Used by
 * `cairn chunk ls/verify/header` on a disk moved to another machine and by `cairn recover`.
 * (ChunkStore is the serving side: it locks the disk and clears tmp/; nothing here does.)
 */
import { createHash } from 'node:crypto';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../common/errors.js';
import { reconstructShards, joinDataShards } from './codec.js';
import { BUCKET_LABEL_FILE, SHARD_HEADER_BYTES, bucketLabelSchema, decodeShardHeader, payloadCrc, type BucketLabel } from './format.js';
import { checkHeaderMatches, parseShardFileName } from './store.js';
import { schemeTag, shardsNeeded, type Scheme, type ShardInfo, type ShardKey } from './types.js';

export const BUCKET_DIR_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}$/;

export interface OfflineBucket {
  bucket: string;
  label: BucketLabel | undefined;
  labelProblem: string | undefined;
  shards: number;
}

/** The bucket directories of a disk, with their labels and shard counts. */
export async function listBucketsOffline(diskPath: string): Promise<OfflineBucket[]> {
  const out: OfflineBucket[] = [];
  for (const bucket of (await readdir(diskPath)).filter((e) => BUCKET_DIR_RE.test(e)).sort()) {
    let label: BucketLabel | undefined;
    let labelProblem: string | undefined;
    try {
      const p = bucketLabelSchema.safeParse(JSON.parse(await readFile(join(diskPath, bucket, BUCKET_LABEL_FILE), 'utf8')));
      if (p.success && p.data.bucketId === bucket) label = p.data;
      else labelProblem = p.success ? `label names bucket ${p.data.bucketId}` : 'label malformed';
    } catch (err) {
      labelProblem = `label unreadable (${errnoCode(err) ?? (err as Error).message})`;
    }
    let shards = 0;
    const root = join(diskPath, bucket, 'shards');
    for (const hh of await readdir(root).catch(() => [] as string[])) shards += (await readdir(join(root, hh)).catch(() => [] as string[])).length;
    out.push({ bucket, label, labelProblem, shards });
  }
  return out;
}

export interface ScannedShard {
  diskPath: string;
  bucket: string;
  path: string;
  key: ShardKey | undefined;
  fileBytes: number;
  /** The header, when it is valid and matches the file's name and size. */
  info: ShardInfo | undefined;
  problem: string | undefined;
}

/** Read one shard file's header and check it against its name and size (no payload read). */
export async function readShardHeaderAt(diskPath: string, bucket: string, path: string): Promise<ScannedShard> {
  const file = path.slice(path.lastIndexOf('/') + 1);
  const key = parseShardFileName(bucket, file);
  const out: ScannedShard = { diskPath, bucket, path, key, fileBytes: 0, info: undefined, problem: undefined };
  if (key === undefined) {
    out.problem = 'not a shard file name';
    return out;
  }
  try {
    const fh = await open(path, 'r');
    try {
      out.fileBytes = (await fh.stat()).size;
      const head = Buffer.alloc(SHARD_HEADER_BYTES);
      const { bytesRead } = await fh.read(head, 0, SHARD_HEADER_BYTES, 0);
      const info = decodeShardHeader(head.subarray(0, bytesRead), path);
      checkHeaderMatches(info, key, path);
      if (out.fileBytes !== SHARD_HEADER_BYTES + info.payloadLength) out.problem = `truncated: ${out.fileBytes} bytes, header says ${SHARD_HEADER_BYTES + info.payloadLength}`;
      else out.info = info;
    } finally {
      await fh.close();
    }
  } catch (err) {
    out.problem = (err as Error).message;
  }
  return out;
}

/** Every shard file of a disk (or of one bucket), header checked, in bucket and name order. */
export async function* scanDiskShards(diskPath: string, onlyBucket?: string): AsyncGenerator<ScannedShard> {
  const buckets = onlyBucket !== undefined ? [onlyBucket] : (await readdir(diskPath)).filter((e) => BUCKET_DIR_RE.test(e)).sort();
  for (const bucket of buckets) {
    const root = join(diskPath, bucket, 'shards');
    for (const hh of (await readdir(root).catch(() => [] as string[])).sort()) {
      for (const f of (await readdir(join(root, hh)).catch(() => [] as string[])).sort()) {
        yield await readShardHeaderAt(diskPath, bucket, join(root, hh, f));
      }
    }
  }
}

/** Read a shard's payload and check its CRC-32 (undefined + problem when it fails). */
export async function readShardPayload(s: ScannedShard): Promise<{ payload: Buffer | undefined; problem: string | undefined }> {
  if (s.info === undefined) return { payload: undefined, problem: s.problem ?? 'no valid header' };
  try {
    const b = await readFile(s.path);
    const payload = b.subarray(SHARD_HEADER_BYTES);
    if (payload.length !== s.info.payloadLength) return { payload: undefined, problem: 'size changed while reading' };
    if (payloadCrc(payload) !== s.info.payloadCrc32) return { payload: undefined, problem: 'payload CRC-32 mismatch (bit rot)' };
    return { payload, problem: undefined };
  } catch (err) {
    return { payload: undefined, problem: `unreadable (${errnoCode(err) ?? (err as Error).message})` };
  }
}

export interface ChunkCheck {
  ok: boolean;
  /** Shards whose payload passed its CRC. */
  goodShards: number;
  bytesRead: number;
  problem: string | undefined;
}

/**
 * Verify one chunk from the shards found for it (any buckets, any disks): enough shards with a
 * good CRC, and the reassembled chunk's SHA-256 equal to its name.
 */
export async function verifyChunk(hash: string, scheme: Scheme, shards: readonly ScannedShard[]): Promise<ChunkCheck> {
  const need = shardsNeeded(scheme);
  const byIndex = new Map<number, Buffer>();
  let bytesRead = 0;
  let chunkLength = -1;
  const problems: string[] = [];
  for (const s of shards) {
    if (byIndex.has(s.info?.index ?? -1)) continue;
    const { payload, problem } = await readShardPayload(s);
    bytesRead += s.fileBytes;
    if (payload === undefined || s.info === undefined) {
      problems.push(`${s.path}: ${problem}`);
      continue;
    }
    chunkLength = s.info.chunkLength;
    byIndex.set(s.info.index, payload);
    if (scheme.kind === 'replica') {
      if (createHash('sha256').update(payload.subarray(0, chunkLength)).digest('hex') === hash) return { ok: true, goodShards: byIndex.size, bytesRead, problem: undefined };
      byIndex.delete(s.info.index);
      problems.push(`${s.path}: replica fails the chunk's SHA-256`);
    }
  }
  if (scheme.kind === 'replica' || byIndex.size < need) {
    return { ok: false, goodShards: byIndex.size, bytesRead, problem: `${byIndex.size} good shard(s) of ${need} needed (${schemeTag(scheme)})${problems.length ? `: ${problems.join('; ')}` : ''}` };
  }
  const arr = Array.from({ length: scheme.k + scheme.m }, (_, i) => byIndex.get(i));
  let chunk: Buffer;
  try {
    const all = arr.slice(0, scheme.k).every((b) => b !== undefined) ? (arr as Buffer[]) : await reconstructShards(scheme, arr, Array.from({ length: scheme.k }, (_, i) => i));
    chunk = joinDataShards(all.slice(0, scheme.k), chunkLength);
  } catch (err) {
    return { ok: false, goodShards: byIndex.size, bytesRead, problem: (err as Error).message };
  }
  const ok = createHash('sha256').update(chunk).digest('hex') === hash;
  return { ok, goodShards: byIndex.size, bytesRead, problem: ok ? undefined : 'reassembled chunk fails its SHA-256' };
}

/** Size of a file or 0. */
export async function fileSize(path: string): Promise<number> {
  return (await stat(path).catch(() => ({ size: 0 }))).size;
}
