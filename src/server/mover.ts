/**
 * The data mover: executes the slot moves of diskmap epochs for the buckets this node holds.
 * A move `{kind: 'move', group, index, from, to}` says shard `index` of every chunk of `group`
 * leaves bucket `from`: each shard found in `from` on this node is copied to the bucket that holds
 * slot (group, index) in the CURRENT map (that is `to`, or where later epochs moved it on — so a
 * chain of moves processed late or out of order still ends in the right place, and a slot moved
 * back to `from` is left alone), on whichever node serves it (a put of an existing identical
 * shard is a no-op), and deleted from `from` only once the copy is acknowledged (durable). Moves of kind 'repair' (the source is lost) and 'new'
 * (filled by new writes) are not copies and are left to repair and to writers.
 *
 * A bucket a slot left may be given to another group in the same change (that is how a new group
 * makes room on an old disk): shards written into `from` under the map of the change or later
 * (their header records the epoch they were written at) belong to that new owner and stay.
 *
 * Idempotent, so it is safe to run again: after a restart, and periodically for the latest epoch
 * (a writer with a stale view may still have put a shard into `from` after the first pass).
 * Memory: one shard in flight (a shard is at most a chunk, 64 MiB; 4 MiB / k with the defaults).
 */
import { z } from 'zod';
import type { Logger } from '../common/log.js';
import { counter } from '../common/metrics.js';
import { parseWith } from '../common/config.js';
import type { ChunkClients } from '../chunk/client.js';
import type { ChunkStore } from '../chunk/store.js';
import { parseBucketId, type BucketId } from '../diskmap/index.js';

const metrics = {
  moved: counter('cairn_mover_shards_moved_total', 'Shards copied to their new bucket and dropped from the old one'),
  failed: counter('cairn_mover_shard_failures_total', 'Shard moves that failed (retried on the next pass)'),
};

const moveSchema = z.object({
  kind: z.enum(['move', 'repair', 'new']),
  group: z.number().int().min(0),
  index: z.number().int().min(0),
  from: z.string().nullable(),
  to: z.string(),
});
const diffMovesSchema = z.object({ slotMoves: z.array(moveSchema).default([]) }).loose();
export type SlotMoveText = z.infer<typeof moveSchema>;

/** The slot moves recorded in a diskmap change's diff JSON ("{}" or garbage: none, with a log line). */
export function movesOfDiff(diffJson: string, log?: Logger): SlotMoveText[] {
  try {
    return parseWith(diffMovesSchema, JSON.parse(diffJson), 'diskmap diff').slotMoves;
  } catch (err) {
    log?.warn({ err: String(err) }, 'diskmap diff unreadable; no moves taken from it');
    return [];
  }
}

export interface MoveReport {
  moved: number;
  failed: number;
  /** Shards found in a `from` bucket that were written for its new owner, left in place. */
  kept: number;
}

/**
 * Copy-then-delete every shard of this node's `from` buckets (one epoch's moves) to the current
 * holder of its slot (`holderOf(group, index)`, bucket text; undefined: the slot is gone, skip).
 */
export async function executeMoves(
  moves: readonly SlotMoveText[],
  epochs: { change: number; current: number },
  store: ChunkStore,
  clients: ChunkClients,
  addressOf: (b: BucketId) => string,
  holderOf: (group: number, index: number) => string | undefined,
  log: Logger,
): Promise<MoveReport> {
  const report: MoveReport = { moved: 0, failed: 0, kept: 0 };
  const epoch = epochs.current;
  const mine = new Set(store.buckets());
  for (const m of moves) {
    if (m.kind !== 'move' || m.from === null || !mine.has(m.from)) continue;
    const toText = holderOf(m.group, m.index);
    if (toText === undefined || toText === m.from) continue;
    const to = parseBucketId(toText);
    let after = '';
    for (;;) {
      const page = await store.listBucket(m.from, after, 1000);
      for (const s of page.shards) {
        if (s.key.index !== m.index) continue;
        try {
          const { info, payload } = await store.readShard(s.key);
          if (info.diskmapEpoch >= epochs.change) {
            // Written for the bucket's owner under the change's map or a later one: not ours to move.
            report.kept++;
            continue;
          }
          await clients.get(addressOf(to)).putShard(
            { key: { ...s.key, bucket: toText }, payloadLength: payload.length, chunkLength: info.chunkLength, payloadCrc32: info.payloadCrc32, diskmapEpoch: epoch },
            payload,
            { timeoutMs: 60_000 },
          );
          await store.deleteShard(s.key);
          report.moved++;
          metrics.moved.inc();
        } catch (err) {
          report.failed++;
          metrics.failed.inc();
          log.warn({ from: m.from, to: toText, hash: s.key.hash, err: String(err) }, 'shard move failed; retried on the next pass');
        }
      }
      if (page.next === '') break;
      after = page.next;
    }
  }
  if (report.moved > 0 || report.failed > 0) log.info({ epoch, ...report }, 'diskmap moves executed');
  return report;
}
