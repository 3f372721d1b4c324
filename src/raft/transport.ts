/**
 * The Raft transport over gRPC (proto/raft.proto): one long-lived client stream per peer
 * carries batches of messages (pipelined, with a bounded send queue: when the peer is down or
 * the queue is full the messages are dropped and the core is told the peer is unreachable);
 * a batch's messages travel in Cairn's binary form (wire.ts) in MessageBatch.packed;
 * snapshots go over a separate stream of chunks with flow control, spooled to a file on the
 * receiver. Every incoming message is checked field by field; a malformed one is rejected and
 * never reaches the core.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { grpc, makeClient, openClientStream, serviceOf, toServiceError, type ClientStreamCall } from '../rpc/grpc.js';
import { CairnError } from '../common/errors.js';
import { logger, type Logger } from '../common/log.js';
import { EntryType, MessageType, type Entry, type Message, type NodeId, type SnapshotMetadata } from './types.js';
import { decodeBatch, encodeBatch } from './wire.js';
import { CAIRN_VERSION, reportedVersion } from '../common/version.js';

const RaftService = serviceOf('raft.proto', 'cairn.raft.Raft');

/** Batches queued on one peer's stream before further messages are dropped. */
export const DEFAULT_MAX_QUEUED_BATCHES = 1024;
/** Bytes of entries queued on one peer's stream before further messages are dropped. */
export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024;
/** After a stream to a peer fails, messages to it are dropped for this long. */
export const PEER_BACKOFF_MS = 100;
/** Snapshot chunks are at most this big on the wire. */
export const SNAPSHOT_CHUNK_BYTES = 256 * 1024;

const WIRE_TYPES: ReadonlySet<string> = new Set([
  MessageType.Prop, MessageType.App, MessageType.AppResp, MessageType.Vote, MessageType.VoteResp,
  MessageType.PreVote, MessageType.PreVoteResp, MessageType.Heartbeat, MessageType.HeartbeatResp,
  MessageType.TransferLeader, MessageType.TimeoutNow, MessageType.ReadIndex, MessageType.ReadIndexResp,
]);

/** What the transport hands to (and asks of) the node that owns it. */
export interface TransportHandler {
  /** Validated messages addressed to this node. */
  onMessages(msgs: Message[]): void;
  /** A snapshot arrived completely in `file`; step its message. Resolves once the node took it. */
  onSnapshot(msg: Message, file: string): Promise<void>;
  /** The state machine's current state as chunks, for a follower that needs a snapshot. */
  snapshotChunks(): Promise<AsyncIterable<Uint8Array>>;
  reportUnreachable(id: NodeId): void;
  reportSnapshot(id: NodeId, ok: boolean): void;
  /** A peer's address learnt from the wire (a sender, or a snapshot's address book). */
  learnPeer(id: NodeId, address: string): void;
}

export interface TransportOptions {
  id: NodeId;
  /** The address peers reach this node at. */
  address: string;
  peers: Map<NodeId, string>;
  /** Where incoming snapshots are spooled. */
  spoolDir: string;
  maxQueuedBatches?: number;
  log?: Logger;
}

interface Peer {
  id: NodeId;
  address: string;
  client: grpc.Client;
  stream: ClientStreamCall | undefined;
  /** Entry bytes written to the stream and not yet handed to the network. */
  queuedBytes: number;
  downUntilMs: number;
  snapshotting: boolean;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;

function checkMeta(m: unknown): SnapshotMetadata | string {
  if (m === null || typeof m !== 'object') return 'snapshot metadata missing';
  const s = m as Record<string, unknown>;
  const conf = s.conf as Record<string, unknown> | null | undefined;
  if (!isCount(s.index) || !isCount(s.term)) return 'snapshot index/term invalid';
  if (conf === null || conf === undefined || !Array.isArray(conf.voters) || !Array.isArray(conf.learners)) return 'snapshot conf invalid';
  const ids = [...(conf.voters as unknown[]), ...(conf.learners as unknown[])];
  if (!ids.every((x) => isCount(x) && x > 0)) return 'snapshot conf ids invalid';
  return { index: s.index, term: s.term, conf: { voters: conf.voters as number[], learners: conf.learners as number[] } };
}

/**
 * Check a decoded wire message field by field and build the core's Message from it.
 * Returns a sentence saying what is wrong instead of throwing.
 */
export function checkWireMessage(raw: unknown, self: NodeId, allowSnap: boolean): Message | string {
  if (raw === null || typeof raw !== 'object') return 'message is not an object';
  const m = raw as Record<string, unknown>;
  const type = m.type;
  if (typeof type !== 'string' || !(WIRE_TYPES.has(type) || (allowSnap && type === MessageType.Snap))) {
    return `message type ${String(type)} is not accepted from the network`;
  }
  for (const f of ['from', 'to', 'term', 'log_term', 'index', 'commit', 'reject_hint'] as const) {
    if (!isCount(m[f])) return `field ${f} is not a non-negative integer`;
  }
  if (m.from === 0) return 'field from must name a node';
  if (m.to !== self) return `message for node ${String(m.to)} reached node ${self}`;
  if (typeof m.reject !== 'boolean') return 'field reject is not a boolean';
  if (!isBytes(m.context)) return 'field context is not bytes';
  if (!Array.isArray(m.entries)) return 'field entries is not a list';
  const entries: Entry[] = new Array(m.entries.length);
  for (let i = 0; i < m.entries.length; i++) {
    const e = m.entries[i] as Record<string, unknown> | null;
    if (e === null || typeof e !== 'object') return `entry ${i} is not an object`;
    if (!isCount(e.term) || !isCount(e.index)) return `entry ${i} has an invalid term or index`;
    if (e.type !== EntryType.Normal && e.type !== EntryType.ConfChange) return `entry ${i} has unknown type ${String(e.type)}`;
    if (!isBytes(e.data)) return `entry ${i} data is not bytes`;
    entries[i] = { term: e.term, index: e.index, type: e.type, data: e.data };
  }
  const msg: Message = {
    type: type as MessageType,
    from: m.from as number,
    to: m.to as number,
    term: m.term as number,
    logTerm: m.log_term as number,
    index: m.index as number,
    entries,
    commit: m.commit as number,
    reject: m.reject,
    rejectHint: m.reject_hint as number,
    context: m.context,
  };
  if (type === MessageType.Snap) {
    const meta = checkMeta(m.snapshot);
    if (typeof meta === 'string') return meta;
    msg.snapshot = { metadata: meta, data: new Uint8Array(0) };
  }
  return msg;
}

function toWire(m: Message): Record<string, unknown> {
  return {
    type: m.type,
    from: m.from,
    to: m.to,
    term: m.term,
    log_term: m.logTerm,
    index: m.index,
    entries: m.entries,
    commit: m.commit,
    reject: m.reject,
    reject_hint: m.rejectHint,
    snapshot: m.snapshot === undefined ? null : m.snapshot.metadata,
    context: m.context,
  };
}

export class Transport {
  private readonly peers = new Map<NodeId, Peer>();
  private readonly log: Logger;
  private readonly maxQueuedBatches: number;
  private closed = false;
  private receivingSnapshot = false;
  private readonly inbound = new Set<grpc.ServerReadableStream<unknown, unknown>>();
  /** The release each peer named in its last message batch, and when (docs/upgrade.md). */
  private readonly heard = new Map<NodeId, { version: string; atMs: number }>();
  handler: TransportHandler | undefined;

  constructor(private readonly opts: TransportOptions) {
    this.log = opts.log ?? logger('raft-transport', { node: opts.id });
    this.maxQueuedBatches = opts.maxQueuedBatches ?? DEFAULT_MAX_QUEUED_BATCHES;
    for (const [id, addr] of opts.peers) if (id !== opts.id) this.addPeer(id, addr);
  }

  /** The gRPC service to add to the node's server. */
  service(): { service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
    return {
      service: RaftService.service,
      impl: {
        Send: (call: grpc.ServerReadableStream<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => this.serveSend(call, cb),
        InstallSnapshot: (call: grpc.ServerReadableStream<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
          void this.serveSnapshot(call, cb),
      },
    };
  }

  setAddress(address: string): void {
    this.opts.address = address;
  }

  peerAddresses(): Map<NodeId, string> {
    return new Map([...this.peers.values()].map((p) => [p.id, p.address]));
  }

  /** Each peer's release as its last batch named it ("" on the wire: v0.1.0), and when that batch came. */
  peerVersions(): Map<NodeId, { version: string; atMs: number }> {
    return new Map(this.heard);
  }

  hasPeer(id: NodeId): boolean {
    return this.peers.has(id);
  }

  addPeer(id: NodeId, address: string): void {
    if (id === this.opts.id || this.closed) return;
    const cur = this.peers.get(id);
    if (cur !== undefined) {
      if (cur.address === address) return;
      this.removePeer(id);
    }
    this.peers.set(id, {
      id,
      address,
      client: makeClient(RaftService, address),
      stream: undefined,
      queuedBytes: 0,
      downUntilMs: 0,
      snapshotting: false,
    });
  }

  removePeer(id: NodeId): void {
    const p = this.peers.get(id);
    if (p === undefined) return;
    this.peers.delete(id);
    p.stream?.end();
    p.client.close();
  }

  /** Send the messages of one Ready: one batch per peer, snapshots on their own stream. */
  send(msgs: Message[]): void {
    if (this.closed || msgs.length === 0) return;
    let byPeer: Map<NodeId, Message[]> | undefined;
    for (const m of msgs) {
      if (m.type === MessageType.Snap) {
        void this.sendSnapshot(m);
        continue;
      }
      byPeer ??= new Map();
      let list = byPeer.get(m.to);
      if (list === undefined) byPeer.set(m.to, (list = []));
      list.push(m);
    }
    if (byPeer === undefined) return;
    for (const [to, list] of byPeer) this.sendBatch(to, list);
  }

  private unreachable(to: NodeId): void {
    this.handler?.reportUnreachable(to);
  }

  private sendBatch(to: NodeId, list: Message[]): void {
    const p = this.peers.get(to);
    if (p === undefined) {
      this.unreachable(to);
      return;
    }
    if (Date.now() < p.downUntilMs) {
      this.unreachable(to);
      return;
    }
    if (p.stream === undefined) {
      const stream: ClientStreamCall = openClientStream(
        p.client,
        'Send',
        {},
        (err: grpc.ServiceError | null) => {
          if (p.stream === stream) {
            p.stream = undefined;
            p.queuedBytes = 0;
          }
          if (err !== null && !this.closed) {
            p.downUntilMs = Date.now() + PEER_BACKOFF_MS;
            this.log.debug({ peer: to, err: err.details }, 'message stream to peer failed');
            this.unreachable(to);
          }
        },
      );
      stream.on('error', () => undefined);
      p.stream = stream;
    }
    const s = p.stream;
    let bytes = 0;
    for (const m of list) for (const e of m.entries) bytes += e.data.length;
    if (s.writableLength >= this.maxQueuedBatches || (bytes > 0 && p.queuedBytes + bytes > DEFAULT_MAX_QUEUED_BYTES)) {
      this.unreachable(to);
      return;
    }
    p.queuedBytes += bytes;
    s.write({ from: this.opts.id, from_address: this.opts.address, messages: [], packed: encodeBatch(list), version: CAIRN_VERSION }, () => {
      if (p.stream === s) p.queuedBytes -= bytes;
    });
  }

  private serveSend(call: grpc.ServerReadableStream<unknown, unknown>, cb: grpc.sendUnaryData<unknown>): void {
    let done = false;
    this.inbound.add(call);
    const finish = (err: CairnError | null): void => {
      if (done) return;
      done = true;
      this.inbound.delete(call);
      if (err === null) cb(null, {});
      else cb(toServiceError(err) as grpc.ServiceError);
    };
    call.on('data', (raw: unknown) => {
      if (done) return;
      const b = raw as { from?: unknown; from_address?: unknown; messages?: unknown; packed?: unknown; version?: unknown };
      if (!Array.isArray(b.messages) || !isCount(b.from)) {
        finish(new CairnError('EINVAL', 'raft: malformed message batch'));
        return;
      }
      let out: Message[] = [];
      if (isBytes(b.packed) && b.packed.length > 0) {
        const got = decodeBatch(b.packed, this.opts.id);
        if (typeof got === 'string' || b.messages.length > 0) {
          const reason = typeof got === 'string' ? got : 'a batch carries both packed and protobuf messages';
          this.log.warn({ from: b.from, reason }, 'rejected a malformed raft message batch');
          finish(new CairnError('EINVAL', `raft: rejected message batch: ${reason}`));
          return;
        }
        out = got;
      }
      for (const rm of b.messages) {
        const m = checkWireMessage(rm, this.opts.id, false);
        if (typeof m === 'string') {
          this.log.warn({ from: b.from, reason: m }, 'rejected a malformed raft message');
          finish(new CairnError('EINVAL', `raft: rejected message: ${m}`));
          return;
        }
        out.push(m);
      }
      if (typeof b.from_address === 'string' && b.from_address !== '' && !this.peers.has(b.from)) {
        this.handler?.learnPeer(b.from, b.from_address);
      }
      this.heard.set(b.from, { version: reportedVersion(typeof b.version === 'string' ? b.version.slice(0, 40) : ''), atMs: Date.now() });
      if (out.length > 0) this.handler?.onMessages(out);
    });
    call.on('end', () => finish(null));
    call.on('error', () => finish(new CairnError('ECANCELED', 'stream closed')));
  }

  // ---- snapshots ----

  private async sendSnapshot(m: Message): Promise<void> {
    const p = this.peers.get(m.to);
    if (p === undefined || p.snapshotting || this.handler === undefined) {
      this.handler?.reportSnapshot(m.to, false);
      return;
    }
    p.snapshotting = true;
    let ok = false;
    try {
      const chunks = await this.handler.snapshotChunks();
      ok = await new Promise<boolean>((resolve, reject) => {
        const stream = openClientStream(p.client, 'InstallSnapshot', {}, (err: grpc.ServiceError | null, ack: unknown) => {
          if (err !== null) reject(new Error(err.details));
          else resolve((ack as { ok?: boolean }).ok === true);
        });
        stream.on('error', () => undefined);
        const pump = async (): Promise<void> => {
          const peers = [...this.peers.values()].map((x) => ({ id: x.id, address: x.address }));
          peers.push({ id: this.opts.id, address: this.opts.address });
          stream.write({ header: { message: toWire(m), peers, from_address: this.opts.address } });
          for await (const c of chunks) {
            for (let off = 0; off < c.length; off += SNAPSHOT_CHUNK_BYTES) {
              if (this.closed) throw new Error('transport closed');
              if (!stream.write({ chunk: c.subarray(off, off + SNAPSHOT_CHUNK_BYTES) })) await once(stream, 'drain');
            }
          }
          stream.end();
        };
        pump().catch((err: unknown) => {
          stream.cancel();
          reject(err as Error);
        });
      });
    } catch (err) {
      this.log.warn({ peer: m.to, err: (err as Error).message }, 'sending a snapshot failed');
    } finally {
      p.snapshotting = false;
    }
    this.log.info({ peer: m.to, index: m.snapshot?.metadata.index, ok }, 'snapshot sent');
    this.handler.reportSnapshot(m.to, ok);
  }

  private async serveSnapshot(call: grpc.ServerReadableStream<unknown, unknown>, cb: grpc.sendUnaryData<unknown>): Promise<void> {
    if (this.receivingSnapshot) {
      call.destroy();
      cb(toServiceError(new CairnError('EBUSY', 'raft: a snapshot is already being received')) as grpc.ServiceError);
      return;
    }
    this.receivingSnapshot = true;
    this.inbound.add(call);
    await mkdir(this.opts.spoolDir, { recursive: true });
    const file = join(this.opts.spoolDir, `in-${Date.now()}-${process.pid}.snap`);
    const out = createWriteStream(file);
    out.on('error', () => undefined);
    let msg: Message | undefined;
    try {
      for await (const raw of call as AsyncIterable<unknown>) {
        const f = raw as { header?: unknown; chunk?: unknown };
        if (msg === undefined) {
          const h = f.header as { message?: unknown; peers?: unknown; from_address?: unknown } | null | undefined;
          if (h === null || h === undefined) throw new CairnError('EINVAL', 'raft: snapshot stream must start with a header');
          const m = checkWireMessage(h.message, this.opts.id, true);
          if (typeof m === 'string') throw new CairnError('EINVAL', `raft: rejected snapshot header: ${m}`);
          if (m.type !== MessageType.Snap) throw new CairnError('EINVAL', 'raft: snapshot header does not carry a Snap message');
          msg = m;
          if (Array.isArray(h.peers)) {
            for (const pa of h.peers as Array<{ id?: unknown; address?: unknown }>) {
              if (isCount(pa.id) && pa.id > 0 && typeof pa.address === 'string' && pa.address !== '') this.handler?.learnPeer(pa.id, pa.address);
            }
          }
          continue;
        }
        if (!isBytes(f.chunk)) throw new CairnError('EINVAL', 'raft: snapshot frame after the header must be a chunk');
        if (!out.write(f.chunk)) await once(out, 'drain');
      }
      if (msg === undefined) throw new CairnError('EINVAL', 'raft: empty snapshot stream');
      out.end();
      await once(out, 'finish');
      if (this.handler === undefined) throw new CairnError('EUNAVAIL', 'raft: node not ready');
      await this.handler.onSnapshot(msg, file);
      cb(null, { ok: true });
    } catch (err) {
      out.destroy();
      await rm(file, { force: true });
      this.log.warn({ err: (err as Error).message }, 'receiving a snapshot failed');
      cb(toServiceError(err) as grpc.ServiceError);
    } finally {
      this.inbound.delete(call);
      this.receivingSnapshot = false;
    }
  }

  /** Remove spool files left by an earlier run. */
  async cleanSpool(keep?: string): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.opts.spoolDir);
    } catch {
      return;
    }
    for (const n of names) {
      const f = join(this.opts.spoolDir, n);
      if (f !== keep) await rm(f, { force: true });
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const id of [...this.peers.keys()]) this.removePeer(id);
    for (const c of this.inbound) c.destroy();
    this.inbound.clear();
  }
}

/** Read a spooled snapshot file back as chunks. */
export function readSpool(file: string): AsyncIterable<Uint8Array> {
  return createReadStream(file, { highWaterMark: SNAPSHOT_CHUNK_BYTES }) as AsyncIterable<Uint8Array>;
}
