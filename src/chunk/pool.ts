/**
 * A bounded pool of piece buffers (PIECE_BYTES each) for the chunk service's bulk data: GetShard
 * reads file pieces into them and PutShard receives lane frames into them, so that a busy server
 * allocates (and page-faults, and garbage-collects) almost no new 1 MiB buffers. Measured: the
 * allocations of fresh piece buffers were the largest item after the bytes' own work (docs/chunk.md,
 * Performance).
 *
 * A buffer goes back with give() only when nobody holds it any more (written to the file, or its
 * socket write has completed). give() accepts only buffers that take() lent and that are still
 * out, so a second give() of the same buffer, or of a foreign one, is ignored, never a double use.
 */
import { PIECE_BYTES } from './types.js';

/** Free buffers kept for reuse (each PIECE_BYTES): at most 32 MiB held by an idle process. */
export const MAX_FREE_PIECES = 32;

export class PiecePool {
  private readonly free: ArrayBuffer[] = [];
  /** Buffers lent and not yet given back. */
  private readonly lent = new WeakSet<ArrayBuffer>();

  constructor(
    readonly pieceBytes = PIECE_BYTES,
    readonly maxFree = MAX_FREE_PIECES,
  ) {}

  /** A buffer of n bytes (n ≤ pieceBytes) from the pool, or a new one; undefined if n is larger. */
  take(n: number): Buffer | undefined {
    if (!Number.isInteger(n) || n < 0 || n > this.pieceBytes) return undefined;
    const ab = this.free.pop() ?? new ArrayBuffer(this.pieceBytes);
    this.lent.add(ab);
    return Buffer.from(ab, 0, n);
  }

  /** Give back a buffer from take() (any view of it) once nothing uses it any more. */
  give(b: Buffer): void {
    const ab = b.buffer;
    if (!(ab instanceof ArrayBuffer) || !this.lent.has(ab)) return;
    this.lent.delete(ab);
    if (this.free.length < this.maxFree) this.free.push(ab);
  }

  /** Free buffers held (for tests). */
  get freeCount(): number {
    return this.free.length;
  }
}

/** The process's pool of piece buffers (shared by every chunk service in the process). */
export const piecePool = new PiecePool();
