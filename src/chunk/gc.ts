/**
 * Garbage collection of shards: a shard whose chunk no file version references is deleted once
 * it is older than a grace period. Age is the file's mtime, which a put of an already-stored
 * shard refreshes (dedup), so a commit in flight — shards stored, metadata not yet updated — is
 * never collected as long as it finishes within the grace period. Which chunks are referenced is
 * asked of the caller in batches (the metadata service provides it), so memory stays bounded.
 * `keepNewerThanMs` (the metadata's safe point: the grant time of the oldest live write lease)
 * keeps every shard stored since then whatever the grace period, so a commit in flight under a
 * live lease never loses its chunks however long it takes.
 */
import { stat } from 'node:fs/promises';
import { CairnError } from '../common/errors.js';
import { logger } from '../common/log.js';
import { counter } from '../common/metrics.js';
import type { ChunkStore, LocalShard } from './store.js';
import type { ShardKey } from './types.js';

const log = logger('chunk-gc');

const metrics = {
  deleted: counter('cairn_chunk_gc_deleted_total', 'Unreferenced shards deleted by GC'),
  freed: counter('cairn_chunk_gc_freed_bytes_total', 'Bytes freed by GC'),
  scanned: counter('cairn_chunk_gc_scanned_total', 'Shards looked at by GC'),
};

export interface GcOptions {
  /** Shards younger than this (by mtime) are never collected. */
  graceMs: number;
  /** Of these chunk hashes (hex), which are referenced by some file version? */
  isReferenced: (hashes: string[]) => Promise<ReadonlySet<string>>;
  /** Hashes asked about per call (default 1000). */
  batchSize?: number;
  /** Report what would be deleted, delete nothing. */
  dryRun?: boolean;
  /** Shards whose mtime is at or after this wall-clock time are kept (the safe point of commits in flight). */
  keepNewerThanMs?: number;
  now?: () => number;
}

export interface GcReport {
  scanned: number;
  keptYoung: number;
  keptReferenced: number;
  deleted: number;
  bytesFreed: number;
  /** Keys deleted (or, with dryRun, that would be), at most 1000 listed. */
  deletedKeys: ShardKey[];
}

const MAX_KEYS_REPORTED = 1000;

export async function collectGarbage(store: ChunkStore, opts: GcOptions): Promise<GcReport> {
  if (!(opts.graceMs >= 0)) throw new CairnError('EINVAL', 'GC grace period must be a non-negative number of milliseconds');
  const batchSize = opts.batchSize ?? 1000;
  const now = opts.now ?? Date.now;
  const report: GcReport = { scanned: 0, keptYoung: 0, keptReferenced: 0, deleted: 0, bytesFreed: 0, deletedKeys: [] };
  let batch: Array<{ shard: LocalShard; key: ShardKey }> = [];

  /** The store keeps a shard whose mtime is at or after this: the grace period, and the safe point if earlier. */
  const cutoff = (): number => Math.min(now() - opts.graceMs, opts.keepNewerThanMs ?? Number.POSITIVE_INFINITY);
  const old = async (path: string): Promise<{ size: number } | undefined> => {
    const st = await stat(path).catch(() => undefined);
    if (st === undefined) return undefined;
    const pastSafePoint = opts.keepNewerThanMs === undefined || st.mtimeMs < opts.keepNewerThanMs;
    return now() - st.mtimeMs >= opts.graceMs && pastSafePoint ? { size: st.size } : undefined;
  };

  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const hashes = [...new Set(batch.map((b) => b.key.hash))];
    const referenced = await opts.isReferenced(hashes);
    for (const { shard, key } of batch) {
      if (referenced.has(key.hash)) {
        report.keptReferenced++;
        continue;
      }
      // Re-check the age just before deleting: a put may have refreshed it meanwhile. The
      // store re-checks it once more under the shard's lock, which a deduplicating put takes too.
      const still = await old(shard.path);
      if (still === undefined) {
        report.keptYoung++;
        continue;
      }
      if (opts.dryRun !== true) {
        if (!(await store.deleteShard(key, { olderThanMs: cutoff() }))) {
          report.keptYoung++;
          continue;
        }
        metrics.deleted.inc();
        metrics.freed.inc(still.size);
      }
      report.deleted++;
      report.bytesFreed += still.size;
      if (report.deletedKeys.length < MAX_KEYS_REPORTED) report.deletedKeys.push(key);
    }
    batch = [];
  };

  for await (const shard of store.walkShards()) {
    if (shard.key === undefined) continue; // not a shard name: scrub quarantines it
    report.scanned++;
    metrics.scanned.inc();
    if ((await old(shard.path)) === undefined) {
      report.keptYoung++;
      continue;
    }
    batch.push({ shard, key: shard.key });
    if (batch.length >= batchSize) await flush();
  }
  await flush();
  log.info({ ...report, deletedKeys: report.deletedKeys.length }, 'gc pass done');
  return report;
}
