/**
 * Chunk repair: find which shards of a chunk are missing or damaged on their targets, read the
 * chunk (degraded if need be, always verified against its hash), re-encode it and rewrite only
 * those shards (repair puts: a damaged shard is replaced, the old file kept in quarantine).
 * Used by scrub, and by whoever rebuilds after a disk loss (targets from the new diskmap).
 */
import { CairnError } from '../common/errors.js';
import { counter } from '../common/metrics.js';
import type { ChunkClients } from './client.js';
import { readChunk, readChunkDetailed } from './reader.js';
import { diskKeyOf } from '../diskmap/bucket-id.js';
import type { HandoffOptions } from './handoff.js';
import { checkTargets, formatBucketId, type Scheme, type ShardTarget } from './types.js';
import { writeChunk, type ShardFailure } from './writer.js';

const metrics = {
  rewritten: counter('cairn_chunk_repair_shards_rewritten_total', 'Shards rewritten by chunk repair'),
};

export interface RepairResult {
  /** Shard indexes found missing or damaged. */
  needed: number[];
  /** Shard indexes rewritten successfully. */
  rewritten: number[];
  failed: ShardFailure[];
}

export interface RepairOptions {
  timeoutMs?: number;
  diskmapEpoch?: number;
  /** Shards the caller already knows to be bad (e.g. the one scrub just quarantined). */
  knownBad?: readonly number[];
}

/** Which shards of a chunk are missing or have a bad header (cheap: headers only). */
export async function probeChunk(
  clients: ChunkClients,
  hash: string,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  opts: { timeoutMs?: number } = {},
): Promise<Array<{ index: number; ok: boolean; error?: CairnError }>> {
  checkTargets(scheme, targets);
  return Promise.all(
    targets.map(async (t, index) => {
      try {
        const info = await clients.get(t.address).statShard({ bucket: formatBucketId(t.bucketId), hash, scheme, index }, { timeoutMs: opts.timeoutMs ?? 10_000 });
        if (info.hash !== hash || info.index !== index) return { index, ok: false, error: new CairnError('ECORRUPT', 'wrong header') };
        return { index, ok: true };
      } catch (err) {
        return { index, ok: false, error: err instanceof CairnError ? err : new CairnError('EIO', String(err)) };
      }
    }),
  );
}

/** Rewrite the missing or damaged shards of a chunk on their targets. */
export async function repairChunk(
  clients: ChunkClients,
  hash: string,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  opts: RepairOptions = {},
): Promise<RepairResult> {
  const probe = await probeChunk(clients, hash, scheme, targets, opts);
  const needed = new Set<number>(opts.knownBad ?? []);
  for (const p of probe) if (!p.ok && p.error?.code !== 'EUNAVAIL') needed.add(p.index);
  const read = await readChunkDetailed(clients, hash, scheme, targets, { timeoutMs: opts.timeoutMs });
  for (const p of read.problems) if (p.error.code === 'ECORRUPT' || p.error.code === 'ENOENT') needed.add(p.index);
  const list = [...needed].sort((a, b) => a - b);
  if (list.length === 0) return { needed: [], rewritten: [], failed: [] };
  const w = await writeChunk(clients, read.data, scheme, targets, {
    hash,
    only: list,
    repair: true,
    diskmapEpoch: opts.diskmapEpoch ?? 0,
    timeoutMs: opts.timeoutMs,
  });
  const failedSet = new Set(w.failed.map((f) => f.index));
  const rewritten = list.filter((i) => !failedSet.has(i));
  metrics.rewritten.inc(rewritten.length);
  return { needed: list, rewritten, failed: w.failed };
}

/**
 * Rebuild the shards of a chunk whose home disks are lost (failed, or their node down past the
 * grace) onto handoff disks (src/chunk/handoff.ts), so that the chunk is at full redundancy
 * again without waiting for the disk to come back; catch-up moves them home once a disk holds
 * the slot again. Shards already present (at home, or as a guest) are not rewritten: the check
 * is a header stat per shard; the chunk is read (degraded, verified) only when one is missing.
 * Returns the indexes rebuilt (empty when the chunk needed nothing).
 */
export async function rebuildLost(
  clients: ChunkClients,
  hash: string,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  handoff: HandoffOptions,
  lostDiskKeys: ReadonlySet<string>,
  opts: { timeoutMs?: number; diskmapEpoch?: number } = {},
): Promise<{ rebuilt: number[]; read: boolean }> {
  checkTargets(scheme, targets);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const has = (bucket: ShardTarget['bucketId'], address: string, index: number): Promise<boolean> =>
    clients
      .get(address)
      .statShard({ bucket: formatBucketId(bucket), hash, scheme, index }, { timeoutMs })
      .then(
        (info) => info.hash === hash && info.index === index,
        () => false,
      );
  const missing: number[] = [];
  await Promise.all(
    targets.map(async (t, index) => {
      if (!lostDiskKeys.has(diskKeyOf(t.bucketId)) && (await has(t.bucketId, t.address, index))) return;
      for (const c of handoff.candidates(index)) if (!lostDiskKeys.has(c.key) && (await has(c.bucket, handoff.addressOf(c.bucket), index))) return;
      missing.push(index);
    }),
  );
  if (missing.length === 0) return { rebuilt: [], read: false };
  const data = await readChunk(clients, hash, scheme, targets, { timeoutMs, handoff });
  // The writer puts every shard: present ones are no-ops (same content), lost homes fail and go to
  // handoff disks, with copies where the live disks are too few.
  const w = await writeChunk(clients, data, scheme, targets, { hash, handoff, timeoutMs, diskmapEpoch: opts.diskmapEpoch ?? 0 });
  if (!w.protected) throw new CairnError('EUNAVAIL', `chunk ${hash.slice(0, 16)}… could not be rebuilt to full redundancy: ${w.unprotected ?? 'too few live disks'}`);
  metrics.rewritten.inc(missing.length);
  return { rebuilt: missing.sort((a, b) => a - b), read: true };
}
