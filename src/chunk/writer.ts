/**
 * The chunk writer (used by the client's commit pipeline): hash a chunk, split it into k data +
 * m parity shards or n replicas, and send shard i to target i, all in parallel. It reports the
 * chunk's health (shards stored / shards wanted), whether it is readable (k, or 1 replica,
 * stored) and which targets failed, so that the caller can retry those or mark the chunk for
 * repair.
 */
import { createHash } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import { counter } from '../common/metrics.js';
import type { ChunkClients } from './client.js';
import { encodeChunk, releaseShards } from './codec.js';
import { payloadCrc } from './format.js';
import { MAX_CHUNK_BYTES, checkTargets, formatBucketId, shardCount, shardsNeeded, type Scheme, type ShardTarget } from './types.js';

const metrics = {
  chunks: counter('cairn_chunk_writer_chunks_total', 'Chunks written by this process, by outcome', ['outcome']),
  shardFailures: counter('cairn_chunk_writer_shard_failures_total', 'Shard puts that failed, by error code', ['code']),
};

export interface WriteChunkOptions {
  /** SHA-256 of the chunk if the caller already has it (hex); computed otherwise. */
  hash?: string;
  diskmapEpoch?: number;
  timeoutMs?: number;
  /** Replace shards that exist with different content (repair). */
  repair?: boolean;
  /** Only send these shard indexes (repair of some shards); default all. */
  only?: readonly number[];
  /** Called after each shard is stored, with the running count. */
  onShardStored?: (stored: number, wanted: number) => void;
}

export interface ShardFailure {
  index: number;
  target: ShardTarget;
  error: CairnError;
}

export interface WriteChunkResult {
  /** SHA-256 of the chunk, hex: its content address. */
  hash: string;
  chunkLength: number;
  scheme: Scheme;
  wanted: number;
  stored: number;
  /** stored / wanted, 0..1. */
  health: number;
  /** At least k shards (EC) or one replica stored: the chunk can be read back. */
  readable: boolean;
  /** Shards that already existed with the same content (dedup / retries). */
  alreadyPresent: number;
  failed: ShardFailure[];
}

export function chunkHash(chunk: Buffer): string {
  return createHash('sha256').update(chunk).digest('hex');
}

/** Encode and store a chunk on its targets (target i receives shard i). */
export async function writeChunk(
  clients: ChunkClients,
  chunk: Buffer,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  opts: WriteChunkOptions = {},
): Promise<WriteChunkResult> {
  checkTargets(scheme, targets);
  if (chunk.length > MAX_CHUNK_BYTES) throw new CairnError('EFBIG', `chunk of ${chunk.length} bytes exceeds the ${MAX_CHUNK_BYTES}-byte maximum`);
  if (opts.hash !== undefined && !/^[0-9a-f]{64}$/.test(opts.hash)) throw new CairnError('EINVAL', 'chunk hash must be 64 lowercase hex characters');
  // Reed–Solomon runs in libuv's thread pool while this thread hashes: the two overlap.
  const encoding = encodeChunk(chunk, scheme);
  const hash = opts.hash ?? chunkHash(chunk);
  const shards = await encoding;
  const indexes = opts.only ?? shards.map((_, i) => i);
  const wanted = opts.only === undefined ? shardCount(scheme) : indexes.length;
  // Replica payloads are all the same bytes: one CRC.
  const replicaCrc = scheme.kind === 'replica' ? payloadCrc(chunk) : 0;
  let stored = 0;
  let alreadyPresent = 0;
  const failed: ShardFailure[] = [];
  await Promise.all(
    indexes.map(async (i) => {
      const target = targets[i] as ShardTarget;
      const payload = shards[i] as Buffer;
      try {
        const r = await clients.get(target.address).putShard(
          {
            key: { bucket: formatBucketId(target.bucketId), hash, scheme, index: i },
            payloadLength: payload.length,
            chunkLength: chunk.length,
            payloadCrc32: scheme.kind === 'replica' ? replicaCrc : payloadCrc(payload),
            diskmapEpoch: opts.diskmapEpoch ?? 0,
            repair: opts.repair === true,
          },
          payload,
          { timeoutMs: opts.timeoutMs ?? 30_000 },
        );
        stored++;
        if (!r.created) alreadyPresent++;
        opts.onShardStored?.(stored, wanted);
      } catch (err) {
        const e = err instanceof CairnError ? err : new CairnError('EIO', String(err));
        metrics.shardFailures.inc({ code: e.code });
        failed.push({ index: i, target, error: e });
      }
    }),
  );
  // Every shard stored: all their bytes have left, the parity buffer can serve the next chunk.
  if (failed.length === 0) releaseShards(shards, scheme);
  failed.sort((a, b) => a.index - b.index);
  const readable = opts.only === undefined ? stored >= shardsNeeded(scheme) : failed.length === 0;
  metrics.chunks.inc({ outcome: failed.length === 0 ? 'healthy' : readable ? 'degraded' : 'unreadable' });
  return { hash, chunkLength: chunk.length, scheme, wanted, stored, health: wanted === 0 ? 1 : stored / wanted, readable, alreadyPresent, failed };
}
