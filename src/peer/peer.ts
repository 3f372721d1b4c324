/**
 * The peer port: node-to-node cache traffic of the DFS cache, and nothing else (docs/dfs-cache.md).
 * It is the CoherencePort of the node's CairnFs (src/client/coherence.ts) over the node transport
 * (the lane/gRPC of src/rpc, mTLS where the cluster has it; a node-only service, proto/peer.proto).
 *
 * Writer side: before a write handle opens on a file this node just leased, `claim` sends Claim
 * to every other node (the registry's, plus the configured peers) and waits for their answers, so
 * no node can serve an older version of the file once a write on this node has returned. A node
 * that does not answer within `claimTimeoutMs` is marked unreachable and logged; later claims to
 * it are sent without waiting until it answers again (the partition case of docs/dfs-cache.md).
 * When the lease is given back (all data committed), Release goes out without waiting.
 *
 * Reader side: a table file id → writer (address, fencing token), filled by Claim (an older
 * token never replaces a newer) and emptied by Release or by the writer answering "not held".
 * Every change drops what the node cached of the file (CairnFs.invalidate: base re-read, VFS
 * attributes forgotten).
 *
 * Serving side: Attr/Read answer from the node's CairnFs when it writes the file; OpenWrite,
 * Write, Truncate, Fsync, Close carry a second node's writes to the one writer.
 */
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { logger, type Logger } from '../common/log.js';
import { counter, histogram } from '../common/metrics.js';
import { call, grpc, makeClient, serviceOf, unary } from '../rpc/grpc.js';
import type { CairnFs } from '../client/fs.js';
import type { CoherencePort, RemoteAttr, RemoteWriter } from '../client/coherence.js';
import type { ReplicaStore } from './replica.js';

export const PEER_PROTO = 'peer.proto';
export const PEER_SERVICE = 'cairn.peer.Peer';

const calls = counter('cairn_peer_calls_total', 'Peer port calls made, by method and result', ['method', 'result']);
const claimSeconds = histogram('cairn_peer_claim_seconds', 'Time to claim a file to every other node', [], [0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]);

const u64 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const fileId = z.string().regex(/^[0-9]{1,16}$/, 'a file id is an inode number');
const addr = z.string().min(3).max(256);
const S = {
  claim: z.object({ file_id: fileId, addr, token: u64 }),
  file: z.object({ file_id: fileId, from: z.string().max(256).default('') }),
  read: z.object({ file_id: fileId, offset: u64, length: u64.max(64 * 1024 * 1024) }),
  write: z.object({ fd: u64, offset: u64, append: z.boolean().default(false), data: z.instanceof(Buffer) }),
  truncate: z.object({ fd: u64, size: u64 }),
  fd: z.object({ fd: u64 }),
  mirror: z.object({
    file_id: fileId, writer: addr, token: u64, known: u64, fresh: z.boolean().default(false), truncate: z.boolean().default(false),
    offset: u64.default(0), size: u64.default(0), data: z.instanceof(Buffer).default(Buffer.alloc(0)),
  }),
  intent: z.object({ file_id: fileId, version: u64 }),
};

export interface PeerOptions {
  /** This node's peer address (the node's one advertised address). */
  self: () => string;
  /** Every other node's address (the registry and the configured peers; this node's own is filtered out). */
  peers: () => string[];
  /** How long a claim waits for one node's answer. */
  claimTimeoutMs?: number;
  /** Deadline of a read/attr/write call to the writer. */
  callTimeoutMs?: number;
  /** The replica logs this node keeps for other nodes' replicated writes. */
  replicas?: ReplicaStore;
}

type Wire = Record<string, unknown>;

export class Peer implements CoherencePort {
  private readonly writers = new Map<string, RemoteWriter>();
  private readonly clients = new Map<string, grpc.Client>();
  /** Nodes that did not answer a claim: later claims to them do not wait (until one is answered). */
  private readonly unreachable = new Set<string>();
  /** Write handles opened here for other nodes' writers → the node that opened each (closed by Close, at stop, or when that node stays silent). */
  private readonly remoteHandles = new Map<number, string>();
  /** Checks of the nodes holding remote handles here that failed in a row. */
  private readonly silent = new Map<string, number>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** The replica node each replicated file mirrors to (writer side). */
  private readonly replicaOf = new Map<string, string>();
  private readonly log: Logger;
  private readonly claimTimeoutMs: number;
  private readonly callTimeoutMs: number;

  constructor(
    private readonly fs: CairnFs,
    private readonly opts: PeerOptions,
  ) {
    this.log = logger('peer');
    this.claimTimeoutMs = opts.claimTimeoutMs ?? 1_000;
    this.callTimeoutMs = opts.callTimeoutMs ?? 10_000;
  }

  get addr(): string {
    return this.opts.self();
  }

  private client(address: string): grpc.Client {
    let c = this.clients.get(address);
    if (c === undefined) {
      c = makeClient(serviceOf(PEER_PROTO, PEER_SERVICE), address);
      this.clients.set(address, c);
    }
    return c;
  }

  private async rpc(address: string, method: string, req: Wire, timeoutMs = this.callTimeoutMs): Promise<Wire> {
    try {
      const r = await call<Wire, Wire>(this.client(address), method, req, timeoutMs);
      calls.inc({ method, result: 'ok' });
      return r;
    } catch (err) {
      calls.inc({ method, result: err instanceof CairnError ? err.code : 'EIO' });
      throw err;
    }
  }

  private others(): string[] {
    const self = this.addr;
    return [...new Set(this.opts.peers())].filter((a) => a !== self);
  }

  // ------------------------------------------------------------ writer side

  async claim(fid: string, token: number): Promise<void> {
    const started = process.hrtime.bigint();
    const req = { file_id: fid, addr: this.addr, token };
    const waits: Array<Promise<void>> = [];
    for (const a of this.others()) {
      const p = this.rpc(a, 'Claim', req, this.claimTimeoutMs).then(
        () => {
          if (this.unreachable.delete(a)) this.log.info({ node: a }, 'node answers claims again');
        },
        (err: unknown) => {
          if (!this.unreachable.has(a)) this.log.warn({ node: a, fileId: fid, err: String(err) }, 'node did not answer a claim; it may serve an older version of the file until it is reachable (docs/dfs-cache.md)');
          this.unreachable.add(a);
        },
      );
      if (!this.unreachable.has(a)) waits.push(p);
    }
    await Promise.all(waits);
    claimSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
  }

  released(fid: string, token: number): void {
    const req = { file_id: fid, addr: this.addr, token };
    for (const a of this.others()) void this.rpc(a, 'Release', req, this.claimTimeoutMs).catch(() => undefined);
  }

  async mirror(fid: string, token: number, known: number, op: { kind: 'write'; offset: number; data: Buffer } | { kind: 'truncate'; size: number }, fresh: boolean): Promise<void> {
    let to = this.replicaOf.get(fid);
    let isFresh = fresh;
    if (to === undefined) {
      // The first node (in address order) that answers claims; a new replica always starts a fresh log.
      to = this.others().sort().find((a) => !this.unreachable.has(a));
      if (to === undefined) throw new CairnError('EUNAVAIL', 'no other node answers: a replicated write has no replica');
      this.replicaOf.set(fid, to);
      isFresh = true;
    }
    if (isFresh !== fresh) {
      // The writer has older uncommitted data this replica never saw: it must commit it first.
      this.replicaOf.delete(fid);
      throw new CairnError('EAGAIN', `file ${fid}: a new replica needs a clean start`);
    }
    try {
      await this.rpc(to, 'Mirror', {
        file_id: fid, writer: this.addr, token, known, fresh,
        ...(op.kind === 'write' ? { offset: op.offset, data: op.data } : { truncate: true, size: op.size }),
      }, this.claimTimeoutMs * 5);
    } catch (err) {
      // The next replica is chosen among the nodes that answer (a claim answered marks it reachable again).
      if (err instanceof CairnError && (err.code === 'EUNAVAIL' || err.code === 'ETIMEDOUT')) this.unreachable.add(to);
      this.replicaOf.delete(fid);
      throw err;
    }
  }

  async intent(fid: string, version: number): Promise<void> {
    const to = this.replicaOf.get(fid);
    if (to === undefined) throw new CairnError('EUNAVAIL', `file ${fid} has no replica`);
    await this.rpc(to, 'Intent', { file_id: fid, version }, this.claimTimeoutMs * 5);
  }

  resetReplica(fid: string): void {
    this.replicaOf.delete(fid);
  }

  /** Files this node holds another writer's mirrored data of (file id → writer). */
  replicaHeld(): Map<string, string> {
    return this.opts.replicas?.held() ?? new Map();
  }

  // ------------------------------------------------------------ reader side

  writerOf(fid: string): RemoteWriter | undefined {
    return this.writers.get(fid);
  }

  learn(fid: string, w: RemoteWriter): void {
    const cur = this.writers.get(fid);
    if (cur !== undefined && cur.token > w.token) return;
    this.writers.set(fid, w);
  }

  forget(fid: string, w: RemoteWriter): void {
    const cur = this.writers.get(fid);
    if (cur !== undefined && cur.addr === w.addr && cur.token <= w.token) this.writers.delete(fid);
  }

  /** The writer of `fid` is unreachable: a call to it fails with EIO (the caller's read fails; its lease will expire). */
  private unreachableWriter(w: RemoteWriter, fid: string, err: unknown): CairnError {
    const e = err instanceof CairnError ? err : new CairnError('EIO', String(err));
    if (e.code === 'EUNAVAIL' || e.code === 'ETIMEDOUT') {
      return new CairnError('EIO', `file ${fid} is being written on node ${w.addr}, which does not answer (${e.message}); its data is readable again once it answers or its write lease expires`);
    }
    return e;
  }

  async read(w: RemoteWriter, fid: string, offset: number, length: number): Promise<(RemoteAttr & { data: Buffer }) | null> {
    let r: Wire;
    try {
      r = await this.rpc(w.addr, 'Read', { file_id: fid, offset, length });
    } catch (err) {
      throw this.unreachableWriter(w, fid, err);
    }
    if (r.held !== true) return null;
    return { data: Buffer.isBuffer(r.data) ? r.data : Buffer.alloc(0), size: Number(r.size), mtimeMs: Number(r.mtime_ms) };
  }

  async attr(w: RemoteWriter, fid: string): Promise<RemoteAttr | null> {
    let r: Wire;
    try {
      r = await this.rpc(w.addr, 'Attr', { file_id: fid });
    } catch (err) {
      throw this.unreachableWriter(w, fid, err);
    }
    if (r.held !== true) return null;
    return { size: Number(r.size), mtimeMs: Number(r.mtime_ms), state: String(r.state ?? ''), pendingBytes: Number(r.pending_bytes ?? 0), level: String(r.level ?? '') };
  }

  async openWrite(w: RemoteWriter, fid: string): Promise<number | null> {
    const r = await this.rpc(w.addr, 'OpenWrite', { file_id: fid, from: this.addr });
    return r.held === true ? Number(r.fd) : null;
  }

  async write(w: RemoteWriter, rfd: number, data: Uint8Array, position: number | null): Promise<{ at: number; size: number }> {
    const r = await this.rpc(w.addr, 'Write', { fd: rfd, offset: position ?? 0, append: position === null, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    return { at: Number(r.at), size: Number(r.size) };
  }

  async truncate(w: RemoteWriter, rfd: number, size: number): Promise<void> {
    await this.rpc(w.addr, 'Truncate', { fd: rfd, size });
  }

  async fsync(w: RemoteWriter, rfd: number): Promise<void> {
    await this.rpc(w.addr, 'Fsync', { fd: rfd });
  }

  async close(w: RemoteWriter, rfd: number): Promise<void> {
    await this.rpc(w.addr, 'Close', { fd: rfd });
  }

  // ------------------------------------------------------------ serving side

  private remoteFd(fd: number): number {
    if (!this.remoteHandles.has(fd)) throw new CairnError('EINVAL', `handle ${fd} was not opened through the peer port`);
    return fd;
  }

  definition(): { service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
    return {
      service: serviceOf(PEER_PROTO, PEER_SERVICE).service,
      impl: {
        Claim: unary(S.claim, async (q) => {
          if (q.addr !== this.addr) this.learn(q.file_id, { addr: q.addr, token: q.token });
          this.fs.invalidate(q.file_id);
          return {};
        }),
        Mirror: unary(S.mirror, async (q) => {
          if (this.opts.replicas === undefined) throw new CairnError('EINVAL', 'this node keeps no replica logs');
          await this.opts.replicas.mirror(q.file_id, q.writer, q.token, q.known, q.fresh, q.truncate ? { kind: 'truncate', size: q.size } : { kind: 'write', offset: q.offset, data: q.data });
          return {};
        }),
        Intent: unary(S.intent, async (q) => {
          if (this.opts.replicas === undefined) throw new CairnError('EINVAL', 'this node keeps no replica logs');
          await this.opts.replicas.intent(q.file_id, q.version);
          return {};
        }),
        Release: unary(S.claim, async (q) => {
          if (this.opts.replicas !== undefined) await this.opts.replicas.released(q.file_id, q.addr);
          this.forget(q.file_id, { addr: q.addr, token: q.token });
          this.fs.invalidate(q.file_id);
          return {};
        }),
        Attr: unary(S.file, async (q) => {
          const a = this.fs.peerAttr(q.file_id);
          return a === null ? { held: false } : { held: true, size: a.size, mtime_ms: a.mtimeMs, state: a.state ?? '', pending_bytes: a.pendingBytes ?? 0, level: a.level ?? '' };
        }),
        Read: unary(S.read, async (q) => {
          const r = await this.fs.peerRead(q.file_id, q.offset, q.length);
          return r === null ? { held: false } : { held: true, size: r.size, mtime_ms: r.mtimeMs, data: r.data };
        }),
        OpenWrite: unary(S.file, async (q) => {
          const fd = await this.fs.peerOpenWrite(q.file_id);
          if (fd === null) return { held: false };
          this.remoteHandles.set(fd, q.from);
          return { held: true, fd };
        }),
        Write: unary(S.write, async (q) => {
          const fd = this.remoteFd(q.fd);
          const at = q.append ? await this.fs.append(fd, q.data) : (await this.fs.write(fd, q.data, q.offset), q.offset);
          return { at, size: this.fs.sizeOf(fd) };
        }),
        Truncate: unary(S.truncate, async (q) => {
          await this.fs.truncate(this.remoteFd(q.fd), q.size);
          return {};
        }),
        Fsync: unary(S.fd, async (q) => {
          await this.fs.fsync(this.remoteFd(q.fd));
          return {};
        }),
        Ping: unary(z.object({}).passthrough(), async () => ({})),
        Close: unary(S.fd, async (q) => {
          const fd = this.remoteFd(q.fd);
          this.remoteHandles.delete(fd);
          await this.fs.close(fd);
          return {};
        }),
      },
    };
  }

  /**
   * Every `everyMs`, ask each node holding remote write handles here whether it lives; one that
   * fails `misses` checks in a row (a dead node) has its handles closed, so the file commits.
   */
  startSweep(everyMs = 5_000, misses = 3): void {
    this.sweepTimer = setInterval(() => void this.sweep(misses), everyMs);
    this.sweepTimer.unref();
  }

  private async sweep(misses: number): Promise<void> {
    const owners = new Set([...this.remoteHandles.values()].filter((a) => a !== ''));
    for (const o of owners) {
      const alive = await this.rpc(o, 'Ping', {}, this.claimTimeoutMs).then(() => true, () => false);
      const n = alive ? 0 : (this.silent.get(o) ?? 0) + 1;
      this.silent.set(o, n);
      if (n < misses) continue;
      this.log.warn({ node: o }, 'a node holding remote write handles here does not answer; closing its handles');
      for (const [fd, owner] of [...this.remoteHandles]) {
        if (owner !== o) continue;
        this.remoteHandles.delete(fd);
        await this.fs.close(fd).catch(() => undefined);
      }
      this.silent.delete(o);
    }
  }

  /** Close the handles other nodes left open here, and the clients. */
  async stop(): Promise<void> {
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    for (const fd of this.remoteHandles.keys()) await this.fs.close(fd).catch(() => undefined);
    this.remoteHandles.clear();
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
