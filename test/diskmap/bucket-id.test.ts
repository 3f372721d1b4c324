/** The 128-bit bucket id: text and byte forms round-trip, out-of-range fields are refused. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { bucketId, bucketIdFromBytes, bucketIdToBytes, formatBucketId, parseBucketId, diskKeyOf } from '../../src/diskmap/index.js';

const idArb = fc.record({
  dc: fc.integer({ min: 0, max: 255 }),
  row: fc.integer({ min: 0, max: 255 }),
  rack: fc.integer({ min: 0, max: 255 }),
  machine: fc.integer({ min: 0, max: 255 }),
  disk: fc.integer({ min: 0, max: 0xffff }),
  bucket: fc.integer({ min: 0, max: 0xffff }),
  incarnation: fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
});

describe('bucket id', () => {
  it('round-trips through text and bytes', () => {
    fc.assert(
      fc.property(idArb, (f) => {
        const b = bucketId(f);
        const text = formatBucketId(b);
        expect(text).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}$/);
        expect(parseBucketId(text)).toEqual(b);
        const bytes = bucketIdToBytes(b);
        expect(bytes.length).toBe(16);
        expect(bucketIdFromBytes(bytes)).toEqual(b);
      }),
      { numRuns: 200 },
    );
  });

  it('text order is location order', () => {
    fc.assert(
      fc.property(idArb, idArb, (a, b) => {
        const ta = formatBucketId(bucketId(a));
        const tb = formatBucketId(bucketId(b));
        const ka = [a.dc, a.row, a.rack, a.machine, a.disk, a.bucket];
        const kb = [b.dc, b.row, b.rack, b.machine, b.disk, b.bucket];
        const i = ka.findIndex((v, j) => v !== kb[j]);
        if (i >= 0) expect(ta < tb).toBe((ka[i] as number) < (kb[i] as number));
      }),
      { numRuns: 100 },
    );
  });

  it('refuses out-of-range fields with the field name', () => {
    const ok = { dc: 0, row: 0, rack: 0, machine: 0, disk: 0, bucket: 0, incarnation: 0n };
    expect(() => bucketId({ ...ok, dc: 256 })).toThrow(/dc must be an integer in 0\.\.255/);
    expect(() => bucketId({ ...ok, disk: 0x10000 })).toThrow(/disk must be/);
    expect(() => bucketId({ ...ok, bucket: -1 })).toThrow(/bucket must be/);
    expect(() => bucketId({ ...ok, machine: 1.5 })).toThrow(/machine must be/);
    expect(() => bucketId({ ...ok, incarnation: 1n << 64n })).toThrow(/incarnation/);
    expect(() => parseBucketId('00000001-0002-0011-9F3A0C5E7B214D08')).toThrow(/not of the form/);
    expect(() => parseBucketId('0000001-0002-0011-9f3a0c5e7b214d08')).toThrow(/not of the form/);
    expect(() => bucketIdFromBytes(new Uint8Array(15))).toThrow(/16 bytes/);
  });

  it('two incarnations of one disk slot never alias', () => {
    const a = bucketId({ dc: 0, row: 0, rack: 0, machine: 1, disk: 2, bucket: 3, incarnation: 1n });
    const b = bucketId({ ...a, incarnation: 2n });
    expect(formatBucketId(a)).not.toBe(formatBucketId(b));
    expect(diskKeyOf(a)).not.toBe(diskKeyOf(b));
  });
});
