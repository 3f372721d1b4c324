/** The on-disk formats: round trips, and every single flipped bit is caught (header and payload). */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { decodeShardHeader, decodeSlot, encodeShardHeader, encodeSlot, payloadCrc, SHARD_HEADER_BYTES } from '../../src/chunk/format.js';
import { ecShardSize, encodeChunk, joinDataShards, reconstructShards } from '../../src/chunk/codec.js';
import { CairnError } from '../../src/common/errors.js';
import type { ShardInfo } from '../../src/chunk/types.js';

const info: ShardInfo = {
  bucket: '01020304-0005-0006-0123456789abcdef',
  hash: 'ab'.repeat(32),
  scheme: { kind: 'ec', k: 4, m: 2 },
  index: 5,
  payloadLength: 1 << 20,
  chunkLength: 4_000_000,
  payloadCrc32: 0xdeadbeef,
  diskmapEpoch: 42,
  createdMs: 1_700_000_000_000,
};

describe('shard header', () => {
  it('round-trips', () => {
    const h = encodeShardHeader(info);
    expect(h.length).toBe(SHARD_HEADER_BYTES);
    expect(decodeShardHeader(h, 'x')).toEqual(info);
    const r: ShardInfo = { ...info, scheme: { kind: 'replica', n: 3 }, index: 2 };
    expect(decodeShardHeader(encodeShardHeader(r), 'x')).toEqual(r);
  });

  it('every single flipped bit in the header is ECORRUPT', () => {
    const h = encodeShardHeader(info);
    let caught = 0;
    for (let bit = 0; bit < SHARD_HEADER_BYTES * 8; bit++) {
      const b = Buffer.from(h);
      b[bit >> 3] = b[bit >> 3]! ^ (1 << (bit & 7));
      try {
        decodeShardHeader(b, 'x');
      } catch (err) {
        if (err instanceof CairnError && err.code === 'ECORRUPT') caught++;
      }
    }
    expect(caught).toBe(SHARD_HEADER_BYTES * 8);
  });

  it('a short header is ECORRUPT', () => {
    expect(() => decodeShardHeader(encodeShardHeader(info).subarray(0, 100), 'x')).toThrow(/bad shard header/);
  });
});

describe('payload checksum', () => {
  it('any single flipped bit changes the CRC-32', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 5000 }), fc.nat(), (arr, pos) => {
        const data = Buffer.from(arr);
        const bit = pos % (data.length * 8);
        const flipped = Buffer.from(data);
        flipped[bit >> 3] = flipped[bit >> 3]! ^ (1 << (bit & 7));
        expect(payloadCrc(flipped)).not.toBe(payloadCrc(data));
      }),
      { numRuns: 300 },
    );
  });

  it('is incremental (piece by piece equals whole)', () => {
    const d = randomBytes(100_000);
    expect(payloadCrc(d.subarray(30_000), payloadCrc(d.subarray(0, 30_000)))).toBe(payloadCrc(d));
  });
});

describe('slot file', () => {
  it('round-trips and refuses damage', () => {
    const s = { promised: { counter: 7, proposer: 'p1' }, accepted: { counter: 6, proposer: 'p0' }, value: { version: 3, data: Buffer.from('hello') } };
    const b = encodeSlot(s);
    expect(decodeSlot(b, 'x')).toEqual(s);
    const none = { ...s, value: { version: 4, data: null } };
    expect(decodeSlot(encodeSlot(none), 'x')).toEqual(none);
    const bad = Buffer.from(b);
    bad[50] = bad[50]! ^ 4;
    expect(() => decodeSlot(bad, 'x')).toThrow(CairnError);
  });
});

describe('codec', () => {
  it('pads to a multiple of 8 and rebuilds any lost data from any k shards', async () => {
    expect(ecShardSize(0, 4)).toBe(8);
    expect(ecShardSize(17, 2)).toBe(16);
    const chunk = randomBytes(12_345);
    const shards = await encodeChunk(chunk, { kind: 'ec', k: 3, m: 2 });
    expect(shards).toHaveLength(5);
    const some: Array<Buffer | undefined> = [undefined, shards[1], undefined, shards[3], shards[4]];
    const all = await reconstructShards({ k: 3, m: 2 }, some, [0, 1, 2]);
    expect(joinDataShards(all.slice(0, 3), chunk.length).equals(chunk)).toBe(true);
    await expect(reconstructShards({ k: 3, m: 2 }, [undefined, undefined, undefined, shards[3], shards[4]], [0])).rejects.toMatchObject({ code: 'ECORRUPT' });
  });
});
