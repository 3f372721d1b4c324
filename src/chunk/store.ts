/**
 * ChunkStore: the shards on one node's disks. A disk is a directory (a mount point in
 * production) with a label; each bucket is a plain directory named by its bucket id that
 * carries its own label; each shard is one self-describing file (src/chunk/format.ts):
 *
 *   <disk>/cairn-disk.json                      disk label (location, disk number, incarnation)
 *   <disk>/<bucket-id>/cairn-bucket.json        bucket label
 *   <disk>/<bucket-id>/shards/<hh>/<hash>.<scheme>.<index>   shard files (hh = first 2 hex of hash)
 *   <disk>/<bucket-id>/slots/<hh>/<path-hash>   path-slot acceptor state (src/chunk/pathslot.ts)
 *   <disk>/tmp/                                 files being written (cleared at open)
 *   <disk>/quarantine/<bucket-id>/…             bad shards, kept as evidence, never deleted silently
 *
 * Every write goes to tmp/, is fsynced, renamed into place, and the directory fsynced before
 * it is acknowledged. A disk that returns I/O errors or whose label disappears is marked
 * failed (metric + status) and refused from then on; the other disks keep serving.
 */
import { open, readFile, readdir, rename, rm, stat, utimes, mkdir, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CairnError, errnoCode, fail } from '../common/errors.js';
import { fsyncDir, mkdirDurable, unlinkDurable, writeFileDurable } from '../common/durable.js';
import { parseWith } from '../common/config.js';
import { logger } from '../common/log.js';
import { lockDisk, unlockDisk } from './disk-lock.js';
import { DiskUsage, type DiskSpace } from './usage.js';
import { counter, gauge } from '../common/metrics.js';
import { bucketId as makeBucketId, diskKeyOf, formatBucketId, parseBucketId, type BucketId } from '../diskmap/bucket-id.js';
import {
  BUCKET_LABEL_FILE,
  DISK_LABEL_FILE,
  FORMAT_VERSION,
  SHARD_HEADER_BYTES,
  ZERO_BALLOT,
  bucketLabelSchema,
  compareBallots,
  decodeShardHeader,
  decodeSlot,
  diskLabelSchema,
  encodeShardHeader,
  encodeSlot,
  payloadCrc,
  type Ballot,
  type DiskLabel,
  type SlotState,
  type SlotValue,
} from './format.js';
import {
  MAX_CHUNK_BYTES,
  PIECE_BYTES,
  parseSchemeTag,
  schemeEquals,
  schemeTag,
  shardKeySchema,
  type ShardInfo,
  type ShardKey,
} from './types.js';

const log = logger('chunk-store');

const metrics = {
  diskFailed: gauge('cairn_chunk_disk_failed', 'Whether a chunk disk is marked failed (1) or serving (0)', ['disk']),
  ops: counter('cairn_chunk_shard_ops_total', 'Shard operations on this node by operation and result', ['op', 'result']),
  bytes: counter('cairn_chunk_shard_bytes_total', 'Shard payload bytes written (in) and read (out) on this node', ['dir']),
  quarantined: counter('cairn_chunk_quarantined_total', 'Shard files moved to quarantine', ['reason']),
  diskBytes: counter('cairn_chunk_disk_bytes_total', 'Shard payload bytes written (in) and read (out), per disk', ['disk', 'dir']),
  diskOps: counter('cairn_chunk_disk_ops_total', 'Shards written (put) and reads begun (get), per disk', ['disk', 'op']),
};

/** Location fields of a disk (the bucket id without bucket number and incarnation). */
export interface DiskLocation {
  dc: number;
  row: number;
  rack: number;
  machine: number;
  disk: number;
}

export interface DiskStatus {
  path: string;
  /** "dc.row.rack.machine.disk/incarnation", or "" if the label could not be read. */
  diskKey: string;
  label: DiskLabel | undefined;
  state: 'ok' | 'failed';
  reason: string;
  failedAtMs: number;
  buckets: number;
}

/** What putShard needs besides the bytes. */
export interface PutShardHead {
  key: ShardKey;
  payloadLength: number;
  chunkLength: number;
  /** CRC-32 of the payload as computed by the sender; checked before the shard is kept. */
  payloadCrc32: number;
  diskmapEpoch: number;
  /** Replace an existing shard with different content (scrub/repair); the old file is quarantined. */
  repair?: boolean;
}

export interface ListedShard {
  key: ShardKey;
  fileBytes: number;
  mtimeMs: number;
}

/** A shard file found by walking the disks (its name parsed; the header not yet read). */
export interface LocalShard {
  diskPath: string;
  bucket: string;
  file: string;
  path: string;
  /** Parsed from the file name; undefined if the name itself is not a shard name. */
  key: ShardKey | undefined;
}

export interface ShardReadStream {
  info: ShardInfo;
  /** Bytes this stream will yield. */
  length: number;
  pieces: AsyncGenerator<Buffer>;
}

interface Disk {
  path: string;
  label: DiskLabel | undefined;
  diskKey: string;
  failed: string | undefined;
  failedAtMs: number;
  knownBuckets: Set<string>;
  /** Shard directories (`<bucket>/shards/<hh>`) this store has made durable: no mkdir per put. */
  knownShardDirs: Set<string>;
  /** Failed only because another live process held its lock: checkDisks tries again. */
  lockBusy?: boolean;
}

const SHARD_NAME_RE = /^([0-9a-f]{64})\.((?:ec\d{1,2}\+\d{1,2})|(?:r\d{1,2}))\.(\d{1,2})$/;
const FAILURE_ERRNOS = new Set(['EIO', 'EROFS', 'ENXIO', 'ENODEV', 'EUCLEAN', 'ENOTCONN', 'ESTALE', 'EBADMSG']);

export function shardFileName(k: ShardKey): string {
  return `${k.hash}.${schemeTag(k.scheme)}.${k.index}`;
}

/** Where a shard's file is on the disk mounted at diskPath (the layout above). */
export function shardPathOn(diskPath: string, k: ShardKey): string {
  return join(diskPath, k.bucket, 'shards', k.hash.slice(0, 2), shardFileName(k));
}

export function parseShardFileName(bucket: string, file: string): ShardKey | undefined {
  const m = SHARD_NAME_RE.exec(file);
  if (m === null) return undefined;
  try {
    return { bucket, hash: m[1] as string, scheme: parseSchemeTag(m[2] as string), index: Number(m[3]) };
  } catch {
    return undefined;
  }
}

/** The disk key ("dc.row.rack.machine.disk/incarnation") a disk label describes. */
export function diskKeyOfLabel(l: DiskLabel): string {
  return diskKeyOf(makeBucketId({ dc: l.dc, row: l.row, rack: l.rack, machine: l.machine, disk: l.disk, bucket: 0, incarnation: BigInt(`0x${l.incarnation}`) }));
}

/** Read and validate the label of the disk at path (EUNAVAIL if unreadable, ECORRUPT/EINVAL if bad). */
export async function readDiskLabel(path: string): Promise<DiskLabel> {
  let text: string;
  try {
    text = await readFile(join(path, DISK_LABEL_FILE), 'utf8');
  } catch (err) {
    throw new CairnError('EUNAVAIL', `disk ${path}: cannot read its label ${DISK_LABEL_FILE} (${errnoCode(err) ?? String(err)}); is it formatted and mounted?`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CairnError('ECORRUPT', `disk ${path}: label ${DISK_LABEL_FILE} is not valid JSON`);
  }
  return parseWith(diskLabelSchema, json, `${path}/${DISK_LABEL_FILE}`);
}

/** Write all of buf at position (a positional write may be short). */
async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off);
    off += bytesWritten;
  }
}

/** Simple per-key mutex: operations on one shard or slot run one at a time. */
class KeyLock {
  private tails = new Map<string, Promise<void>>();
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

export class ChunkStore {
  private disksList: Disk[];
  private readonly locks = new KeyLock();
  /** How full each disk is (src/chunk/usage.ts); puts and deletes keep a walked figure current. */
  readonly usage = new DiskUsage();

  private constructor(disks: Disk[]) {
    this.disksList = disks;
    this.usage.prime(disks.map((d) => d.path));
  }

  /** The space of every disk (statfs and the bytes it holds), in diskStatus() order. */
  async diskSpace(): Promise<Array<DiskSpace | undefined>> {
    return Promise.all(this.disksList.map((d) => this.usage.of(d.path)));
  }

  /**
   * Format a disk: write its label (durably) with a fresh random incarnation. Refuses a
   * directory that already holds a label (EEXIST): reformatting is an explicit operator act.
   */
  static async formatDisk(path: string, loc: DiskLocation, opts: { incarnation?: bigint } = {}): Promise<DiskLabel> {
    const inc = opts.incarnation ?? randomBytes(8).readBigUInt64BE(0);
    // Validates the location fields (EINVAL on out-of-range values).
    makeBucketId({ ...loc, bucket: 0, incarnation: inc });
    await mkdirDurable(path);
    try {
      await stat(join(path, DISK_LABEL_FILE));
      fail('EEXIST', `disk ${path} is already formatted (${DISK_LABEL_FILE} exists); remove it explicitly to reformat`);
    } catch (err) {
      if (err instanceof CairnError) throw err;
    }
    const label: DiskLabel = {
      magic: 'cairn-disk',
      formatVersion: FORMAT_VERSION,
      ...loc,
      incarnation: inc.toString(16).padStart(16, '0'),
      formattedAt: new Date().toISOString(),
    };
    await mkdirDurable(join(path, 'tmp'));
    await mkdirDurable(join(path, 'quarantine'));
    await writeFileDurable(join(path, DISK_LABEL_FILE), `${JSON.stringify(label, null, 2)}\n`);
    return label;
  }

  /** Open the disks at these paths. A disk that cannot be read is kept as failed, not fatal. */
  static async open(paths: readonly string[]): Promise<ChunkStore> {
    const disks: Disk[] = [];
    for (const path of paths) {
      const d: Disk = { path, label: undefined, diskKey: '', failed: undefined, failedAtMs: 0, knownBuckets: new Set(), knownShardDirs: new Set() };
      await ChunkStore.openDisk(d);
      disks.push(d);
      metrics.diskFailed.set({ disk: path }, d.failed === undefined ? 0 : 1);
      if (d.failed !== undefined) log.error({ disk: path, reason: d.failed }, 'disk failed at open');
    }
    const keys = disks.filter((d) => d.diskKey !== '').map((d) => d.diskKey);
    if (new Set(keys).size !== keys.length) fail('EINVAL', 'two disks carry the same label (same location and incarnation); one is a copy');
    return new ChunkStore(disks);
  }

  /** Read a disk's label, take its lock, clear its temporary files; on failure record why. */
  private static async openDisk(d: Disk): Promise<void> {
    try {
      d.label = await readDiskLabel(d.path);
      d.diskKey = diskKeyOfLabel(d.label);
      // Before anything is touched: another live process may be serving this disk.
      await lockDisk(d.path);
      await rm(join(d.path, 'tmp'), { recursive: true, force: true });
      await mkdir(join(d.path, 'tmp'), { recursive: true });
      await mkdir(join(d.path, 'quarantine'), { recursive: true });
      for (const e of await readdir(d.path)) if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}$/.test(e)) d.knownBuckets.add(e);
      d.failed = undefined;
      d.lockBusy = false;
    } catch (err) {
      d.failed = (err as Error).message;
      d.failedAtMs = Date.now();
      d.lockBusy = err instanceof CairnError && err.code === 'EBUSY';
    }
  }

  /** Stop serving: release the disks' locks (another process may open them after this). */
  async close(): Promise<void> {
    await Promise.all(this.disksList.filter((d) => d.label !== undefined).map((d) => unlockDisk(d.path)));
  }

  /**
   * Start serving one more disk (a new or replacement disk, formatted with formatDisk). A failed
   * disk at the same path is replaced by it.
   */
  async addDisk(path: string): Promise<DiskStatus> {
    const fresh = await ChunkStore.open([path]);
    const d = fresh.disksList[0] as Disk;
    if (d.failed !== undefined) fail('EUNAVAIL', `disk ${path} cannot be served: ${d.failed}`);
    const clash = this.disksList.find((x) => x.diskKey === d.diskKey && x.failed === undefined);
    if (clash !== undefined) fail('EEXIST', `disk ${d.diskKey} is already served from ${clash.path}`);
    const at = this.disksList.findIndex((x) => x.path === path);
    if (at >= 0) {
      if ((this.disksList[at] as Disk).failed === undefined) fail('EEXIST', `disk ${path} is already served`);
      this.disksList[at] = d;
    } else this.disksList.push(d);
    metrics.diskFailed.set({ disk: path }, 0);
    return this.diskStatus().find((x) => x.path === path) as DiskStatus;
  }

  /** Status of every disk, for DiskStatus and `cairn status`. */
  diskStatus(): DiskStatus[] {
    return this.disksList.map((d) => ({
      path: d.path,
      diskKey: d.diskKey,
      label: d.label,
      state: d.failed === undefined ? 'ok' : 'failed',
      reason: d.failed ?? '',
      failedAtMs: d.failedAtMs,
      buckets: d.knownBuckets.size,
    }));
  }

  /** The bucket ids of the buckets present on the serving disks. */
  buckets(): string[] {
    return this.disksList.filter((d) => d.failed === undefined).flatMap((d) => [...d.knownBuckets]).sort();
  }

  /** The bucket id for bucket number n on the serving disk at `path` (helper for tools and tests). */
  bucketIdOn(path: string, bucket: number): BucketId {
    const d = this.disksList.find((x) => x.path === path);
    if (d?.label === undefined) fail('ENOENT', `no readable disk at ${path}`);
    const l = d.label;
    return makeBucketId({ dc: l.dc, row: l.row, rack: l.rack, machine: l.machine, disk: l.disk, bucket, incarnation: BigInt(`0x${l.incarnation}`) });
  }

  /** Check every disk's label is still there and readable; mark the ones that are not. */
  async checkDisks(): Promise<DiskStatus[]> {
    for (const d of this.disksList) {
      if (d.failed !== undefined && d.lockBusy === true) {
        // Another process held it (one that was still exiting, or a second daemon): try again,
        // so a disk is never failed for good by a lock whose holder has since gone.
        const key = d.diskKey;
        await ChunkStore.openDisk(d);
        if (d.failed === undefined && d.diskKey !== key && key !== '') this.markFailed(d, `label changed under us (now ${d.diskKey})`);
        if (d.failed === undefined) {
          metrics.diskFailed.set({ disk: d.path }, 0);
          log.warn({ disk: d.path }, 'disk lock released by its holder: serving the disk again');
        }
        continue;
      }
      if (d.failed !== undefined) continue;
      try {
        const l = await readDiskLabel(d.path);
        if (diskKeyOfLabel(l) !== d.diskKey) this.markFailed(d, `label changed under us (now ${diskKeyOfLabel(l)}): a different disk is mounted here`);
      } catch (err) {
        this.markFailed(d, (err as Error).message);
      }
    }
    return this.diskStatus();
  }

  private markFailed(d: Disk, reason: string): void {
    if (d.failed !== undefined) return;
    d.failed = reason;
    d.failedAtMs = Date.now();
    metrics.diskFailed.set({ disk: d.path }, 1);
    log.error({ disk: d.path, reason }, 'disk marked failed; serving the other disks');
  }

  /** Map an fs error on a disk to a CairnError, marking the disk failed when it is the disk's fault. */
  private async diskError(d: Disk, err: unknown, what: string): Promise<CairnError> {
    if (err instanceof CairnError) return err;
    const code = errnoCode(err);
    if (code === 'ENOSPC') return new CairnError('ENOSPC', `disk ${d.path} is full (${what})`);
    if (code !== undefined && FAILURE_ERRNOS.has(code)) {
      this.markFailed(d, `${code} during ${what}`);
      return new CairnError('EUNAVAIL', `disk ${d.path} failed (${code} during ${what}); its shards must be read elsewhere`);
    }
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      try {
        await stat(join(d.path, DISK_LABEL_FILE));
      } catch {
        this.markFailed(d, `disk label vanished during ${what}: directory gone or unmounted`);
        return new CairnError('EUNAVAIL', `disk ${d.path} is gone (label missing); its shards must be read elsewhere`);
      }
    }
    return new CairnError('EIO', `disk ${d.path}: ${what} failed: ${(err as Error).message}`);
  }

  private diskFor(bucket: string): { disk: Disk; id: BucketId } {
    const id = parseBucketId(bucket);
    const key = diskKeyOf(id);
    const d = this.disksList.find((x) => x.diskKey === key);
    if (d === undefined) fail('ENOENT', `bucket ${bucket} is not on any disk of this node (no disk ${key})`);
    if (d.failed !== undefined) fail('EUNAVAIL', `bucket ${bucket} is on failed disk ${d.path} (${d.failed})`);
    return { disk: d, id };
  }

  /** Create a bucket's directory and label (idempotent, durable). */
  async createBucket(bucket: string): Promise<string> {
    const { disk } = this.diskFor(bucket);
    const dir = join(disk.path, bucket);
    if (disk.knownBuckets.has(bucket)) return dir;
    return this.locks.run(`bucket:${bucket}`, async () => {
      if (disk.knownBuckets.has(bucket)) return dir;
      try {
        await mkdirDurable(join(dir, 'shards'));
        await mkdirDurable(join(dir, 'slots'));
        const labelPath = join(dir, BUCKET_LABEL_FILE);
        const existing = await readFile(labelPath, 'utf8').catch(() => undefined);
        if (existing === undefined) {
          await writeFileDurable(labelPath, `${JSON.stringify({ magic: 'cairn-bucket', formatVersion: FORMAT_VERSION, bucketId: bucket, createdAt: new Date().toISOString() }, null, 2)}\n`);
        } else {
          const l = parseWith(bucketLabelSchema, JSON.parse(existing), labelPath);
          if (l.bucketId !== bucket) fail('ECORRUPT', `${labelPath} names bucket ${l.bucketId}, not ${bucket}`);
        }
      } catch (err) {
        throw await this.diskError(disk, err, `creating bucket ${bucket}`);
      }
      disk.knownBuckets.add(bucket);
      return dir;
    });
  }

  private shardPath(disk: Disk, k: ShardKey): string {
    return shardPathOn(disk.path, k);
  }

  /**
   * Store a shard from a stream of pieces. Returns created=false when the same shard is already
   * there (its mtime is refreshed so that GC's grace period restarts). Different content for the
   * same key is ECONFLICT unless head.repair is set. The body is consumed in every case.
   */
  async putShard(head: PutShardHead, body: AsyncIterable<Buffer>): Promise<{ created: boolean }> {
    const key = parseWith(shardKeySchema, head.key, 'shard key');
    if (!Number.isInteger(head.payloadLength) || head.payloadLength < 0 || head.payloadLength > MAX_CHUNK_BYTES) {
      fail('EINVAL', `payload length ${head.payloadLength} is outside 0..${MAX_CHUNK_BYTES}`);
    }
    try {
      const res = await this.putShardInner(key, head, body);
      metrics.ops.inc({ op: 'put', result: res.created ? 'created' : 'exists' });
      return res;
    } catch (err) {
      metrics.ops.inc({ op: 'put', result: err instanceof CairnError ? err.code : 'error' });
      // Drain what is left so that the sender is not left blocked.
      for await (const _ of body) void _;
      throw err;
    }
  }

  private async putShardInner(key: ShardKey, head: PutShardHead, body: AsyncIterable<Buffer>): Promise<{ created: boolean }> {
    const { disk } = this.diskFor(key.bucket);
    await this.createBucket(key.bucket);
    const path = this.shardPath(disk, key);
    // A put does not re-check the disk's label when the shard is absent (the usual case): if
    // the disk is gone, writing the temporary file below fails and checks it. One fs call less.
    let existing = await this.tryReadHeader(disk, path, key, false);
    if (existing.kind === 'ok') {
      const same = existing.info.payloadLength === head.payloadLength && existing.info.payloadCrc32 === head.payloadCrc32 && existing.info.chunkLength === head.chunkLength;
      if (same && head.repair !== true) {
        // Refresh the mtime under the shard's lock, before acknowledging, so that GC (which
        // checks the age under the same lock) cannot collect a shard a new commit relies on.
        const touched = await this.locks.run(path, async () => {
          const now = new Date();
          try {
            await utimes(path, now, now);
            return true;
          } catch (err) {
            if (errnoCode(err) === 'ENOENT') return false;
            throw await this.diskError(disk, err, `touching ${path}`);
          }
        });
        if (touched) {
          for await (const _ of body) void _;
          return { created: false };
        }
        existing = { kind: 'missing' };
      } else if (!same && head.repair !== true) {
        fail('ECONFLICT', `shard ${shardFileName(key)} in bucket ${key.bucket} already exists with different content; only a repair may replace it`);
      }
    }
    const info: ShardInfo = {
      ...key,
      payloadLength: head.payloadLength,
      chunkLength: head.chunkLength,
      payloadCrc32: head.payloadCrc32 >>> 0,
      diskmapEpoch: head.diskmapEpoch,
      createdMs: Date.now(),
    };
    const tmp = join(disk.path, 'tmp', `${shardFileName(key)}.${randomBytes(6).toString('hex')}`);
    let fh: FileHandle | undefined;
    try {
      fh = await open(tmp, 'wx');
      // The header goes out with the first piece (one writev, one thread-pool round trip less).
      let header: Buffer | undefined = encodeShardHeader(info);
      let at = 0;
      let crc = 0;
      for await (const piece of body) {
        if (at + piece.length > head.payloadLength) fail('EINVAL', `shard body is longer than the declared ${head.payloadLength} bytes`);
        crc = payloadCrc(piece, crc);
        let off = 0;
        if (header !== undefined) {
          const { bytesWritten } = await fh.writev([header, piece], 0);
          header = undefined;
          if (bytesWritten < SHARD_HEADER_BYTES) await writeAll(fh, encodeShardHeader(info).subarray(bytesWritten), bytesWritten);
          off = Math.max(0, bytesWritten - SHARD_HEADER_BYTES);
        }
        await writeAll(fh, piece.subarray(off), SHARD_HEADER_BYTES + at + off);
        at += piece.length;
      }
      if (header !== undefined) await writeAll(fh, header, 0);
      if (at !== head.payloadLength) fail('EINVAL', `shard body has ${at} bytes, the header declared ${head.payloadLength}`);
      if (crc !== (head.payloadCrc32 >>> 0)) fail('ECORRUPT', `shard ${shardFileName(key)} arrived damaged (CRC-32 mismatch); resend it`);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await this.locks.run(path, async () => {
        const dir = join(disk.path, key.bucket, 'shards', key.hash.slice(0, 2));
        if (!disk.knownShardDirs.has(dir)) {
          await mkdirDurable(dir);
          disk.knownShardDirs.add(dir);
        }
        if (existing.kind !== 'missing') await this.quarantineFile(disk, key.bucket, path, head.repair === true ? 'replaced-by-repair' : 'replaced-corrupt');
        try {
          await rename(tmp, path);
        } catch (err) {
          // The directory went away behind our back (removed by hand): forget it, make it again.
          if (errnoCode(err) !== 'ENOENT') throw err;
          disk.knownShardDirs.delete(dir);
          // Only below an existing bucket: never recreate a vanished disk's tree.
          await stat(join(disk.path, key.bucket, 'shards'));
          await mkdirDurable(dir);
          disk.knownShardDirs.add(dir);
          await rename(tmp, path);
        }
        await fsyncDir(dir);
      });
      metrics.bytes.inc({ dir: 'in' }, head.payloadLength);
      metrics.diskBytes.inc({ disk: disk.path, dir: 'in' }, head.payloadLength);
      metrics.diskOps.inc({ disk: disk.path, op: 'put' });
      this.usage.adjust(disk.path, SHARD_HEADER_BYTES + head.payloadLength);
      return { created: true };
    } catch (err) {
      if (fh !== undefined) await fh.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
      throw await this.diskError(disk, err, `writing shard ${shardFileName(key)}`);
    }
  }

  private async tryReadHeader(
    disk: Disk,
    path: string,
    key: ShardKey,
    checkDiskIfMissing = true,
  ): Promise<{ kind: 'ok'; info: ShardInfo; size: number } | { kind: 'missing' } | { kind: 'bad'; error: CairnError }> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' && !checkDiskIfMissing) return { kind: 'missing' };
      if (errnoCode(err) === 'ENOENT') {
        // A missing file is only "missing" if the disk itself is still there.
        const e = await this.diskError(disk, err, `opening ${path}`);
        if (e.code === 'EUNAVAIL') throw e;
        return { kind: 'missing' };
      }
      throw await this.diskError(disk, err, `opening ${path}`);
    }
    try {
      const st = await fh.stat();
      const buf = Buffer.alloc(SHARD_HEADER_BYTES);
      const { bytesRead } = await fh.read(buf, 0, SHARD_HEADER_BYTES, 0);
      const info = decodeShardHeader(buf.subarray(0, bytesRead), path);
      checkHeaderMatches(info, key, path);
      if (st.size !== SHARD_HEADER_BYTES + info.payloadLength) {
        fail('ECORRUPT', `${path}: file is ${st.size} bytes, header says ${SHARD_HEADER_BYTES + info.payloadLength} (truncated or extended)`);
      }
      return { kind: 'ok', info, size: st.size };
    } catch (err) {
      if (err instanceof CairnError && err.code === 'ECORRUPT') return { kind: 'bad', error: err };
      throw await this.diskError(disk, err, `reading ${path}`);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /** Header of a shard (ENOENT if absent, ECORRUPT if damaged). With verify, the payload CRC is checked too. */
  async statShard(keyIn: ShardKey, opts: { verify?: boolean } = {}): Promise<ShardInfo & { mtimeMs: number }> {
    const key = parseWith(shardKeySchema, keyIn, 'shard key');
    const { disk } = this.diskFor(key.bucket);
    const path = this.shardPath(disk, key);
    const h = await this.tryReadHeader(disk, path, key);
    if (h.kind === 'missing') fail('ENOENT', `no shard ${shardFileName(key)} in bucket ${key.bucket}`);
    if (h.kind === 'bad') throw h.error;
    if (opts.verify === true) {
      const s = await this.openShard(key, { offset: 0, length: h.info.payloadLength, verify: true });
      for await (const _ of s.pieces) void _;
    }
    const st = await stat(path).catch((err: unknown) => {
      throw new CairnError('EIO', `stat ${path}: ${(err as Error).message}`);
    });
    metrics.ops.inc({ op: 'stat', result: 'ok' });
    return { ...h.info, mtimeMs: st.mtimeMs };
  }

  /**
   * Open a shard for reading, whole or a byte range of its payload, yielding pieces of at most
   * PIECE_BYTES. Whole reads are verified by the receiver against info.payloadCrc32 (end to end);
   * a range read (or verify: true) makes the store check the whole payload's CRC first.
   */
  async openShard(
    keyIn: ShardKey,
    range: {
      offset?: number;
      length?: number;
      verify?: boolean;
      headroomBytes?: number;
      /**
       * Yield every piece in the same buffer: the consumer must be completely done with a piece
       * (no queued writes holding it) before asking for the next. For in-process consumers.
       */
      reuseBuffer?: boolean;
      /** Where to read each piece (n bytes); default a fresh buffer. The consumer owns the result. */
      allocate?: (n: number) => Buffer;
    } = {},
  ): Promise<ShardReadStream> {
    const key = parseWith(shardKeySchema, keyIn, 'shard key');
    const { disk } = this.diskFor(key.bucket);
    const path = this.shardPath(disk, key);
    const h = await this.tryReadHeader(disk, path, key);
    if (h.kind === 'missing') {
      metrics.ops.inc({ op: 'get', result: 'ENOENT' });
      fail('ENOENT', `no shard ${shardFileName(key)} in bucket ${key.bucket}`);
    }
    if (h.kind === 'bad') {
      metrics.ops.inc({ op: 'get', result: 'ECORRUPT' });
      throw h.error;
    }
    const info = h.info;
    const offset = range.offset ?? 0;
    const length = range.length === undefined || range.length === 0 ? info.payloadLength - offset : range.length;
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > info.payloadLength) {
      fail('EINVAL', `range ${offset}+${length} is outside the shard's ${info.payloadLength} bytes`);
    }
    const partial = offset !== 0 || length !== info.payloadLength;
    if (partial || range.verify === true) {
      let crc = 0;
      for await (const p of this.readRange(disk, path, 0, info.payloadLength)) crc = payloadCrc(p, crc);
      if (crc !== info.payloadCrc32) {
        metrics.ops.inc({ op: 'get', result: 'ECORRUPT' });
        fail('ECORRUPT', `${path}: payload CRC-32 mismatch (bit rot); the shard will be quarantined by scrub`);
      }
    }
    metrics.ops.inc({ op: 'get', result: 'ok' });
    metrics.diskOps.inc({ disk: disk.path, op: 'get' });
    return { info, length, pieces: this.readRange(disk, path, offset, length, range.headroomBytes ?? 0, range.reuseBuffer === true, range.allocate) };
  }

  /**
   * Pieces of a file range. With headroom, each piece is a view into its own buffer with that
   * many free bytes in front (the service frames pieces there without copying them).
   */
  private async *readRange(disk: Disk, path: string, offset: number, length: number, headroom = 0, reuse = false, allocate?: (n: number) => Buffer): AsyncGenerator<Buffer> {
    let shared: Buffer | undefined;
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw await this.diskError(disk, err, `opening ${path}`);
    }
    try {
      let at = 0;
      while (at < length) {
        const n = Math.min(PIECE_BYTES, length - at);
        let buf: Buffer;
        if (reuse) {
          shared ??= Buffer.allocUnsafeSlow(headroom + Math.min(PIECE_BYTES, length));
          buf = shared.subarray(headroom, headroom + n);
        } else if (allocate !== undefined) {
          buf = allocate(n);
          if (buf.length !== n) fail('EINVAL', `openShard: allocate(${n}) returned ${buf.length} bytes`);
        } else buf = headroom > 0 ? Buffer.allocUnsafeSlow(headroom + n).subarray(headroom) : Buffer.allocUnsafe(n);
        let got = 0;
        while (got < n) {
          let r: number;
          try {
            ({ bytesRead: r } = await fh.read(buf, got, n - got, SHARD_HEADER_BYTES + offset + at + got));
          } catch (err) {
            throw await this.diskError(disk, err, `reading ${path}`);
          }
          if (r === 0) fail('ECORRUPT', `${path}: file ended early (truncated)`);
          got += r;
        }
        at += n;
        metrics.bytes.inc({ dir: 'out' }, n);
        metrics.diskBytes.inc({ disk: disk.path, dir: 'out' }, n);
        yield buf;
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /** Read a whole shard into memory and verify its CRC (in-process use: scrub, tests). */
  async readShard(key: ShardKey): Promise<{ info: ShardInfo; payload: Buffer }> {
    const s = await this.openShard(key);
    const payload = Buffer.allocUnsafe(s.length);
    let at = 0;
    let crc = 0;
    for await (const p of s.pieces) {
      p.copy(payload, at);
      at += p.length;
      crc = payloadCrc(p, crc);
    }
    if (crc !== s.info.payloadCrc32) fail('ECORRUPT', `shard ${shardKeyLabel(key)}: payload CRC-32 mismatch (bit rot)`);
    return { info: s.info, payload };
  }

  /**
   * Delete a shard durably. Returns whether it was deleted. With olderThanMs, the shard is kept
   * (false) unless its mtime is before that time — checked under the shard's lock, which a
   * deduplicating put also takes to refresh the mtime (see collectGarbage).
   */
  async deleteShard(keyIn: ShardKey, opts: { olderThanMs?: number } = {}): Promise<boolean> {
    const key = parseWith(shardKeySchema, keyIn, 'shard key');
    const { disk } = this.diskFor(key.bucket);
    const path = this.shardPath(disk, key);
    return this.locks.run(path, async () => {
      let size = 0;
      try {
        const st = await stat(path);
        size = st.size;
        if (opts.olderThanMs !== undefined && st.mtimeMs >= opts.olderThanMs) return false;
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') {
          const e = await this.diskError(disk, err, `deleting ${path}`);
          if (e.code === 'EUNAVAIL') throw e;
          return false;
        }
        throw await this.diskError(disk, err, `deleting ${path}`);
      }
      try {
        await unlinkDurable(path);
      } catch (err) {
        throw await this.diskError(disk, err, `deleting ${path}`);
      }
      metrics.ops.inc({ op: 'delete', result: 'ok' });
      this.usage.adjust(disk.path, -size);
      return true;
    });
  }

  /**
   * List a bucket's shards in file-name order, at most `limit`, starting after the cursor
   * `after` (a file name from a previous page's `next`; "" to start). `next` is "" at the end.
   */
  async listBucket(bucket: string, after: string, limit: number): Promise<{ shards: ListedShard[]; next: string }> {
    const { disk } = this.diskFor(bucket);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) fail('EINVAL', `list limit must be 1..10000, got ${limit}`);
    const root = join(disk.path, bucket, 'shards');
    let subdirs: string[];
    try {
      subdirs = (await readdir(root)).filter((s) => /^[0-9a-f]{2}$/.test(s)).sort();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') {
        const e = await this.diskError(disk, err, `listing ${root}`);
        if (e.code === 'EUNAVAIL') throw e;
        return { shards: [], next: '' };
      }
      throw await this.diskError(disk, err, `listing ${root}`);
    }
    const out: ListedShard[] = [];
    for (const sub of subdirs) {
      if (after !== '' && sub < after.slice(0, 2)) continue;
      let files: string[];
      try {
        files = (await readdir(join(root, sub))).sort();
      } catch (err) {
        throw await this.diskError(disk, err, `listing ${root}/${sub}`);
      }
      for (const f of files) {
        if (f <= after) continue;
        const key = parseShardFileName(bucket, f);
        if (key === undefined) continue;
        const st = await stat(join(root, sub, f)).catch(() => undefined);
        if (st === undefined) continue;
        out.push({ key, fileBytes: st.size, mtimeMs: st.mtimeMs });
        if (out.length >= limit) return { shards: out, next: f };
      }
    }
    return { shards: out, next: '' };
  }

  /** Every shard file on the serving disks (for scrub and GC), bucket by bucket. */
  async *walkShards(): AsyncGenerator<LocalShard> {
    for (const d of this.disksList) {
      if (d.failed !== undefined) continue;
      let buckets: string[];
      try {
        buckets = (await readdir(d.path)).filter((e) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}$/.test(e)).sort();
      } catch (err) {
        await this.diskError(d, err, 'walking the disk');
        continue;
      }
      for (const bucket of buckets) {
        const root = join(d.path, bucket, 'shards');
        const subdirs = await readdir(root).catch(() => [] as string[]);
        for (const sub of subdirs.sort()) {
          const files = await readdir(join(root, sub)).catch(() => [] as string[]);
          for (const file of files.sort()) {
            yield { diskPath: d.path, bucket, file, path: join(root, sub, file), key: parseShardFileName(bucket, file) };
          }
        }
      }
    }
  }

  /** Move a shard file to the disk's quarantine directory (durably); never deletes it. */
  async quarantine(shard: LocalShard, reason: string): Promise<string> {
    const d = this.disksList.find((x) => x.path === shard.diskPath);
    if (d === undefined) fail('ENOENT', `no disk ${shard.diskPath}`);
    return this.locks.run(shard.path, () => this.quarantineFile(d, shard.bucket, shard.path, reason));
  }

  private async quarantineFile(d: Disk, bucket: string, path: string, reason: string): Promise<string> {
    const qdir = join(d.path, 'quarantine', bucket);
    const base = path.slice(path.lastIndexOf('/') + 1);
    const dest = join(qdir, `${base}.${Date.now()}.${reason.replace(/[^a-z0-9-]/gi, '_').slice(0, 40)}`);
    try {
      await mkdirDurable(qdir);
      await rename(path, dest);
      await fsyncDir(qdir);
      await fsyncDir(path.slice(0, path.lastIndexOf('/')));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return dest;
      throw await this.diskError(d, err, `quarantining ${path}`);
    }
    metrics.quarantined.inc({ reason });
    log.warn({ path, dest, reason }, 'shard quarantined');
    return dest;
  }

  // ---- path-slot acceptor (the storage half of src/chunk/pathslot.ts) ----

  private slotPath(disk: Disk, bucket: string, slotKey: string): string {
    return join(disk.path, bucket, 'slots', slotKey.slice(0, 2), slotKey);
  }

  private async readSlot(disk: Disk, path: string): Promise<SlotState> {
    try {
      return decodeSlot(await readFile(path), path);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') {
        const e = await this.diskError(disk, err, `reading ${path}`);
        if (e.code === 'EUNAVAIL') throw e;
        return { promised: ZERO_BALLOT, accepted: ZERO_BALLOT, value: { version: 0, data: null } };
      }
      if (err instanceof CairnError) throw err;
      throw await this.diskError(disk, err, `reading ${path}`);
    }
  }

  private async writeSlot(disk: Disk, path: string, s: SlotState): Promise<void> {
    try {
      await mkdirDurable(path.slice(0, path.lastIndexOf('/')));
      await writeFileDurable(path, encodeSlot(s));
    } catch (err) {
      throw await this.diskError(disk, err, `writing ${path}`);
    }
  }

  /** Paxos phase 1 on one slot: promise not to accept ballots below `ballot`. */
  async slotPrepare(bucket: string, slotKey: string, ballot: Ballot): Promise<{ ok: boolean; promised: Ballot; accepted: Ballot; value: SlotValue }> {
    const { disk } = this.diskFor(bucket);
    await this.createBucket(bucket);
    const path = this.slotPath(disk, bucket, slotKey);
    return this.locks.run(path, async () => {
      const s = await this.readSlot(disk, path);
      if (compareBallots(ballot, s.promised) <= 0 || compareBallots(ballot, s.accepted) <= 0) {
        return { ok: false, promised: s.promised, accepted: s.accepted, value: s.value };
      }
      await this.writeSlot(disk, path, { ...s, promised: ballot });
      return { ok: true, promised: ballot, accepted: s.accepted, value: s.value };
    });
  }

  /** Paxos phase 2 on one slot: accept the value unless a higher ballot was promised. */
  async slotAccept(bucket: string, slotKey: string, ballot: Ballot, value: SlotValue): Promise<{ ok: boolean; promised: Ballot }> {
    const { disk } = this.diskFor(bucket);
    await this.createBucket(bucket);
    const path = this.slotPath(disk, bucket, slotKey);
    return this.locks.run(path, async () => {
      const s = await this.readSlot(disk, path);
      if (compareBallots(ballot, s.promised) < 0 || compareBallots(ballot, s.accepted) <= 0) return { ok: false, promised: s.promised };
      await this.writeSlot(disk, path, { promised: ballot, accepted: ballot, value });
      return { ok: true, promised: ballot };
    });
  }
}

function shardKeyLabel(k: ShardKey): string {
  return `${k.bucket}/${shardFileName(k)}`;
}

/** The header must describe the shard the file name says it is. */
export function checkHeaderMatches(info: ShardInfo, key: ShardKey, where: string): void {
  if (info.hash !== key.hash || info.index !== key.index || !schemeEquals(info.scheme, key.scheme) || info.bucket !== key.bucket) {
    fail('ECORRUPT', `${where}: header describes ${info.bucket}/${shardFileName(info)}, not this file (wrong header)`);
  }
}

export { formatBucketId };
