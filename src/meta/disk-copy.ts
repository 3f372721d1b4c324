/**
 * The metadata copy kept on every data disk (docs/recovery.md): the formats of one copy and how a
 * copy becomes a metadata database again. Pure formats and reading here; the daemon job that
 * writes copies is src/server/meta-copy.ts, the recovery that uses them src/server/recover.ts.
 *
 *   <disk>/cairn-meta/g<16-hex snapshot index>-<8-hex nonce>/   one generation, complete once renamed here
 *       snapshot        MetaStateMachine.snapshot()'s stream, byte for byte (its own SHA-256 trailer)
 *       manifest.json   cluster identity, node, snapshot index/term/size/SHA-256, diskmap epoch, checksum
 *       tail            the committed Raft entries applied after the snapshot, appended as they come:
 *                       records [u32 length][u32 CRC-32][u64 index][u64 term][u8 type][data], then
 *                       zeros (the writer preallocates; a zero length ends the tail)
 *   <disk>/cairn-meta/.tmp-*                                     a generation being written (removed at start)
 *
 * The copy holds the state machine's database as a whole (every key), so whatever the state machine
 * keeps is carried. A torn last tail record (crash during an append) fails its CRC and ends the
 * tail there: the copy is the snapshot plus the valid prefix of its tail.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { crc32 } from '../common/crc32.js';
import { CairnError, errnoCode } from '../common/errors.js';
import { EntryType, type Entry } from '../raft/types.js';
import { MetaStateMachine, type EntryResult } from './state-machine.js';
import { decodeEntry, type DecodedEntry } from './entry.js';
import type { Extent } from './ops.js';

export const COPY_DIR = 'cairn-meta';
export const COPY_FORMAT = 1;
export const MANIFEST_FILE = 'manifest.json';
export const SNAPSHOT_FILE = 'snapshot';
export const TAIL_FILE = 'tail';
const GEN_RE = /^g([0-9a-f]{16})-([0-9a-f]{8})$/;
const TAIL_HEAD = 8 + 8 + 8 + 1;
/** A tail record larger than this is damage, not an entry (entries are at most 8 MiB plus an envelope). */
const MAX_TAIL_RECORD = 64 * 1024 * 1024;

export const manifestSchema = z
  .object({
    magic: z.literal('cairn-meta-copy'),
    format: z.literal(COPY_FORMAT),
    clusterName: z.string().min(1).max(64),
    /** 32 hex digits derived from the cluster's first diskmap change (src/server/meta-copy.ts). */
    clusterId: z.string().regex(/^[0-9a-f]{32}$/),
    nodeId: z.number().int().min(1),
    /** "dc.row.rack.machine.disk/incarnation" of the disk this copy was written to. */
    diskKey: z.string(),
    snapshotIndex: z.number().int().min(0),
    snapshotTerm: z.number().int().min(0),
    snapshotBytes: z.number().int().min(0),
    snapshotSha256: z.string().regex(/^[0-9a-f]{64}$/),
    diskmapEpoch: z.number().int().min(0),
    createdAtMs: z.number().int().min(0),
    /** SHA-256 of the manifest's JSON without this field. */
    checksum: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type CopyManifest = z.infer<typeof manifestSchema>;

function manifestSum(m: Omit<CopyManifest, 'checksum'>): string {
  const { checksum: _drop, ...rest } = m as CopyManifest;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex');
}

export function sealManifest(m: Omit<CopyManifest, 'checksum'>): CopyManifest {
  return { ...m, checksum: manifestSum(m) };
}

export function generationName(snapshotIndex: number, nonce: string): string {
  return `g${snapshotIndex.toString(16).padStart(16, '0')}-${nonce}`;
}

/** One tail record. */
export function encodeTailRecord(e: Entry): Buffer {
  const len = TAIL_HEAD + e.data.length;
  const b = Buffer.allocUnsafe(8 + len);
  b.writeUInt32BE(len, 0);
  b.writeBigUInt64BE(BigInt(e.index), 8);
  b.writeBigUInt64BE(BigInt(e.term), 16);
  b.writeUInt8(e.type, 24);
  b.set(e.data, 8 + TAIL_HEAD);
  b.writeUInt32BE(crc32(b.subarray(8)) >>> 0, 4);
  return b;
}

/**
 * The valid prefix of a tail: entries in order, contiguous from the first. `torn` says why it
 * stopped early (a damaged or partial record, a gap), undefined when every byte was a record.
 */
export function decodeTail(b: Buffer): { entries: Entry[]; torn: string | undefined } {
  const entries: Entry[] = [];
  let pos = 0;
  while (pos < b.length) {
    if (b.length - pos < 8) return { entries, torn: b.subarray(pos).every((x) => x === 0) ? undefined : `partial record header at byte ${pos}` };
    const len = b.readUInt32BE(pos);
    // Zeros written ahead of the records (the writer preallocates): the end of the tail.
    if (len === 0 && b.readUInt32BE(pos + 4) === 0) return { entries, torn: undefined };
    if (len < TAIL_HEAD || len > MAX_TAIL_RECORD) return { entries, torn: `bad record length ${len} at byte ${pos}` };
    if (b.length - pos - 8 < len) return { entries, torn: `partial record at byte ${pos}` };
    const body = b.subarray(pos + 8, pos + 8 + len);
    if ((crc32(body) >>> 0) !== b.readUInt32BE(pos + 4)) return { entries, torn: `record at byte ${pos} fails its CRC-32` };
    const index = Number(body.readBigUInt64BE(0));
    const term = Number(body.readBigUInt64BE(8));
    const type = body.readUInt8(16);
    if (type !== EntryType.Normal && type !== EntryType.ConfChange) return { entries, torn: `record at byte ${pos} has entry type ${type}` };
    const prev = entries[entries.length - 1];
    if (prev !== undefined && index !== prev.index + 1) return { entries, torn: `gap after entry ${prev.index}` };
    entries.push({ index, term, type, data: Buffer.from(body.subarray(TAIL_HEAD)) });
    pos += 8 + len;
  }
  return { entries, torn: undefined };
}

/** A generation found on a disk, checked. */
export interface FoundCopy {
  diskPath: string;
  dir: string;
  manifest: CopyManifest | undefined;
  /** Empty when the copy is usable. */
  problems: string[];
  /** Index/term of the newest entry the copy holds (the snapshot's when the tail is empty). */
  lastIndex: number;
  lastTerm: number;
  tailEntries: number;
  tailTorn: string | undefined;
  bytes: number;
}

async function sha256File(path: string): Promise<{ sha: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(c as Buffer);
    bytes += (c as Buffer).length;
  }
  return { sha: h.digest('hex'), bytes };
}

/** Read and check one generation directory (manifest checksum, snapshot SHA-256, tail CRCs). */
export async function checkCopy(diskPath: string, name: string): Promise<FoundCopy> {
  const dir = join(diskPath, COPY_DIR, name);
  const out: FoundCopy = { diskPath, dir, manifest: undefined, problems: [], lastIndex: 0, lastTerm: 0, tailEntries: 0, tailTorn: undefined, bytes: 0 };
  let json: unknown;
  try {
    json = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8'));
  } catch (err) {
    out.problems.push(`manifest unreadable (${errnoCode(err) ?? (err as Error).message})`);
    return out;
  }
  const p = manifestSchema.safeParse(json);
  if (!p.success) {
    out.problems.push(`manifest malformed: ${p.error.issues[0]?.path.join('.')} ${p.error.issues[0]?.message}`);
    return out;
  }
  const m = p.data;
  if (manifestSum(m) !== m.checksum) {
    out.problems.push('manifest checksum mismatch');
    return out;
  }
  out.manifest = m;
  out.lastIndex = m.snapshotIndex;
  out.lastTerm = m.snapshotTerm;
  try {
    const { sha, bytes } = await sha256File(join(dir, SNAPSHOT_FILE));
    out.bytes += bytes;
    if (bytes !== m.snapshotBytes) out.problems.push(`snapshot is ${bytes} bytes, manifest says ${m.snapshotBytes}`);
    else if (sha !== m.snapshotSha256) out.problems.push('snapshot SHA-256 mismatch');
  } catch (err) {
    out.problems.push(`snapshot unreadable (${errnoCode(err) ?? (err as Error).message})`);
  }
  const tail = await readFile(join(dir, TAIL_FILE)).catch(() => Buffer.alloc(0));
  out.bytes += tail.length;
  const t = decodeTail(tail);
  out.tailTorn = t.torn;
  const first = t.entries[0];
  if (first !== undefined && first.index > m.snapshotIndex + 1) out.problems.push(`tail starts at ${first.index}, after the snapshot's ${m.snapshotIndex} + 1`);
  const last = t.entries[t.entries.length - 1];
  if (last !== undefined && last.index > out.lastIndex) {
    out.lastIndex = last.index;
    out.lastTerm = last.term;
  }
  out.tailEntries = t.entries.length;
  return out;
}

/** Every generation on a disk, newest first (by the index it reaches). */
export async function listCopies(diskPath: string): Promise<FoundCopy[]> {
  let names: string[];
  try {
    names = (await readdir(join(diskPath, COPY_DIR))).filter((n) => GEN_RE.test(n));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new CairnError('EIO', `${diskPath}/${COPY_DIR}: cannot list the metadata copies (${errnoCode(err) ?? (err as Error).message})`);
  }
  const found: FoundCopy[] = [];
  for (const n of names) found.push(await checkCopy(diskPath, n));
  return found.sort((a, b) => b.lastIndex - a.lastIndex || b.lastTerm - a.lastTerm);
}

/** Bytes of the reserved area on a disk. */
export async function areaBytes(diskPath: string): Promise<number> {
  let total = 0;
  const root = join(diskPath, COPY_DIR);
  for (const n of await readdir(root).catch(() => [] as string[])) {
    for (const f of await readdir(join(root, n)).catch(() => [] as string[])) total += (await stat(join(root, n, f)).catch(() => ({ size: 0 }))).size;
  }
  return total;
}

async function* fileChunks(path: string): AsyncGenerator<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    for await (const c of fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false })) yield c as Buffer;
  } finally {
    await fh.close();
  }
}

/**
 * Build a metadata database under `dataDir` (<dataDir>/meta) from a checked copy: restore the
 * snapshot with the state machine's own restore, then apply the tail's entries with its own apply
 * (entries the snapshot already holds are skipped by apply). Returns the applied index and term.
 */
/** A file version the copy's tail installed (a commit operation that succeeded when replayed). */
export interface TailCommit {
  ino: number;
  version: number;
  size: number;
  extents: Extent[];
}

export async function materializeCopy(
  copy: FoundCopy,
  dataDir: string,
): Promise<{ index: number; term: number; lastEntryMs: number; commits: TailCommit[] }> {
  const m = copy.manifest;
  if (m === undefined || copy.problems.length > 0) throw new CairnError('ECORRUPT', `${copy.dir}: not a usable copy (${copy.problems.join('; ')})`);
  const sm = await MetaStateMachine.open({ dataDir });
  try {
    await sm.restore({ index: m.snapshotIndex, term: m.snapshotTerm, conf: { voters: [], learners: [] } }, fileChunks(join(copy.dir, SNAPSHOT_FILE)));
    const tail = decodeTail(await readFile(join(copy.dir, TAIL_FILE)).catch(() => Buffer.alloc(0)));
    const commits: TailCommit[] = [];
    for (let i = 0; i < tail.entries.length; i += 256) {
      const batch = tail.entries.slice(i, i + 256);
      const results = (await sm.apply(batch)) as EntryResult[];
      // Remember every version a commit installed: recovery may fall back to one of them.
      for (const [j, e] of batch.entries()) {
        const r = results[j];
        if (r === null || r === undefined || e.type !== EntryType.Normal) continue;
        let ops: DecodedEntry['ops'];
        try {
          ops = decodeEntry(e.data).ops;
        } catch {
          continue;
        }
        const rs = Array.isArray(r) ? r : [r];
        for (const [k, op] of ops.entries()) {
          if (op instanceof CairnError || op.op !== 'commit' || rs[k]?.ok !== true) continue;
          commits.push({ ino: op.ino, version: op.expectedVersion + 1, size: op.size, extents: op.extents });
        }
      }
    }
    await sm.snapshot(); // a synced write: everything applied is durable before we return
    // The proposer's clock in the newest entry: the time up to which the copy knows the cluster.
    let lastEntryMs = m.createdAtMs;
    for (let i = tail.entries.length - 1; i >= 0; i--) {
      const e = tail.entries[i]!;
      if (e.type !== EntryType.Normal || e.data.length === 0) continue;
      try {
        lastEntryMs = Math.max(lastEntryMs, decodeEntry(e.data).nowMs);
        break;
      } catch {
        /* not a metadata entry: look further back */
      }
    }
    return { index: await sm.appliedIndex(), term: sm.appliedTerm(), lastEntryMs, commits };
  } finally {
    await sm.close();
  }
}
