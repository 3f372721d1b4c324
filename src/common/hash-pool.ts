/**
 * SHA-256 of bulk data off the main thread. A chunk's content address is the SHA-256 of its
 * bytes, verified on every read: 0.65 ms per MB on one core here, which made the JavaScript
 * thread the bottleneck of chunk reads (event-loop utilisation 0.96 at ≈ 1.1 GB/s from the page
 * cache, docs/chunk.md). `sha256Hex` hands large buffers to a small pool of worker threads, so a
 * node's other cores hash while its main thread goes on with I/O. (Puts hash on the calling
 * thread: they wait on the disk, not on that thread, and the copy would only add CPU.)
 *
 * Workers see the bytes through shared memory: a buffer backed by a SharedArrayBuffer is hashed
 * in place; any other is first copied into a pooled shared slab (a memcpy, ≈ 0.1 ms per MB —
 * far less than the hash). The caller must not change the bytes until the promise settles.
 *
 * Small buffers, a pool of size 0 (CAIRN_HASH_THREADS=0) and any worker failure fall back to
 * hashing on the calling thread: the answer is the same, only where it is computed differs.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { counter } from './metrics.js';
import { logger } from './log.js';

/** Below this size the round trip to a worker costs more than it saves. */
export const OFFLOAD_MIN_BYTES = 256 * 1024;
/** Shared slabs kept for reuse (each rounded up to a whole MiB). */
const MAX_FREE_SLABS = 8;

const log = logger('hash-pool');

const metrics = {
  hashed: counter('cairn_hash_bytes_total', 'Bytes hashed with SHA-256 (bulk data), by where', ['where']),
};

/** The worker's whole program (CommonJS, evaluated: no file to find under tsx, vitest or dist). */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', (m) => {
  try {
    const hex = createHash('sha256').update(new Uint8Array(m.sab, m.offset, m.length)).digest('hex');
    parentPort.postMessage({ id: m.id, hex });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String(err) });
  }
});
`;

interface Pending {
  resolve(hex: string): void;
  reject(err: Error): void;
  slab: SharedArrayBuffer | undefined;
  worker: PoolWorker;
}

interface PoolWorker {
  worker: Worker;
  /** Requests sent and not yet answered. */
  busy: number;
}

/** Threads the pool starts: CAIRN_HASH_THREADS, else one less than the cores (1..4). */
export function hashThreadsDefault(): number {
  const v = process.env.CAIRN_HASH_THREADS;
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (Number.isInteger(n) && n >= 0 && n <= 64) return n;
    log.warn({ CAIRN_HASH_THREADS: v }, 'CAIRN_HASH_THREADS is not an integer 0..64; using the default');
  }
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

function inline(data: Uint8Array): string {
  metrics.hashed.inc({ where: 'inline' }, data.byteLength);
  return createHash('sha256').update(data).digest('hex');
}

export class HashPool {
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly freeSlabs: SharedArrayBuffer[] = [];
  private nextId = 1;
  private broken = false;

  constructor(private readonly threads: number) {}

  /** SHA-256 of data, lowercase hex. Large buffers are hashed by a worker thread. */
  async sha256Hex(data: Uint8Array): Promise<string> {
    if (this.threads === 0 || this.broken || data.byteLength < OFFLOAD_MIN_BYTES) return inline(data);
    const w = this.pick();
    if (w === undefined) return inline(data);
    let sab: SharedArrayBuffer;
    let offset: number;
    let slab: SharedArrayBuffer | undefined;
    if (data.buffer instanceof SharedArrayBuffer) {
      sab = data.buffer;
      offset = data.byteOffset;
    } else {
      slab = this.takeSlab(data.byteLength);
      new Uint8Array(slab, 0, data.byteLength).set(data);
      sab = slab;
      offset = 0;
    }
    const id = this.nextId++;
    const answer = new Promise<string>((resolve, reject) => this.pending.set(id, { resolve, reject, slab, worker: w }));
    // A worker with a request in flight keeps the process alive (an idle one does not).
    if (w.busy++ === 0) w.worker.ref();
    w.worker.postMessage({ id, sab, offset, length: data.byteLength });
    try {
      const hex = await answer;
      metrics.hashed.inc({ where: 'worker' }, data.byteLength);
      return hex;
    } catch {
      // The worker died or refused: the same answer, computed here.
      return inline(data);
    } finally {
      if (--w.busy === 0) w.worker.unref();
    }
  }

  /** Stop the workers (tests; a process exiting need not: they are unref'd). */
  async close(): Promise<void> {
    const ws = this.workers.splice(0);
    await Promise.all(ws.map((w) => w.worker.terminate()));
  }

  private pick(): PoolWorker | undefined {
    if (this.workers.length < this.threads) {
      const w = this.start();
      if (w !== undefined) return w;
    }
    let best: PoolWorker | undefined;
    for (const w of this.workers) if (best === undefined || w.busy < best.busy) best = w;
    return best;
  }

  private start(): PoolWorker | undefined {
    let worker: Worker;
    try {
      worker = new Worker(WORKER_SOURCE, { eval: true, name: 'cairn-hash' });
    } catch (err) {
      this.broken = true;
      log.warn({ err: String(err) }, 'cannot start a hash worker thread; hashing on the main thread');
      return undefined;
    }
    const pw: PoolWorker = { worker, busy: 0 };
    worker.on('message', (m: { id: number; hex?: string; error?: string }) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (p.slab !== undefined) this.giveSlab(p.slab);
      if (typeof m.hex === 'string' && /^[0-9a-f]{64}$/.test(m.hex)) p.resolve(m.hex);
      else p.reject(new Error(m.error ?? 'hash worker answered nothing'));
    });
    const fail = (why: string): void => {
      const i = this.workers.indexOf(pw);
      if (i >= 0) this.workers.splice(i, 1);
      // Its requests are answered inline by their callers; their slabs are dropped.
      for (const [id, p] of this.pending) {
        if (p.worker !== pw) continue;
        this.pending.delete(id);
        p.reject(new Error(why));
      }
    };
    worker.on('error', (err) => {
      log.warn({ err: String(err) }, 'hash worker failed; its requests are hashed on the main thread');
      fail(String(err));
    });
    worker.on('exit', (code) => fail(`hash worker exited (${code})`));
    // Idle until a request comes (sha256Hex refs it meanwhile). After the listeners: adding a
    // 'message' listener refs the worker again.
    worker.unref();
    this.workers.push(pw);
    return pw;
  }

  private takeSlab(bytes: number): SharedArrayBuffer {
    const i = this.freeSlabs.findIndex((s) => s.byteLength >= bytes);
    if (i >= 0) return this.freeSlabs.splice(i, 1)[0] as SharedArrayBuffer;
    // Round up to 1 MiB so that slabs serve the usual chunk sizes again.
    return new SharedArrayBuffer(Math.ceil(bytes / (1 << 20)) * (1 << 20));
  }

  private giveSlab(slab: SharedArrayBuffer): void {
    if (this.freeSlabs.length < MAX_FREE_SLABS) this.freeSlabs.push(slab);
  }
}

let shared: HashPool | undefined;

/** The process's hash pool (started on first use, CAIRN_HASH_THREADS threads). */
export function hashPool(): HashPool {
  return (shared ??= new HashPool(hashThreadsDefault()));
}

/** SHA-256 of data, lowercase hex, computed by the process's hash pool. */
export function sha256Hex(data: Uint8Array): Promise<string> {
  return hashPool().sha256Hex(data);
}
