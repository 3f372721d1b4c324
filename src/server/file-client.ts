/**
 * FileClient: the client of a node's file service (proto/file.proto), used by the CLI, the
 * local smoke check and tests. Uploads and downloads stream in pieces of ≤ 1 MiB with
 * backpressure both ways, so memory stays bounded whatever the file size.
 */
import { once } from 'node:events';
import { CairnError } from '../common/errors.js';
import { call, fromServiceError, grpc, makeClient, openClientStream, openServerStream, serviceOf } from '../rpc/grpc.js';
import { FILE_PIECE_BYTES, FILE_PROTO, FILE_SERVICE } from './file-wire.js';
import { repairProgressSchema, type RepairProgress } from './repair-progress.js';

/** The repair progress a node sent (JSON, validated); null when absent or not valid. */
function parseRepair(v: unknown): RepairProgress | null {
  if (typeof v !== 'string' || v === '') return null;
  try {
    const p = repairProgressSchema.safeParse(JSON.parse(v));
    return p.success ? p.data : null;
  } catch {
    return null;
  }
}

export interface PutResult {
  path: string;
  size: number;
  version: number;
  state: string;
  pendingBytes: number;
}

export interface FileStat {
  path: string;
  size: number;
  version: number;
  mode: number;
  mtimeMs: number;
  state: string;
  pendingBytes: number;
}

export interface CommitStatusInfo {
  path: string;
  state: string;
  pendingBytes: number;
  version: number;
  size: number;
  error: string;
  /** The node (peer address) whose cache holds the file's uncommitted data ('' none), and that data's durability level. */
  writer?: string;
  level?: string;
}

export interface ClusterDisk {
  path: string;
  disk: number;
  capacityBytes: number;
  class: string;
  incarnation: string;
  state: string;
  reason: string;
  inDiskmap: boolean;
  /** Bytes used and free of the disk's capacity (health.ts diskFill); -1 when unknown. */
  usedBytes: number;
  freeBytes: number;
}

export interface ClusterNode {
  nodeId: number;
  address: string;
  location: string;
  role: string;
  term: number;
  /** The node's release; "" when it did not answer (docs/upgrade.md). */
  version?: string;
  disks: ClusterDisk[];
}

export interface ClusterInfo {
  answeredBy: number;
  leaderId: number;
  term: number;
  diskmapEpoch: number;
  scheme: string;
  failureDomain: string;
  groups: number;
  bucketSizeBytes: number;
  nodes: ClusterNode[];
  cachedFiles: CommitStatusInfo[];
  /** The cluster version as the answering node applied it; "" from a v0.1.0 node (docs/upgrade.md). */
  clusterVersion?: string;
  /** The repair job's progress (src/server/repair-job.ts), null when none was published. */
  repair: RepairProgress | null;
}

type Wire = Record<string, unknown>;

function statusFrom(w: Wire): CommitStatusInfo {
  return {
    path: String(w.path), state: String(w.state), pendingBytes: Number(w.pending_bytes), version: Number(w.version), size: Number(w.size), error: String(w.error ?? ''),
    writer: String(w.writer ?? ''), level: String(w.level ?? ''),
  };
}

function statFrom(w: Wire): FileStat {
  return {
    path: String(w.path), size: Number(w.size), version: Number(w.version), mode: Number(w.mode), mtimeMs: Number(w.mtime_ms), state: String(w.state),
    pendingBytes: Number(w.pending_bytes),
  };
}

/** Cut any byte source into pieces of at most FILE_PIECE_BYTES. */
async function* pieces(src: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<Buffer> {
  for await (const b of src) {
    const buf = Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    for (let at = 0; at < buf.length; at += FILE_PIECE_BYTES) yield buf.subarray(at, Math.min(buf.length, at + FILE_PIECE_BYTES));
  }
}

export class FileClient {
  private readonly client: grpc.Client;

  constructor(
    readonly address: string,
    private readonly timeoutMs = 10 * 60_000,
  ) {
    this.client = makeClient(serviceOf(FILE_PROTO, FILE_SERVICE), address);
  }

  close(): void {
    this.client.close();
  }

  /** Upload a whole file; `onBytes` sees the bytes sent so far. */
  put(
    path: string,
    data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    opts: { mode?: 'strong' | 'weak'; mkdirs?: boolean; sizeHint?: number; onBytes?: (sent: number) => void } = {},
  ): Promise<PutResult> {
    return new Promise<PutResult>((resolve, reject) => {
      let failed = false;
      const stream = openClientStream(this.client, 'Put', { deadline: Date.now() + this.timeoutMs }, (err: grpc.ServiceError | null, v?: unknown) => {
        const r = v as Wire;
        if (err) {
          failed = true;
          reject(fromServiceError(err));
        } else resolve({ path: String(r.path), size: Number(r.size), version: Number(r.version), state: String(r.state), pendingBytes: Number(r.pending_bytes) });
      });
      (async () => {
        stream.write({ head: { path, mode: opts.mode ?? '', mkdirs: opts.mkdirs === true, size_hint: opts.sizeHint ?? 0 } });
        let sent = 0;
        for await (const p of pieces(data)) {
          if (failed) return;
          if (!stream.write({ data: p })) await once(stream, 'drain');
          sent += p.length;
          opts.onBytes?.(sent);
        }
        stream.end();
      })().catch((err: unknown) => {
        stream.cancel();
        reject(err instanceof CairnError ? err : new CairnError('EIO', `reading the upload failed: ${(err as Error).message}`));
      });
    });
  }

  /** Download: the file's stat first, then its bytes (or a range) as an async iterable of pieces. */
  async get(path: string, opts: { offset?: number; length?: number } = {}): Promise<{ stat: FileStat; data: AsyncGenerator<Buffer> }> {
    const stream = openServerStream(this.client, 'Get', { path, offset: opts.offset ?? 0, length: opts.length ?? 0 }, { deadline: Date.now() + this.timeoutMs });
    const it = stream[Symbol.asyncIterator]() as AsyncIterator<Wire>;
    const next = async (): Promise<IteratorResult<Wire>> => {
      try {
        return await it.next();
      } catch (err) {
        throw fromServiceError(err as grpc.ServiceError);
      }
    };
    const first = await next();
    if (first.done === true || first.value.stat === null || first.value.stat === undefined) {
      stream.cancel();
      throw new CairnError('EIO', `Get ${path}: the server sent no stat first`);
    }
    const stat = statFrom(first.value.stat as Wire);
    async function* data(): AsyncGenerator<Buffer> {
      try {
        for (;;) {
          const n = await next();
          if (n.done === true) return;
          const d = n.value.data;
          if (!(d instanceof Buffer)) throw new CairnError('EIO', `Get ${path}: a message after the stat carried no data`);
          if (d.length > 0) yield d;
        }
      } finally {
        stream.cancel();
      }
    }
    return { stat, data: data() };
  }

  async commit(path: string, wait: 'none' | 'visible' | 'durable' = 'durable'): Promise<CommitStatusInfo> {
    return statusFrom(await call<Wire, Wire>(this.client, 'Commit', { path, wait }, this.timeoutMs));
  }

  async commitStatus(path: string): Promise<CommitStatusInfo> {
    return statusFrom(await call<Wire, Wire>(this.client, 'CommitStatus', { path }, 30_000));
  }

  async stat(path: string): Promise<FileStat> {
    return statFrom(await call<Wire, Wire>(this.client, 'Stat', { path }, 30_000));
  }

  async cluster(): Promise<ClusterInfo> {
    const r = await call<Wire, Wire>(this.client, 'Cluster', {}, 30_000);
    return {
      answeredBy: Number(r.answered_by), leaderId: Number(r.leader_id), term: Number(r.term), diskmapEpoch: Number(r.diskmap_epoch),
      scheme: String(r.scheme), failureDomain: String(r.failure_domain), groups: Number(r.groups), bucketSizeBytes: Number(r.bucket_size_bytes),
      nodes: ((r.nodes as Wire[] | undefined) ?? []).map((n) => ({
        nodeId: Number(n.node_id), address: String(n.address), location: String(n.location), role: String(n.role), term: Number(n.term), version: String(n.version ?? ''),
        disks: ((n.disks as Wire[] | undefined) ?? []).map((d) => ({
          path: String(d.path), disk: Number(d.disk), capacityBytes: Number(d.capacity_bytes), class: String(d.class), incarnation: String(d.incarnation),
          state: String(d.state), reason: String(d.reason), inDiskmap: d.in_diskmap === true,
          // -1 (unknown) from the node, or 0 and 0 from a node of a version without the fields.
          ...(Number(d.used_bytes ?? 0) + Number(d.free_bytes ?? 0) > 0 ? { usedBytes: Number(d.used_bytes), freeBytes: Number(d.free_bytes) } : { usedBytes: -1, freeBytes: -1 }),
        })),
      })),
      cachedFiles: ((r.cached_files as Wire[] | undefined) ?? []).map(statusFrom),
      clusterVersion: String(r.cluster_version ?? ''),
      repair: parseRepair(r.repair_json),
    };
  }
}
