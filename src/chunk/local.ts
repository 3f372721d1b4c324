/**
 * Short-circuit local reads (as HDFS's): when a chunk server's disks are mounted on this host —
 * the one-box appliance with several disks, or a client on a storage node — a whole-shard read
 * takes the shard file straight from the disk with fs, instead of two socket copies and the
 * server's CPU. The client checks the header itself exactly as the server does (magic, header
 * checksum, names this shard, file size), and the caller verifies the payload (CRC-32, or the
 * chunk's SHA-256 in the reader) as for any read. Any failure here means "read it through the
 * server instead", never data.
 *
 * Which disks are local: the server's DiskStatus names each disk's path, key (location and random
 * 64-bit incarnation) and state; a serving disk is local when the label at that path on this host
 * carries the same key. The server is not asked per read (that would cost it more CPU than the
 * read saves, measured: ~1 ms per StatShard): its disk list is re-learned every
 * LOCAL_DISKS_TTL_MS and dropped when the server stops answering.
 *
 * Off with CAIRN_CHUNK_SHORT_CIRCUIT=0 (or `new ChunkClients({ shortCircuit: false })`).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { CairnError } from '../common/errors.js';
import { counter } from '../common/metrics.js';
import { diskKeyOf } from '../diskmap/bucket-id.js';
import { SHARD_HEADER_BYTES, decodeShardHeader } from './format.js';
import { checkHeaderMatches, diskKeyOfLabel, readDiskLabel, shardPathOn } from './store.js';
import { parseBucketId, type ShardInfo, type ShardKey } from './types.js';

/** How long a server's list of local disks is trusted before it is asked again. */
export const LOCAL_DISKS_TTL_MS = 10_000;
/** After a failed DiskStatus, when to ask again. */
const LOCAL_DISKS_RETRY_MS = 5_000;

const metrics = {
  reads: counter('cairn_chunk_client_local_reads_total', 'Whole-shard reads by this process taken from a local disk (ok) or sent to the server after trying (fallback)', ['result']),
};

/** Whether short-circuit local reads are on for clients that do not say (env CAIRN_CHUNK_SHORT_CIRCUIT). */
export function shortCircuitDefault(): boolean {
  const v = process.env.CAIRN_CHUNK_SHORT_CIRCUIT;
  return v === undefined || !['0', 'false', 'off', 'no'].includes(v.trim().toLowerCase());
}

export interface RemoteDisk {
  path: string;
  diskKey: string;
  state: 'ok' | 'failed';
}

/**
 * The disks of one server that are mounted here, by disk key. Learned in the background (a read
 * never waits for it: until it is known, reads go through the server), re-learned every
 * LOCAL_DISKS_TTL_MS, and dropped as soon as the server does not answer: local reads happen only
 * from a server that is up and says the disk is serving.
 */
export class LocalDisks {
  private roots = new Map<string, string>();
  private validUntilMs = 0;
  private learnedAtMs = 0;
  private pending: Promise<void> | undefined;

  constructor(private readonly listDisks: () => Promise<RemoteDisk[]>) {}

  /** The local root of the disk holding this bucket, or undefined (not local, or not known yet). */
  rootOf(bucket: string): string | undefined {
    if (Date.now() >= this.validUntilMs) void this.learn();
    if (this.roots.size === 0) return undefined;
    try {
      return this.roots.get(diskKeyOf(parseBucketId(bucket)));
    } catch {
      return undefined;
    }
  }

  /** Ask the server now (or join the question in flight); resolves to the number of local disks. */
  async learn(): Promise<number> {
    this.pending ??= this.learnOnce().finally(() => (this.pending = undefined));
    await this.pending;
    return this.roots.size;
  }

  /**
   * A local read failed in a way that says the layout may have changed: learn it again soon (at
   * most once per LOCAL_DISKS_RETRY_MS, so that a bad disk does not cost a DiskStatus per read).
   */
  forget(): void {
    this.validUntilMs = Math.min(this.validUntilMs, this.learnedAtMs + LOCAL_DISKS_RETRY_MS);
  }

  /** The server did not answer: no local reads from its disks until it answers DiskStatus again. */
  drop(): void {
    this.roots = new Map();
    this.validUntilMs = Math.min(this.validUntilMs, Date.now() + LOCAL_DISKS_RETRY_MS);
  }

  private async learnOnce(): Promise<void> {
    const roots = new Map<string, string>();
    let ttl = LOCAL_DISKS_TTL_MS;
    try {
      for (const d of await this.listDisks()) {
        if (d.state !== 'ok' || d.diskKey === '' || !d.path.startsWith('/')) continue;
        try {
          // The same disk (location and random incarnation) is mounted at that path here.
          if (diskKeyOfLabel(await readDiskLabel(d.path)) === d.diskKey) roots.set(d.diskKey, d.path);
        } catch {
          // Not here, not readable by this process, or another disk: read through the server.
        }
      }
    } catch {
      ttl = LOCAL_DISKS_RETRY_MS;
    }
    this.roots = roots;
    this.learnedAtMs = Date.now();
    this.validUntilMs = this.learnedAtMs + ttl;
  }
}

/** Errors that say the server did not answer (as opposed to an answer about the shard). */
export function isUnreachable(err: unknown): boolean {
  return err instanceof CairnError && ['EUNAVAIL', 'ETIMEDOUT', 'ECONNREFUSED', 'ECONNRESET'].includes(err.code);
}

/**
 * Read a whole shard from its file on the disk mounted at `root`. The header is checked as the
 * server checks it (store.ts tryReadHeader); the payload goes into the buffer `into` returns (or a
 * new one). The payload itself is NOT verified here: the caller checks its CRC-32 or the chunk
 * hash, as for a read through the server. Throws on any problem.
 */
export async function readLocalShard(
  root: string,
  key: ShardKey,
  into: ((info: ShardInfo, length: number) => Buffer | undefined) | undefined,
  signal: AbortSignal | undefined,
): Promise<{ info: ShardInfo; data: Buffer }> {
  const path = shardPathOn(root, key);
  const fh: FileHandle = await open(path, 'r');
  try {
    const head = Buffer.allocUnsafe(SHARD_HEADER_BYTES);
    const { bytesRead } = await fh.read(head, 0, SHARD_HEADER_BYTES, 0);
    const info = decodeShardHeader(head.subarray(0, bytesRead), path);
    checkHeaderMatches(info, key, path);
    const st = await fh.stat();
    if (st.size !== SHARD_HEADER_BYTES + info.payloadLength) {
      throw new CairnError('ECORRUPT', `${path}: file is ${st.size} bytes, header says ${SHARD_HEADER_BYTES + info.payloadLength} (truncated or extended)`);
    }
    checkAborted(signal);
    const given = into?.(info, info.payloadLength);
    if (given !== undefined && given.length !== info.payloadLength) throw new CairnError('EINVAL', `getShard: destination of ${given.length} bytes for ${info.payloadLength}`);
    const data = given ?? Buffer.allocUnsafe(info.payloadLength);
    let at = 0;
    // Large reads (the kernel copies straight into the destination); the signal is checked between them.
    while (at < data.length) {
      checkAborted(signal);
      const { bytesRead: r } = await fh.read(data, at, data.length - at, SHARD_HEADER_BYTES + at);
      if (r === 0) throw new CairnError('ECORRUPT', `${path}: file ended early (truncated)`);
      at += r;
    }
    return { info, data };
  } finally {
    await fh.close().catch(() => undefined);
  }
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new CairnError('ECANCELED', 'local shard read given up');
}

export function countLocalRead(result: 'ok' | 'fallback'): void {
  metrics.reads.inc({ result });
}
