/**
 * The node's read cache of verified chunks: content-addressed (key = SHA-256 of the bytes),
 * so an entry can never be stale, only evicted. Bounded by bytes, least recently used out.
 * Concurrent misses for one chunk share one fetch.
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

  private async fetch(ref: ChunkRef): Promise<Buffer> {
    const bytes = await this.chunks.getChunk(ref);
    // The chunk layer verifies too; checking again here costs ~1 ms per MiB and means this cache
    // can only ever hold bytes that match their name.
    if (bytes.length !== ref.length || sha256Hex(bytes) !== ref.chunkHash) {
      throw new CairnError('ECORRUPT', `chunk ${ref.chunkHash.slice(0, 16)}… came back with the wrong content; it was not used`);
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
