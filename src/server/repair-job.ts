/**
 * The repair job (run by the Raft leader's cluster part): rebuilds, elsewhere, the shards of every
 * disk that is lost — a disk its node reports failed (I/O errors, directory gone, wrong label), or
 * every disk of a node that has not answered for longer than the grace (daemon.repair.downGraceMs,
 * default 600 s like Ceph's mon_osd_down_out_interval, so a reboot never starts a rebuild).
 *
 * Where to: the lost slots' shards go to handoff disks (src/chunk/handoff.ts, via
 * src/chunk/repair.ts rebuildLost), the same place writers put shards while a home is down;
 * catch-up (catch-up.ts) moves them home once a disk holds the slot again (the disk returns, or
 * the operator's replacement takes the slot in a new map). `planLostSlots` is the one place that
 * decides which chunks need work; when the diskmap gains spare buckets for rebuilds, it is the
 * function to point at the diskmap's plan.
 *
 * Which chunks: the current layouts from the metadata (scanLayouts, by inode), each chunk whose
 * group has a bucket on a lost disk. A counting pass first (metadata only) gives the bytes to
 * check, so progress has a total and an ETA. Throttled (daemon.repair.rateBytesPerSec of chunk
 * bytes), resumable (the lost set and the inode cursor in <dataDir>/repair.json, written every
 * few seconds), and published in this node's registry record, where `cairn status` and
 * `cairn repair status` read it from any node.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurable } from '../common/durable.js';
import type { Logger } from '../common/log.js';
import { counter, gauge } from '../common/metrics.js';
import type { ChunkClients } from '../chunk/client.js';
import { handoffFor } from '../chunk/handoff.js';
import { rebuildLost } from '../chunk/repair.js';
import { parseSchemeTag, type Scheme } from '../chunk/types.js';
import { diskKeyOf, type BucketId, type Diskmap, type PlacementGroup } from '../diskmap/index.js';
import type { NodeRecord } from './registry.js';
import { repairProgressSchema, idleProgress, type RepairProgress } from './repair-progress.js';

export { repairProgressSchema, idleProgress, type RepairProgress };

const metrics = {
  rebuilt: counter('cairn_repair_shards_rebuilt_total', 'Shards of lost disks rebuilt on other disks'),
  bytes: counter('cairn_repair_bytes_checked_total', 'Chunk bytes the repair job has checked or rebuilt'),
  lost: gauge('cairn_repair_lost_disks', 'Disks the repair job considers lost (failed, or node down past the grace)'),
};

export interface LostDisks {
  keys: Set<string>;
  /** Nodes not answering, with when they stopped (for the grace and the status). */
  down: Array<{ nodeId: number; sinceMs: number }>;
  reason: string;
}

/** The disk key of a registered disk (diskKeyOf of its buckets). */
export function registeredDiskKey(n: NodeRecord, d: NodeRecord['disks'][number]): string {
  return `${n.location.dc}.${n.location.row}.${n.location.rack}.${n.location.machine}.${d.disk}/${d.incarnation}`;
}

/**
 * Which disks are lost now. `answer(n)`: the node's live disk states, or undefined when it does
 * not answer; `downSince` is kept by the caller across calls (a leader change starts it afresh,
 * which only delays a rebuild).
 */
export async function findLostDisks(
  nodes: readonly NodeRecord[],
  answer: (n: NodeRecord) => Promise<Array<{ diskKey: string; path: string; state: string; reason: string }> | undefined>,
  downSince: Map<number, number>,
  graceMs: number,
  now = Date.now(),
): Promise<LostDisks> {
  const keys = new Set<string>();
  const why: string[] = [];
  const down: Array<{ nodeId: number; sinceMs: number }> = [];
  await Promise.all(
    nodes.map(async (n) => {
      const live = await answer(n).catch(() => undefined);
      if (live === undefined) {
        const since = downSince.get(n.nodeId) ?? now;
        downSince.set(n.nodeId, since);
        down.push({ nodeId: n.nodeId, sinceMs: since });
        if (now - since >= graceMs) {
          for (const d of n.disks) if (d.incarnation !== '') keys.add(registeredDiskKey(n, d));
          why.push(`node ${n.nodeId} down for ${Math.round((now - since) / 1000)} s (grace ${Math.round(graceMs / 1000)} s)`);
        }
        return;
      }
      downSince.delete(n.nodeId);
      for (const d of live) {
        if (d.state !== 'failed') continue;
        const reg = n.disks.find((x) => x.path === d.path);
        const key = d.diskKey !== '' ? d.diskKey : reg !== undefined && reg.incarnation !== '' ? registeredDiskKey(n, reg) : '';
        if (key === '') continue;
        keys.add(key);
        why.push(`disk ${d.path} of node ${n.nodeId} failed (${d.reason.slice(0, 200)})`);
      }
    }),
  );
  return { keys, down, reason: why.sort().join('; ') };
}

/** Does this group have a slot on a lost disk? (The one place that decides which chunks need work.) */
export function planLostSlots(g: PlacementGroup | undefined, lost: ReadonlySet<string>): number[] {
  if (g === undefined || g.retired) return [];
  const out: number[] = [];
  g.buckets.forEach((b, i) => {
    if (lost.has(diskKeyOf(b))) out.push(i);
  });
  return out;
}

export interface RepairDeps {
  clients: ChunkClients;
  diskmap: () => Diskmap;
  addressOf: (b: BucketId) => string;
  scanLayouts: (afterIno: number, limit: number) => Promise<Array<{ ino: number; extents: Array<{ chunkHash: string; length: number; chunkLength?: number; scheme: string; pg: number }> }>>;
  dataDir: string;
  rateBytesPerSec: number;
  log: Logger;
  stopped: () => boolean;
  /** Called with the progress every few seconds (published in the registry). */
  publish: (p: RepairProgress) => Promise<void>;
}

const PAGE = 500;
/** Chunks rebuilt at once by the repair job. */
const REPAIR_PARALLEL = 4;

export class RepairJob {
  private progress: RepairProgress = idleProgress();
  private running = false;
  private loaded = false;

  constructor(private readonly d: RepairDeps) {}

  status(): RepairProgress {
    return this.progress;
  }

  private file(): string {
    return join(this.d.dataDir, 'repair.json');
  }

  private async load(): Promise<void> {
    if (this.loaded) return;
    this.loaded = true;
    try {
      const p = repairProgressSchema.safeParse(JSON.parse(await readFile(this.file(), 'utf8')));
      if (p.success) this.progress = p.data;
    } catch {
      // no saved repair: idle
    }
  }

  private async save(): Promise<void> {
    this.progress = { ...this.progress, updatedAtMs: Date.now() };
    await writeFileDurable(this.file(), `${JSON.stringify(this.progress)}\n`);
    await this.d.publish(this.progress).catch((err: unknown) => this.d.log.debug({ err: String(err) }, 'repair progress not published'));
  }

  /** One step: given the lost disks now, start, continue or finish a repair. Never runs twice at once. */
  async step(lost: LostDisks): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      await this.load();
      metrics.lost.set(lost.keys.size);
      const keys = [...lost.keys].sort();
      if (keys.length === 0) {
        const waiting = lost.down.length > 0 ? `node(s) ${lost.down.map((x) => x.nodeId).join(', ')} not answering, within the grace: not rebuilt (a reboot must not start a rebuild)` : 'every disk is up';
        if (this.progress.state !== 'idle' || this.progress.reason !== waiting) {
          this.progress = { ...idleProgress(waiting), state: lost.down.length > 0 ? 'waiting' : 'idle' };
          await this.save();
        }
        return;
      }
      const same = this.progress.lost.length === keys.length && this.progress.lost.every((k, i) => k === keys[i]);
      if (same && this.progress.state === 'done') return;
      if (!same || this.progress.state === 'idle' || this.progress.state === 'waiting') {
        this.progress = { ...idleProgress(lost.reason), state: 'counting', lost: keys };
        await this.count(lost.keys);
      }
      this.progress = { ...this.progress, state: 'repairing', reason: lost.reason };
      await this.save();
      await this.run(lost.keys);
    } finally {
      this.running = false;
    }
  }

  /** The metadata-only pass: how many chunk bytes the repair will check. */
  private async count(lost: ReadonlySet<string>): Promise<void> {
    const dm = this.d.diskmap();
    const seen = new Set<string>();
    let chunks = 0;
    let bytes = 0;
    for (let after = 0; ; ) {
      const rows = await this.d.scanLayouts(after, PAGE);
      for (const r of rows) {
        for (const e of r.extents) {
          if (seen.has(e.chunkHash) || planLostSlots(dm.groups[e.pg], lost).length === 0) continue;
          seen.add(e.chunkHash);
          chunks++;
          bytes += e.chunkLength ?? e.length; // the whole chunk, also when the extent is a slice of it
        }
      }
      if (rows.length < PAGE) break;
      after = rows[rows.length - 1]!.ino;
    }
    this.progress = { ...this.progress, chunksTotal: chunks, bytesTotal: bytes, cursorIno: 0, chunksDone: 0, bytesDone: 0, shardsRebuilt: 0, startedAtMs: Date.now() };
  }

  private async run(lost: ReadonlySet<string>): Promise<void> {
    const d = this.d;
    const dm = d.diskmap();
    const seen = new Set<string>();
    const t0 = Date.now();
    const bytesAtStart = this.progress.bytesDone;
    let lastSave = Date.now();
    let after = this.progress.cursorIno;
    for (;;) {
      if (d.stopped()) return;
      const rows = await d.scanLayouts(after, PAGE);
      // The chunks of this page that need work (each once), rebuilt REPAIR_PARALLEL at a time:
      // one chunk's rebuild is a few round trips (stat, degraded read, put), which alone would
      // leave the disks idle.
      const work: Array<{ hash: string; scheme: string; pg: number; bytes: number }> = [];
      for (const r of rows) {
        for (const e of r.extents) {
          if (seen.has(e.chunkHash) || planLostSlots(dm.groups[e.pg], lost).length === 0) continue;
          seen.add(e.chunkHash);
          work.push({ hash: e.chunkHash, scheme: e.scheme, pg: e.pg, bytes: e.chunkLength ?? e.length });
        }
      }
      let next = 0;
      const one = async (w: (typeof work)[number]): Promise<void> => {
        const g = dm.groups[w.pg]!;
        const scheme = parseSchemeTag(w.scheme) as Scheme;
        const targets = g.buckets.map((b) => ({ bucketId: b, address: d.addressOf(b) }));
        try {
          const res = await rebuildLost(d.clients, w.hash, scheme, targets, handoffFor(dm, w.hash, g.buckets, d.addressOf), lost, { diskmapEpoch: dm.epoch });
          this.progress.shardsRebuilt += res.rebuilt.length;
          metrics.rebuilt.inc(res.rebuilt.length);
        } catch (err) {
          this.progress.failures++;
          d.log.warn({ chunk: w.hash.slice(0, 16), err: String(err) }, 'repair: chunk not rebuilt (retried on the next pass)');
        }
        this.progress.chunksDone++;
        this.progress.bytesDone += w.bytes;
        metrics.bytes.inc(w.bytes);
        // Writes go on during a repair: chunks written after the counting pass join the total.
        this.progress.chunksTotal = Math.max(this.progress.chunksTotal, this.progress.chunksDone);
        this.progress.bytesTotal = Math.max(this.progress.bytesTotal, this.progress.bytesDone);
        // Throttle: no faster than the configured rate, averaged since this run began.
        const done = this.progress.bytesDone - bytesAtStart;
        const ahead = (done / d.rateBytesPerSec) * 1000 - (Date.now() - t0);
        if (ahead > 5) await new Promise((res) => setTimeout(res, ahead));
        const secs = Math.max(0.001, (Date.now() - t0) / 1000);
        const rate = done / secs;
        this.progress.rateBytesPerSec = Math.round(rate);
        this.progress.etaSec = rate > 0 ? Math.max(0, Math.round((this.progress.bytesTotal - this.progress.bytesDone) / rate)) : null;
        if (Date.now() - lastSave > 2_000) {
          lastSave = Date.now();
          await this.save();
        }
      };
      await Promise.all(
        Array.from({ length: Math.min(REPAIR_PARALLEL, work.length) }, async () => {
          while (next < work.length && !d.stopped()) await one(work[next++]!);
        }),
      );
      if (d.stopped()) return;
      // The cursor moves past a page only once every chunk of it is done (resumable).
      if (rows.length > 0) this.progress.cursorIno = rows[rows.length - 1]!.ino;
      if (rows.length < PAGE) break;
      after = rows[rows.length - 1]!.ino;
    }
    const failures = this.progress.failures;
    this.progress = { ...this.progress, state: failures > 0 ? 'repairing' : 'done', etaSec: 0, cursorIno: failures > 0 ? 0 : this.progress.cursorIno, failures: 0 };
    // Done: the total is what the pass went through (files removed since the count drop out of it).
    if (failures === 0) this.progress = { ...this.progress, chunksTotal: this.progress.chunksDone, bytesTotal: this.progress.bytesDone };
    if (failures > 0) this.progress = { ...this.progress, chunksDone: 0, bytesDone: 0 };
    d.log.info({ lost: [...lost], shardsRebuilt: this.progress.shardsRebuilt, failures }, failures > 0 ? 'repair pass ended with failures; running again' : 'repair done: every chunk of the lost disks is at full redundancy');
    await this.save();
  }
}
