/**
 * ChunkClient: one node's chunk service seen from elsewhere (the writer, the reader, scrub's
 * repairs, path slots). Payloads go out and come back in pieces of PIECE_BYTES with backpressure;
 * a whole-shard read is checked against the shard's CRC-32 on arrival (end to end), so a shard
 * damaged on disk or on the way is an ECORRUPT here, never data. ChunkClients pools one client
 * per address.
 */
import type { DiskSpace } from './usage.js';
import { CairnError, fail } from '../common/errors.js';
import { counter } from '../common/metrics.js';
import { CLIENT_OPTIONS, grpc, makeClient, openClientStream, openServerStream, call as unaryCall, fromServiceError, serviceOf } from '../rpc/grpc.js';
import { laneEnabled, laneReceiveInto } from '../rpc/lane.js';
import type { Ballot, SlotValue } from './format.js';
import { payloadCrc } from './format.js';
import type { ChunkStore, DiskStatus, ListedShard, PutShardHead } from './store.js';
import { LocalDisks, countLocalRead, isUnreachable, readLocalShard, shortCircuitDefault } from './local.js';
import { drainOrClose } from './types.js';
import { MAX_CHUNK_BYTES, PIECE_BYTES, parseWithKey, type ShardInfo, type ShardKey } from './types.js';
import {
  CHUNK_PROTO,
  CHUNK_SERVICE,
  ballotFromWire,
  decodeGetFirst,
  fastChunkDefinition,
  infoFromWire,
  keyToWire,
  valueFromWire,
  valueToWire,
  wireKeySchema,
  type WireValue,
} from './wire.js';

export interface ChunkCallOptions {
  timeoutMs?: number;
}

export interface ChunkClientOptions {
  /**
   * The chunk store this process serves at this address, if it does (a node daemon's own disks):
   * calls go straight to the store, with no socket, no framing and no copy — the same checks and
   * answers as through the service (src/chunk/service.ts), minus the transport. See ChunkClients.
   */
  store?: ChunkStore;
  /**
   * Short-circuit local reads (src/chunk/local.ts): whole-shard reads of shards on disks mounted
   * on this host are read from the file after the server has confirmed it serves the shard.
   * Default on, unless CAIRN_CHUNK_SHORT_CIRCUIT=0.
   */
  shortCircuit?: boolean;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const RECEIVE_WINDOW_BYTES = 16 * 1024 * 1024;

const directCalls = counter('cairn_chunk_client_direct_calls_total', 'Chunk calls to a store served by this process, made without the RPC transport', ['op']);

/** Whether calls to a store served by this process skip the transport (CAIRN_CHUNK_DIRECT=0 turns it off). */
export function directDefault(): boolean {
  const v = (process.env.CAIRN_CHUNK_DIRECT ?? '').toLowerCase();
  return !['0', 'false', 'off', 'no'].includes(v);
}

/**
 * A call to a store in this process, bounded like an RPC by its deadline: on expiry the caller
 * gets ETIMEDOUT (the store's work goes on in the background, as a server's would).
 */
function directCall<T>(address: string, op: string, timeoutMs: number | undefined, run: () => Promise<T>): Promise<T> {
  directCalls.inc({ op });
  const ms = timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new CairnError('ETIMEDOUT', `${address}: ${op} on this process's own store took longer than ${ms} ms`)), ms);
    run().then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err instanceof CairnError ? err : new CairnError('EIO', `${address}: ${op}: ${String(err)}`));
      },
    );
  });
}

export class ChunkClient {
  readonly address: string;
  private readonly client: grpc.Client;
  /** This server's disks that are mounted here too (undefined: short-circuit reads are off). */
  private readonly localDisks: LocalDisks | undefined;
  /** The store behind this address when this process serves it (calls skip the transport). */
  private readonly store: ChunkStore | undefined;

  constructor(address: string, opts: ChunkClientOptions = {}) {
    this.address = address;
    this.store = opts.store;
    this.localDisks = opts.shortCircuit ?? shortCircuitDefault() ? new LocalDisks(() => this.diskStatus({ timeoutMs: 5_000 })) : undefined;
    const ctor = grpc.makeGenericClientConstructor(
      fastChunkDefinition(serviceOf(CHUNK_PROTO, CHUNK_SERVICE).service as unknown as Record<string, unknown>) as unknown as grpc.ServiceDefinition,
      'Chunk',
    );
    // makeClient: calls go over the lane (src/rpc/lane.ts). With CAIRN_RPC=grpc they go over
    // grpc-js, and then a large HTTP/2 receive window matters: with the 64 KiB default a 1 MiB
    // piece waits for many WINDOW_UPDATE round trips (measured: get throughput ×2 with 16 MiB).
    this.client = laneEnabled()
      ? makeClient(ctor, address)
      : new ctor(address, grpc.credentials.createInsecure(), { ...CLIENT_OPTIONS, 'grpc-node.flow_control_window': RECEIVE_WINDOW_BYTES });
  }

  close(): void {
    this.client.close();
  }

  /** Store one shard (streamed in pieces). created=false: it was already there. */
  putShard(head: PutShardHead, payload: Buffer, opts: ChunkCallOptions = {}): Promise<{ created: boolean }> {
    if (payload.length !== head.payloadLength) fail('EINVAL', `payload is ${payload.length} bytes, head says ${head.payloadLength}`);
    const store = this.store;
    if (store !== undefined) {
      // The whole payload as one piece: the store writes it with one writev and checks its CRC.
      return directCall(this.address, 'PutShard', opts.timeoutMs, () =>
        store.putShard(
          head,
          (async function* () {
            yield payload;
          })(),
        ),
      );
    }
    return new Promise<{ created: boolean }>((resolve, reject) => {
      const stream = openClientStream(this.client, 'PutShard', { deadline: Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) }, (err, res) =>
        err ? reject(fromServiceError(err)) : resolve({ created: (res as { created: boolean }).created }),
      );
      stream.on('error', () => undefined);
      (async () => {
        stream.write({
          head: {
            key: keyToWire(head.key),
            payload_length: head.payloadLength,
            chunk_length: head.chunkLength,
            payload_crc32: head.payloadCrc32 >>> 0,
            diskmap_epoch: head.diskmapEpoch,
            repair: head.repair === true,
          },
        });
        for (let at = 0; at < payload.length; at += PIECE_BYTES) {
          if (stream.destroyed || stream.writableEnded) return;
          // Raw framing (wire.ts): the piece is the message. Wait for room, or for the call to
          // end (a server that refused the shard stops reading).
          if (!stream.write(payload.subarray(at, Math.min(payload.length, at + PIECE_BYTES)))) await drainOrClose(stream);
        }
        stream.end();
      })().catch(() => stream.end());
    }).catch((err: unknown) => this.unreachable(err));
  }

  /**
   * Read a shard, whole (checked against its CRC-32 here) or a range of its payload (the server
   * checks the whole payload's CRC before sending a range).
   */
  getShard(
    key: ShardKey,
    opts: ChunkCallOptions & {
      offset?: number;
      length?: number;
      /** Check a whole-shard read against its CRC-32 here (default true; the reader verifies the chunk hash instead). */
      verifyCrc?: boolean;
      /** Where to put the bytes: called with the shard's info; return a buffer of exactly the length read, or undefined for a new one. */
      into?: (info: ShardInfo, length: number) => Buffer | undefined;
      /** Give up (ECANCELED): the call is cancelled and nothing more is written into the buffer from `into`. */
      signal?: AbortSignal;
    } = {},
  ): Promise<{ info: ShardInfo; data: Buffer }> {
    const whole = (opts.offset ?? 0) === 0 && (opts.length ?? 0) === 0;
    if (whole && this.localDisks !== undefined) return this.getShardLocal(key, opts, this.localDisks);
    return this.getShardRemote(key, opts);
  }

  /**
   * A whole-shard read from a local disk when this server's disk is mounted here (local.ts): the
   * client reads the file itself and checks it as a read through the server is checked (header
   * here, payload CRC-32 when verifyCrc, the chunk hash in the reader). Anything amiss: the same
   * read through the server.
   */
  private async getShardLocal(
    key: ShardKey,
    opts: Parameters<ChunkClient['getShard']>[1] & object,
    local: LocalDisks,
  ): Promise<{ info: ShardInfo; data: Buffer }> {
    const root = local.rootOf(key.bucket);
    if (root !== undefined && opts.signal?.aborted !== true) {
      try {
        const got = await readLocalShard(root, key, opts.into, opts.signal);
        if (opts.verifyCrc !== false && payloadCrc(got.data) !== got.info.payloadCrc32) {
          throw new CairnError('ECORRUPT', `shard ${key.bucket}/${key.hash.slice(0, 12)}….${key.index} failed its CRC-32 check on the local disk`);
        }
        countLocalRead('ok');
        return got;
      } catch (err) {
        if (err instanceof CairnError && err.code === 'ECANCELED') throw err;
        // An fs error (the file is not where the layout says, the disk went away): re-learn soon.
        if (!(err instanceof CairnError)) local.forget();
        countLocalRead('fallback');
      }
    }
    return this.getShardRemote(key, opts);
  }

  /** Learn now which of this server's disks are mounted here (else it happens in the background); resolves to their number, 0 when off. */
  async learnLocalDisks(): Promise<number> {
    return this.localDisks === undefined ? 0 : this.localDisks.learn();
  }

  /** An RPC to this server failed: if it did not answer, no local reads from its disks for now. */
  private unreachable<T>(err: unknown): T {
    if (isUnreachable(err)) this.localDisks?.drop();
    throw err;
  }

  private getShardRemote(key: ShardKey, opts: Parameters<ChunkClient['getShard']>[1] & object): Promise<{ info: ShardInfo; data: Buffer }> {
    if (this.store !== undefined) return this.getShardDirect(this.store, key, opts);
    return this.getShardStream(key, opts).catch((err: unknown) => this.unreachable(err));
  }

  /**
   * A read from this process's own store: what the service would send, checked as it would be on
   * arrival. Pieces are read into one reused buffer and copied into the destination only while
   * the call is open, so nothing lands in the caller's buffer once it has given up.
   */
  private getShardDirect(store: ChunkStore, key: ShardKey, opts: Parameters<ChunkClient['getShard']>[1] & object): Promise<{ info: ShardInfo; data: Buffer }> {
    const verifyCrc = opts.verifyCrc !== false;
    let closed = false;
    const aborted = (): boolean => closed || opts.signal?.aborted === true;
    const run = async (): Promise<{ info: ShardInfo; data: Buffer }> => {
      if (aborted()) throw new CairnError('ECANCELED', `${this.address}: GetShard given up`);
      const s = await store.openShard(key, { offset: opts.offset ?? 0, length: opts.length ?? 0, reuseBuffer: true });
      let buf: Buffer | undefined;
      try {
        if (aborted()) throw new CairnError('ECANCELED', `${this.address}: GetShard given up`);
        const given = opts.into?.(s.info, s.length);
        if (given !== undefined && given.length !== s.length) throw new CairnError('EINVAL', `getShard: destination of ${given.length} bytes for ${s.length}`);
        buf = given ?? Buffer.allocUnsafe(s.length);
        let at = 0;
        let crc = 0;
        for await (const piece of s.pieces) {
          if (aborted()) throw new CairnError('ECANCELED', `${this.address}: GetShard given up`);
          piece.copy(buf, at);
          at += piece.length;
          if (verifyCrc) crc = payloadCrc(piece, crc);
        }
        const whole = (opts.offset ?? 0) === 0 && at === s.info.payloadLength;
        if (whole && verifyCrc && crc !== s.info.payloadCrc32) {
          throw new CairnError('ECORRUPT', `${this.address}: shard ${key.bucket}/${key.hash.slice(0, 12)}….${key.index} failed its CRC-32 check (bit rot)`);
        }
        return { info: s.info, data: buf };
      } finally {
        // An early exit closes the file; the generator is done otherwise.
        await s.pieces.return(undefined).catch(() => undefined);
      }
    };
    return directCall(this.address, 'GetShard', opts.timeoutMs, run).finally(() => {
      closed = true;
    });
  }

  private getShardStream(key: ShardKey, opts: Parameters<ChunkClient['getShard']>[1] & object): Promise<{ info: ShardInfo; data: Buffer }> {
    const verifyCrc = opts.verifyCrc !== false;
    return new Promise((resolve, reject) => {
      const stream = openServerStream(
        this.client,
        'GetShard',
        { key: keyToWire(key), offset: opts.offset ?? 0, length: opts.length ?? 0 },
        { deadline: Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) },
      );
      let info: ShardInfo | undefined;
      let buf: Buffer | undefined;
      let at = 0;
      let crc = 0;
      let settled = false;
      // On the lane, each data piece is received straight into its place in buf (no buffer of
      // its own, no copy here). Only while every earlier message has been handled, so that `at`
      // is exactly where the piece goes; otherwise it arrives in a buffer of its own, copied below.
      laneReceiveInto(stream, (n) => (buf !== undefined && !settled && stream.readableLength === 0 && at + n <= buf.length ? buf.subarray(at, at + n) : undefined));
      const bad = (err: CairnError): void => {
        if (settled) return;
        settled = true;
        opts.signal?.removeEventListener('abort', onAbort);
        reject(err);
        stream.cancel();
      };
      const onAbort = (): void => bad(new CairnError('ECANCELED', `${this.address}: GetShard given up`));
      if (opts.signal?.aborted === true) queueMicrotask(onAbort);
      else opts.signal?.addEventListener('abort', onAbort, { once: true });
      // Raw framing (wire.ts): the first message is the protobuf shard info, every later one payload bytes.
      stream.on('data', (msg: Buffer) => {
        if (settled) return;
        try {
          if (info === undefined) {
            info = infoFromWire(decodeGetFirst(msg));
            if (info.hash !== key.hash || info.index !== key.index || info.bucket !== key.bucket) {
              throw new CairnError('ECORRUPT', `${this.address}: GetShard returned a different shard`);
            }
            const want = opts.length !== undefined && opts.length > 0 ? opts.length : info.payloadLength - (opts.offset ?? 0);
            if (want < 0 || want > MAX_CHUNK_BYTES) throw new CairnError('EIO', `${this.address}: GetShard announced ${want} bytes`);
            const given = opts.into?.(info, want);
            if (given !== undefined && given.length !== want) throw new CairnError('EINVAL', `getShard: destination of ${given.length} bytes for ${want}`);
            buf = given ?? Buffer.allocUnsafe(want);
            return;
          }
          const d = msg;
          if (!(d instanceof Buffer) || buf === undefined) throw new CairnError('EIO', `${this.address}: GetShard sent a message without data`);
          if (at + d.length > buf.length) throw new CairnError('ECORRUPT', `${this.address}: GetShard sent more bytes than announced`);
          if (d.buffer !== buf.buffer || d.byteOffset !== buf.byteOffset + at) d.copy(buf, at);
          at += d.length;
          if (verifyCrc) crc = payloadCrc(d, crc);
        } catch (err) {
          bad(err instanceof CairnError ? err : new CairnError('EIO', String(err)));
        }
      });
      stream.on('error', (err: grpc.ServiceError) => {
        if (settled) return;
        settled = true;
        opts.signal?.removeEventListener('abort', onAbort);
        reject(fromServiceError(err));
      });
      stream.on('end', () => {
        if (settled) return;
        settled = true;
        opts.signal?.removeEventListener('abort', onAbort);
        if (info === undefined || buf === undefined) return reject(new CairnError('EIO', `${this.address}: GetShard ended without data`));
        if (at !== buf.length) return reject(new CairnError('ECORRUPT', `${this.address}: GetShard ended after ${at} of ${buf.length} bytes`));
        const whole = (opts.offset ?? 0) === 0 && at === info.payloadLength;
        if (whole && verifyCrc && crc !== info.payloadCrc32) {
          return reject(new CairnError('ECORRUPT', `${this.address}: shard ${key.bucket}/${key.hash.slice(0, 12)}….${key.index} failed its CRC-32 check (bit rot or damage in transit)`));
        }
        resolve({ info, data: buf });
      });
    });
  }

  async deleteShard(key: ShardKey, opts: ChunkCallOptions = {}): Promise<boolean> {
    const store = this.store;
    if (store !== undefined) return directCall(this.address, 'DeleteShard', opts.timeoutMs, () => store.deleteShard(key));
    const r = await unaryCall<unknown, { deleted: boolean }>(this.client, 'DeleteShard', { key: keyToWire(key) }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    return r.deleted;
  }

  async statShard(key: ShardKey, opts: ChunkCallOptions & { verify?: boolean } = {}): Promise<ShardInfo & { mtimeMs: number }> {
    const store = this.store;
    if (store !== undefined) return directCall(this.address, 'StatShard', opts.timeoutMs, () => store.statShard(key, { verify: opts.verify === true }));
    const r = await unaryCall<unknown, unknown>(this.client, 'StatShard', { key: keyToWire(key), verify: opts.verify === true }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    try {
      return infoFromWire(r);
    } catch (err) {
      throw new CairnError('EIO', `${this.address}: StatShard answered an invalid header (${(err as Error).message})`);
    }
  }

  async listBucket(bucket: string, after = '', limit = 1000, opts: ChunkCallOptions = {}): Promise<{ shards: ListedShard[]; next: string }> {
    const store = this.store;
    if (store !== undefined) return directCall(this.address, 'ListBucket', opts.timeoutMs, () => store.listBucket(bucket, after, limit));
    const r = await unaryCall<unknown, { shards: Array<{ key: unknown; file_bytes: number; mtime_ms: number }>; next: string }>(
      this.client,
      'ListBucket',
      { bucket, after, limit },
      opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    );
    return { shards: r.shards.map((s) => ({ key: parseWithKey(wireKeySchema, s.key), fileBytes: Number(s.file_bytes), mtimeMs: s.mtime_ms })), next: r.next };
  }

  async diskStatus(opts: ChunkCallOptions = {}): Promise<Array<Pick<DiskStatus, 'path' | 'diskKey' | 'state' | 'reason' | 'failedAtMs' | 'buckets'> & { space?: DiskSpace }>> {
    const store = this.store;
    if (store !== undefined) {
      const [disks, space] = await directCall(this.address, 'DiskStatus', opts.timeoutMs, async () => [await store.checkDisks(), await store.diskSpace()] as const);
      return disks.map((d, i) => ({ path: d.path, diskKey: d.diskKey, state: d.state, reason: d.reason, failedAtMs: d.failedAtMs, buckets: d.buckets, ...(space[i] !== undefined ? { space: space[i] } : {}) }));
    }
    const r = await unaryCall<
      unknown,
      { disks: Array<{ path: string; disk_key: string; state: string; reason: string; failed_at_ms: number; buckets: number; fs_total_bytes?: number; fs_avail_bytes?: number; stored_bytes?: number; own_fs?: boolean }> }
    >(this.client, 'DiskStatus', {}, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    return r.disks.map((d) => ({
      path: d.path,
      diskKey: d.disk_key,
      state: d.state === 'ok' ? 'ok' : 'failed',
      reason: d.reason,
      failedAtMs: d.failed_at_ms,
      buckets: d.buckets,
      // A node of a version without these fields answers 0 for all: no figure.
      ...(Number(d.fs_total_bytes ?? 0) > 0
        ? { space: { fsTotalBytes: Number(d.fs_total_bytes), fsAvailBytes: Number(d.fs_avail_bytes ?? 0), storedBytes: Number(d.stored_bytes ?? -1), ownFs: d.own_fs === true } }
        : {}),
    }));
  }

  async slotPrepare(bucket: string, slot: string, ballot: Ballot, opts: ChunkCallOptions = {}): Promise<{ ok: boolean; promised: Ballot; accepted: Ballot; value: SlotValue }> {
    const store = this.store;
    if (store !== undefined) return directCall(this.address, 'SlotPrepare', opts.timeoutMs, () => store.slotPrepare(bucket, slot, ballot));
    const r = await unaryCall<unknown, { ok: boolean; promised: Ballot | null; accepted: Ballot | null; value: WireValue | null }>(
      this.client,
      'SlotPrepare',
      { bucket, slot, ballot },
      opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    );
    return { ok: r.ok, promised: ballotFromWire(r.promised), accepted: ballotFromWire(r.accepted), value: valueFromWire(r.value) };
  }

  async slotAccept(bucket: string, slot: string, ballot: Ballot, value: SlotValue, opts: ChunkCallOptions = {}): Promise<{ ok: boolean; promised: Ballot }> {
    const store = this.store;
    if (store !== undefined) return directCall(this.address, 'SlotAccept', opts.timeoutMs, () => store.slotAccept(bucket, slot, ballot, value));
    const r = await unaryCall<unknown, { ok: boolean; promised: Ballot | null }>(
      this.client,
      'SlotAccept',
      { bucket, slot, ballot, value: valueToWire(value) },
      opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    );
    return { ok: r.ok, promised: ballotFromWire(r.promised) };
  }
}

export interface ChunkClientsOptions extends Omit<ChunkClientOptions, 'store'> {
  /**
   * Stores this process serves, by every address it is reached at (a node daemon: its listen and
   * advertised addresses): calls to them go straight to the store (ChunkClientOptions.store).
   * Unless CAIRN_CHUNK_DIRECT=0, which sends them through the service like any other.
   */
  local?: ReadonlyArray<{ address: string; store: ChunkStore }>;
}

/** One ChunkClient per address, created on first use. close() closes them all. */
export class ChunkClients {
  private readonly clients = new Map<string, ChunkClient>();
  private readonly local = new Map<string, ChunkStore>();
  /** Clients replaced by addLocal: calls may still be in flight on them; closed with the rest. */
  private readonly retired: ChunkClient[] = [];
  private readonly direct = directDefault();

  constructor(private readonly opts: ChunkClientsOptions = {}) {
    for (const l of opts.local ?? []) this.addLocal(l.address, l.store);
  }

  /**
   * This process serves `store` at `address` too (learned once the server is bound): calls to it
   * skip the transport from now on. A client already made for that address is replaced.
   */
  addLocal(address: string, store: ChunkStore): void {
    if (!this.direct || this.local.get(address) === store) return;
    this.local.set(address, store);
    const old = this.clients.get(address);
    if (old !== undefined) {
      this.clients.delete(address);
      this.retired.push(old);
    }
  }

  get(address: string): ChunkClient {
    let c = this.clients.get(address);
    if (c === undefined) {
      const { local: _, ...rest } = this.opts;
      c = new ChunkClient(address, { ...rest, store: this.local.get(address) });
      this.clients.set(address, c);
    }
    return c;
  }

  close(): void {
    for (const c of [...this.clients.values(), ...this.retired]) c.close();
    this.clients.clear();
    this.retired.length = 0;
  }
}
