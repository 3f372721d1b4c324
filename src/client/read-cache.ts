/**
 * The node's read cache of verified chunks: content-addressed (key = SHA-256 of the bytes),
 * so an entry can never be stale, only evicted. Bounded by bytes, least recently used out.
 * Concurrent misses for one chunk share one fetch. The bytes come from ChunkPort.getChunk,
 * which verifies them against the hash before it returns (the chunk reader); they are not
 * hashed a second time here (that cost ~1 ms per MiB, a third of a read's CPU).
 */
import { createHash } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import type { ChunkPort, ChunkRef } from './ports.js';

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export class ReadCache {
  private readonly map = new Map<string, Buffer>();
  private usedBytes = 0;
  private readonly inflight = new Map<string, Promise<Buffer>>();
  hits = 0;
  misses = 0;
  prefetches = 0;

  constructor(
    private readonly chunks: ChunkPort,
    readonly maxBytes: number,
  ) {}

  /** The chunk's bytes, verified against its hash; from memory when possible. */
  async get(ref: ChunkRef): Promise<Buffer> {
    const have = this.map.get(ref.chunkHash);
    if (have !== undefined) {
      this.hits++;
      this.map.delete(ref.chunkHash);
      this.map.set(ref.chunkHash, have);
      return have;
    }
    this.misses++;
    const running = this.inflight.get(ref.chunkHash);
    if (running !== undefined) return running;
    const p = this.fetch(ref).finally(() => this.inflight.delete(ref.chunkHash));
    this.inflight.set(ref.chunkHash, p);
    return p;
  }

  /**
   * Start fetching a chunk that a reader will probably want next (read-ahead), unless it is
   * here or on its way. Errors are left to the read that needs the chunk: it fetches again.
   */
  prefetch(ref: ChunkRef): void {
    if (this.map.has(ref.chunkHash) || this.inflight.has(ref.chunkHash) || ref.length > this.maxBytes) return;
    this.prefetches++;
    const p = this.fetch(ref).finally(() => this.inflight.delete(ref.chunkHash));
    p.catch(() => undefined);
    this.inflight.set(ref.chunkHash, p);
  }

  private async fetch(ref: ChunkRef): Promise<Buffer> {
    const bytes = await this.chunks.getChunk(ref);
    if (bytes.length !== ref.length) {
      throw new CairnError('ECORRUPT', `chunk ${ref.chunkHash.slice(0, 16)}… came back with ${bytes.length} bytes, ${ref.length} expected; it was not used`);
    }
    this.insert(ref.chunkHash, bytes);
    return bytes;
  }

  /** Add bytes already known to hash to `hash` (the commit path has just hashed them). */
  insert(hash: string, bytes: Buffer): void {
    if (bytes.length > this.maxBytes || this.map.has(hash)) return;
    this.map.set(hash, bytes);
    this.usedBytes += bytes.length;
    while (this.usedBytes > this.maxBytes) {
      const oldest = this.map.keys().next();
      if (oldest.done === true) break;
      const b = this.map.get(oldest.value)!;
      this.map.delete(oldest.value);
      this.usedBytes -= b.length;
    }
  }

  get sizeBytes(): number {
    return this.usedBytes;
  }
}
