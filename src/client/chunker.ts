/**
 * Chunkers: where a run of dirty file bytes is cut into chunks. Pure functions, no I/O.
 *
 * Two are provided so the choice can be measured (bench/client.ts, docs/client.md):
 *  - fixed: every chunk is `sizeBytes` long except the last of a run;
 *  - fastcdc: content-defined cut points (FastCDC: a gear rolling hash, normalized chunking
 *    with a strict mask below the average size and a loose one above, no cut before
 *    `minBytes`, a forced cut at `maxBytes`).
 *
 * A chunker sees at most `maxBytes` bytes at a time and returns the length of the next
 * chunk. The caller passes fewer than `maxBytes` bytes only at the end of a run, and the
 * rest of the run is then one chunk. The commit planner (plan.ts) decides which runs to cut.
 */
import { createHash } from 'node:crypto';
import { CairnError } from '../common/errors.js';

export interface Chunker {
  readonly name: string;
  /** Upper bound of a chunk; the caller never passes more than this. */
  readonly maxBytes: number;
  /** Length of the first chunk of `buf` (1..buf.length). buf.length < maxBytes means "end of run". */
  cut(buf: Uint8Array): number;
}

const MIB = 1024 * 1024;

export function fixedChunker(sizeBytes: number): Chunker {
  if (!Number.isInteger(sizeBytes) || sizeBytes < 4096 || sizeBytes % 4096 !== 0 || sizeBytes > 64 * MIB) {
    throw new CairnError('EINVAL', `fixed chunk size ${sizeBytes} must be a multiple of 4096 between 4 KiB and 64 MiB`);
  }
  return {
    name: `fixed-${sizeBytes}`,
    maxBytes: sizeBytes,
    cut(buf) {
      return Math.min(buf.length, sizeBytes);
    },
  };
}

/** 256 pseudo-random 32-bit values, derived from SHA-256 so they are the same in every build. */
function gearTable(): Uint32Array {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i += 8) {
    const d = createHash('sha256').update(`cairn-gear-${i}`).digest();
    for (let j = 0; j < 8; j++) t[i + j] = d.readUInt32BE(j * 4);
  }
  return t;
}
const GEAR = gearTable();

/** A mask with `bits` one-bits spread over the high half of a 32-bit word (FastCDC's spread masks, 32-bit). */
function spreadMask(bits: number): number {
  // Take the top `bits` bits of the hash: the gear hash shifts left, so high bits depend on the most bytes.
  return bits <= 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

export interface CdcOptions {
  minBytes: number;
  avgBytes: number;
  maxBytes: number;
}

export function fastCdcChunker(opts: CdcOptions): Chunker {
  const { minBytes, avgBytes, maxBytes } = opts;
  const bits = Math.round(Math.log2(avgBytes));
  if (2 ** bits !== avgBytes || !(minBytes > 0 && minBytes < avgBytes && avgBytes < maxBytes) || maxBytes > 64 * MIB) {
    throw new CairnError('EINVAL', `CDC sizes min ${minBytes} < avg ${avgBytes} (a power of two) < max ${maxBytes} ≤ 64 MiB are required`);
  }
  // Normalization level 2: harder to cut before the average, easier after.
  const maskS = spreadMask(bits + 2);
  const maskL = spreadMask(bits - 2);
  return {
    name: `fastcdc-${minBytes}-${avgBytes}-${maxBytes}`,
    maxBytes,
    cut(buf) {
      const n = buf.length;
      if (n <= minBytes) return n;
      const end = Math.min(n, maxBytes);
      const normal = Math.min(end, avgBytes);
      let h = 0;
      let i = minBytes;
      for (; i < normal; i++) {
        h = ((h << 1) + GEAR[buf[i]!]!) >>> 0;
        if ((h & maskS) === 0) return i + 1;
      }
      for (; i < end; i++) {
        h = ((h << 1) + GEAR[buf[i]!]!) >>> 0;
        if ((h & maskL) === 0) return i + 1;
      }
      return end;
    },
  };
}

/** Cut a whole in-memory run into chunk lengths (tests and benchmarks; the commit path streams). */
export function cutAll(chunker: Chunker, data: Uint8Array): number[] {
  const out: number[] = [];
  let pos = 0;
  while (pos < data.length) {
    const take = Math.min(chunker.maxBytes, data.length - pos);
    const n = chunker.cut(data.subarray(pos, pos + take));
    if (n < 1 || n > take) throw new Error(`invariant violated: chunker ${chunker.name} returned ${n} for ${take} bytes`);
    out.push(n);
    pos += n;
  }
  return out;
}

export type ChunkerConfig =
  | { kind: 'fixed'; sizeBytes: number }
  | { kind: 'fastcdc'; minBytes: number; avgBytes: number; maxBytes: number };

export function makeChunker(c: ChunkerConfig): Chunker {
  return c.kind === 'fixed' ? fixedChunker(c.sizeBytes) : fastCdcChunker(c);
}
