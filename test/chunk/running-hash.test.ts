/**
 * The reader's running SHA-256 (src/chunk/reader.ts RunningHash): hashing a chunk's segments as
 * their bytes arrive gives exactly the hash of the chunk, whatever the order the segments fill
 * in; and anything that may have rewritten bytes already hashed spoils it (the reader then hashes
 * the result afresh), so it can never vouch for bytes it did not hash.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import { RunningHash } from '../../src/chunk/reader.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('RunningHash', () => {
  it('equals the SHA-256 of the chunk for any segment size, chunk length and arrival order', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 8 }),
        (segments, segmentBytes, lengthSeed, pieceSizes) => {
          const length = lengthSeed % (segments * segmentBytes + 1);
          const buf = randomBytes(segments * segmentBytes);
          const h = new RunningHash(buf, length, segmentBytes, segments);
          // Fill the segments piece by piece, round-robin (later segments often ahead of earlier ones).
          const ready = new Array<number>(segments).fill(0);
          let turn = 0;
          while (ready.some((r) => r < segmentBytes)) {
            const s = turn++ % segments;
            if (ready[s] === segmentBytes) continue;
            ready[s] = Math.min(segmentBytes, ready[s]! + pieceSizes[turn % pieceSizes.length]!);
            h.report(s, ready[s]!);
          }
          expect(h.digest()).toBe(sha(buf.subarray(0, length)));
          // Once only.
          expect(h.digest()).toBeUndefined();
        },
      ),
      { numRuns: 200 },
    );
  });

  it('gives nothing until every byte of the chunk has arrived', () => {
    const buf = randomBytes(200);
    const h = new RunningHash(buf, 150, 100, 2);
    h.report(0, 100);
    h.report(1, 49);
    expect(h.digest()).toBeUndefined();
  });

  it('a segment that starts over spoils it, even if it then completes', () => {
    const buf = randomBytes(200);
    const h = new RunningHash(buf, 200, 100, 2);
    h.report(0, 60);
    h.report(0, 0); // the read started over: bytes 0..60 will be written again
    buf[10] = buf[10]! ^ 0xff;
    h.report(0, 100);
    h.report(1, 100);
    expect(h.digest()).toBeUndefined();
  });

  it('out-of-range reports and spoil() spoil it', () => {
    const a = new RunningHash(randomBytes(100), 100, 50, 2);
    a.report(2, 10);
    a.report(0, 50);
    a.report(1, 50);
    expect(a.digest()).toBeUndefined();
    const b = new RunningHash(randomBytes(100), 100, 50, 2);
    b.report(0, 51);
    expect(b.digest()).toBeUndefined();
    const c = new RunningHash(randomBytes(100), 100, 50, 2);
    c.report(0, 50);
    c.spoil();
    c.report(1, 50);
    expect(c.digest()).toBeUndefined();
    // A length beyond the buffer can never be vouched for.
    expect(new RunningHash(randomBytes(10), 11, 10, 1).digest()).toBeUndefined();
  });
});
