/**
 * The 128-bit bucket id.
 *
 *   bits 127..120  dc          (8)
 *   bits 119..112  row         (8)
 *   bits 111..104  rack        (8)
 *   bits 103..96   machine     (8)
 *   bits  95..80   disk        (16)   disk number within the machine
 *   bits  79..64   bucket      (16)   bucket number within the disk
 *   bits  63..0    incarnation (64)   random tag of the physical disk, chosen when the disk is
 *                                     formatted and written in its label; a replacement disk in
 *                                     the same slot gets a new one, so its buckets never alias
 *                                     the buckets of the disk it replaced.
 *
 * Text form (round-trips, sorts by location): "DDRRKKMM-DDDD-BBBB-IIIIIIIIIIIIIIII" in
 * lowercase hex, e.g. "00000001-0002-0011-9f3a0c5e7b214d08". Binary form: 16 bytes, big-endian.
 */
import { CairnError } from '../common/errors.js';

export interface BucketId {
  readonly dc: number;
  readonly row: number;
  readonly rack: number;
  readonly machine: number;
  readonly disk: number;
  readonly bucket: number;
  /** 64-bit disk incarnation. */
  readonly incarnation: bigint;
}

const LIMITS: Array<[keyof Omit<BucketId, 'incarnation'>, number]> = [
  ['dc', 0xff],
  ['row', 0xff],
  ['rack', 0xff],
  ['machine', 0xff],
  ['disk', 0xffff],
  ['bucket', 0xffff],
];

/** Build a bucket id, rejecting any out-of-range field with a clear error. */
export function bucketId(fields: BucketId): BucketId {
  for (const [name, max] of LIMITS) {
    const v = fields[name];
    if (!Number.isInteger(v) || v < 0 || v > max) {
      throw new CairnError('EINVAL', `bucket id: ${name} must be an integer in 0..${max}, got ${String(v)}`);
    }
  }
  if (typeof fields.incarnation !== 'bigint' || fields.incarnation < 0n || fields.incarnation > 0xffff_ffff_ffff_ffffn) {
    throw new CairnError('EINVAL', `bucket id: incarnation must be a 64-bit unsigned integer, got ${String(fields.incarnation)}`);
  }
  return Object.freeze({ ...fields });
}

const hex = (v: number | bigint, width: number): string => v.toString(16).padStart(width, '0');

export function formatBucketId(b: BucketId): string {
  return `${hex(b.dc, 2)}${hex(b.row, 2)}${hex(b.rack, 2)}${hex(b.machine, 2)}-${hex(b.disk, 4)}-${hex(b.bucket, 4)}-${hex(b.incarnation, 16)}`;
}

const TEXT_RE = /^([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{16})$/;

export function parseBucketId(text: string): BucketId {
  const m = TEXT_RE.exec(text);
  if (m === null) {
    throw new CairnError('EINVAL', `bucket id: "${text.slice(0, 64)}" is not of the form DDRRKKMM-DDDD-BBBB-IIIIIIIIIIIIIIII (lowercase hex)`);
  }
  const n = (i: number): number => parseInt(m[i] as string, 16);
  return bucketId({ dc: n(1), row: n(2), rack: n(3), machine: n(4), disk: n(5), bucket: n(6), incarnation: BigInt(`0x${m[7]}`) });
}

export function bucketIdToBytes(b: BucketId): Buffer {
  const buf = Buffer.alloc(16);
  buf.writeUInt8(b.dc, 0);
  buf.writeUInt8(b.row, 1);
  buf.writeUInt8(b.rack, 2);
  buf.writeUInt8(b.machine, 3);
  buf.writeUInt16BE(b.disk, 4);
  buf.writeUInt16BE(b.bucket, 6);
  buf.writeBigUInt64BE(b.incarnation, 8);
  return buf;
}

export function bucketIdFromBytes(buf: Uint8Array): BucketId {
  if (buf.length !== 16) throw new CairnError('EINVAL', `bucket id: expected 16 bytes, got ${buf.length}`);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  return bucketId({
    dc: b.readUInt8(0),
    row: b.readUInt8(1),
    rack: b.readUInt8(2),
    machine: b.readUInt8(3),
    disk: b.readUInt16BE(4),
    bucket: b.readUInt16BE(6),
    incarnation: b.readBigUInt64BE(8),
  });
}

export function bucketIdEquals(a: BucketId, b: BucketId): boolean {
  return formatBucketId(a) === formatBucketId(b);
}

/** The disk a bucket lives on, as a stable string key "dc.row.rack.machine.disk/incarnation". */
export function diskKeyOf(b: BucketId): string {
  return `${b.dc}.${b.row}.${b.rack}.${b.machine}.${b.disk}/${hex(b.incarnation, 16)}`;
}
