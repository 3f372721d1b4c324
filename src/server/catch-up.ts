/**
 * Catch-up: guest shards go home. While a node or disk was down, writers stored the shards meant
 * for it on handoff disks (src/chunk/handoff.ts); those guests are the record of what it missed.
 * Each node walks its own disks' handoff buckets — never the whole disk, so the work is
 * proportional to the writes made during the outage — and for every chunk found there:
 *
 *  1. copies each guest whose home bucket (the chunk's group in the current map, slot = index)
 *     lacks it to that home, if the home answers (a put of an identical shard is a no-op);
 *  2. drops its guests once every home slot of the chunk holds its shard (full health at home).
 *     Not before: with EC 2+1 on 2 live disks each guest is a copy that keeps the chunk readable
 *     after one more loss, and dropping it while another home is still down would lose that.
 *
 * Idempotent and safe to run at any time on every node (the daemon runs it every few seconds);
 * a pass reports how many guests are still held, which `cairn status` shows.
 */
import type { Logger } from '../common/log.js';
import { counter, gauge } from '../common/metrics.js';
import type { ChunkClients } from '../chunk/client.js';
import type { ChunkStore } from '../chunk/store.js';
import { HANDOFF_BUCKET } from '../chunk/handoff.js';
import { formatBucketId, schemeEquals, shardCount, type Scheme, type ShardKey } from '../chunk/types.js';
import { groupForKey, type BucketId, type Diskmap } from '../diskmap/index.js';

const metrics = {
  returned: counter('cairn_catchup_shards_returned_total', 'Guest shards copied to their home bucket'),
  dropped: counter('cairn_catchup_guests_dropped_total', 'Guest shards dropped once their chunk was whole at home'),
  held: gauge('cairn_catchup_guests_held', 'Guest shards this node holds for homes that are down (last pass)'),
  heldBytes: gauge('cairn_catchup_guest_bytes_held', 'Bytes of guest shards this node holds (last pass)'),
};

export interface CatchUpReport {
  /** Guest shards copied home this pass. */
  returned: number;
  /** Guest shards dropped (their chunk is whole at home). */
  dropped: number;
  /** Guest shards still held after the pass (homes down, or failed). */
  held: number;
  heldBytes: number;
  /** Chunks whose guests could not be handled (no group for them in the map, errors). */
  failed: number;
}

/** The handoff buckets (text) of this store's serving disks that exist. */
export function handoffBucketsOf(store: ChunkStore): string[] {
  const present = new Set(store.buckets());
  const out: string[] = [];
  for (const d of store.diskStatus()) {
    if (d.state !== 'ok') continue;
    const b = formatBucketId(store.bucketIdOn(d.path, HANDOFF_BUCKET));
    if (present.has(b)) out.push(b);
  }
  return out;
}

/** One catch-up pass over this node's handoff buckets. */
export async function catchUpPass(
  store: ChunkStore,
  clients: ChunkClients,
  dm: Diskmap,
  addressOf: (b: BucketId) => string,
  log: Logger,
  opts: { timeoutMs?: number; stopped?: () => boolean } = {},
): Promise<CatchUpReport> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const report: CatchUpReport = { returned: 0, dropped: 0, held: 0, heldBytes: 0, failed: 0 };
  for (const bucket of handoffBucketsOf(store)) {
    // Guests of one chunk sort together (file names start with the hash).
    let after = '';
    let batch: Array<{ key: ShardKey; fileBytes: number }> = [];
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      const guests = batch;
      batch = [];
      try {
        const r = await settleChunk(store, clients, dm, addressOf, guests, timeoutMs);
        report.returned += r.returned;
        report.dropped += r.dropped;
        if (r.dropped === 0) {
          report.held += guests.length;
          report.heldBytes += guests.reduce((a, g) => a + g.fileBytes, 0);
        }
      } catch (err) {
        report.failed++;
        report.held += guests.length;
        report.heldBytes += guests.reduce((a, g) => a + g.fileBytes, 0);
        log.debug({ hash: guests[0]?.key.hash, err: String(err) }, 'guest shards kept: their home is not back yet');
      }
    };
    for (;;) {
      if (opts.stopped?.() === true) return report;
      const page = await store.listBucket(bucket, after, 1000);
      for (const s of page.shards) {
        const last = batch[batch.length - 1];
        if (last !== undefined && (last.key.hash !== s.key.hash || !schemeEquals(last.key.scheme, s.key.scheme))) await flush();
        batch.push({ key: s.key, fileBytes: s.fileBytes });
      }
      if (page.next === '') break;
      after = page.next;
    }
    await flush();
  }
  metrics.held.set(report.held);
  metrics.heldBytes.set(report.heldBytes);
  if (report.returned > 0 || report.dropped > 0) log.info(report, 'catch-up: guest shards returned home');
  return report;
}

async function settleChunk(
  store: ChunkStore,
  clients: ChunkClients,
  dm: Diskmap,
  addressOf: (b: BucketId) => string,
  guests: ReadonlyArray<{ key: ShardKey }>,
  timeoutMs: number,
): Promise<{ returned: number; dropped: number }> {
  const first = guests[0]!.key;
  const scheme = first.scheme as Scheme;
  const g = groupForKey(dm, Buffer.from(first.hash, 'hex'));
  if (!schemeEquals(dm.scheme as Scheme, scheme) || g.buckets.length !== shardCount(scheme)) {
    throw new Error(`chunk ${first.hash.slice(0, 16)}… (${JSON.stringify(scheme)}) has no group of its scheme in diskmap epoch ${dm.epoch}`);
  }
  const homeHas = async (index: number): Promise<boolean> => {
    const b = g.buckets[index]!;
    try {
      await clients.get(addressOf(b)).statShard({ bucket: formatBucketId(b), hash: first.hash, scheme, index }, { timeoutMs });
      return true;
    } catch {
      return false;
    }
  };
  let returned = 0;
  for (const { key } of guests) {
    if (await homeHas(key.index)) continue;
    const home = g.buckets[key.index]!;
    const { info, payload } = await store.readShard(key);
    await clients.get(addressOf(home)).putShard(
      { key: { ...key, bucket: formatBucketId(home) }, payloadLength: payload.length, chunkLength: info.chunkLength, payloadCrc32: info.payloadCrc32, diskmapEpoch: dm.epoch },
      payload,
      { timeoutMs },
    );
    returned++;
    metrics.returned.inc();
  }
  // Drop the guests only once the chunk is whole at home.
  for (let i = 0; i < g.buckets.length; i++) if (!(await homeHas(i))) return { returned, dropped: 0 };
  let dropped = 0;
  for (const { key } of guests) {
    if (await store.deleteShard(key)) {
      dropped++;
      metrics.dropped.inc();
    }
  }
  return { returned, dropped };
}
