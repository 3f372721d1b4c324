/**
 * The file service of a node daemon (proto/file.proto): the node's one CairnFs — its write cache
 * in cfg.cacheDir and its commit pipeline (src/client) over MetaAdapter + ChunkAdapter — served
 * to the CLI and other programs over gRPC.
 *
 *  - Put (client stream): a whole file, uploaded atomically. The bytes go to a hidden sibling
 *    (`.<name>.put-<random>`) through the cache; once its commit is visible (weak) or durable
 *    (strong) the sibling is renamed over the target, so readers see the old file or the whole
 *    new one, never a cut upload. A failed upload unlinks the sibling.
 *  - Get (server stream): stat, then the bytes (a range if asked) in pieces of ≤ 1 MiB, read
 *    through CairnFs (dirty cached data first, then verified chunks).
 *  - Commit / CommitStatus / Stat: the client API's calls by path.
 *  - Cluster: the picture `cairn status` prints (nodes, leader, term, diskmap, disks).
 *
 * Memory stays bounded whatever the file size: one piece in flight each way, with backpressure
 * (the request stream is pulled one message at a time; responses wait for 'drain').
 */
import { diskFill } from './health.js';
import { fileSystemMetrics } from './node-metrics.js';
import type { DiskSpace } from '../chunk/usage.js';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { formatZodError } from '../common/config.js';
import { logger } from '../common/log.js';
import { counter } from '../common/metrics.js';
import { grpc, serviceOf, toServiceError, unary } from '../rpc/grpc.js';
import { CairnFs, MetaAdapter, ChunkAdapter, type CommitStatus, type Stat } from '../client/index.js';
import { splitPath } from '../meta/ops.js';
import { MetaClient } from '../meta/client.js';
import { schemeText, diskEntries } from '../diskmap/index.js';
import { clusterPartsOf } from './cluster.js';
import { UploadJournal } from './uploads.js';
import type { NodeContext, NodeServiceFactory } from './services.js';
import { FILE_PIECE_BYTES, FILE_PROTO, FILE_SERVICE } from './file-wire.js';
import { MountManager, spaceOf, startMounts } from '../fuse/service.js';
import { Peer } from '../peer/peer.js';
import { ReplicaStore, type ReplayTarget } from '../peer/replica.js';
import { join } from 'node:path';

export { FILE_PIECE_BYTES, FILE_PROTO, FILE_SERVICE };

const metrics = {
  bytes: counter('cairn_file_bytes_total', 'File bytes through the file service, by direction', ['dir']),
  calls: counter('cairn_file_calls_total', 'File service calls, by method and result', ['method', 'result']),
};

const pathSchema = z.string().min(1).max(4096).superRefine((p, ctx) => {
  try {
    if (splitPath(p).length === 0) ctx.addIssue({ code: 'custom', message: 'the root is not a file' });
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});
const u64 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const putHeadSchema = z.object({
  path: pathSchema,
  mode: z.enum(['strong', 'weak', '']).default(''),
  mkdirs: z.boolean().default(false),
  size_hint: u64.default(0),
});
export const getSchema = z.object({ path: pathSchema, offset: u64.default(0), length: u64.default(0) });
export const pathRequestSchema = z.object({ path: pathSchema });
export const commitSchema = z.object({ path: pathSchema, wait: z.enum(['none', 'visible', 'durable', '']).default('') });

function einval(what: string, err: z.ZodError): CairnError {
  return new CairnError('EINVAL', formatZodError(what, err));
}

function statusToWire(s: CommitStatus, path = s.path): Record<string, unknown> {
  return { path, state: s.state, pending_bytes: s.pendingBytes, version: s.version, size: s.size, error: s.error ?? '' };
}

function statToWire(s: Stat, path = s.path): Record<string, unknown> {
  return { path, size: s.size, version: s.version, mode: s.mode, mtime_ms: s.mtimeMs, state: s.state, pending_bytes: s.pendingBytes };
}

function parentOf(path: string): { dir: string; base: string } {
  const parts = splitPath(path);
  const base = parts[parts.length - 1] as string;
  return { dir: `/${parts.slice(0, -1).join('/')}`, base };
}

/** Wait for a response stream to drain, or to be cancelled by the client (never hang on a gone client). */
function drainOrCancel(call: grpc.ServerWritableStream<unknown, unknown>): Promise<void> {
  if (call.cancelled) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      call.off('cancelled', done);
      call.off('close', done);
      resolve();
    };
    call.on('drain', done);
    call.on('cancelled', done);
    call.on('close', done);
  });
}

/**
 * The first pieces of a stream, until more than `limit` bytes came or it ended (`ended`); `rest`
 * yields every piece, those already read first.
 */
async function readUpTo(stream: AsyncIterable<Buffer>, limit: number): Promise<{ pieces: Buffer[]; ended: boolean; rest: AsyncIterable<Buffer> }> {
  const it = stream[Symbol.asyncIterator]();
  const pieces: Buffer[] = [];
  let got = 0;
  let ended = false;
  while (limit > 0 && !ended && got <= limit) {
    const n = await it.next();
    if (n.done === true) ended = true;
    else {
      pieces.push(n.value);
      got += n.value.length;
    }
  }
  async function* rest(): AsyncGenerator<Buffer> {
    yield* pieces;
    for (let n = await it.next(); n.done !== true; n = await it.next()) yield n.value;
  }
  return { pieces, ended, rest: rest() };
}

interface PutMsg {
  head?: unknown;
  data?: Buffer;
}

export class FileService {
  private readonly log = logger('file-service');

  constructor(
    readonly fs: CairnFs,
    private readonly ctx: NodeContext,
    private readonly meta: MetaClient,
    /** To check that a durable file's chunks still have every shard (status tells the truth). */
    private readonly chunks?: ChunkAdapter,
    /** Puts in flight, so that the next start removes the siblings of interrupted ones. */
    private readonly uploads?: UploadJournal,
  ) {}

  /** mkdir -p of a directory path. */
  private async mkdirs(dir: string): Promise<void> {
    // Usually it exists: one linearizable read instead of a failing Raft write per component.
    const there = await this.meta.stat(dir).catch(() => undefined);
    if (there?.type === 'dir') return;
    let cur = '';
    for (const p of splitPath(dir)) {
      cur += `/${p}`;
      try {
        await this.meta.mkdir(cur);
      } catch (err) {
        if (!(err instanceof CairnError && err.code === 'EEXIST')) throw err;
      }
    }
  }

  /** The upload of a whole file (see the header): returns the status once the put is done. */
  async put(head: z.infer<typeof putHeadSchema>, stream: AsyncIterable<Buffer>): Promise<Record<string, unknown>> {
    const mode = head.mode === '' ? this.ctx.cfg.daemon.file.mode : head.mode;
    // A small file (the whole upload within inlineMaxBytes) is one metadata write, durable in
    // either mode: CairnFs.putSmall. Otherwise (or when it declines) the upload goes on below.
    const first = await readUpTo(stream, this.fs.inlineMaxBytes);
    if (first.ended) {
      const data = Buffer.concat(first.pieces);
      const done = await this.fs.putSmall(head.path, data, { mkdirs: head.mkdirs });
      if (done !== null) {
        metrics.bytes.inc({ dir: 'in' }, data.length);
        return { path: head.path, size: done.size, version: done.version, state: 'durable', pending_bytes: 0 };
      }
    }
    const body = first.rest;
    const { dir, base } = parentOf(head.path);
    if (head.mkdirs) await this.mkdirs(dir);
    const existing = await this.meta.stat(head.path).catch((err: unknown) => {
      if (err instanceof CairnError && err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (existing !== undefined && existing.type !== 'file') throw new CairnError(existing.type === 'dir' ? 'EISDIR' : 'EINVAL', `${head.path} exists and is not a regular file`);
    const tmp = `${dir === '/' ? '' : dir}/.${base.slice(0, 100)}.put-${randomBytes(6).toString('hex')}`;
    // Strong: nothing is acknowledged before the commit is durable in the chunk store, so the
    // upload's cache need not survive a crash (volatile: no fsyncs on the cache disk).
    await this.uploads?.begin(tmp);
    const fd = await this.fs.open(tmp, { create: true, exclusive: true, write: true, mode, volatile: mode === 'strong' }).catch(async (err: unknown) => {
      await this.uploads?.end(tmp);
      throw err;
    });
    const fileId = this.fs.fileIdOf(fd);
    let size = 0;
    let closed = false;
    let visibleVersion = 0;
    try {
      for await (const piece of body) {
        size += await this.fs.write(fd, piece, size);
        metrics.bytes.inc({ dir: 'in' }, piece.length);
      }
      closed = true;
      // strong: close returns once the commit is durable; weak: wait until it is visible.
      await this.fs.close(fd);
      if (mode === 'weak') visibleVersion = (await this.fs.commit(tmp, 'visible')).version;
      await this.renameOver(tmp, head.path, fileId);
    } catch (err) {
      if (!closed) {
        await this.fs.truncate(fd, 0).catch(() => undefined);
        await this.fs.close(fd).catch(() => undefined);
      }
      await this.meta.unlink(tmp).catch(() => undefined);
      await this.uploads?.end(tmp);
      throw err;
    }
    await this.uploads?.end(tmp);
    // Weak: bind the final path to the cached file, so that status by path sees the commit still
    // running. Strong: the commit is over (close returned durable); the status is the metadata's.
    if (mode === 'weak') {
      const rfd = await this.fs.open(head.path);
      await this.fs.close(rfd);
    }
    const st = await this.fs.commitStatus(head.path);
    // The status of the path just bound may not know the version yet (weak: its cache entry is new);
    // the version made visible above is the file's.
    return { path: head.path, size, version: Math.max(st.version, visibleVersion), state: st.state, pending_bytes: st.pendingBytes };
  }

  /**
   * Rename the uploaded sibling over the target. MetaClient retries a rename whose answer was lost
   * (a leader change); when the first attempt was applied the retry finds no sibling (ENOENT): the
   * target then holds the sibling's inode, and that is success, not a failed upload.
   */
  private async renameOver(tmp: string, path: string, fileId: string): Promise<void> {
    try {
      await this.meta.rename(tmp, path);
    } catch (err) {
      if (err instanceof CairnError && err.code === 'ENOENT') {
        const now = await this.meta.stat(path).catch(() => undefined);
        if (now !== undefined && String(now.ino) === fileId) return;
      }
      throw err;
    }
  }

  impl(): grpc.UntypedServiceImplementation {
    const put = (call: grpc.ServerReadableStream<PutMsg, unknown>, callback: grpc.sendUnaryData<unknown>): void => {
      const it = call[Symbol.asyncIterator]() as AsyncIterator<PutMsg>;
      (async () => {
        const first = await it.next();
        if (first.done === true || first.value.head === null || first.value.head === undefined) throw new CairnError('EINVAL', 'Put: the first message must carry the head');
        if (first.value.data !== undefined && first.value.data.length > 0) throw new CairnError('EINVAL', 'Put: the head message carries no data');
        const parsed = putHeadSchema.safeParse(first.value.head);
        if (!parsed.success) throw einval('Put head', parsed.error);
        async function* body(): AsyncGenerator<Buffer> {
          for (;;) {
            const n = await it.next();
            if (n.done === true) return;
            const d = n.value.data;
            if ((n.value.head !== null && n.value.head !== undefined) || !(d instanceof Buffer)) throw new CairnError('EINVAL', 'Put: messages after the head carry data only');
            if (d.length > FILE_PIECE_BYTES) throw new CairnError('EINVAL', `Put: data piece of ${d.length} bytes exceeds ${FILE_PIECE_BYTES}`);
            if (d.length > 0) yield d;
          }
        }
        return this.put(parsed.data, body());
      })().then(
        (r) => {
          metrics.calls.inc({ method: 'put', result: 'ok' });
          callback(null, r);
        },
        (err: unknown) => {
          metrics.calls.inc({ method: 'put', result: err instanceof CairnError ? err.code : 'error' });
          if (!(err instanceof CairnError)) this.log.error({ err: String(err) }, 'put failed');
          callback(toServiceError(err));
        },
      );
    };

    const get = (call: grpc.ServerWritableStream<unknown, unknown>): void => {
      (async () => {
        const parsed = getSchema.safeParse(call.request);
        if (!parsed.success) throw einval('Get', parsed.error);
        const q = parsed.data;
        const fd = await this.fs.open(q.path);
        try {
          const st = await this.fs.stat(q.path);
          call.write({ stat: statToWire(st, q.path) });
          const end = q.length === 0 ? st.size : Math.min(st.size, q.offset + q.length);
          let pos = q.offset;
          while (pos < end && !call.cancelled) {
            const piece = await this.fs.read(fd, Math.min(FILE_PIECE_BYTES, end - pos), pos);
            if (piece.length === 0) break;
            pos += piece.length;
            metrics.bytes.inc({ dir: 'out' }, piece.length);
            if (!call.write({ data: piece })) await drainOrCancel(call);
          }
        } finally {
          await this.fs.close(fd);
        }
        call.end();
        metrics.calls.inc({ method: 'get', result: 'ok' });
      })().catch((err: unknown) => {
        metrics.calls.inc({ method: 'get', result: err instanceof CairnError ? err.code : 'error' });
        if (!call.cancelled) call.emit('error', toServiceError(err));
      });
    };

    return {
      Put: put,
      Get: get,
      Commit: unary(commitSchema, async (q) => statusToWire(await this.fs.commit(q.path, q.wait === '' ? 'durable' : q.wait), q.path)),
      CommitStatus: unary(pathRequestSchema, async (q) => {
        const s = statusToWire(await this.commitStatus(q.path), q.path);
        // Where the file's uncommitted data lives, and at which level (docs/dfs-cache.md).
        const attr = await this.meta.stat(q.path);
        if (attr.type !== 'file') return s;
        const d = await this.fs.dirtyStatus(String(attr.ino));
        const remote = d.writer !== null && d.pendingBytes !== undefined ? { state: d.state ?? s.state, pending_bytes: d.pendingBytes } : {};
        return { ...s, ...remote, writer: d.writer ?? '', level: d.level };
      }),
      Stat: unary(pathRequestSchema, async (q) => statToWire(await this.fs.stat(q.path), q.path)),
      Cluster: unary(z.object({}).loose(), async () => this.cluster()),
    };
  }

  /**
   * The commit state of a path. This node's cache knows its own commits; for a file it does not
   * cache, the metadata's commit record of the current version says visible or durable (a commit
   * run by another node may still be storing shards: then all its bytes count as pending).
   */
  async commitStatus(path: string): Promise<CommitStatus> {
    const local = await this.fs.commitStatus(path);
    if (local.state !== 'durable' || this.fs.cachedFiles().some((f) => f.path === path)) return local;
    const attr = await this.meta.stat(path);
    if (attr.type !== 'file' || attr.version === 0) return local;
    try {
      const rec = await this.meta.commitStatus(attr.ino, attr.version);
      if (rec.state !== 'durable') return { ...local, state: 'visible', pendingBytes: attr.size, version: attr.version, size: attr.size };
    } catch (err) {
      if (!(err instanceof CairnError && err.code === 'ENOENT')) throw err;
    }
    // Durable only while every shard exists (at home, or as a guest while home is down).
    const short = await this.chunksShort(path);
    if (short !== undefined) return { ...local, state: 'visible', pendingBytes: short.bytes, version: attr.version, size: attr.size, error: short.text };
    return local;
  }

  /** Chunks of the file below full health, if any (bytes of them, and a sentence). */
  private async chunksShort(path: string): Promise<{ bytes: number; text: string } | undefined> {
    if (this.chunks === undefined) return undefined;
    const { extents } = await this.meta.layout(path);
    const unique = [...new Map(extents.map((e) => [e.chunkHash, e])).values()];
    let bytes = 0;
    let chunks = 0;
    let worst = '';
    for (let i = 0; i < unique.length; i += 32) {
      await Promise.all(
        unique.slice(i, i + 32).map(async (e) => {
          const h = await this.chunks!.health({ chunkHash: e.chunkHash, scheme: e.scheme, pg: e.pg, length: e.length });
          if (h.stored < h.wanted) {
            bytes += e.length;
            chunks++;
            worst = `${h.stored} of ${h.wanted} shards`;
          }
        }),
      );
    }
    if (chunks === 0) return undefined;
    return { bytes, text: `${chunks} of ${unique.length} chunks are missing shards (e.g. ${worst}): not durable until repair rebuilds them` };
  }

  /** Nodes, leader, term, diskmap and disks as this node sees them (live disk states asked of each node). */
  async cluster(): Promise<Record<string, unknown>> {
    const { view, clients } = clusterPartsOf(this.ctx);
    const raft = this.ctx.raft();
    const st = raft?.status();
    const dm = view.hasDiskmap() ? view.diskmap() : undefined;
    const inMap = new Set(dm === undefined ? [] : diskEntries(dm.topology).map((e) => `${e.machine.dc}.${e.machine.row}.${e.machine.rack}.${e.machine.machine}/${e.d.disk}/${e.d.incarnation.toString(16).padStart(16, '0')}`));
    const nodes = await Promise.all(
      view.registry().map(async (n) => {
        const loc = `${n.location.dc}.${n.location.row}.${n.location.rack}.${n.location.machine}`;
        const [live, ms] = await Promise.all([
          clients
            .get(n.address)
            .diskStatus({ timeoutMs: 2_000 })
            .catch(() => undefined),
          this.meta.status(n.address).catch(() => undefined),
        ]);
        return {
          node_id: n.nodeId,
          address: n.address,
          location: loc,
          role: ms?.role ?? 'unreachable',
          term: ms?.term ?? 0,
          version: ms?.version ?? '',
          disks: n.disks.map((d) => {
            const l = live?.find((x) => x.path === d.path);
            return {
              path: d.path,
              disk: d.disk,
              capacity_bytes: d.capacityBytes,
              class: d.class,
              incarnation: d.incarnation,
              state: l?.state ?? (live === undefined ? `${d.state} (registered)` : d.state),
              reason: l?.reason ?? d.reason,
              in_diskmap: inMap.has(`${loc}/${d.disk}/${d.incarnation}`),
              ...fillWire(d.capacityBytes, l?.space),
            };
          }),
        };
      }),
    );
    return {
      answered_by: this.ctx.cfg.nodeId,
      cluster_version: this.ctx.meta.clusterVersion(),
      leader_id: raft?.leaderId() ?? 0,
      term: st?.term ?? 0,
      diskmap_epoch: dm?.epoch ?? 0,
      scheme: dm === undefined ? '' : schemeText(dm.scheme),
      failure_domain: dm?.failureDomain ?? '',
      groups: dm?.groups.filter((g) => !g.retired).length ?? 0,
      bucket_size_bytes: dm?.bucketSizeBytes ?? 0,
      nodes,
      cached_files: this.fs.cachedFiles().map((s) => statusToWire(s)),
      // The newest repair progress any node published (the leader runs the job).
      repair_json: JSON.stringify(view.registry().map((n) => n.repair).filter((r) => r !== undefined).sort((a, b) => b.updatedAtMs - a.updatedAtMs)[0] ?? null),
    };
  }
}

/** A disk's used and free bytes for the wire (-1: its node did not say). */
function fillWire(capacityBytes: number, space: DiskSpace | undefined): { used_bytes: number; free_bytes: number } {
  const f = diskFill(capacityBytes, space);
  return f === undefined ? { used_bytes: -1, free_bytes: -1 } : { used_bytes: f.usedBytes, free_bytes: f.freeBytes };
}

export const fileServiceFactory: NodeServiceFactory = async (ctx) => {
  const { view, clients, endpoints } = clusterPartsOf(ctx);
  // Its own MetaClient: the cache's lease releases at shutdown run after the cluster part stopped.
  // Small puts arrive one by one on separate streams: two writes in flight at most, the rest wait
  // and share the next Batch (one Raft entry) instead of one entry each.
  const meta = new MetaClient({ endpoints, timeoutMs: 5_000, retryBudgetMs: 20_000, maxWritesInFlight: 2 });
  const f = ctx.cfg.daemon.file;
  const fs = await CairnFs.start(
    {
      cacheDir: ctx.cfg.cacheDir,
      mode: f.mode,
      chunker: { kind: 'fixed', sizeBytes: f.chunkSizeBytes },
      cacheMaxBytes: f.cacheMaxBytes,
      idleCommitDelayMs: f.idleCommitDelayMs,
      readAheadChunks: f.readAheadChunks,
      inlineMaxBytes: f.inlineMaxBytes,
      slices: f.slices,
      ...(f.leaseTtlMs !== undefined ? { leaseTtlMs: f.leaseTtlMs } : {}),
    },
    {
      meta: new MetaAdapter(meta),
      chunks: new ChunkAdapter(clients, { diskmap: () => view.diskmap(), addressOf: (b) => view.addressOf(b) }),
    },
  );
  // The DFS cache's peer port (src/peer): this node's cache coherent with the other nodes'.
  const self = ctx.cfg.advertise ?? ctx.cfg.listen;
  const replicas = new ReplicaStore(join(ctx.cfg.dataDir, 'dfs-replica'), ctx.log.child({ component: 'replica' }));
  await replicas.init();
  const peer = new Peer(fs, { self: () => self, peers: () => [...view.registry().map((n) => n.address), ...ctx.cfg.peers.map((p) => p.address)], replicas });
  fs.setCoherence(peer);
  // The replicated level: commit a dead writer's mirrored writes once its lease has expired.
  let takeOverTimer: NodeJS.Timeout | undefined;
  const replayTarget: ReplayTarget = {
    leaseOf: (id) => meta.leaseGet(Number(id)),
    versionOf: async (id) => {
      try {
        return (await meta.stat({ ino: Number(id) })).version;
      } catch (err) {
        if (err instanceof CairnError && (err.code === 'ENOENT' || err.code === 'ESTALE')) return null;
        throw err;
      }
    },
    apply: (id, ops) => fs.applyMirrored(id, ops),
  };
  const uploads = await UploadJournal.open(ctx.cfg.dataDir);
  const svc = new FileService(fs, ctx, meta, new ChunkAdapter(clients, { diskmap: () => view.diskmap(), addressOf: (b) => view.addressOf(b) }), uploads);
  let stopped = false;
  void uploads.clean((p) => meta.unlink(p), ctx.log.child({ component: 'uploads' }), () => stopped);
  // The node's FUSE mounts live here, beside the one CairnFs they share (src/fuse).
  const mounts = new MountManager(fs, meta, f.mode, spaceOf(ctx));
  const unwatch = fileSystemMetrics(ctx.cfg.nodeId, fs);
  return {
    name: 'file',
    definitions: [{ service: serviceOf(FILE_PROTO, FILE_SERVICE).service, impl: svc.impl() }, mounts.definition(), peer.definition()],
    started: () => {
      startMounts(mounts, ctx);
      peer.startSweep();
      takeOverTimer = setInterval(() => void replicas.takeOver(replayTarget).catch((err: unknown) => ctx.log.warn({ err: String(err) }, 'replica takeover pass failed')), 1_000);
      takeOverTimer.unref();
    },
    stop: async () => {
      stopped = true;
      if (takeOverTimer !== undefined) clearInterval(takeOverTimer);
      unwatch();
      await mounts.stop();
      await peer.stop();
      await replicas.close();
      await fs.shutdown();
      await uploads.close();
      meta.close();
    },
  };
};
