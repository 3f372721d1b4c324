/**
 * A dirty layer of one cached file: which byte ranges were written (and where their bytes
 * sit in the journal) or zeroed by a truncation, over whatever lies below it. Pure logic.
 *
 * Entries are sorted, never overlap, and each says where byte `start` of the range lives;
 * a later set() wins over what it covers. `size` is the file size after this layer.
 */

export type Source =
  | { kind: 'data'; segment: number; pos: number }
  | { kind: 'zero' };

export interface Entry {
  start: number;
  end: number;
  src: Source;
}

function shift(src: Source, delta: number): Source {
  return src.kind === 'data' ? { kind: 'data', segment: src.segment, pos: src.pos + delta } : src;
}

export class DirtyLayer {
  private entries: Entry[] = [];
  size: number;

  constructor(sizeBelow: number) {
    this.size = sizeBelow;
  }

  /** Index of the first entry whose end is after `offset`. */
  private firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.entries[mid]!.end <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Cover [start, end) with src; what it covers is replaced. */
  private put(start: number, end: number, src: Source): void {
    if (end <= start) return;
    const i = this.firstEndingAfter(start);
    let j = i;
    while (j < this.entries.length && this.entries[j]!.start < end) j++;
    const repl: Entry[] = [];
    if (i < j) {
      const first = this.entries[i]!;
      if (first.start < start) repl.push({ start: first.start, end: start, src: first.src });
    }
    repl.push({ start, end, src });
    if (i < j) {
      const last = this.entries[j - 1]!;
      if (last.end > end) repl.push({ start: end, end: last.end, src: shift(last.src, end - last.start) });
    }
    this.entries.splice(i, j - i, ...repl);
  }

  /** Bytes [offset, offset+length) now come from the journal at (segment, pos). */
  write(offset: number, length: number, segment: number, pos: number): void {
    if (length === 0) return;
    this.put(offset, offset + length, { kind: 'data', segment, pos });
    this.size = Math.max(this.size, offset + length);
  }

  /** Set the size. Shrinking hides everything past the new end (it reads as zeros if the file grows again). */
  truncate(newSize: number): void {
    if (newSize < this.size) {
      this.put(newSize, this.size, { kind: 'zero' });
    }
    this.size = newSize;
  }

  /**
   * The pieces of [start, end) this layer decides, in order; gaps between them belong to the
   * layers below.
   */
  pieces(start: number, end: number): Entry[] {
    const out: Entry[] = [];
    for (let i = this.firstEndingAfter(start); i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (e.start >= end) break;
      const s = Math.max(start, e.start);
      const t = Math.min(end, e.end);
      out.push({ start: s, end: t, src: shift(e.src, s - e.start) });
    }
    return out;
  }

  all(): readonly Entry[] {
    return this.entries;
  }

  /** Bytes of written data (not zeroed ranges) this layer holds below its size. */
  dataBytes(): number {
    let n = 0;
    for (const e of this.entries) if (e.src.kind === 'data' && e.start < this.size) n += Math.min(e.end, this.size) - e.start;
    return n;
  }

  get entryCount(): number {
    return this.entries.length;
  }

  isEmpty(): boolean {
    return this.entries.length === 0;
  }
}
