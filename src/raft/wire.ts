/**
 * Cairn's binary form of a batch of Raft messages, carried in MessageBatch.packed
 * (proto/raft.proto). protobufjs turned every message and entry into objects three times per
 * hop (toObject / fromObject / encode on the sender, decode / toObject on the receiver) and
 * the checks walked them once more; this form is written and read in one pass, and every
 * field is checked while it is read.
 *
 *   batch   := u8 version (1) | u32 count | message*
 *   message := u8 type | u8 flags (bit 0: reject) | u64 from | u64 to | u64 term | u64 logTerm
 *              | u64 index | u64 commit | u64 rejectHint | u32 contextLength | context
 *              | u32 entryCount | entry*
 *   entry   := u64 term | u64 index | u8 type | u32 dataLength | data
 *
 * Integers are big-endian; a u64 must be a safe integer (below 2^53). Snapshot messages do not
 * travel this way (they have their own stream with the state machine's data).
 */
import { EntryType, MessageType, type Entry, type Message, type NodeId } from './types.js';

const VERSION = 1;
const MESSAGE_FIXED_BYTES = 2 + 7 * 8 + 4 + 4;
const ENTRY_FIXED_BYTES = 8 + 8 + 1 + 4;

/** Wire codes of the message types that may travel in a batch (Snap has its own stream). */
const CODE_OF: ReadonlyMap<MessageType, number> = new Map([
  [MessageType.Prop, 2],
  [MessageType.App, 3],
  [MessageType.AppResp, 4],
  [MessageType.Vote, 5],
  [MessageType.VoteResp, 6],
  [MessageType.PreVote, 7],
  [MessageType.PreVoteResp, 8],
  [MessageType.Heartbeat, 10],
  [MessageType.HeartbeatResp, 11],
  [MessageType.TransferLeader, 15],
  [MessageType.TimeoutNow, 16],
  [MessageType.ReadIndex, 17],
  [MessageType.ReadIndexResp, 18],
]);
const TYPE_OF: ReadonlyMap<number, MessageType> = new Map([...CODE_OF].map(([t, c]) => [c, t]));

function putU64(b: Buffer, off: number, v: number): void {
  b.writeUInt32BE(Math.floor(v / 0x1_0000_0000), off);
  b.writeUInt32BE(v >>> 0, off + 4);
}

/** Encode messages (never Snap) into one buffer. Throws on a message the wire cannot carry. */
export function encodeBatch(msgs: readonly Message[]): Buffer {
  let size = 5;
  for (const m of msgs) {
    size += MESSAGE_FIXED_BYTES + m.context.length;
    for (const e of m.entries) size += ENTRY_FIXED_BYTES + e.data.length;
  }
  const b = Buffer.allocUnsafe(size);
  b[0] = VERSION;
  b.writeUInt32BE(msgs.length, 1);
  let o = 5;
  for (const m of msgs) {
    const code = CODE_OF.get(m.type);
    if (code === undefined) throw new Error(`raft wire: message type ${m.type} does not travel in a batch`);
    b[o] = code;
    b[o + 1] = m.reject ? 1 : 0;
    putU64(b, o + 2, m.from);
    putU64(b, o + 10, m.to);
    putU64(b, o + 18, m.term);
    putU64(b, o + 26, m.logTerm);
    putU64(b, o + 34, m.index);
    putU64(b, o + 42, m.commit);
    putU64(b, o + 50, m.rejectHint);
    b.writeUInt32BE(m.context.length, o + 58);
    o += 62;
    b.set(m.context, o);
    o += m.context.length;
    b.writeUInt32BE(m.entries.length, o);
    o += 4;
    for (const e of m.entries) {
      putU64(b, o, e.term);
      putU64(b, o + 8, e.index);
      b[o + 16] = e.type;
      b.writeUInt32BE(e.data.length, o + 17);
      o += ENTRY_FIXED_BYTES;
      b.set(e.data, o);
      o += e.data.length;
    }
  }
  return b;
}

class Malformed extends Error {}

/** A bounds-checked reader; every read throws Malformed past the end. */
class Reader {
  o = 0;
  constructor(readonly b: Buffer) {}
  need(n: number): void {
    if (n < 0 || this.o + n > this.b.length) throw new Malformed('batch ends in the middle of a message');
  }
  u8(): number {
    this.need(1);
    return this.b[this.o++]!;
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32BE(this.o);
    this.o += 4;
    return v;
  }
  u64(field: string): number {
    this.need(8);
    const hi = this.b.readUInt32BE(this.o);
    const lo = this.b.readUInt32BE(this.o + 4);
    this.o += 8;
    if (hi >= 0x20_0000) throw new Malformed(`field ${field} is not a safe integer`);
    return hi * 0x1_0000_0000 + lo;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.o, this.o + n);
    this.o += n;
    return v;
  }
}

/**
 * Decode and check a packed batch addressed to node `self`. Returns the messages, or a
 * sentence saying what is wrong. Entry data and contexts are copied out of `buf` (one
 * allocation per message), so the network buffer they came in is not kept alive by the log.
 */
export function decodeBatch(buf: Uint8Array, self: NodeId): Message[] | string {
  const r = new Reader(Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength));
  try {
    if (r.u8() !== VERSION) return 'unknown batch version';
    const count = r.u32();
    // Every message takes at least MESSAGE_FIXED_BYTES: a count beyond that is a lie.
    if (count * MESSAGE_FIXED_BYTES > r.b.length) return `batch claims ${count} messages in ${r.b.length} bytes`;
    const out: Message[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const code = r.u8();
      const type = TYPE_OF.get(code);
      if (type === undefined) return `message type ${code} is not accepted from the network`;
      const flags = r.u8();
      if (flags > 1) return `message flags ${flags} are unknown`;
      const from = r.u64('from');
      if (from === 0) return 'field from must name a node';
      const to = r.u64('to');
      if (to !== self) return `message for node ${to} reached node ${self}`;
      const term = r.u64('term');
      const logTerm = r.u64('log_term');
      const index = r.u64('index');
      const commit = r.u64('commit');
      const rejectHint = r.u64('reject_hint');
      const start = r.o;
      const contextLength = r.u32();
      r.need(contextLength);
      r.o += contextLength;
      const entryCount = r.u32();
      if (entryCount * ENTRY_FIXED_BYTES > r.b.length - r.o) return `message claims ${entryCount} entries in the bytes left`;
      // First pass: check the entries and size the copy.
      const entriesStart = r.o;
      let dataBytes = 0;
      for (let j = 0; j < entryCount; j++) {
        r.u64('entry term');
        r.u64('entry index');
        const et = r.u8();
        if (et !== EntryType.Normal && et !== EntryType.ConfChange) return `entry ${j} has unknown type ${et}`;
        const n = r.u32();
        r.need(n);
        r.o += n;
        dataBytes += n;
      }
      const end = r.o;
      // Second pass: build the message over one copy of its context and entry data.
      const slab = Buffer.allocUnsafe(contextLength + dataBytes);
      r.b.copy(slab, 0, start + 4, start + 4 + contextLength);
      let s = contextLength;
      r.o = entriesStart;
      const entries: Entry[] = new Array(entryCount);
      for (let j = 0; j < entryCount; j++) {
        const et = r.u64('entry term');
        const ei = r.u64('entry index');
        const ty = r.u8() as EntryType;
        const n = r.u32();
        r.b.copy(slab, s, r.o, r.o + n);
        r.o += n;
        entries[j] = { term: et, index: ei, type: ty, data: slab.subarray(s, s + n) };
        s += n;
      }
      r.o = end;
      out[i] = { type, from, to, term, logTerm, index, entries, commit, reject: flags === 1, rejectHint, context: slab.subarray(0, contextLength) };
    }
    if (r.o !== r.b.length) return `${r.b.length - r.o} bytes after the last message`;
    return out;
  } catch (err) {
    if (err instanceof Malformed) return err.message;
    throw err;
  }
}
