/**
 * Scrub: walk every shard on this node's disks at a throttled rate (bytes per second), verify
 * its header and payload CRC-32 (and, for replicas, the chunk's SHA-256), move bad shards to
 * quarantine (never deleting evidence) and rebuild them from the chunk's other shards. With
 * checkPeers, a healthy local shard also looks at its siblings on other nodes (headers only) and
 * rebuilds the ones that are missing — the holder of the lowest healthy index does it, so one
 * node repairs each chunk. The placement of a chunk comes from an injected `locate` function
 * (the node asks the diskmap); without it, scrub only verifies and quarantines.
 */
import { createHash } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import { logger } from '../common/log.js';
import { counter, gauge } from '../common/metrics.js';
import type { ChunkClients } from './client.js';
import { probeChunk, repairChunk } from './repair.js';
import type { ChunkStore, LocalShard } from './store.js';
import { formatBucketId, schemeEquals, type Scheme, type ShardTarget } from './types.js';

const log = logger('chunk-scrub');

const metrics = {
  shards: counter('cairn_chunk_scrub_shards_total', 'Shards checked by scrub, by result', ['result']),
  bytes: counter('cairn_chunk_scrub_bytes_total', 'Payload bytes read by scrub'),
  quarantined: counter('cairn_chunk_scrub_quarantined_total', 'Shards scrub moved to quarantine'),
  rebuilt: counter('cairn_chunk_scrub_rebuilt_total', 'Shards rebuilt by scrub (local or on peers)'),
  rebuildFailed: counter('cairn_chunk_scrub_rebuild_failed_total', 'Shard rebuilds that failed'),
  lastPassMs: gauge('cairn_chunk_scrub_last_pass_timestamp_ms', 'When the last complete scrub pass ended (ms since epoch)'),
};

export interface ChunkLocation {
  scheme: Scheme;
  targets: ShardTarget[];
}

/** Where the shards of a chunk live; undefined if the caller does not know (scrub then only quarantines). */
export type LocateChunk = (hash: string, scheme: Scheme, bucket: string) => Promise<ChunkLocation | undefined>;

export interface ScrubOptions {
  /** Read at most this many payload bytes per second. */
  rateBytesPerSec: number;
  locate?: LocateChunk;
  /** Needed with locate: how to reach the other shards. */
  clients?: ChunkClients;
  /** Also check the other shards of each chunk (headers) and rebuild missing ones. */
  checkPeers?: boolean;
  timeoutMs?: number;
}

export interface ScrubProblem {
  path: string;
  reason: string;
  rebuilt: boolean;
}

export interface ScrubReport {
  shardsChecked: number;
  bytesChecked: number;
  bad: number;
  quarantined: number;
  rebuilt: number;
  rebuildFailed: number;
  problems: ScrubProblem[];
}

/** Upper bound on problems kept in one report (the counters keep counting). */
const MAX_PROBLEMS_REPORTED = 1000;
/** Tries of one rebuild before scrub leaves the chunk to the repair job, and the first pause between them. */
const REBUILD_ATTEMPTS = 4;
const REBUILD_RETRY_BASE_MS = 500;

export class Scrubber {
  private readonly store: ChunkStore;
  private readonly opts: ScrubOptions;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<ScrubReport> | undefined;
  private stopped = false;

  constructor(store: ChunkStore, opts: ScrubOptions) {
    if (!(opts.rateBytesPerSec > 0)) throw new CairnError('EINVAL', 'scrub rate must be a positive number of bytes per second');
    if (opts.locate !== undefined && opts.clients === undefined) throw new CairnError('EINVAL', 'scrub with locate needs clients to reach the other shards');
    this.store = store;
    this.opts = opts;
  }

  /** Run a pass every intervalMs (the first one now) until stop(). */
  start(intervalMs: number): void {
    this.stopped = false;
    const loop = (): void => {
      if (this.stopped) return;
      this.runOnce()
        .catch((err: unknown) => log.error({ err: String(err) }, 'scrub pass failed'))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(loop, intervalMs);
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One full pass over every shard. Concurrent calls share the pass in progress. */
  runOnce(): Promise<ScrubReport> {
    if (this.running === undefined) {
      this.running = this.pass().finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  private async pass(): Promise<ScrubReport> {
    const report: ScrubReport = { shardsChecked: 0, bytesChecked: 0, bad: 0, quarantined: 0, rebuilt: 0, rebuildFailed: 0, problems: [] };
    await this.store.checkDisks();
    const started = Date.now();
    for await (const shard of this.store.walkShards()) {
      if (this.stopped) break;
      await this.checkOne(shard, report);
      // Throttle: never ahead of rate × elapsed.
      const aheadMs = (report.bytesChecked / this.opts.rateBytesPerSec) * 1000 - (Date.now() - started);
      if (aheadMs > 0) await new Promise((r) => setTimeout(r, aheadMs));
    }
    metrics.lastPassMs.set(Date.now());
    return report;
  }

  private note(report: ScrubReport, p: ScrubProblem): void {
    if (report.problems.length < MAX_PROBLEMS_REPORTED) report.problems.push(p);
  }

  private async checkOne(shard: LocalShard, report: ScrubReport): Promise<void> {
    report.shardsChecked++;
    const key = shard.key;
    if (key === undefined) {
      // Not a shard name: keep it as evidence, out of the way.
      report.bad++;
      metrics.shards.inc({ result: 'bad-name' });
      await this.store.quarantine(shard, 'unknown-file').then(() => report.quarantined++, () => undefined);
      metrics.quarantined.inc();
      this.note(report, { path: shard.path, reason: 'not a shard file name', rebuilt: false });
      return;
    }
    let reason: string | undefined;
    try {
      const { info, payload } = await this.store.readShard(key);
      report.bytesChecked += payload.length;
      metrics.bytes.inc(payload.length);
      if (key.scheme.kind === 'replica' && createHash('sha256').update(payload).digest('hex') !== key.hash) {
        reason = 'replica does not match the chunk hash';
      } else if (!schemeEquals(info.scheme, key.scheme)) reason = 'header scheme differs from file name';
    } catch (err) {
      if (err instanceof CairnError && err.code === 'ECORRUPT') reason = err.message;
      else if (err instanceof CairnError && err.code === 'ENOENT') return; // deleted meanwhile (GC)
      else {
        metrics.shards.inc({ result: 'error' });
        this.note(report, { path: shard.path, reason: `could not check: ${(err as Error).message}`, rebuilt: false });
        return;
      }
    }
    if (reason === undefined) {
      metrics.shards.inc({ result: 'ok' });
      if (this.opts.checkPeers === true) await this.checkPeers(key, report);
      return;
    }
    report.bad++;
    metrics.shards.inc({ result: 'bad' });
    log.warn({ path: shard.path, reason }, 'scrub found a bad shard');
    await this.store.quarantine(shard, 'scrub');
    report.quarantined++;
    metrics.quarantined.inc();
    const rebuilt = await this.rebuild(key.hash, key.scheme, key.bucket, [key.index], report);
    this.note(report, { path: shard.path, reason, rebuilt });
  }

  /**
   * Rebuild the shards `knownBad` of a chunk from its others. A shard quarantined here is gone from
   * this disk, so a later pass would not see it again: a rebuild that fails (a peer slow or
   * restarting) is tried again, REBUILD_ATTEMPTS times in all with a growing pause, before it is
   * left to the repair job.
   */
  private async rebuild(hash: string, scheme: Scheme, bucket: string, knownBad: number[], report: ScrubReport): Promise<boolean> {
    if (this.opts.locate === undefined || this.opts.clients === undefined) return false;
    for (let attempt = 1; ; attempt++) {
      let failed = 0;
      try {
        const loc = await this.opts.locate(hash, scheme, bucket);
        if (loc === undefined) return false;
        const r = await repairChunk(this.opts.clients, hash, loc.scheme, loc.targets, { knownBad, timeoutMs: this.opts.timeoutMs });
        report.rebuilt += r.rewritten.length;
        metrics.rebuilt.inc(r.rewritten.length);
        if (r.failed.length === 0) return true;
        failed = r.failed.length;
        knownBad = r.failed.map((f) => f.index);
      } catch (err) {
        failed = 1;
        log.warn({ hash, attempt, err: String(err) }, 'scrub could not rebuild a chunk');
      }
      if (attempt >= REBUILD_ATTEMPTS || this.stopped) {
        report.rebuildFailed += failed;
        metrics.rebuildFailed.inc(failed);
        log.error({ hash, attempts: attempt }, 'scrub gave up rebuilding a chunk; the repair job or the next writer must heal it');
        return false;
      }
      await new Promise((res) => setTimeout(res, REBUILD_RETRY_BASE_MS * 2 ** (attempt - 1)));
    }
  }

  private async checkPeers(key: { hash: string; scheme: Scheme; bucket: string; index: number }, report: ScrubReport): Promise<void> {
    if (this.opts.locate === undefined || this.opts.clients === undefined) return;
    let loc: ChunkLocation | undefined;
    try {
      loc = await this.opts.locate(key.hash, key.scheme, key.bucket);
    } catch {
      return;
    }
    if (loc === undefined || !schemeEquals(loc.scheme, key.scheme)) return;
    const probe = await probeChunk(this.opts.clients, key.hash, loc.scheme, loc.targets, { timeoutMs: this.opts.timeoutMs });
    const missing = probe.filter((p) => !p.ok && p.error?.code !== 'EUNAVAIL').map((p) => p.index);
    if (missing.length === 0) return;
    // Only the holder of the lowest healthy shard repairs, so that one node does each chunk.
    const lowestOk = probe.find((p) => p.ok)?.index;
    const mine = loc.targets[key.index];
    if (lowestOk !== key.index || mine === undefined || formatBucketId(mine.bucketId) !== key.bucket) return;
    const ok = await this.rebuild(key.hash, loc.scheme, key.bucket, missing, report);
    this.note(report, { path: `${key.hash} shards ${missing.join(',')}`, reason: 'missing on peers', rebuilt: ok });
  }
}
