/**
 * The chunk writer (used by the client's commit pipeline): hash a chunk, split it into k data +
 * m parity shards or n replicas, and send shard i to target i, all in parallel. It reports the
 * chunk's health (shards stored / shards wanted), whether it is readable (k, or 1 replica,
 * stored) and which targets failed, so that the caller can retry those or mark the chunk for
 * repair.
 *
 * With `handoff`, a shard whose home target fails goes to a handoff disk instead (src/chunk/
 * handoff.ts), with more copies where the live disks are too few, until the chunk would survive
 * the loss of any one more disk: the write completes while a node or disk is down, and
 * `protected` says whether that promise holds.
 */
import { createHash } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import { counter } from '../common/metrics.js';
import type { ChunkClients } from './client.js';
import { encodeChunk, releaseShards } from './codec.js';
import { payloadCrc } from './format.js';
import { MAX_CHUNK_BYTES, checkTargets, formatBucketId, shardCount, shardsNeeded, type Scheme, type ShardTarget } from './types.js';
import { diskKeyOf, type BucketId } from '../diskmap/bucket-id.js';
import { chooseHandoffs, hedgeGroup, survivesOneLoss, HEDGE_AFTER_MS, type HandoffOptions, type Placement } from './handoff.js';

const metrics = {
  chunks: counter('cairn_chunk_writer_chunks_total', 'Chunks written by this process, by outcome', ['outcome']),
  shardFailures: counter('cairn_chunk_writer_shard_failures_total', 'Shard puts that failed, by error code', ['code']),
  handoffs: counter('cairn_chunk_writer_handoff_shards_total', 'Shards stored on a handoff disk because their home failed'),
};

export type { HandoffOptions } from './handoff.js';

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
  /** Store shards whose home fails on handoff disks (not with `only`). */
  handoff?: HandoffOptions;
  /** With handoff: give a home put up (hand it off) this long after another put finished (default HEDGE_AFTER_MS). */
  hedgeAfterMs?: number;
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
  /** Shards stored on handoff disks instead of (or besides) their home. */
  handoffs: Array<{ index: number; bucketId: BucketId }>;
  /**
   * The stored shards survive the loss of any one more disk (always true when every home took
   * its shard; with handoff, false when the live disks are too few — `unprotected` says why).
   */
  protected: boolean;
  unprotected?: string;
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
  const placed: Placement = new Map();
  const place = (t: ShardTarget, i: number): void => {
    const key = diskKeyOf(t.bucketId);
    const set = placed.get(key) ?? new Set<number>();
    set.add(i);
    placed.set(key, set);
  };
  let putsFailed = 0;
  const put = async (i: number, target: ShardTarget): Promise<CairnError | undefined> => {
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
      place(target, i);
      if (!r.created) alreadyPresent++;
      return undefined;
    } catch (err) {
      const e = err instanceof CairnError ? err : new CairnError('EIO', String(err));
      metrics.shardFailures.inc({ code: e.code });
      putsFailed++;
      return e;
    }
  };
  // With handoff, a home that hangs (a paused node) is given up on after a short hedge.
  const hedge = opts.handoff !== undefined && opts.only === undefined ? hedgeGroup(opts.hedgeAfterMs ?? HEDGE_AFTER_MS, (_a, why) => new CairnError('ETIMEDOUT', why)) : undefined;
  await Promise.all(
    indexes.map(async (i) => {
      const target = targets[i] as ShardTarget;
      const e = hedge === undefined ? await put(i, target) : await hedge.run(target.address, () => put(i, target));
      if (e !== undefined && hedge !== undefined) putsFailed++; // a put given up on may still be sending its payload
      if (e === undefined) {
        stored++;
        opts.onShardStored?.(stored, wanted);
      } else failed.push({ index: i, target, error: e });
    }),
  );
  const handoffs: Array<{ index: number; bucketId: BucketId }> = [];
  const k = shardsNeeded(scheme);
  if (opts.handoff !== undefined && opts.only === undefined && failed.length > 0) {
    const h = opts.handoff;
    const dead = new Set(failed.map((f) => diskKeyOf(f.target.bucketId)));
    const missing = (): number[] => failed.map((f) => f.index).filter((i) => ![...placed.values()].some((s) => s.has(i)));
    for (let round = 0; round < 4; round++) {
      if (missing().length === 0 && survivesOneLoss(placed, k).ok) break;
      const choices = chooseHandoffs(placed, missing(), k, (i) => h.candidates(i), dead);
      if (choices.length === 0) break;
      await Promise.all(
        choices.map(async (c) => {
          const t: ShardTarget = { bucketId: c.disk.bucket, address: h.addressOf(c.disk.bucket) };
          const e = await put(c.index, t);
          if (e === undefined) {
            handoffs.push({ index: c.index, bucketId: c.disk.bucket });
            metrics.handoffs.inc();
          } else dead.add(c.disk.key);
        }),
      );
    }
    // A shard stored on a handoff disk counts as stored; its home failure stays listed for repair.
    const remaining = new Set(missing());
    for (const f of failed) {
      if (!remaining.has(f.index)) {
        stored++;
        opts.onShardStored?.(stored, wanted);
      }
    }
  }
  // Every put succeeded: all their bytes have left, the parity buffer can serve the next chunk.
  if (putsFailed === 0) releaseShards(shards, scheme);
  failed.sort((a, b) => a.index - b.index);
  const readable = opts.only === undefined ? stored >= k : failed.length === 0;
  const verdict = failed.length === 0 ? { ok: true } : opts.handoff !== undefined ? survivesOneLoss(placed, k) : { ok: false, reason: `${failed.length} of ${wanted} shards could not be stored` };
  metrics.chunks.inc({ outcome: failed.length === 0 ? 'healthy' : verdict.ok ? 'handoff' : readable ? 'degraded' : 'unreadable' });
  return {
    hash,
    chunkLength: chunk.length,
    scheme,
    wanted,
    stored,
    health: wanted === 0 ? 1 : stored / wanted,
    readable,
    alreadyPresent,
    failed,
    handoffs,
    protected: verdict.ok,
    ...(verdict.ok ? {} : { unprotected: verdict.reason ?? 'not every shard could be stored' }),
  };
}
