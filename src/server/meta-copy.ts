/**
 * The metadata copies on a node's data disks (docs/recovery.md): every node keeps, in a reserved
 * area of each of its serving data disks (`<disk>/cairn-meta/`, beside the bucket directories,
 * never touched by GC or scrub), a recent generation of the metadata: the state machine's
 * snapshot plus the committed Raft entries applied after it (src/meta/disk-copy.ts). With it,
 * `cairn recover` rebuilds the cluster from the data disks alone when every metadata SSD is gone.
 *
 * - The entries come from an AppliedFeed wrapped around the state machine (node.ts): apply()
 *   queues them (no I/O, no copy on the apply path) and this job appends them to every disk's
 *   tail every `flushIntervalMs`, one write + fdatasync per disk per flush — so a disk copy is at
 *   most about flushIntervalMs + one fsync behind the applied state (metric
 *   cairn_meta_copy_lag_seconds).
 * - A new generation starts at start-up, after a snapshot is installed from the leader, on a gap
 *   in the feed, and when the tail grows past `snapshotEveryEntries` entries or past the
 *   snapshot's own size (min 4 MiB): written in `.tmp-*`, fsynced, renamed, directory fsynced;
 *   then the generations beyond `keep` are removed. The area is therefore at most about
 *   (keep + 1) × 2 × the metadata's size (+ 4 MiB tails), not a fixed reservation.
 * - Copies carry the cluster identity: clusterName + clusterId (SHA-256 of the cluster's first
 *   diskmap change record, replicated, random through the disks' incarnations). No copy is
 *   written before the cluster has its first diskmap (no file can exist before it).
 */
import { randomBytes, createHash } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, statfs, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, mkdirDurable, writeFileDurable } from '../common/durable.js';
import type { Logger } from '../common/log.js';
import { counter, gauge, histogram } from '../common/metrics.js';
import type { ChunkStore } from '../chunk/store.js';
import { COPY_DIR, MANIFEST_FILE, SNAPSHOT_FILE, TAIL_FILE, encodeTailRecord, generationName, sealManifest, type CopyManifest } from '../meta/disk-copy.js';
import type { MetaStateMachine } from '../meta/state-machine.js';
import type { Entry, SnapshotMetadata, StateMachine } from '../raft/types.js';
import { chunkStoreOf } from './chunk-node.js';
import type { NodeServiceFactory } from './services.js';

const metrics = {
  index: gauge('cairn_meta_copy_index', 'Newest Raft index held by the metadata copies on this node\'s data disks'),
  lagEntries: gauge('cairn_meta_copy_lag_entries', 'Entries applied on this node but not yet durable in its disk copies'),
  lag: histogram('cairn_meta_copy_lag_seconds', 'Time from an entry\'s apply to its durability in every disk copy (oldest entry of each flush)', [], [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10]),
  generations: counter('cairn_meta_copy_generations_total', 'Metadata copy generations written (a snapshot on every data disk)'),
  areaBytes: gauge('cairn_meta_copy_area_bytes', 'Bytes of the newest metadata copy generation on one disk (snapshot + tail)'),
  errors: counter('cairn_meta_copy_errors_total', 'Failed metadata copy writes, by step', ['step']),
};

export type MetaCopyConfig = { enabled: boolean; flushIntervalMs: number; snapshotEveryEntries: number; keep: number };
export const META_COPY_DEFAULTS: MetaCopyConfig = { enabled: true, flushIntervalMs: 200, snapshotEveryEntries: 50_000, keep: 2 };
const MIN_TAIL_BYTES = 4 * 1024 * 1024;
/** A tail file is written with zeros this far ahead of its records (decodeTail ends at a zero length). */
const TAIL_PREALLOC_BYTES = 1024 * 1024;
/** Entries queued beyond this (disks stuck) are dropped and a new generation is taken instead. */
const MAX_QUEUE_BYTES = 64 * 1024 * 1024;

export interface AppliedListener {
  entries(entries: readonly Entry[]): void;
  restored(): void;
}

/** Lets jobs see every committed entry the state machine applies, without touching its code. */
export class AppliedFeed {
  private readonly listeners = new Set<AppliedListener>();

  subscribe(l: AppliedListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** The state machine Raft drives: the same one, with apply() and restore() reported here. */
  wrap(sm: StateMachine): StateMachine {
    return {
      appliedIndex: () => sm.appliedIndex(),
      apply: (entries: Entry[]) => {
        for (const l of this.listeners) l.entries(entries);
        return sm.apply(entries);
      },
      snapshot: () => sm.snapshot(),
      restore: async (meta: SnapshotMetadata, chunks: AsyncIterable<Uint8Array>) => {
        await sm.restore(meta, chunks);
        for (const l of this.listeners) l.restored();
      },
      close: () => sm.close(),
    };
  }
}

/** The cluster identity the copies carry: from the first diskmap change, identical on every node. */
export function clusterIdOf(clusterName: string, first: { diffJson: string; nowMs: number; revision: number }): string {
  return createHash('sha256').update(`${clusterName}\0${first.nowMs}\0${first.revision}\0${first.diffJson}`).digest('hex').slice(0, 32);
}

interface Gen {
  name: string;
  snapshotIndex: number;
  snapshotBytes: number;
  nextIndex: number;
  tailEntries: number;
  tailBytes: number;
  /** Bytes of the tail files written with zeros ahead of the records (same on every disk). */
  allocated: number;
  tails: Map<string, FileHandle>;
}

export class MetaCopier {
  private queue: Array<{ e: Entry; atMs: number }> = [];
  private queueBytes = 0;
  private gen: Gen | undefined;
  private needNew = true;
  private clusterId: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private unsubscribe: () => void = () => undefined;
  /** Newest index durable on every disk of the current generation. */
  copiedIndex = 0;

  constructor(
    private readonly o: {
      clusterName: string;
      nodeId: number;
      meta: MetaStateMachine;
      store: ChunkStore;
      feed: AppliedFeed;
      cfg: MetaCopyConfig;
      log: Logger;
      /** Raft's applied index (for the lag metric). */
      applied?: () => number;
    },
  ) {}

  /** Subscribe to the feed and write on a timer. */
  start(): void {
    this.attach();
    this.schedule(0);
  }

  /** Subscribe to the feed only (tests drive step() themselves). */
  attach(): void {
    this.unsubscribe = this.o.feed.subscribe({
      entries: (es) => {
        const atMs = Date.now();
        for (const e of es) {
          this.queue.push({ e, atMs });
          this.queueBytes += e.data.length + 64;
        }
        if (this.queueBytes > MAX_QUEUE_BYTES) this.dropQueue('queue over 64 MiB: the disks are behind');
      },
      restored: () => this.dropQueue('a snapshot was installed'),
    });
  }

  private dropQueue(why: string): void {
    this.queue = [];
    this.queueBytes = 0;
    if (!this.needNew) this.o.log.info({ why }, 'metadata copy: a new generation will be written');
    this.needNew = true;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.step().finally(() => {
        this.running = undefined;
        this.schedule(this.o.cfg.flushIntervalMs);
      });
    }, ms);
    this.timer.unref?.();
  }

  /** One pass: a new generation if due, else the queued entries appended to every tail. */
  async step(): Promise<void> {
    try {
      if (this.clusterId === undefined) {
        const first = await this.o.meta.diskmapChange(1);
        if (first === undefined) {
          this.dropQueue('no diskmap yet');
          return;
        }
        this.clusterId = clusterIdOf(this.o.clusterName, first);
      }
      const g = this.gen;
      const due = g !== undefined && (g.tailEntries >= this.o.cfg.snapshotEveryEntries || g.tailBytes > Math.max(MIN_TAIL_BYTES, g.snapshotBytes));
      if (this.needNew || g === undefined || due) await this.newGeneration();
      await this.flushTail();
    } catch (err) {
      metrics.errors.inc({ step: 'step' });
      this.o.log.warn({ err: (err as Error).message }, 'metadata copy: pass failed; retrying');
      this.needNew = true;
    }
  }

  private disks(): string[] {
    return this.o.store.diskStatus().filter((d) => d.state === 'ok' && d.label !== undefined).map((d) => d.path);
  }

  private async newGeneration(): Promise<void> {
    const disks = this.disks();
    if (disks.length === 0) return;
    const clusterId = this.clusterId as string;
    this.needNew = false;
    const nonce = randomBytes(4).toString('hex');
    const snap = await this.o.meta.snapshot();
    const name = generationName(snap.index, nonce);
    const epoch = (await this.o.meta.diskmap()).epoch;
    const estimate = this.gen?.snapshotBytes ?? 0;
    const targets: Array<{ path: string; tmp: string; fh: FileHandle }> = [];
    try {
      for (const path of disks) {
        const area = join(path, COPY_DIR);
        await mkdirDurable(area);
        const fs = await statfs(area);
        if (fs.bavail * fs.bsize < 2 * estimate + MIN_TAIL_BYTES) {
          metrics.errors.inc({ step: 'space' });
          this.o.log.warn({ disk: path, free: fs.bavail * fs.bsize, need: 2 * estimate }, 'metadata copy: not enough space on the disk for a new generation; skipped there');
          continue;
        }
        for (const n of await readdir(area)) if (n.startsWith('.tmp-')) await rm(join(area, n), { recursive: true, force: true });
        const tmp = join(area, `.tmp-${name}`);
        await mkdir(tmp, { recursive: true });
        targets.push({ path, tmp, fh: await open(join(tmp, SNAPSHOT_FILE), 'wx') });
      }
      if (targets.length === 0) {
        this.needNew = true; // no disk has room: try again next pass (the warning above says why)
        return;
      }
      const hash = createHash('sha256');
      let bytes = 0;
      for await (const chunk of snap.chunks) {
        hash.update(chunk);
        await Promise.all(targets.map((t) => writeAllTo(t.fh, chunk, bytes)));
        bytes += chunk.length;
      }
      await Promise.all(targets.map((t) => t.fh.sync()));
      const sha = hash.digest('hex');
      const tails = new Map<string, FileHandle>();
      for (const t of targets) {
        await t.fh.close();
        const label = this.o.store.diskStatus().find((d) => d.path === t.path);
        const manifest: CopyManifest = sealManifest({
          magic: 'cairn-meta-copy',
          format: 1,
          clusterName: this.o.clusterName,
          clusterId,
          nodeId: this.o.nodeId,
          diskKey: label?.diskKey ?? '',
          snapshotIndex: snap.index,
          snapshotTerm: snap.term,
          snapshotBytes: bytes,
          snapshotSha256: sha,
          diskmapEpoch: epoch,
          createdAtMs: Date.now(),
        });
        const tail = await open(join(t.tmp, TAIL_FILE), 'wx');
        await writeAllTo(tail, Buffer.alloc(TAIL_PREALLOC_BYTES), 0);
        await tail.sync();
        await tail.close();
        await writeFileDurable(join(t.tmp, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
        const final = join(t.path, COPY_DIR, name);
        await rename(t.tmp, final);
        await fsyncDir(join(t.path, COPY_DIR));
        tails.set(t.path, await open(join(final, TAIL_FILE), 'r+'));
      }
      await this.closeTails();
      this.gen = { name, snapshotIndex: snap.index, snapshotBytes: bytes, nextIndex: snap.index + 1, tailEntries: 0, tailBytes: 0, allocated: TAIL_PREALLOC_BYTES, tails };
      this.copiedIndex = snap.index;
      metrics.index.set(snap.index);
      metrics.generations.inc();
      metrics.areaBytes.set(bytes);
      this.o.log.info({ generation: name, index: snap.index, bytes, disks: [...tails.keys()] }, 'metadata copy: new generation on the data disks');
      for (const t of targets) await this.prune(t.path);
    } catch (err) {
      for (const t of targets) await t.fh.close().catch(() => undefined);
      metrics.errors.inc({ step: 'generation' });
      this.needNew = true;
      throw err;
    }
  }

  /** Keep the newest `keep` generations on a disk. */
  private async prune(path: string): Promise<void> {
    const area = join(path, COPY_DIR);
    const gens = (await readdir(area)).filter((n) => /^g[0-9a-f]{16}-[0-9a-f]{8}$/.test(n)).sort();
    const current = this.gen?.name;
    const old = gens.filter((n) => n !== current).slice(0, Math.max(0, gens.length - this.o.cfg.keep));
    for (const n of old) await rm(join(area, n), { recursive: true, force: true });
    if (old.length > 0) await fsyncDir(area);
  }

  private async closeTails(): Promise<void> {
    if (this.gen === undefined) return;
    for (const fh of this.gen.tails.values()) await fh.close().catch(() => undefined);
  }

  private async flushTail(): Promise<void> {
    const g = this.gen;
    if (g === undefined) return;
    const take = this.queue;
    this.queue = [];
    this.queueBytes = 0;
    const out: Buffer[] = [];
    let oldest = Infinity;
    let last = g.nextIndex - 1;
    for (const { e, atMs } of take) {
      if (e.index <= last) continue; // covered by the snapshot or already written
      if (e.index !== last + 1) {
        this.dropQueue(`gap in the applied entries: ${last + 1} expected, ${e.index} came`);
        return;
      }
      out.push(encodeTailRecord(e));
      oldest = Math.min(oldest, atMs);
      last = e.index;
    }
    if (out.length === 0) return;
    const buf = Buffer.concat(out);
    // Records overwrite zeros written ahead of them: the file's size and blocks do not change, so
    // the fdatasync flushes data only (no journal commit shared with the Raft log's fsyncs).
    const at = g.tailBytes;
    const grow = at + buf.length > g.allocated ? Math.ceil((at + buf.length + TAIL_PREALLOC_BYTES) / TAIL_PREALLOC_BYTES) * TAIL_PREALLOC_BYTES : g.allocated;
    await Promise.all(
      [...g.tails].map(async ([path, fh]) => {
        try {
          if (grow > g.allocated) await writeAllTo(fh, Buffer.alloc(grow - g.allocated), g.allocated);
          await writeAllTo(fh, buf, at);
          await fh.datasync();
        } catch (err) {
          metrics.errors.inc({ step: 'tail' });
          this.o.log.warn({ disk: path, err: (err as Error).message }, 'metadata copy: tail append failed; this disk drops out until the next generation');
          g.tails.delete(path);
          await fh.close().catch(() => undefined);
          this.needNew = true;
        }
      }),
    );
    g.allocated = grow;
    g.nextIndex = last + 1;
    g.tailEntries += out.length;
    g.tailBytes += buf.length;
    this.copiedIndex = last;
    metrics.index.set(last);
    metrics.areaBytes.set(g.snapshotBytes + g.tailBytes);
    metrics.lag.observe((Date.now() - oldest) / 1000);
    if (this.o.applied) metrics.lagEntries.set(Math.max(0, this.o.applied() - last));
  }

  /** Stop the job after a last flush of what is queued. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    this.unsubscribe();
    try {
      if (this.gen !== undefined && !this.needNew) await this.flushTail();
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'metadata copy: last flush failed');
    }
    await this.closeTails();
    this.gen = undefined;
  }
}

async function writeAllTo(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off);
    off += bytesWritten;
  }
}

/** The daemon's metadata-copy job (after the chunk service in NODE_SERVICES: it uses its disks). */
export const metaCopyFactory: NodeServiceFactory = async (ctx) => {
  const cfg: MetaCopyConfig = { ...META_COPY_DEFAULTS, ...ctx.cfg.daemon.metaCopy };
  if (!cfg.enabled || ctx.feed === undefined) return { name: 'meta-copy', definitions: [] };
  const copier = new MetaCopier({
    clusterName: ctx.cfg.clusterName,
    nodeId: ctx.cfg.nodeId,
    meta: ctx.meta,
    store: chunkStoreOf(ctx),
    feed: ctx.feed,
    cfg,
    log: ctx.log.child({ component: 'meta-copy' }),
    applied: () => ctx.raft()?.appliedIndex() ?? 0,
  });
  return {
    name: 'meta-copy',
    definitions: [],
    started: () => copier.start(),
    stop: () => copier.stop(),
  };
};
