/**
 * The lane: Cairn's own framing for the gRPC services, on the same port.
 *
 * grpc-js costs ≈ 1.2 ms of CPU and 0.65 ms of latency per unary round trip on this machine
 * (HTTP/2 framing, filters, per-call objects), where a length-prefixed frame on a plain TCP
 * socket costs ≈ 0.1 ms and 0.05 ms (measured: docs/rpc.md). The lane carries exactly the
 * messages of the proto services — same service definitions, same (de)serializers, same
 * handlers, same zod validation, same error codes — in frames of our own. gRPC stays the
 * public face of every service (any gRPC tool can call a node); Cairn's own clients speak the
 * lane unless CAIRN_RPC=grpc.
 *
 * One listening socket serves both: a connection whose first byte is 'C' (the lane's magic,
 * "CAIRNLN1") is a lane connection; anything else (an HTTP/2 preface starts with 'P') is handed
 * to grpc-js unchanged through its connection injector.
 *
 * Frame: u32 BE length of what follows | u8 type | u32 BE call id | payload.
 *   CALL   client → server  u16 path length | path | body (the first request message)
 *   DATA   both ways        one more message of a stream
 *   END    client → server  the client's stream is complete (client streaming)
 *   OK     server → client  the reply (unary, client stream) or the end of a server stream
 *   ERR    server → client  JSON {code, message, details?}: a CairnError
 *   CANCEL client → server  the client gave up on the call
 *   PING / PONG             liveness: a client that hears nothing on a connection for
 *                           5 s sends PING (call id 0); the server answers PONG; no frame at
 *                           all for 20 s closes the connection
 *                           (a peer gone without a FIN or RST, e.g. a cut network)
 *
 * Unary calls share one connection per address (multiplexed by call id). A streaming call gets
 * a connection of its own for its lifetime, so TCP's flow control is the stream's: a reader
 * that falls behind pauses its socket, and memory stays bounded whatever the stream's size.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { Readable, Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { CairnError, isErrorCode } from '../common/errors.js';
import { logger } from '../common/log.js';
import { counter, gauge } from '../common/metrics.js';
import type { PeerKind } from './pki.js';
import { clientTlsOptions, mayCall, tlsIdentity } from './security.js';
import { TOKEN_MAGIC, clientToken, scopeAllows, tokenPreamble, type TokenScope } from './tokens.js';

export const LANE_MAGIC = Buffer.from('CAIRNLN1', 'latin1');
/** A server's answer to a lane client it refuses, followed by the reason (UTF-8) and a close. */
const LANE_REFUSED = Buffer.from('CAIRNNO1', 'latin1');
/** How an HTTP/2 (gRPC) connection starts. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n', 'latin1');
/** The first byte of a TLS handshake record. */
const TLS_HANDSHAKE_BYTE = 0x16;

const T_CALL = 1;
const T_DATA = 2;
const T_END = 3;
const T_OK = 4;
const T_ERR = 5;
const T_CANCEL = 6;
const T_PING = 7;
const T_PONG = 8;

const HEADER_BYTES = 9;
/** Largest frame either side accepts: the largest gRPC message plus room for the path. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024 + 64 * 1024;
/** Calls one connection may have open at once on the server; more are refused with EAGAIN. */
export const MAX_CALLS_PER_CONNECTION = 4096;
/** Idle stream connections kept per address for reuse. */
const MAX_IDLE_STREAM_CONNECTIONS = 8;
const MAX_ERROR_JSON_BYTES = 64 * 1024;
/** Keepalive of client connections (see PING above); connections made later use new settings. */
const keepaliveSettings = {
  /** Silence on a client connection after which it sends a PING. */
  intervalMs: 5_000,
  /** Silence after which a client connection is considered dead and closed. */
  timeoutMs: 20_000,
};

/** Change the keepalive of connections made from now on (tests use short times). */
export function setLaneKeepalive(s: { intervalMs: number; timeoutMs: number }): void {
  if (!(s.intervalMs > 0 && s.timeoutMs > s.intervalMs)) throw new CairnError('EINVAL', 'lane keepalive: need 0 < intervalMs < timeoutMs');
  keepaliveSettings.intervalMs = s.intervalMs;
  keepaliveSettings.timeoutMs = s.timeoutMs;
}
/** A new connection must say which protocol it speaks within this time. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

const log = logger('lane');

const metric = {
  calls: counter('cairn_rpc_lane_calls_total', 'Calls served on the lane, by method and result (OK or a Cairn error code)', ['method', 'result']),
  connections: gauge('cairn_rpc_lane_server_connections', 'Open lane connections this process serves'),
  protocolErrors: counter('cairn_rpc_lane_protocol_errors_total', 'Lane connections closed for breaking the protocol'),
  deadPeers: counter('cairn_rpc_lane_silent_peers_total', 'Client lane connections closed because the peer fell silent (keepalive)'),
  refused: counter('cairn_rpc_refused_connections_total', 'Connections refused by the listener (no or bad credentials, HTTP/1.x, unknown protocol), by reason', ['reason']),
};

/** The method name of a path, for metric labels ("/cairn.meta.Meta/Mkdir" → "Meta/Mkdir"). */
function methodLabel(path: string): string {
  const i = path.lastIndexOf('.');
  return i >= 0 ? path.slice(i + 1) : path;
}

/** Is the lane used by this process's clients? (CAIRN_RPC=grpc makes every call plain gRPC.) */
export function laneEnabled(): boolean {
  return process.env.CAIRN_RPC !== 'grpc';
}

// ---------------------------------------------------------------------------------------------
// frames

function frameHeader(type: number, id: number, payloadBytes: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h.writeUInt32BE(payloadBytes + 5, 0);
  h[4] = type;
  h.writeUInt32BE(id, 5);
  return h;
}

/** Sockets corked until the end of this event-loop turn. */
const corkedThisTurn = new Set<net.Socket>();
let uncorkScheduled = false;

function uncorkAll(): void {
  uncorkScheduled = false;
  for (const s of corkedThisTurn) s.uncork();
  corkedThisTurn.clear();
}

/**
 * Hold a socket's small writes until the end of this turn of the event loop, so that the replies
 * (or calls) produced in one turn — a Raft apply answering many requests, 64 callers issuing at
 * once — leave in one system call instead of one each.
 */
function corkForThisTurn(socket: net.Socket): void {
  if (corkedThisTurn.has(socket)) return;
  corkedThisTurn.add(socket);
  socket.cork();
  if (!uncorkScheduled) {
    uncorkScheduled = true;
    setImmediate(uncorkAll);
  }
}

/** Write one frame; the payload is written as it is (no copy). cb runs once it left for the kernel. */
function writeFrame(socket: net.Socket, type: number, id: number, payload: Buffer | undefined, cb?: (err?: Error | null) => void): boolean {
  const n = payload?.length ?? 0;
  if (n + 5 > MAX_FRAME_BYTES) {
    const err = new CairnError('EINVAL', `message of ${n} bytes exceeds the lane's ${MAX_FRAME_BYTES}-byte frame limit`);
    if (cb) queueMicrotask(() => cb(err));
    return true;
  }
  if (socket.destroyed) {
    if (cb) queueMicrotask(() => cb(new CairnError('EUNAVAIL', 'lane connection closed')));
    return false;
  }
  if (n === 0 || n < 4096) {
    // Small frames: one buffer; the frames of one event-loop turn leave in one writev.
    corkForThisTurn(socket);
    const f = Buffer.allocUnsafe(HEADER_BYTES + n);
    f.writeUInt32BE(n + 5, 0);
    f[4] = type;
    f.writeUInt32BE(id, 5);
    if (n > 0) payload!.copy(f, HEADER_BYTES);
    return socket.write(f, cb);
  }
  socket.cork();
  socket.write(frameHeader(type, id, n));
  const room = socket.write(payload!, cb);
  socket.uncork();
  return room;
}

/** DATA frames at least this large may be received into a buffer their call provides. */
const TARGET_MIN_BYTES = 64 * 1024;
/**
 * Read buffer shared by every lane connection of the process: each socket read lands in it and
 * is consumed (copied out by the frame reader) before the next read of any socket can happen,
 * so one buffer serves them all, and a busy connection allocates nothing per read (a new 64 KiB
 * buffer per read was the main source of V8's "external memory pressure" collections).
 */
const READ_BUFFER_BYTES = 256 * 1024;
let sharedReadBuffer: Buffer | undefined;

function readBuffer(): Buffer {
  sharedReadBuffer ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  return sharedReadBuffer;
}

/**
 * Switch an accepted socket to reading into the shared buffer: what net.connect's public
 * `onread` option does, which accepted sockets cannot be given. Uses net.Socket's own fields for
 * it (kBuffer, kBufferCb; node 20), and returns false — leaving the socket as it was — if they
 * are not there, so a node that changes them only costs the allocations back.
 */
function readIntoSharedBuffer(socket: net.Socket, onChunk: (chunk: Buffer) => void): boolean {
  const syms = Object.getOwnPropertySymbols(socket);
  const kBuffer = syms.find((x) => x.description === 'kBuffer');
  const kBufferCb = syms.find((x) => x.description === 'kBufferCb');
  const fields = socket as unknown as Record<symbol, unknown> & { _handle?: { useUserBuffer?: (b: Buffer) => void } };
  const handle = fields._handle;
  if (kBuffer === undefined || kBufferCb === undefined || fields[kBuffer] !== null || typeof handle?.useUserBuffer !== 'function') return false;
  const buf = readBuffer();
  handle.useUserBuffer(buf);
  fields[kBufferCb] = (bytes: number, b: Uint8Array): boolean => {
    onChunk(Buffer.from(b.buffer, b.byteOffset, bytes));
    return true;
  };
  fields[kBuffer] = buf;
  return true;
}
const EMPTY = Buffer.alloc(0);

/**
 * Splits a byte stream into frames. A frame that arrived within one socket chunk is handed on
 * as a view of that chunk. One that spans chunks is assembled once, as its bytes arrive: into a
 * buffer its call provides (`target`, asked for large DATA frames: the bytes go straight where
 * the call wants them, e.g. a pooled buffer or their place in a shard), or into a new one.
 */
class FrameReader {
  /** Header bytes of a frame whose header spans chunks. */
  private readonly head = Buffer.allocUnsafe(HEADER_BYTES);
  private headHave = 0;
  /** The payload being assembled; undefined between frames. */
  private body: Buffer | undefined;
  private bodyHave = 0;
  private type = 0;
  private id = 0;
  /** The body is the call's own buffer: written only while the call is open. */
  private targeted = false;
  /** The call of a targeted body is over: the rest of the frame is skipped, not written. */
  private dropping = false;

  constructor(
    private readonly onFrame: (type: number, id: number, payload: Buffer) => void,
    /** A buffer of exactly `bytes` for a large DATA payload of call `id`, or undefined for a new one. */
    private readonly target?: (id: number, bytes: number) => Buffer | undefined,
    /** Whether call `id` is still open. */
    private readonly isOpen?: (id: number) => boolean,
  ) {}

  /**
   * Feed the next bytes. transient: the chunk's memory is reused once this returns (a socket's
   * onread buffer), so nothing is handed on or kept as a view of it.
   */
  push(chunk: Buffer, transient = false): void {
    const n = chunk.length;
    let at = 0;
    while (at < n) {
      if (this.body === undefined) {
        let h: Buffer;
        let ho: number;
        if (this.headHave === 0 && n - at >= HEADER_BYTES) {
          h = chunk;
          ho = at;
          at += HEADER_BYTES;
        } else {
          const k = Math.min(HEADER_BYTES - this.headHave, n - at);
          chunk.copy(this.head, this.headHave, at, at + k);
          this.headHave += k;
          at += k;
          if (this.headHave >= 4) checkFrameLength(this.head.readUInt32BE(0));
          if (this.headHave < HEADER_BYTES) return;
          this.headHave = 0;
          h = this.head;
          ho = 0;
        }
        const len = h.readUInt32BE(ho);
        checkFrameLength(len);
        const type = h[ho + 4]!;
        const id = h.readUInt32BE(ho + 5);
        const p = len - 5;
        if (p === 0) {
          this.onFrame(type, id, EMPTY);
          continue;
        }
        let given = type === T_DATA && p >= TARGET_MIN_BYTES && this.target !== undefined ? this.target(id, p) : undefined;
        if (given !== undefined && !(given instanceof Buffer && given.length === p)) given = undefined;
        if (given === undefined && !transient && n - at >= p) {
          const view = chunk.subarray(at, at + p);
          at += p;
          this.onFrame(type, id, view);
          continue;
        }
        this.body = given ?? Buffer.allocUnsafe(p);
        this.targeted = given !== undefined;
        this.bodyHave = 0;
        this.type = type;
        this.id = id;
      }
      const body = this.body;
      const k = Math.min(body.length - this.bodyHave, n - at);
      if (this.targeted && !this.dropping && this.isOpen !== undefined && !this.isOpen(this.id)) this.dropping = true;
      if (!this.dropping) chunk.copy(body, this.bodyHave, at, at + k);
      this.bodyHave += k;
      at += k;
      if (this.bodyHave === body.length) {
        const dropped = this.dropping;
        this.body = undefined;
        this.targeted = false;
        this.dropping = false;
        if (!dropped) this.onFrame(this.type, this.id, body);
      }
    }
  }
}

function checkFrameLength(len: number): void {
  if (len < 5 || len > MAX_FRAME_BYTES) throw new CairnError('EINVAL', `lane: frame length ${len} out of range`);
}

interface ReceiveSlot {
  allocate?: (bytes: number) => Buffer | undefined;
}

/** The receive slot of each lane stream (client side: laneServerStream; server side: the call of a client-streaming handler). */
const receivers = new WeakMap<object, ReceiveSlot>();

/**
 * Receive the large messages (≥ 64 KiB) of a lane stream into buffers of the caller's choosing
 * instead of new ones: allocate(bytes) returns a buffer of exactly that many bytes, and the
 * message then arrives as that very buffer — or undefined, and it arrives in a new one as usual.
 * For the stream openServerStream returns (client side) and the call object a client-streaming
 * handler gets (server side). Each buffer is written only while the call is open; once the call
 * is over (cancelled, failed, ended) the lane writes nothing more into it. Returns false, doing
 * nothing, when the stream is not on the lane (grpc-js), so callers may use it unconditionally.
 */
export function laneReceiveInto(stream: object, allocate: (bytes: number) => Buffer | undefined): boolean {
  const slot = receivers.get(stream);
  if (slot === undefined) return false;
  slot.allocate = allocate;
  return true;
}

// ---------------------------------------------------------------------------------------------
// errors

interface WireError {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

function encodeError(err: CairnError): Buffer {
  const w: WireError = { code: err.code, message: err.message };
  if (err.details !== undefined) w.details = err.details;
  let b = Buffer.from(JSON.stringify(w));
  if (b.length > MAX_ERROR_JSON_BYTES) b = Buffer.from(JSON.stringify({ code: err.code, message: err.message.slice(0, 4096) }));
  return b;
}

function decodeError(payload: Buffer): CairnError {
  try {
    const w = JSON.parse(payload.toString('utf8')) as Partial<WireError>;
    if (isErrorCode(w.code) && typeof w.message === 'string') {
      const details = w.details !== null && typeof w.details === 'object' ? w.details : undefined;
      return new CairnError(w.code, w.message, details);
    }
  } catch {
    // fall through
  }
  return new CairnError('EIO', 'lane: malformed error frame from the server');
}

/**
 * The CairnError that gRPC metadata carries (`cairn-code`, `cairn-details`, as toServiceError
 * writes them), or undefined when it carries none. Used by both transports.
 */
export function cairnErrorFromMetadata(md: grpc.Metadata, message: string): CairnError | undefined {
  const code = md.get('cairn-code')[0];
  if (!isErrorCode(code)) return undefined;
  const raw = md.get('cairn-details')[0];
  let details: Record<string, unknown> | undefined;
  if (typeof raw === 'string') {
    try {
      details = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      details = undefined;
    }
  }
  return new CairnError(code, message, details);
}

/** A handler's error (a gRPC ServiceError shape from toServiceError, or anything) as a CairnError. */
function handlerError(err: unknown): CairnError {
  if (err instanceof CairnError) return err;
  const e = err as Partial<grpc.ServiceError> | null | undefined;
  const md = e?.metadata;
  if (md instanceof grpc.Metadata) {
    const fromMd = cairnErrorFromMetadata(md, String(e?.details ?? e?.message ?? ''));
    if (fromMd !== undefined) return fromMd;
  }
  if (e !== null && e !== undefined && typeof e.code === 'number') {
    if (e.code === grpc.status.DEADLINE_EXCEEDED) return new CairnError('ETIMEDOUT', String(e.details ?? 'deadline exceeded'));
    if (e.code === grpc.status.UNAVAILABLE) return new CairnError('EUNAVAIL', String(e.details ?? 'unavailable'));
    if (e.code === grpc.status.CANCELLED) return new CairnError('ECANCELED', String(e.details ?? 'cancelled'));
  }
  return new CairnError('EIO', `internal error: ${(err as Error)?.message ?? String(err)}`);
}

/** The gRPC ServiceError shape (what grpc-js stream callers receive) for a CairnError. */
export function serviceErrorOf(err: CairnError): grpc.ServiceError {
  const md = new grpc.Metadata();
  md.set('cairn-code', err.code);
  if (err.details !== undefined) md.set('cairn-details', JSON.stringify(err.details));
  const status =
    err.code === 'ETIMEDOUT' ? grpc.status.DEADLINE_EXCEEDED
    : err.code === 'ECANCELED' ? grpc.status.CANCELLED
    : err.code === 'EUNAVAIL' || err.code === 'ENOTLEADER' || err.code === 'EAGAIN' ? grpc.status.UNAVAILABLE
    : grpc.status.UNKNOWN;
  return Object.assign(new Error(`${status} ${grpc.status[status]}: ${err.message}`), {
    code: status,
    details: err.message,
    metadata: md,
  }) as grpc.ServiceError;
}

// ---------------------------------------------------------------------------------------------
// server

interface ServerMethod {
  def: grpc.MethodDefinition<unknown, unknown>;
  handler: Function;
}

/** Every method of the given services, by path ("/cairn.meta.Meta/Mkdir"). */
export function laneMethods(services: Array<{ service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation }>): Map<string, ServerMethod> {
  const out = new Map<string, ServerMethod>();
  for (const s of services) {
    for (const [name, def] of Object.entries(s.service)) {
      const handler = s.impl[name] ?? s.impl[def.originalName ?? ''];
      if (typeof handler === 'function') out.set(def.path, { def: def as grpc.MethodDefinition<unknown, unknown>, handler });
    }
  }
  return out;
}

interface ServerCallState {
  cancel(): void;
  data?(payload: Buffer): void;
  end?(): void;
  /** Where a large DATA payload of this call goes (laneReceiveInto). */
  allocate?(bytes: number): Buffer | undefined;
}

/** The server side of one lane connection: runs the services' own handlers on frames. */
export class LaneServerConnection {
  private readonly calls = new Map<number, ServerCallState>();
  private readonly reader: FrameReader;
  private closed = false;
  private readonly peer: string;
  /** Streams waiting for the reader to catch up (the socket is paused while any is). */
  private readonly backlogged = new Set<number>();
  /** Method label of each open call, for the calls metric. */
  private readonly paths = new Map<number, string>();
  private lastError: string | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly methods: Map<string, ServerMethod>,
    private readonly onClose: (c: LaneServerConnection) => void,
    /** A token's scope: methods it may not call, with why (EACCES rather than "no such method"). */
    private readonly denied?: { paths: ReadonlySet<string>; why: string },
  ) {
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.reader = new FrameReader(
      (t, id, p) => this.frame(t, id, p),
      (id, bytes) => this.calls.get(id)?.allocate?.(bytes),
      (id) => this.calls.has(id),
    );
    socket.setNoDelay(true);
    // Reads into the process's shared read buffer when node lets us (see readIntoSharedBuffer),
    // else one new buffer per read as usual.
    if (socket instanceof tls.TLSSocket || !readIntoSharedBuffer(socket, (chunk) => this.receive(chunk, true))) socket.on('data', (chunk: Buffer) => this.receive(chunk, false));
    socket.on('error', () => undefined);
    socket.on('close', () => this.close());
  }

  /** Bytes from the socket (transient: in the shared read buffer, reused once this returns). */
  receive(chunk: Buffer, transient: boolean): void {
    try {
      this.reader.push(chunk, transient);
    } catch (err) {
      log.warn({ peer: this.peer, err: (err as Error).message }, 'lane: protocol error, closing the connection');
      metric.protocolErrors.inc();
      this.socket.destroy();
    }
  }

  /** Close gracefully: what is written (even corked for this turn) goes out, then FIN. */
  end(): void {
    if (!this.socket.writableEnded) this.socket.end();
  }

  /** Stop: cancel every call and close the socket. */
  destroy(): void {
    this.socket.destroy();
    this.close();
  }

  get openCalls(): number {
    return this.calls.size;
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.calls.values()) c.cancel();
    this.calls.clear();
    this.paths.clear();
    metric.connections.dec();
    this.onClose(this);
  }

  private reply(id: number, type: number, payload?: Buffer, cb?: (err?: Error | null) => void): void {
    if (!this.calls.has(id)) {
      cb?.(new CairnError('ECANCELED', 'call is over'));
      return;
    }
    if (type === T_OK || type === T_ERR) {
      metric.calls.inc({ method: this.paths.get(id) ?? '?', result: type === T_OK ? 'OK' : (this.lastError ?? 'EIO') });
      this.paths.delete(id);
      this.calls.delete(id);
      this.backlogged.delete(id);
      if (this.backlogged.size === 0) this.socket.resume();
    }
    writeFrame(this.socket, type, id, payload, cb);
  }

  private fail(id: number, err: unknown): void {
    const e = handlerError(err);
    this.lastError = e.code;
    this.reply(id, T_ERR, encodeError(e));
  }

  private frame(type: number, id: number, payload: Buffer): void {
    if (type === T_CALL) {
      this.start(id, payload);
      return;
    }
    if (type === T_PING) {
      writeFrame(this.socket, T_PONG, id, undefined);
      return;
    }
    const c = this.calls.get(id);
    if (c === undefined) return; // a call that is over (cancelled, failed): late frames are dropped
    if (type === T_DATA && c.data) c.data(payload);
    else if (type === T_END && c.end) c.end();
    else if (type === T_CANCEL) {
      metric.calls.inc({ method: this.paths.get(id) ?? '?', result: 'ECANCELED' });
      this.paths.delete(id);
      this.calls.delete(id);
      c.cancel();
    } else {
      this.fail(id, new CairnError('EINVAL', `lane: unexpected frame type ${type} for this call`));
      c.cancel();
    }
  }

  private start(id: number, payload: Buffer): void {
    if (this.calls.has(id)) {
      log.warn({ peer: this.peer, id }, 'lane: call id reused while open, closing the connection');
      metric.protocolErrors.inc();
      this.socket.destroy();
      return;
    }
    if (payload.length < 2 || payload.length < 2 + payload.readUInt16BE(0)) {
      this.socket.destroy();
      return;
    }
    const pathLen = payload.readUInt16BE(0);
    const path = payload.toString('latin1', 2, 2 + pathLen);
    const body = payload.subarray(2 + pathLen);
    this.paths.set(id, this.methods.has(path) ? methodLabel(path) : 'unknown');
    // Placeholder state so that reply() accepts the answer; replaced below for streams.
    const base: ServerCallState = { cancel: () => undefined };
    this.calls.set(id, base);
    if (this.calls.size > MAX_CALLS_PER_CONNECTION) {
      this.fail(id, new CairnError('EAGAIN', `lane: more than ${MAX_CALLS_PER_CONNECTION} calls open on one connection`));
      return;
    }
    const m = this.methods.get(path);
    if (m === undefined) {
      if (this.denied?.paths.has(path) === true) {
        log.warn({ peer: this.peer, path }, 'refused a call: outside the token\'s scope');
        this.fail(id, new CairnError('EACCES', `${path}: ${this.denied.why}`));
        return;
      }
      if (!mayCall('client', path)) {
        log.warn({ peer: this.peer, path }, 'refused a call: only nodes may call it');
        this.fail(id, new CairnError('EACCES', `${path}: only a node of the cluster may call it`));
        return;
      }
      this.fail(id, new CairnError('EINVAL', `no rpc method ${path} on this server`));
      return;
    }
    const { def, handler } = m;
    if (def.requestStream && def.responseStream) {
      this.fail(id, new CairnError('EINVAL', `${path}: bidirectional streams are not served on the lane`));
      return;
    }
    const common = {
      metadata: new grpc.Metadata(),
      cancelled: false,
      getPeer: () => this.peer,
      getPath: () => path,
      getDeadline: () => Infinity,
      sendMetadata: () => undefined,
    };
    if (!def.requestStream) {
      let request: unknown;
      try {
        request = def.requestDeserialize(body);
      } catch (err) {
        this.fail(id, new CairnError('EINVAL', `${path}: request does not decode: ${(err as Error).message}`));
        return;
      }
      if (!def.responseStream) this.unary(id, def, handler, Object.assign(new EventEmitter(), common, { request }));
      else this.serverStream(id, def, handler, common, request);
      return;
    }
    this.clientStream(id, def, handler, common, body);
  }

  private unary(id: number, def: grpc.MethodDefinition<unknown, unknown>, handler: Function, call: EventEmitter & { cancelled: boolean }): void {
    this.calls.set(id, {
      cancel: () => {
        call.cancelled = true;
        call.emit('cancelled');
      },
    });
    const callback = (err: unknown, value?: unknown): void => this.answer(id, def, err, value);
    try {
      handler(call, callback);
    } catch (err) {
      this.fail(id, err);
    }
  }

  /** A handler's callback(err, value): the error, or the value encoded as the call's reply. */
  private answer(id: number, def: grpc.MethodDefinition<unknown, unknown>, err: unknown, value: unknown): void {
    if (err !== null && err !== undefined) {
      this.fail(id, err);
      return;
    }
    let out: Buffer;
    try {
      out = def.responseSerialize(value);
    } catch (e) {
      this.fail(id, new CairnError('EIO', `reply does not encode: ${(e as Error).message}`));
      return;
    }
    this.reply(id, T_OK, out);
  }

  private serverStream(id: number, def: grpc.MethodDefinition<unknown, unknown>, handler: Function, common: object, request: unknown): void {
    let finished = false;
    const call = new Writable({
      objectMode: true,
      highWaterMark: 16,
      write: (msg: unknown, _enc, cb) => {
        let out: Buffer;
        try {
          out = def.responseSerialize(msg);
        } catch (e) {
          cb(new CairnError('EIO', `stream message does not encode: ${(e as Error).message}`));
          return;
        }
        this.reply(id, T_DATA, out, (err) => cb(err ?? null));
      },
      final: (cb) => {
        if (!finished) {
          finished = true;
          this.reply(id, T_OK);
        }
        cb();
      },
    });
    Object.assign(call, common, { request });
    call.on('error', (err: unknown) => {
      if (finished) return;
      finished = true;
      this.fail(id, err);
    });
    this.calls.set(id, {
      cancel: () => {
        finished = true;
        (call as unknown as { cancelled: boolean }).cancelled = true;
        call.emit('cancelled');
        call.destroy();
      },
    });
    try {
      handler(call);
    } catch (err) {
      call.emit('error', err);
    }
  }

  private clientStream(id: number, def: grpc.MethodDefinition<unknown, unknown>, handler: Function, common: object, first: Buffer): void {
    let finished = false;
    const call = new Readable({
      objectMode: true,
      highWaterMark: 16,
      read: () => {
        if (this.backlogged.delete(id) && this.backlogged.size === 0) this.socket.resume();
      },
    });
    Object.assign(call, common);
    const push = (payload: Buffer): void => {
      let msg: unknown;
      try {
        msg = def.requestDeserialize(payload);
      } catch (err) {
        call.destroy(new CairnError('EINVAL', `request message does not decode: ${(err as Error).message}`));
        return;
      }
      if (!call.push(msg)) {
        this.backlogged.add(id);
        this.socket.pause();
      }
    };
    const slot: ReceiveSlot = {};
    receivers.set(call, slot);
    this.calls.set(id, {
      data: push,
      allocate: (bytes) => slot.allocate?.(bytes),
      end: () => call.push(null),
      cancel: () => {
        (call as unknown as { cancelled: boolean }).cancelled = true;
        call.emit('cancelled');
        call.destroy(new CairnError('ECANCELED', 'the client cancelled the call'));
      },
    });
    push(first);
    const callback = (err: unknown, value?: unknown): void => {
      if (finished) return;
      finished = true;
      this.answer(id, def, err, value);
    };
    try {
      handler(call, callback);
    } catch (err) {
      callback(err);
    }
  }
}

export interface LaneListener {
  port: number;
  /** Stop accepting; close lane connections (after their open calls, or at once after graceMs). */
  close(graceMs: number): Promise<void>;
}

/** What the first bytes of a connection say it is (undefined: not enough bytes yet). */
function classify(head: Buffer): 'tls' | 'lane' | 'grpc' | 'http1' | 'unknown' | undefined {
  if (head.length === 0) return undefined;
  if (head[0] === TLS_HANDSHAKE_BYTE) return 'tls';
  const prefixOf = (want: Buffer): boolean => head.subarray(0, Math.min(head.length, want.length)).equals(want.subarray(0, Math.min(head.length, want.length)));
  if (prefixOf(LANE_MAGIC)) return head.length < LANE_MAGIC.length ? undefined : 'lane';
  if (prefixOf(H2_PREFACE)) return head.length < H2_PREFACE.length ? undefined : 'grpc';
  const text = head.subarray(0, 16).toString('latin1');
  if (/^[A-Z]{1,10} /.test(text)) return 'http1';
  if (/^[A-Z]{1,10}$/.test(text) && head.length < 11) return undefined;
  return 'unknown';
}

/** The reply to an HTTP/1.x request: a clear refusal, not HTTP/2 frames. */
const HTTP1_REFUSAL = Buffer.from(
  'HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n' +
    'This is a Cairn node: it speaks gRPC (HTTP/2) and the Cairn lane, not HTTP/1.1. Use `cairn status --endpoint host:port` or a gRPC client.\n',
  'latin1',
);

/** Who may use a listener, when it requires TLS (security.ts). */
export interface ListenSecurity {
  /** Options of the server side of each TLS connection. */
  tlsOptions: tls.TlsOptions;
  /** Who the peer is (its verified certificate's kind), or a thrown EACCES. */
  verify(socket: tls.TLSSocket): PeerKind;
  /** A peer without a certificate may present a client token (tokens.ts): its name and scope, or a thrown EACCES. */
  verifyToken?(text: string): { name: string; scope: TokenScope };
}

/** The services a peer of each kind may call. */
export type ListenMethods = Record<PeerKind, Map<string, ServerMethod>>;

/**
 * Listen on host:port for both the lane and gRPC (handed to grpc-js's connection injector with
 * the peer's kind). With `security`, a connection must start a TLS handshake and present a
 * certificate of the cluster: anything else is refused (a lane client is told why) and logged.
 * Returns once listening.
 */
export async function listenLaneAndGrpc(
  host: string,
  port: number,
  methods: ListenMethods,
  injectGrpc: (socket: net.Socket, kind: PeerKind) => void,
  security?: ListenSecurity,
): Promise<LaneListener> {
  const conns = new Set<LaneServerConnection>();
  const sockets = new Set<net.Socket>();
  const refuse = (socket: net.Socket, what: string, reason: string, peer: string): void => {
    metric.refused.inc({ reason: what });
    log.warn({ peer, what, reason }, 'refused a connection');
    if (what === 'lane') socket.end(Buffer.concat([LANE_REFUSED, Buffer.from(reason.slice(0, 1000), 'utf8')]));
    else if (what === 'http1') socket.end(HTTP1_REFUSAL);
    else socket.destroy();
  };
  // Reads the first bytes of a connection (inside TLS when `kind` is known) and hands it on.
  // The methods of a token's scope (made once per scope).
  const scoped = new Map<TokenScope, Map<string, ServerMethod>>();
  const methodsOfScope = (scope: TokenScope): Map<string, ServerMethod> => {
    let m = scoped.get(scope);
    if (m === undefined) {
      m = new Map([...methods.client].filter(([path]) => scopeAllows(scope, path)));
      scoped.set(scope, m);
    }
    return m;
  };
  const sniff = (socket: net.Socket, kind: PeerKind | undefined, peer: string, scope?: TokenScope): void => {
    let head: Buffer = Buffer.alloc(0);
    // A connection that says nothing does not hold a socket for ever.
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy());
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const what = classify(head);
      if (what === undefined) return;
      socket.setTimeout(0);
      socket.removeListener('data', onData);
      if (what === 'http1') return refuse(socket, what, 'HTTP/1.x request', peer);
      if (what === 'unknown') return refuse(socket, what, 'unknown protocol', peer);
      if (what === 'tls') {
        if (security === undefined || kind !== undefined) return refuse(socket, what, 'TLS is not configured on this node', peer);
        // Node's own TLS server path (never listening: it is handed the socket, with what was read).
        socket.pause();
        socket.unshift(head);
        socket.setTimeout(0);
        sockets.delete(socket);
        tlsServer?.emit('connection', socket);
        return;
      }
      if (security !== undefined && kind === undefined) {
        return refuse(socket, what, 'this node requires TLS with a certificate of its cluster (see docs/operations.md: credentials)', peer);
      }
      const peerKind: PeerKind = kind ?? 'node';
      if (what === 'grpc' && scope !== undefined) return refuse(socket, what, 'a client token is accepted on the lane only; gRPC needs a client certificate', peer);
      if (what === 'grpc') {
        // A gRPC connection: give grpc-js the socket with what was read.
        socket.pause();
        socket.unshift(head);
        sockets.delete(socket);
        injectGrpc(socket, peerKind);
        return;
      }
      socket.write(LANE_MAGIC);
      // From here the connection is closed through `conns` (after its open calls), not as a bare socket.
      sockets.delete(socket);
      const c = new LaneServerConnection(
        socket,
        scope === undefined ? methods[peerKind] : methodsOfScope(scope),
        (x) => conns.delete(x),
        scope === undefined ? undefined : { paths: new Set([...methods.client.keys()].filter((p) => !scopeAllows(scope, p))), why: `a ${scope}-scoped client token may not call it` },
      );
      metric.connections.inc();
      conns.add(c);
      const rest = head.subarray(LANE_MAGIC.length);
      if (rest.length > 0) c.receive(rest, false);
    };
    socket.on('data', onData);
  };
  const tlsServer =
    security === undefined
      ? undefined
      : tls.createServer({ ...security.tlsOptions, handshakeTimeout: HANDSHAKE_TIMEOUT_MS }, (t) => {
          const peer = `${t.remoteAddress ?? '?'}:${t.remotePort ?? 0}`;
          sockets.add(t);
          t.on('close', () => sockets.delete(t));
          t.on('error', () => undefined);
          let k: PeerKind;
          try {
            k = security.verify(t);
          } catch (err) {
            // No certificate at all: the client may present a token first (tokens.ts).
            if (security.verifyToken !== undefined && t.getPeerX509Certificate() === undefined) {
              readToken(t, peer, security.verifyToken, (err as Error).message);
              return;
            }
            // Refused: a lane client is told why once it sends its magic; others are cut.
            metric.refused.inc({ reason: 'certificate' });
            log.warn({ peer, reason: (err as Error).message }, 'refused a connection: bad credentials');
            t.once('data', (d: Buffer) => (d[0] === LANE_MAGIC[0] ? t.end(Buffer.concat([LANE_REFUSED, Buffer.from((err as Error).message, 'utf8')])) : t.destroy()));
            t.setTimeout(HANDSHAKE_TIMEOUT_MS, () => t.destroy());
            return;
          }
          sniff(t, k, peer);
        });
  // A token client's first bytes: TOKEN_MAGIC, u16 length, the token; then the lane as usual.
  const readToken = (t: tls.TLSSocket, peer: string, check: NonNullable<ListenSecurity['verifyToken']>, noCert: string): void => {
    let head: Buffer = Buffer.alloc(0);
    t.setTimeout(HANDSHAKE_TIMEOUT_MS, () => t.destroy());
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, TOKEN_MAGIC.length);
      const refuseWith = (reason: string): void => {
        t.removeListener('data', onData);
        t.setTimeout(0);
        metric.refused.inc({ reason: 'token' });
        log.warn({ peer, reason }, 'refused a connection: bad credentials');
        if (head[0] === LANE_MAGIC[0]) t.end(Buffer.concat([LANE_REFUSED, Buffer.from(reason.slice(0, 1000), 'utf8')]));
        else t.destroy();
      };
      if (!head.subarray(0, n).equals(TOKEN_MAGIC.subarray(0, n))) return refuseWith(`${noCert} and no client token`);
      if (head.length < TOKEN_MAGIC.length + 2) return;
      const len = head.readUInt16BE(TOKEN_MAGIC.length);
      if (head.length < TOKEN_MAGIC.length + 2 + len) return;
      t.removeListener('data', onData);
      t.setTimeout(0);
      let who: { name: string; scope: TokenScope };
      try {
        who = check(head.toString('utf8', TOKEN_MAGIC.length + 2, TOKEN_MAGIC.length + 2 + len));
      } catch (err) {
        head = LANE_MAGIC; // answered as a lane client: it is told why
        return refuseWith((err as Error).message);
      }
      log.debug({ peer, token: who.name, scope: who.scope }, 'client token accepted');
      const rest = head.subarray(TOKEN_MAGIC.length + 2 + len);
      if (rest.length > 0) t.unshift(rest);
      sniff(t, 'client', `${peer} (token ${who.name})`, who.scope);
    };
    t.on('data', onData);
  };
  tlsServer?.on('tlsClientError', (err, t) => {
    metric.refused.inc({ reason: 'tls' });
    log.warn({ peer: `${t.remoteAddress ?? '?'}:${t.remotePort ?? 0}`, err: err.message }, 'refused a connection: TLS handshake failed');
  });
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    sniff(socket, undefined, `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err: err.message }, 'lane: listener error'));
  const bound = (server.address() as net.AddressInfo).port;
  return {
    port: bound,
    close: async (graceMs) => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        const deadline = Date.now() + graceMs;
        const poll = (): void => {
          // A connection with no open call is ended, not destroyed: a reply still corked for this
          // turn of the event loop must reach the client before the FIN.
          for (const c of conns) {
            if (Date.now() >= deadline) c.destroy();
            else if (c.openCalls === 0) c.end();
          }
          for (const s of sockets) s.destroy();
          if (conns.size > 0) setTimeout(poll, 20).unref();
        };
        poll();
      });
    },
  };
}

/**
 * A node's local socket (a unix socket at `path`): the lane for programs on the same machine,
 * without TLS; the file's permissions (`mode`, and `gid` for 0660) decide who may connect, the
 * kernel refusing everyone else. A connection gets the methods `methods` (a client's).
 */
export async function listenLaneUnix(path: string, methods: Map<string, ServerMethod>, mode: number, gid?: number): Promise<{ close(graceMs: number): Promise<void> }> {
  const { lstat, unlink, chmod, chown } = await import('node:fs/promises');
  // A socket left by a process that is gone is removed; anything else there is not touched.
  const old = await lstat(path).catch(() => undefined);
  if (old !== undefined) {
    if (!old.isSocket()) throw new CairnError('EEXIST', `${path} exists and is not a socket: not replacing it`);
    await unlink(path);
  }
  const conns = new Set<LaneServerConnection>();
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    let head: Buffer = Buffer.alloc(0);
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy());
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, LANE_MAGIC.length);
      if (!head.subarray(0, n).equals(LANE_MAGIC.subarray(0, n))) {
        socket.removeListener('data', onData);
        metric.refused.inc({ reason: 'unknown' });
        log.warn({ peer: `unix:${path}` }, 'refused a connection on the local socket: it does not speak the lane');
        socket.destroy();
        return;
      }
      if (head.length < LANE_MAGIC.length) return;
      socket.removeListener('data', onData);
      socket.setTimeout(0);
      socket.write(LANE_MAGIC);
      const c = new LaneServerConnection(socket, methods, (x) => conns.delete(x));
      metric.connections.inc();
      conns.add(c);
      const rest = head.subarray(LANE_MAGIC.length);
      if (rest.length > 0) c.receive(rest, false);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  await chmod(path, mode);
  if (gid !== undefined) await chown(path, -1, gid);
  server.on('error', (err) => log.error({ err: err.message }, 'lane: local socket error'));
  return {
    close: async (graceMs) => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        const deadline = Date.now() + graceMs;
        const poll = (): void => {
          for (const c of conns) {
            if (Date.now() >= deadline) c.destroy();
            else if (c.openCalls === 0) c.end();
          }
          if (conns.size > 0) setTimeout(poll, 20).unref();
        };
        poll();
      });
      await unlink(path).catch(() => undefined);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// client

interface PendingCall {
  onFrame(type: number, payload: Buffer): void;
  onClose(err: CairnError): void;
  /** Where a large DATA payload of this call goes (laneReceiveInto). */
  allocate?(bytes: number): Buffer | undefined;
}

/** One client connection: calls multiplexed by id. */
class LaneClientConnection {
  private readonly pending = new Map<number, PendingCall>();
  private nextId = 1;
  private closed = false;
  private readonly reader: FrameReader;
  /** Set while some stream's reader is behind (the socket is paused). */
  paused = false;
  onDead: (() => void) | undefined;

  private lastHeardMs = Date.now();
  private readonly keepalive: NodeJS.Timeout;

  private constructor(
    readonly socket: net.Socket,
    readonly address: string,
  ) {
    this.reader = new FrameReader(
      (t, id, p) => {
        if (t !== T_PONG) this.pending.get(id)?.onFrame(t, p);
      },
      (id, bytes) => this.pending.get(id)?.allocate?.(bytes),
      (id) => this.pending.has(id),
    );
    const { intervalMs, timeoutMs } = keepaliveSettings;
    this.keepalive = setInterval(() => {
      // A socket we paused ourselves (a slow reader of a stream) cannot hear the PONG.
      if (this.paused) this.lastHeardMs = Date.now();
      const silentMs = Date.now() - this.lastHeardMs;
      if (silentMs >= timeoutMs) {
        log.warn({ peer: address, silentMs }, 'lane: peer silent, closing the connection');
        metric.deadPeers.inc();
        this.close(new CairnError('EUNAVAIL', `lane: ${address} silent for ${silentMs} ms`));
      } else if (silentMs >= intervalMs) writeFrame(socket, T_PING, 0, undefined);
    }, Math.max(10, Math.floor(intervalMs / 2)));
    this.keepalive.unref();
    socket.on('error', () => undefined);
    socket.on('close', () => this.close(new CairnError('EUNAVAIL', `lane connection to ${address} closed`)));
  }

  /** Bytes from the socket (transient: in the shared read buffer, reused once this returns). */
  receive(chunk: Buffer, transient: boolean): void {
    this.lastHeardMs = Date.now();
    try {
      this.reader.push(chunk, transient);
    } catch (err) {
      this.socket.destroy(err as Error);
    }
  }

  static connect(address: string, timeoutMs: number): Promise<LaneClientConnection> {
    // unix:/path: a node's local socket (no TLS: its file permissions let us in).
    const unixPath = address.startsWith('unix:') ? address.slice('unix:'.length) : undefined;
    const i = address.lastIndexOf(':');
    const host = address.slice(0, i).replace(/^\[|\]$/g, '');
    const port = Number(address.slice(i + 1));
    return new Promise((resolve, reject) => {
      if (unixPath === undefined && !(i > 0 && Number.isInteger(port) && port > 0 && port < 65536)) {
        reject(new CairnError('EINVAL', `bad address ${address}`));
        return;
      }
      // Reads go into one buffer shared by every client connection (onread), not into a new
      // 64 KiB buffer per read: the frame reader copies out what it keeps, synchronously.
      let sink: (chunk: Buffer) => void = () => undefined;
      const onread = {
        buffer: readBuffer(),
        callback: (bytes: number, buf: Uint8Array): boolean => {
          sink(Buffer.from(buf.buffer, buf.byteOffset, bytes));
          return true;
        },
      };
      // With this process's TLS identity (security.ts): mutual TLS, the server a node of our CA.
      const id = unixPath === undefined ? tlsIdentity() : undefined;
      const socket: net.Socket =
        unixPath !== undefined
          ? net.connect({ path: unixPath, onread })
          : id === undefined
          ? net.connect({ host, port, noDelay: true, onread })
          : tls.connect({ host, port, noDelay: true, onread, ...clientTlsOptions(id), ...(net.isIP(host) === 0 ? { servername: host } : {}) } as tls.ConnectionOptions);
      let refused = false;
      let got: Buffer = Buffer.alloc(0);
      const timer = setTimeout(() => fail(new CairnError('EUNAVAIL', `lane: connecting to ${address} timed out after ${timeoutMs} ms`)), timeoutMs);
      const fail = (err: CairnError): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', (err: NodeJS.ErrnoException) =>
        fail(
          /CERT|SSL|TLS|certificate/i.test(`${err.code ?? ''} ${err.message}`)
            ? new CairnError('EACCES', `lane: TLS with ${address} failed: ${err.message}`)
            : err.code === 'EACCES' || err.code === 'EPERM'
            ? new CairnError('EACCES', `${address}: permission denied (the local socket's file permissions do not let this user in)`)
            : new CairnError('EUNAVAIL', `lane: cannot reach ${address}: ${err.code ?? err.message}`),
        ),
      );
      socket.once('close', () =>
        fail(
          refused
            ? new CairnError('EACCES', `${address} refused this client: ${got.subarray(LANE_REFUSED.length).toString('utf8') || 'no reason given'}`)
            : new CairnError('EUNAVAIL', `lane: ${address} closed the connection during the handshake`),
        ),
      );
      // A token client (an identity without a certificate) says its token before the magic.
      const token = id !== undefined && id.certPem === '' ? clientToken() : undefined;
      socket.once(id === undefined ? 'connect' : 'secureConnect', () => socket.write(token === undefined ? LANE_MAGIC : Buffer.concat([tokenPreamble(token), LANE_MAGIC])));
      sink = (chunk: Buffer): void => {
        got = Buffer.concat([got, chunk]);
        if (got.length < LANE_MAGIC.length) return;
        if (got.subarray(0, LANE_REFUSED.length).equals(LANE_REFUSED)) {
          // The reason follows until the server closes.
          refused = true;
          return;
        }
        sink = () => undefined;
        if (!got.subarray(0, LANE_MAGIC.length).equals(LANE_MAGIC)) {
          fail(new CairnError('EUNAVAIL', `lane: ${address} does not speak the lane`));
          return;
        }
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.removeAllListeners('close');
        const c = new LaneClientConnection(socket, address);
        sink = (b) => c.receive(b, true);
        const rest = got.subarray(LANE_MAGIC.length);
        if (rest.length > 0) c.receive(rest, false);
        resolve(c);
      };
    });
  }

  get alive(): boolean {
    return !this.closed && !this.socket.destroyed;
  }

  get open(): number {
    return this.pending.size;
  }

  /** Start a call; returns its id. Throws EUNAVAIL (nothing sent) if the connection is gone. */
  begin(path: string, body: Buffer, p: PendingCall): number {
    if (!this.alive) throw new CairnError('EUNAVAIL', `lane connection to ${this.address} closed`);
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_fff0 ? 1 : this.nextId + 1;
    this.pending.set(id, p);
    this.socket.ref();
    const pathBytes = Buffer.from(path, 'latin1');
    const payload = Buffer.allocUnsafe(2 + pathBytes.length + body.length);
    payload.writeUInt16BE(pathBytes.length, 0);
    pathBytes.copy(payload, 2);
    body.copy(payload, 2 + pathBytes.length);
    writeFrame(this.socket, T_CALL, id, payload);
    return id;
  }

  send(id: number, type: number, payload: Buffer | undefined, cb?: (err?: Error | null) => void): boolean {
    return writeFrame(this.socket, type, id, payload, cb);
  }

  finish(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.socket.unref();
  }

  close(err: CairnError): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepalive);
    this.socket.destroy();
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const p of calls) p.onClose(err);
    this.onDead?.();
  }
}

/** The lane connections of one address: one shared for unary calls, a pool for streams. */
class LaneChannel {
  private shared: Promise<LaneClientConnection> | undefined;
  private readonly idle: LaneClientConnection[] = [];

  constructor(readonly address: string) {}

  private connectTimeoutMs(timeoutMs: number): number {
    // A TLS connection also needs its handshake: more room on a busy machine.
    return Math.max(50, Math.min(timeoutMs, tlsIdentity() === undefined ? 5000 : 10_000));
  }

  sharedConnection(timeoutMs: number): Promise<LaneClientConnection> {
    if (this.shared === undefined) {
      const p = LaneClientConnection.connect(this.address, this.connectTimeoutMs(timeoutMs));
      this.shared = p;
      p.then(
        (c) => {
          c.socket.unref();
          c.onDead = () => {
            if (this.shared === p) this.shared = undefined;
          };
        },
        () => {
          if (this.shared === p) this.shared = undefined;
        },
      );
    }
    return this.shared;
  }

  async streamConnection(timeoutMs: number): Promise<LaneClientConnection> {
    for (;;) {
      const c = this.idle.pop();
      if (c === undefined) break;
      if (c.alive) return c;
    }
    const c = await LaneClientConnection.connect(this.address, this.connectTimeoutMs(timeoutMs));
    c.onDead = () => {
      const i = this.idle.indexOf(c);
      if (i >= 0) this.idle.splice(i, 1);
    };
    return c;
  }

  release(c: LaneClientConnection): void {
    if (!c.alive || c.open > 0) return;
    if (c.paused) {
      c.paused = false;
      c.socket.resume();
    }
    c.socket.unref();
    if (this.idle.length < MAX_IDLE_STREAM_CONNECTIONS) this.idle.push(c);
    else c.close(new CairnError('ECANCELED', 'idle'));
  }

  closeAll(): void {
    void this.shared?.then((c) => c.close(new CairnError('ECANCELED', 'channel closed')), () => undefined);
    this.shared = undefined;
    for (const c of this.idle.splice(0)) c.close(new CairnError('ECANCELED', 'channel closed'));
  }
}

const channels = new Map<string, LaneChannel>();

function channel(address: string): LaneChannel {
  let ch = channels.get(address);
  if (ch === undefined) {
    ch = new LaneChannel(address);
    channels.set(address, ch);
  }
  return ch;
}

/** Close every lane connection this process holds (tests; a CLI that wants to exit early). */
export function closeAllLanes(): void {
  for (const ch of channels.values()) ch.closeAll();
  channels.clear();
}

/**
 * A unary call on the lane. Errors are CairnErrors: EUNAVAIL when the request was never sent
 * (no connection); ETIMEDOUT when no reply came in time or the connection broke with the
 * request in flight (its outcome is unknown); otherwise the server's own error.
 */
export async function laneUnary(address: string, def: grpc.MethodDefinition<unknown, unknown>, req: unknown, timeoutMs: number): Promise<unknown> {
  const started = Date.now();
  let body: Buffer;
  try {
    body = def.requestSerialize(req);
  } catch (err) {
    throw new CairnError('EINVAL', `${def.path}: request does not encode: ${(err as Error).message}`);
  }
  let conn = await channel(address).sharedConnection(timeoutMs);
  // A connection that died since it was made (the peer restarted): one fresh try.
  if (!conn.alive) conn = await channel(address).sharedConnection(timeoutMs);
  const left = timeoutMs - (Date.now() - started);
  if (left <= 0) throw new CairnError('ETIMEDOUT', `${def.path} to ${address}: no connection within ${timeoutMs} ms`);
  const c = conn;
  return new Promise((resolve, reject) => {
    let id = 0;
    const timer = setTimeout(() => {
      c.finish(id);
      c.send(id, T_CANCEL, undefined);
      reject(new CairnError('ETIMEDOUT', `${def.path} to ${address}: no reply within ${timeoutMs} ms`));
    }, left);
    try {
      id = c.begin(def.path, body, {
      onFrame: (type, payload) => {
        clearTimeout(timer);
        c.finish(id);
        if (type === T_OK) {
          try {
            resolve(def.responseDeserialize(payload));
          } catch (err) {
            reject(new CairnError('EIO', `${def.path}: reply does not decode: ${(err as Error).message}`));
          }
        } else if (type === T_ERR) reject(decodeError(payload));
        else reject(new CairnError('EIO', `${def.path}: unexpected frame type ${type} in reply`));
      },
      onClose: (err) => {
        clearTimeout(timer);
        reject(new CairnError('ETIMEDOUT', `${def.path} to ${address}: ${err.message} with the request in flight; its outcome is unknown`));
      },
    });
    } catch (err) {
      clearTimeout(timer);
      reject(err);
    }
  });
}

interface StreamCallOptions {
  deadline?: Date | number;
}

function deadlineMs(opts: StreamCallOptions | undefined): number | undefined {
  const d = opts?.deadline;
  if (d === undefined) return undefined;
  const t = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : undefined;
}

/**
 * A client-streaming call on the lane, shaped like grpc-js's ClientWritableStream: write
 * messages, end(), and the callback gets (err: ServiceError | null, reply). cancel() gives up.
 */
export function laneClientStream(
  address: string,
  def: grpc.MethodDefinition<unknown, unknown>,
  opts: StreamCallOptions | undefined,
  callback: (err: grpc.ServiceError | null, value?: unknown) => void,
): Writable & { cancel(): void } {
  let conn: LaneClientConnection | undefined;
  let id = 0;
  let done = false;
  let first = true;
  const ch = channel(address);
  const ms = deadlineMs(opts);
  const finish = (err: CairnError | null, value?: unknown): void => {
    if (done) return;
    done = true;
    if (timer) clearTimeout(timer);
    if (conn !== undefined) {
      conn.finish(id);
      ch.release(conn);
    }
    if (err !== null) {
      stream.destroy();
      callback(serviceErrorOf(err));
    } else callback(null, value);
  };
  const connecting = ch.streamConnection(ms ?? 5000).then(
    (c) => {
      conn = c;
      return c;
    },
    (err: unknown) => {
      finish(err instanceof CairnError ? err : new CairnError('EUNAVAIL', String(err)));
      return undefined;
    },
  );
  const stream = new Writable({
    objectMode: true,
    highWaterMark: 16,
    write: (msg: unknown, _enc, cb) => {
      void connecting.then((c) => {
        if (c === undefined || done) {
          cb();
          return;
        }
        let out: Buffer;
        try {
          out = def.requestSerialize(msg);
        } catch (err) {
          finish(new CairnError('EINVAL', `${def.path}: message does not encode: ${(err as Error).message}`));
          cb();
          return;
        }
        if (first) {
          first = false;
          id = c.begin(def.path, out, {
            onFrame: (type, payload) => {
              if (type === T_OK) {
                try {
                  finish(null, def.responseDeserialize(payload));
                } catch (err) {
                  finish(new CairnError('EIO', `${def.path}: reply does not decode: ${(err as Error).message}`));
                }
              } else if (type === T_ERR) finish(decodeError(payload));
              else finish(new CairnError('EIO', `${def.path}: unexpected frame type ${type}`));
            },
            onClose: (err) => finish(new CairnError('EUNAVAIL', `${def.path} to ${address}: ${err.message}`)),
          });
          // The CALL frame went into the socket: wait for it to drain like any data.
          if (c.socket.writableNeedDrain) c.socket.once('drain', () => cb());
          else cb();
          return;
        }
        c.send(id, T_DATA, out, () => cb());
      });
    },
    final: (cb) => {
      void connecting.then((c) => {
        if (c !== undefined && !done) {
          if (first) {
            finish(new CairnError('EINVAL', `${def.path}: a stream needs at least one message`));
          } else c.send(id, T_END, undefined);
        }
        cb();
      });
    },
  }) as Writable & { cancel(): void };
  stream.on('error', () => undefined);
  stream.cancel = () => {
    if (conn !== undefined && !first && !done) conn.send(id, T_CANCEL, undefined);
    finish(new CairnError('ECANCELED', `${def.path}: cancelled`));
  };
  const timer = ms === undefined ? undefined : setTimeout(() => {
    if (conn !== undefined && !first) conn.send(id, T_CANCEL, undefined);
    finish(new CairnError('ETIMEDOUT', `${def.path} to ${address}: deadline exceeded`));
  }, ms);
  return stream;
}

/**
 * A server-streaming call on the lane, shaped like grpc-js's ClientReadableStream: 'data' per
 * message, 'end' at the end, 'error' with a ServiceError, cancel().
 */
export function laneServerStream(
  address: string,
  def: grpc.MethodDefinition<unknown, unknown>,
  req: unknown,
  opts: StreamCallOptions | undefined,
): Readable & { cancel(): void } {
  let conn: LaneClientConnection | undefined;
  let id = 0;
  let done = false;
  const ch = channel(address);
  const ms = deadlineMs(opts);
  const stream = new Readable({
    objectMode: true,
    highWaterMark: 16,
    read: () => {
      if (conn !== undefined && conn.paused) {
        conn.paused = false;
        conn.socket.resume();
      }
    },
  }) as Readable & { cancel(): void };
  const slot: ReceiveSlot = {};
  receivers.set(stream, slot);
  const finish = (err: CairnError | null): void => {
    if (done) return;
    done = true;
    if (timer) clearTimeout(timer);
    if (conn !== undefined) {
      conn.finish(id);
      ch.release(conn);
    }
    if (err !== null) {
      stream.destroy(serviceErrorOf(err));
    } else {
      stream.push(null);
      stream.emit('status', { code: grpc.status.OK, details: '', metadata: new grpc.Metadata() });
    }
  };
  let body: Buffer | undefined;
  try {
    body = def.requestSerialize(req);
  } catch (err) {
    queueMicrotask(() => finish(new CairnError('EINVAL', `${def.path}: request does not encode: ${(err as Error).message}`)));
  }
  if (body !== undefined) {
    const b = body;
    ch.streamConnection(ms ?? 5000).then(
      (c) => {
        conn = c;
        if (done) {
          ch.release(c);
          return;
        }
        id = c.begin(def.path, b, {
          allocate: (bytes) => (done ? undefined : slot.allocate?.(bytes)),
          onFrame: (type, payload) => {
            if (done) return;
            if (type === T_DATA) {
              let msg: unknown;
              try {
                msg = def.responseDeserialize(payload);
              } catch (err) {
                c.send(id, T_CANCEL, undefined);
                finish(new CairnError('EIO', `${def.path}: message does not decode: ${(err as Error).message}`));
                return;
              }
              if (!stream.push(msg)) {
                c.paused = true;
                c.socket.pause();
              }
            } else if (type === T_OK) finish(null);
            else if (type === T_ERR) finish(decodeError(payload));
            else finish(new CairnError('EIO', `${def.path}: unexpected frame type ${type}`));
          },
          onClose: (err) => finish(new CairnError('EUNAVAIL', `${def.path} to ${address}: ${err.message}`)),
        });
      },
      (err: unknown) => finish(err instanceof CairnError ? err : new CairnError('EUNAVAIL', String(err))),
    );
  }
  stream.cancel = () => {
    if (conn !== undefined && !done) conn.send(id, T_CANCEL, undefined);
    finish(new CairnError('ECANCELED', `${def.path}: cancelled`));
  };
  const timer = ms === undefined ? undefined : setTimeout(() => {
    if (conn !== undefined) conn.send(id, T_CANCEL, undefined);
    finish(new CairnError('ETIMEDOUT', `${def.path} to ${address}: deadline exceeded`));
  }, ms);
  return stream;
}
