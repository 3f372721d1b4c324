/**
 * The chunk service: the gRPC face of one node's ChunkStore (proto/chunk.proto). Every request is
 * validated with zod before it reaches the store; bulk data streams in pieces with backpressure
 * both ways (a paused request stream, awaited 'drain' on responses), so memory stays bounded
 * whatever the shard size.
 */
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { formatZodError } from '../common/config.js';
import { grpc, serviceOf, startServer, toServiceError, unary, type StartedServer } from '../rpc/grpc.js';
import { laneReceiveInto } from '../rpc/lane.js';
import type { ChunkStore } from './store.js';
import { piecePool } from './pool.js';
import { MAX_CHUNK_BYTES, PIECE_BYTES, drainOrClose } from './types.js';
import {
  CHUNK_PROTO,
  CHUNK_SERVICE,
  ballotFromWire,
  decodePutFirst,
  fastChunkDefinition,
  getShardSchema,
  infoToWire,
  keyRequestSchema,
  keyToWire,
  listBucketSchema,
  putHeadSchema,
  slotAcceptSchema,
  slotPrepareSchema,
  statShardSchema,
  valueFromWire,
  valueToWire,
} from './wire.js';

/** Largest data piece the server accepts in one PutShard message. */
const MAX_PIECE_BYTES = 4 * PIECE_BYTES;


function einval(what: string, err: z.ZodError): CairnError {
  return new CairnError('EINVAL', formatZodError(what, err));
}

/** The service implementation for a store (add it to any gRPC server with startServer). */
export function chunkServiceImpl(store: ChunkStore): grpc.UntypedServiceImplementation {
  const putShard = (call: grpc.ServerReadableStream<Buffer, unknown>, callback: grpc.sendUnaryData<unknown>): void => {
    // Raw framing (wire.ts): the first message is the protobuf head, every later one payload bytes.
    // On the lane, pieces arrive in pooled buffers (no new 1 MiB buffer per piece); each goes
    // back to the pool once the store has written it and asks for the next.
    laneReceiveInto(call, (n) => piecePool.take(n));
    const it = call[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let done = false;
    const finish = (err: unknown, res?: unknown): void => {
      if (done) return;
      done = true;
      if (err !== null) callback(toServiceError(err));
      else callback(null, res);
    };
    (async () => {
      const first = await it.next();
      if (first.done === true) throw new CairnError('EINVAL', 'PutShard: the first message must be the head');
      const parsed = putHeadSchema.safeParse(decodePutFirst(first.value));
      if (!parsed.success) throw einval('PutShard head', parsed.error);
      const h = parsed.data;
      if (h.payload_length > MAX_CHUNK_BYTES) throw new CairnError('EINVAL', `PutShard: payload of ${h.payload_length} bytes exceeds ${MAX_CHUNK_BYTES}`);
      async function* body(): AsyncGenerator<Buffer> {
        for (;;) {
          const n = await it.next();
          if (n.done === true) return;
          const d = n.value;
          if (!(d instanceof Buffer)) throw new CairnError('EINVAL', 'PutShard: messages after the head must be data');
          if (d.length > MAX_PIECE_BYTES) throw new CairnError('EINVAL', `PutShard: data piece of ${d.length} bytes exceeds ${MAX_PIECE_BYTES}`);
          yield d;
          // The store asks for the next piece only once it is done with this one.
          piecePool.give(d);
        }
      }
      return store.putShard(
        { key: h.key, payloadLength: h.payload_length, chunkLength: h.chunk_length, payloadCrc32: h.payload_crc32, diskmapEpoch: h.diskmap_epoch, repair: h.repair },
        body(),
      );
    })().then(
      (r) => finish(null, r),
      (err: unknown) => finish(err),
    );
  };

  const getShard = (call: grpc.ServerWritableStream<unknown, unknown>): void => {
    (async () => {
      const parsed = getShardSchema.safeParse(call.request);
      if (!parsed.success) throw einval('GetShard', parsed.error);
      const r = parsed.data;
      // Pieces are read into pooled buffers. call.write() may queue a message (Writable
      // buffering) and send it later, so a piece goes back to the pool only once its write
      // callback has run: the lane calls it when the socket has taken the bytes, grpc-js after
      // serializing (copying) the message into its frame. No 1 MiB allocation per piece.
      const allocate = (n: number): Buffer => piecePool.take(n) ?? Buffer.allocUnsafe(n);
      const s = await store.openShard(r.key, { offset: r.offset, length: r.length, allocate });
      call.write({ info: infoToWire(s.info) });
      for await (const piece of s.pieces) {
        if (call.cancelled || call.destroyed || call.writableEnded) return;
        // Raw framing (wire.ts): the piece is the message, no copy of ours.
        const room = call.write(piece, () => piecePool.give(piece));
        if (!room) await drainOrClose(call);
      }
      call.end();
    })().catch((err: unknown) => {
      if (!call.cancelled) call.emit('error', toServiceError(err));
    });
  };

  return {
    PutShard: putShard,
    GetShard: getShard,
    DeleteShard: unary(keyRequestSchema, async (r) => ({ deleted: await store.deleteShard(r.key) })),
    StatShard: unary(statShardSchema, async (r) => infoToWire(await store.statShard(r.key, { verify: r.verify }))),
    ListBucket: unary(listBucketSchema, async (r) => {
      const page = await store.listBucket(r.bucket, r.after, r.limit);
      return { shards: page.shards.map((s) => ({ key: keyToWire(s.key), file_bytes: s.fileBytes, mtime_ms: s.mtimeMs })), next: page.next };
    }),
    DiskStatus: unary(
      z.object({}).loose(),
      async () => {
        const disks = await store.checkDisks();
        const space = await store.diskSpace();
        return {
          disks: disks.map((d, i) => ({
            path: d.path,
            disk_key: d.diskKey,
            state: d.state,
            reason: d.reason,
            failed_at_ms: d.failedAtMs,
            buckets: d.buckets,
            fs_total_bytes: space[i]?.fsTotalBytes ?? 0,
            fs_avail_bytes: space[i]?.fsAvailBytes ?? 0,
            stored_bytes: space[i]?.storedBytes ?? -1,
            own_fs: space[i]?.ownFs ?? false,
          })),
        };
      },
    ),
    SlotPrepare: unary(slotPrepareSchema, async (r) => {
      const res = await store.slotPrepare(r.bucket, r.slot, r.ballot);
      return { ok: res.ok, promised: res.promised, accepted: res.accepted, value: valueToWire(res.value) };
    }),
    SlotAccept: unary(slotAcceptSchema, async (r) => {
      const res = await store.slotAccept(r.bucket, r.slot, ballotFromWire(r.ballot), valueFromWire(r.value));
      return { ok: res.ok, promised: res.promised };
    }),
  };
}

/** The service definition to register (bulk messages use the copy-light codec of wire.ts). */
export function chunkServiceDefinition(): grpc.ServiceDefinition {
  return fastChunkDefinition(serviceOf(CHUNK_PROTO, CHUNK_SERVICE).service as unknown as Record<string, unknown>) as unknown as grpc.ServiceDefinition;
}

/**
 * The chunk service as an entry for startServer (for a node daemon hosting several services on
 * one gRPC server). Call widenReceiveWindows(server) after starting it, or uploads are slower.
 */
export function chunkService(store: ChunkStore): { service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
  return { service: chunkServiceDefinition(), impl: chunkServiceImpl(store) };
}

/** HTTP/2 receive window the chunk server grants each connection and stream. */
export const SERVER_RECEIVE_WINDOW_BYTES = 16 * 1024 * 1024;
const MAX_FRAME_BYTES = 1024 * 1024;

/**
 * Widen the HTTP/2 receive windows of a grpc-js server. grpc-js offers no server option for it,
 * and with HTTP/2's 64 KiB default a shard upload stalls on WINDOW_UPDATE round trips (the
 * sender may have only 64 KiB in flight per connection). This reaches the http2 servers that
 * grpc-js keeps privately; if that changes, it does nothing and uploads are merely slower.
 */
export function widenReceiveWindows(server: grpc.Server, bytes = SERVER_RECEIVE_WINDOW_BYTES): boolean {
  const h2 = (server as unknown as { http2Servers?: Map<import('node:events').EventEmitter, unknown> }).http2Servers;
  if (!(h2 instanceof Map)) return false;
  for (const s of h2.keys()) {
    s.on('session', (session: import('node:http2').Http2Session) => {
      try {
        session.setLocalWindowSize(bytes);
        // Larger frames too: fewer, bigger 'data' events for 1 MiB pieces.
        session.settings({ initialWindowSize: Math.min(bytes, 2 ** 31 - 1), maxFrameSize: MAX_FRAME_BYTES });
      } catch {
        // A session closing as it opens: nothing to widen.
      }
    });
  }
  return true;
}

/** Start a gRPC server serving this store's chunk service on host:port (port 0: any free port). */
export async function startChunkServer(address: string, store: ChunkStore): Promise<StartedServer> {
  const started = await startServer(address, [{ service: chunkServiceDefinition(), impl: chunkServiceImpl(store) }]);
  widenReceiveWindows(started.server);
  return started;
}
