/**
 * The trivial key-value state machine's commands (put, cas, delete) in their binary Raft
 * entry form, and their results. Decoding validates every length: a damaged entry is an
 * ECORRUPT error, never a crash.
 *
 *   put:    0x01 | keyLen u16 | key | value
 *   delete: 0x02 | keyLen u16 | key
 *   cas:    0x03 | keyLen u16 | key | expectLen u32 (0xffffffff = must be absent) | expect | value
 */
import { CairnError } from '../../common/errors.js';

export const MAX_KEY_BYTES = 1024;
export const MAX_VALUE_BYTES = 1024 * 1024;
const ABSENT = 0xffff_ffff;

export type KvCommand =
  | { op: 'put'; key: string; value: Uint8Array }
  | { op: 'delete'; key: string }
  | { op: 'cas'; key: string; expect: Uint8Array | null; value: Uint8Array };

export type KvResult =
  | { op: 'put' }
  | { op: 'delete'; deleted: boolean }
  | { op: 'cas'; ok: boolean; current: Buffer | null }
  | { op: 'error'; message: string };

function keyBytes(key: string): Buffer {
  const k = Buffer.from(key, 'utf8');
  if (k.length === 0 || k.length > MAX_KEY_BYTES) throw new CairnError('EINVAL', `key must be 1..${MAX_KEY_BYTES} bytes of UTF-8`);
  return k;
}

export function encodeCommand(c: KvCommand): Buffer {
  const k = keyBytes(c.key);
  if (c.op === 'put') {
    if (c.value.length > MAX_VALUE_BYTES) throw new CairnError('EINVAL', `value larger than ${MAX_VALUE_BYTES} bytes`);
    const b = Buffer.allocUnsafe(3 + k.length + c.value.length);
    b[0] = 1;
    b.writeUInt16BE(k.length, 1);
    k.copy(b, 3);
    b.set(c.value, 3 + k.length);
    return b;
  }
  if (c.op === 'delete') {
    const b = Buffer.allocUnsafe(3 + k.length);
    b[0] = 2;
    b.writeUInt16BE(k.length, 1);
    k.copy(b, 3);
    return b;
  }
  if (c.value.length > MAX_VALUE_BYTES) throw new CairnError('EINVAL', `value larger than ${MAX_VALUE_BYTES} bytes`);
  const exp = c.expect ?? Buffer.alloc(0);
  const b = Buffer.allocUnsafe(7 + k.length + exp.length + c.value.length);
  b[0] = 3;
  b.writeUInt16BE(k.length, 1);
  k.copy(b, 3);
  b.writeUInt32BE(c.expect === null ? ABSENT : exp.length, 3 + k.length);
  b.set(exp, 7 + k.length);
  b.set(c.value, 7 + k.length + exp.length);
  return b;
}

/** Decode a command; the returned key is the raw key bytes (no copy of the value). */
export function decodeCommand(data: Uint8Array): { op: 'put' | 'delete' | 'cas'; key: Buffer; expect: Buffer | null; value: Buffer } {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const bad = (why: string): never => {
    throw new CairnError('ECORRUPT', `kv: malformed command entry (${why})`);
  };
  if (b.length < 3) bad('too short');
  const kl = b.readUInt16BE(1);
  if (kl === 0 || 3 + kl > b.length) bad('key length');
  const key = b.subarray(3, 3 + kl);
  switch (b[0]) {
    case 1:
      return { op: 'put', key, expect: null, value: b.subarray(3 + kl) };
    case 2:
      if (b.length !== 3 + kl) bad('trailing bytes');
      return { op: 'delete', key, expect: null, value: Buffer.alloc(0) };
    case 3: {
      if (7 + kl > b.length) bad('cas header');
      const el = b.readUInt32BE(3 + kl);
      const absent = el === ABSENT;
      const len = absent ? 0 : el;
      if (7 + kl + len > b.length) bad('expect length');
      return { op: 'cas', key, expect: absent ? null : b.subarray(7 + kl, 7 + kl + len), value: b.subarray(7 + kl + len) };
    }
    default:
      return bad(`unknown op ${String(b[0])}`);
  }
}
