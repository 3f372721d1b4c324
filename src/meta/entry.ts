/**
 * The bytes of a metadata Raft entry: one entry carries one or more operations (the service
 * coalesces concurrent writes into one entry; apply runs them in order, each atomically, each
 * with its own result).
 *
 * Format 2 (binary, written since 2026-11-25):
 *
 *   u8  2                      format version (a format-1 entry is JSON and starts with '{')
 *   u32 CRC-32 of the rest     (src/common/crc32.ts, little-endian) — a flipped bit on disk or on the wire
 *   f64 nowMs                  the proposer's clock: the only time apply uses
 *   u32 op count               1..MAX_OPS_PER_ENTRY
 *   ops, each: u8 opcode | u32 body length | body
 *
 * All integers little-endian; numbers that may exceed 32 bits are f64 holding a safe integer.
 * Strings are u32 byte length + UTF-8. The hot namespace operations (mkdir, create, symlink,
 * link, unlink, rmdir, rename, setattr) and putFile (the small-file write: its content travels
 * as raw bytes, not base64 inside JSON) have binary bodies that the decoder checks field by
 * field (types, ranges, names): cheap enough to run on every node for every entry. The others
 * (opcode 0) carry the operation as JSON and are checked with the zod schema, as format 1 was.
 * The service validates every operation with zod before it encodes it (ops.ts validateOp).
 *
 * Format 1 (`{"v":1,"nowMs":…,"op":{…}}`, JSON, zod-validated) is still decoded: entries
 * already in a Raft log apply unchanged.
 */
import { crc32 } from '../common/crc32.js';
import { CairnError } from '../common/errors.js';
import { formatZodError } from '../common/config.js';
import {
  INLINE_MAX_BYTES,
  NAME_MAX_BYTES,
  SYMLINK_MAX_BYTES,
  entrySchema,
  nameProblem,
  opSchema,
  splitPath,
  validateOp,
  type EntryRef,
  type Op,
  type Ref,
} from './ops.js';

export const ENTRY_FORMAT = 2;
/** Operations one entry may carry. */
export const MAX_OPS_PER_ENTRY = 4096;
const HEADER_BYTES = 1 + 4 + 8 + 4;
const OP_HEADER_BYTES = 1 + 4;

const OPCODE = {
  json: 0,
  mkdir: 1,
  create: 2,
  symlink: 3,
  link: 4,
  unlink: 5,
  rmdir: 6,
  rename: 7,
  setattr: 8,
  putFile: 9,
} as const;

const REF_INO = 1;
const REF_PATH = 2;
const REF_PARENT = 3;

// ---------------------------------------------------------------- encoding

class Writer {
  private buf = Buffer.allocUnsafe(256);
  pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u8(v: number): void {
    this.room(1);
    this.buf[this.pos++] = v;
  }
  u32(v: number): void {
    this.room(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }
  num(v: number): void {
    this.room(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }
  bool(v: boolean): void {
    this.u8(v ? 1 : 0);
  }
  str(s: string): void {
    const n = Buffer.byteLength(s);
    this.room(4 + n);
    this.buf.writeUInt32LE(n, this.pos);
    this.buf.write(s, this.pos + 4, n, 'utf8');
    this.pos += 4 + n;
  }
  /** u32 length + raw bytes. */
  blob(b: Uint8Array): void {
    this.room(4 + b.length);
    this.buf.writeUInt32LE(b.length, this.pos);
    this.buf.set(b, this.pos + 4);
    this.pos += 4 + b.length;
  }
  ref(r: Ref): void {
    if ('ino' in r) {
      this.u8(REF_INO);
      this.num(r.ino);
    } else if ('path' in r) {
      this.u8(REF_PATH);
      this.str(r.path);
    } else {
      this.u8(REF_PARENT);
      this.num(r.parent);
      this.str(r.name);
    }
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** An operation record whose body is the operation as JSON (opcode 0, checked with zod on decode). */
function encodeJsonOp(op: Op): Buffer {
  const json = Buffer.from(JSON.stringify(op));
  const out = Buffer.allocUnsafe(OP_HEADER_BYTES + json.length);
  out[0] = OPCODE.json;
  out.writeUInt32LE(json.length, 1);
  json.copy(out, OP_HEADER_BYTES);
  return out;
}

/** How operations are written (EncodeOptions.binaryPutFile: see MetaServiceOptions.binaryPutFile). */
export interface EncodeOptions {
  /**
   * putFile as its binary record (opcode 9, decoded since 0.2.0) rather than JSON (opcode 0).
   * Default true; the service writes it only once every node of the cluster decodes it.
   */
  binaryPutFile?: boolean;
}

/**
 * One operation as an entry record (opcode, length, body). The operation must have passed
 * validateOp (ops.ts); records are concatenated into an entry by encodeEntryOps.
 */
export function encodeOp(op: Op, o: EncodeOptions = {}): Buffer {
  const w = new Writer();
  w.u8(0);
  w.u32(0);
  let code: number;
  switch (op.op) {
    case 'mkdir':
      code = OPCODE.mkdir;
      w.ref(op.at);
      w.u32(op.mode);
      w.u32(op.uid);
      w.u32(op.gid);
      break;
    case 'create':
      // With a lease it travels as JSON (the binary body has no field for it).
      if (op.lease !== undefined) return encodeJsonOp(op);
      code = OPCODE.create;
      w.ref(op.at);
      w.u32(op.mode);
      w.u32(op.uid);
      w.u32(op.gid);
      w.bool(op.exclusive);
      break;
    case 'symlink':
      code = OPCODE.symlink;
      w.ref(op.at);
      w.str(op.target);
      w.u32(op.uid);
      w.u32(op.gid);
      break;
    case 'link':
      code = OPCODE.link;
      w.ref(op.node);
      w.ref(op.at);
      break;
    case 'unlink':
    case 'rmdir':
      code = op.op === 'unlink' ? OPCODE.unlink : OPCODE.rmdir;
      w.ref(op.at);
      break;
    case 'rename':
      code = OPCODE.rename;
      w.ref(op.from);
      w.ref(op.to);
      w.bool(op.noReplace);
      break;
    case 'setattr': {
      code = OPCODE.setattr;
      w.ref(op.node);
      const flags =
        (op.mode !== undefined ? 1 : 0) | (op.uid !== undefined ? 2 : 0) | (op.gid !== undefined ? 4 : 0) |
        (op.mtimeMs !== undefined ? 8 : 0) | (op.atimeMs !== undefined ? 16 : 0);
      w.u8(flags);
      if (op.mode !== undefined) w.u32(op.mode);
      if (op.uid !== undefined) w.u32(op.uid);
      if (op.gid !== undefined) w.u32(op.gid);
      if (op.mtimeMs !== undefined) w.num(op.mtimeMs);
      if (op.atimeMs !== undefined) w.num(op.atimeMs);
      break;
    }
    case 'putFile': {
      if (o.binaryPutFile === false) return encodeJsonOp(op);
      code = OPCODE.putFile;
      w.ref(op.at);
      w.u32(op.mode);
      w.u32(op.uid);
      w.u32(op.gid);
      w.u8((op.mkdirs ? 1 : 0) | (op.mtimeMs !== undefined ? 2 : 0));
      if (op.mtimeMs !== undefined) w.num(op.mtimeMs);
      w.num(op.inlineBudget);
      w.blob(Buffer.from(op.dataB64, 'base64'));
      break;
    }
    default:
      return encodeJsonOp(op);
  }
  const out = w.bytes();
  out[0] = code;
  out.writeUInt32LE(out.length - OP_HEADER_BYTES, 1);
  return out;
}

/** An entry from encoded operation records (encodeOp), all applied with the clock reading nowMs. */
export function encodeEntryOps(records: Buffer[], nowMs: number): Buffer {
  if (records.length < 1 || records.length > MAX_OPS_PER_ENTRY) {
    throw new CairnError('EINVAL', `an entry holds 1..${MAX_OPS_PER_ENTRY} operations, not ${records.length}`);
  }
  let size = HEADER_BYTES;
  for (const r of records) size += r.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = ENTRY_FORMAT;
  out.writeDoubleLE(Math.floor(nowMs), 5);
  out.writeUInt32LE(records.length, 13);
  let at = HEADER_BYTES;
  for (const r of records) {
    r.copy(out, at);
    at += r.length;
  }
  out.writeUInt32LE(crc32(out.subarray(5)), 1);
  return out;
}

/** Encode validated operations (validateOp) as one entry. */
export function encodeEntry(ops: Op | Op[], nowMs: number): Buffer {
  return encodeEntryOps((Array.isArray(ops) ? ops : [ops]).map((op) => encodeOp(op)), nowMs);
}

// ---------------------------------------------------------------- decoding

/** A decoded entry: the clock reading and, per operation, the operation or why it is unusable. */
export interface DecodedEntry {
  /** 1: a legacy JSON entry (its proposer expects one result, not a list). */
  format: 1 | 2;
  nowMs: number;
  ops: Array<Op | CairnError>;
}

const bad = (why: string): CairnError => new CairnError('EINVAL', `metadata entry: ${why}`);
const tooLong = (why: string): CairnError => new CairnError('ENAMETOOLONG', why);

class Reader {
  pos: number;
  constructor(private readonly buf: Buffer, start: number, private readonly end: number) {
    this.pos = start;
  }
  private need(n: number): void {
    if (this.pos + n > this.end) throw bad('operation record is truncated');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  /** A safe non-negative integer (min: smallest allowed). */
  num(min = 0): number {
    this.need(8);
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    if (!Number.isSafeInteger(v) || v < min) throw bad(`number ${v} out of range`);
    return v;
  }
  bool(): boolean {
    const v = this.u8();
    if (v > 1) throw bad(`boolean byte ${v}`);
    return v === 1;
  }
  str(maxBytes: number, long = bad): string {
    const n = this.u32();
    if (n > maxBytes) throw long(`string of ${n} bytes, limit ${maxBytes}`);
    this.need(n);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  /** u32 length + raw bytes (a view into the entry, not a copy). */
  blob(maxBytes: number): Buffer {
    const n = this.u32();
    if (n > maxBytes) throw bad(`${n} bytes of data, limit ${maxBytes}`);
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  name(): string {
    const s = this.str(NAME_MAX_BYTES, tooLong);
    const p = nameProblem(s);
    if (p !== undefined) throw p.startsWith('name longer') ? tooLong(p) : bad(`${p}: ${JSON.stringify(s.slice(0, 64))}`);
    return s;
  }
  path(entry: boolean): string {
    const s = this.str(16_384, tooLong);
    // splitPath's own errors: ENAMETOOLONG for length, EINVAL otherwise
    const parts = splitPath(s);
    if (entry && parts.length === 0) throw bad('the root has no name');
    return s;
  }
  ref(): Ref {
    const kind = this.u8();
    if (kind === REF_INO) return { ino: this.num(1) };
    return this.refNamed(kind, false);
  }
  entryRef(): EntryRef {
    return this.refNamed(this.u8(), true);
  }
  private refNamed(kind: number, entry: boolean): EntryRef {
    if (kind === REF_PATH) return { path: this.path(entry) };
    if (kind === REF_PARENT) {
      const parent = this.num(1);
      return { parent, name: this.name() };
    }
    throw bad(`reference kind ${kind}`);
  }
  mode(): number {
    const m = this.u32();
    if (m > 0o7777) throw bad(`mode ${m.toString(8)} out of range`);
    return m;
  }
}

function decodeOp(code: number, buf: Buffer, start: number, end: number): Op {
  if (code === OPCODE.json) {
    let json: unknown;
    try {
      json = JSON.parse(buf.toString('utf8', start, end));
    } catch (err) {
      throw bad(`operation is not valid JSON: ${(err as Error).message}`);
    }
    const r = opSchema.safeParse(json);
    if (!r.success) throw new CairnError('EINVAL', formatZodError('metadata entry', r.error));
    return r.data;
  }
  const r = new Reader(buf, start, end);
  let op: Op;
  switch (code) {
    case OPCODE.mkdir:
      op = { op: 'mkdir', at: r.entryRef(), mode: r.mode(), uid: r.u32(), gid: r.u32() };
      break;
    case OPCODE.create:
      op = { op: 'create', at: r.entryRef(), mode: r.mode(), uid: r.u32(), gid: r.u32(), exclusive: r.bool() };
      break;
    case OPCODE.symlink: {
      const at = r.entryRef();
      const target = r.str(SYMLINK_MAX_BYTES * 4);
      if (target.length < 1 || target.length > SYMLINK_MAX_BYTES) throw bad(`symlink target of ${target.length} characters`);
      op = { op: 'symlink', at, target, uid: r.u32(), gid: r.u32() };
      break;
    }
    case OPCODE.link:
      op = { op: 'link', node: r.ref(), at: r.entryRef() };
      break;
    case OPCODE.unlink:
      op = { op: 'unlink', at: r.entryRef() };
      break;
    case OPCODE.rmdir:
      op = { op: 'rmdir', at: r.entryRef() };
      break;
    case OPCODE.rename:
      op = { op: 'rename', from: r.entryRef(), to: r.entryRef(), noReplace: r.bool() };
      break;
    case OPCODE.setattr: {
      const s: Extract<Op, { op: 'setattr' }> = { op: 'setattr', node: r.ref() };
      const flags = r.u8();
      if (flags > 31) throw bad(`setattr flags ${flags}`);
      if (flags & 1) s.mode = r.mode();
      if (flags & 2) s.uid = r.u32();
      if (flags & 4) s.gid = r.u32();
      if (flags & 8) s.mtimeMs = r.num();
      if (flags & 16) s.atimeMs = r.num();
      op = s;
      break;
    }
    case OPCODE.putFile: {
      const at = r.entryRef();
      const mode = r.mode();
      const uid = r.u32();
      const gid = r.u32();
      const flags = r.u8();
      if (flags > 3) throw bad(`putFile flags ${flags}`);
      const p: Extract<Op, { op: 'putFile' }> = { op: 'putFile', at, mode, uid, gid, dataB64: '', mkdirs: (flags & 1) !== 0, inlineBudget: 0 };
      if (flags & 2) p.mtimeMs = r.num();
      p.inlineBudget = r.num();
      p.dataB64 = r.blob(INLINE_MAX_BYTES).toString('base64');
      op = p;
      break;
    }
    default:
      throw bad(`unknown opcode ${code}`);
  }
  if (r.pos !== end) throw bad(`${end - r.pos} stray bytes after a ${op.op} operation`);
  return op;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * The record of an operation built from a request that its zod request schema accepted (so
 * every field has its type): the namespace operations are checked by decoding their record —
 * the same checks of names, paths and ranges that apply makes, for a few microseconds instead
 * of the full zod operation schema — and the others with that schema (ops.ts validateOp).
 * Throws EINVAL or ENAMETOOLONG.
 */
export function encodeCheckedOp(op: Op, o: EncodeOptions = {}): Buffer {
  if (!BINARY_OPS.has(op.op) || (op.op === 'putFile' && o.binaryPutFile === false)) return encodeOp(validateOp(op), o);
  let rec: Buffer;
  try {
    rec = encodeOp(op, o);
  } catch (err) {
    throw new CairnError('EINVAL', `request: ${op.op} does not encode: ${(err as Error).message}`);
  }
  const back = decodeOp(rec[0]!, rec, OP_HEADER_BYTES, rec.length);
  // The content travels as raw bytes: base64 that does not read back the same is refused (as the zod schema does).
  if (op.op === 'putFile' && (back as typeof op).dataB64 !== op.dataB64) throw new CairnError('EINVAL', 'request: inline data is not canonical base64');
  return rec;
}

const BINARY_OPS: ReadonlySet<string> = new Set(['mkdir', 'create', 'symlink', 'link', 'unlink', 'rmdir', 'rename', 'setattr', 'putFile']);

/**
 * Decode an entry's bytes. Throws EINVAL (or ECORRUPT for a checksum mismatch) when the entry
 * as a whole is unusable; an operation record that does not decode is returned as its error
 * in `ops` (the others still apply).
 */
export function decodeEntry(data: Uint8Array): DecodedEntry {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length > 0 && buf[0] === 0x7b) return decodeLegacy(buf);
  if (buf.length < HEADER_BYTES) throw bad(`${buf.length} bytes is too short`);
  if (buf[0] !== ENTRY_FORMAT) throw bad(`unknown format ${buf[0]}`);
  if (crc32(buf.subarray(5)) !== buf.readUInt32LE(1)) {
    throw new CairnError('ECORRUPT', 'metadata entry: checksum mismatch (damaged on disk or on the wire)');
  }
  const nowMs = buf.readDoubleLE(5);
  if (!Number.isSafeInteger(nowMs) || nowMs < 0) throw bad(`clock reading ${nowMs}`);
  const count = buf.readUInt32LE(13);
  if (count < 1 || count > MAX_OPS_PER_ENTRY) throw bad(`${count} operations`);
  const ops: Array<Op | CairnError> = [];
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + OP_HEADER_BYTES > buf.length) throw bad('operation record is truncated');
    const code = buf[at]!;
    const len = buf.readUInt32LE(at + 1);
    const start = at + OP_HEADER_BYTES;
    const end = start + len;
    if (end > buf.length) throw bad('operation record is truncated');
    try {
      ops.push(decodeOp(code, buf, start, end));
    } catch (err) {
      ops.push(err instanceof CairnError ? err : bad(String(err)));
    }
    at = end;
  }
  if (at !== buf.length) throw bad(`${buf.length - at} stray bytes after the last operation`);
  return { format: 2, nowMs, ops };
}

/** Format 1: JSON {v:1, nowMs, op}, validated with zod. */
function decodeLegacy(buf: Buffer): DecodedEntry {
  let json: unknown;
  try {
    json = JSON.parse(utf8Decoder.decode(buf));
  } catch (err) {
    throw new CairnError('EINVAL', `metadata entry is not valid JSON: ${(err as Error).message}`);
  }
  const r = entrySchema.safeParse(json);
  if (!r.success) throw new CairnError('EINVAL', formatZodError('metadata entry', r.error));
  return { format: 1, nowMs: r.data.nowMs, ops: [r.data.op] };
}
