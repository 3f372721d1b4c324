/**
 * The write cache's on-disk journal: one append-only segment file per (file, commit epoch),
 * a sequence of self-checking records. A record is a 24-byte header and a payload:
 *
 *   0  u32  magic 0x434a5231 ("CJR1")
 *   4  u8   type: 1 = write (payload = the bytes), 2 = truncate (offset = new size, no payload)
 *   5  u8×3 zero
 *   8  u32  offset, high 32 bits      12  u32  offset, low 32 bits
 *   16 u32  payload length
 *   20 u32  CRC-32 of header bytes 0..19 and the payload
 *
 * Replay stops at the first record that is short, has a bad magic/type/CRC or an impossible
 * length: that is the torn tail of a write that was never acknowledged as durable, and the
 * file is cut back to the last good record so that appends continue on a clean end.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { crc32 } from '../common/crc32.js';

export const RECORD_HEADER_BYTES = 24;
const MAGIC = 0x434a5231;
export const REC_WRITE = 1;
export const REC_TRUNCATE = 2;
/** Largest payload of one record; the cache splits bigger writes. */
export const MAX_RECORD_PAYLOAD_BYTES = 16 * 1024 * 1024;
/** Largest file offset the header can carry and JavaScript numbers keep exact. */
export const MAX_FILE_OFFSET = Number.MAX_SAFE_INTEGER;

export interface ReplayedRecord {
  type: typeof REC_WRITE | typeof REC_TRUNCATE;
  offset: number;
  length: number;
  /** Position of the payload inside the segment file. */
  payloadPos: number;
}

export function encodeHeader(type: number, offset: number, payload: Uint8Array): Buffer {
  const h = Buffer.alloc(RECORD_HEADER_BYTES);
  h.writeUInt32BE(MAGIC, 0);
  h.writeUInt8(type, 4);
  h.writeUInt32BE(Math.floor(offset / 2 ** 32), 8);
  h.writeUInt32BE(offset % 2 ** 32, 12);
  h.writeUInt32BE(payload.length, 16);
  let c = crc32(h.subarray(0, 20));
  if (payload.length > 0) c = crc32(payload, c);
  h.writeUInt32BE(c >>> 0, 20);
  return h;
}

/** An open segment, appended to by one writer (the cache serializes appends per file). */
export class SegmentWriter {
  private constructor(
    readonly path: string,
    private fh: FileHandle,
    /** Bytes in the file: the next record starts here. */
    public sizeBytes: number,
  ) {}

  static async open(path: string, sizeBytes: number): Promise<SegmentWriter> {
    const fh = await open(path, 'a+');
    return new SegmentWriter(path, fh, sizeBytes);
  }

  /** Append a record; returns where its payload starts. Not durable until sync(). */
  async append(type: number, offset: number, payload: Uint8Array): Promise<number> {
    const header = encodeHeader(type, offset, payload);
    const at = this.sizeBytes;
    this.sizeBytes += RECORD_HEADER_BYTES + payload.length;
    const bufs = payload.length > 0 ? [header, payload] : [header];
    let written = 0;
    const want = RECORD_HEADER_BYTES + payload.length;
    // 'a+' appends at the end whatever position is passed, and we are the only appender.
    while (written < want) {
      if (written === 0) {
        const r = await this.fh.writev(bufs);
        written += r.bytesWritten;
      } else {
        const rest = Buffer.concat(bufs).subarray(written);
        const r = await this.fh.write(rest, 0, rest.length);
        written += r.bytesWritten;
      }
    }
    return at + RECORD_HEADER_BYTES;
  }

  async read(buf: Buffer, bufOffset: number, length: number, pos: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, bufOffset + done, length - done, pos + done);
      if (bytesRead === 0) throw new Error(`invariant violated: journal ${this.path} is shorter than its index says`);
      done += bytesRead;
    }
  }

  async sync(): Promise<void> {
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Read a segment's valid records in order and cut off a torn tail. Streams the file in
 * pieces of at most `MAX_RECORD_PAYLOAD_BYTES`, so memory stays bounded.
 */
export async function replaySegment(path: string): Promise<{ records: ReplayedRecord[]; validBytes: number; tornBytes: number }> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    const records: ReplayedRecord[] = [];
    const header = Buffer.alloc(RECORD_HEADER_BYTES);
    const piece = Buffer.alloc(Math.min(MAX_RECORD_PAYLOAD_BYTES, 1024 * 1024));
    let pos = 0;
    for (;;) {
      if (pos + RECORD_HEADER_BYTES > size) break;
      const { bytesRead } = await fh.read(header, 0, RECORD_HEADER_BYTES, pos);
      if (bytesRead < RECORD_HEADER_BYTES) break;
      if (header.readUInt32BE(0) !== MAGIC) break;
      const type = header.readUInt8(4);
      if (type !== REC_WRITE && type !== REC_TRUNCATE) break;
      if (header.readUInt8(5) !== 0 || header.readUInt8(6) !== 0 || header.readUInt8(7) !== 0) break;
      const offset = header.readUInt32BE(8) * 2 ** 32 + header.readUInt32BE(12);
      const length = header.readUInt32BE(16);
      if (offset > MAX_FILE_OFFSET || length > MAX_RECORD_PAYLOAD_BYTES) break;
      if (type === REC_TRUNCATE && length !== 0) break;
      if (pos + RECORD_HEADER_BYTES + length > size) break;
      let c = crc32(header.subarray(0, 20));
      let done = 0;
      let short = false;
      while (done < length) {
        const want = Math.min(piece.length, length - done);
        const r = await fh.read(piece, 0, want, pos + RECORD_HEADER_BYTES + done);
        if (r.bytesRead < want) {
          short = true;
          break;
        }
        c = crc32(piece.subarray(0, want), c);
        done += want;
      }
      if (short || c >>> 0 !== header.readUInt32BE(20)) break;
      records.push({ type, offset, length, payloadPos: pos + RECORD_HEADER_BYTES });
      pos += RECORD_HEADER_BYTES + length;
    }
    const tornBytes = size - pos;
    if (tornBytes > 0) {
      await fh.truncate(pos);
      await fh.sync();
    }
    return { records, validBytes: pos, tornBytes };
  } finally {
    await fh.close();
  }
}
