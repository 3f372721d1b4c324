/**
 * The metadata operations: one zod schema per operation (every request is checked with it
 * before it is proposed), and the validation of names and paths shared by the service, the
 * entry decoder and the state machine. The bytes of an entry are entry.ts's job.
 *
 * Every operation is deterministic: its entry carries the proposer's clock reading (`nowMs`)
 * and every value the state machine needs; apply never reads a clock or randomness.
 */
import { z } from 'zod';
import { VERSION_PATTERN } from '../common/version.js';
import { CairnError, fail } from '../common/errors.js';
import { formatZodError } from '../common/config.js';

/** Longest file name in bytes (POSIX NAME_MAX). */
export const NAME_MAX_BYTES = 255;
/** Longest path in bytes (POSIX PATH_MAX). */
export const PATH_MAX_BYTES = 4096;
/** Largest extended attribute value. */
export const XATTR_VALUE_MAX_BYTES = 64 * 1024;
/** Largest number of extents in one committed layout. */
export const EXTENTS_MAX = 100_000;
/** Largest symlink target. */
export const SYMLINK_MAX_BYTES = 4096;
/** Largest node registry record accepted (JSON bytes). */
export const NODE_RECORD_MAX_BYTES = 1024 * 1024;
/** Largest diskmap document accepted (JSON bytes). */
export const DISKMAP_MAX_BYTES = 32 * 1024 * 1024;
export const ROOT_INO = 1;
/**
 * Largest file content the metadata stores inline (docs/meta.md, "Inline small files"). The
 * client's threshold (CairnFs `inlineMaxBytes`, default 64 KiB) must not pass it; entries stay
 * far below their 8 MiB bound.
 */
export const INLINE_MAX_BYTES = 256 * 1024;

const utf8 = new TextEncoder();

/**
 * Why a name is not acceptable, or undefined when it is. Names are the bytes between
 * slashes: non-empty, at most 255 bytes of well-formed UTF-8, no NUL, no '/', not '.' or '..'.
 * U+FFFD is refused because it is what a decoder puts in place of invalid UTF-8 bytes.
 */
export function nameProblem(name: string): string | undefined {
  if (name.length === 0) return 'empty name';
  if (name === '.' || name === '..') return `"${name}" is not a file name`;
  if (name.includes('/')) return 'a name cannot contain "/"';
  if (name.includes('\0')) return 'a name cannot contain a NUL byte';
  if (!isWellFormedUtf16(name) || name.includes('\uFFFD')) return 'a name must be valid UTF-8';
  if (utf8.encode(name).length > NAME_MAX_BYTES) return `name longer than ${NAME_MAX_BYTES} bytes`;
  return undefined;
}

function isWellFormedUtf16(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
  }
  return true;
}

/** Throw the POSIX error for a bad name (ENAMETOOLONG for length, EINVAL otherwise). */
export function checkName(name: string): string {
  const p = nameProblem(name);
  if (p === undefined) return name;
  fail(p.startsWith('name longer') ? 'ENAMETOOLONG' : 'EINVAL', `${p}: ${JSON.stringify(name.slice(0, 64))}`);
}

/** Split an absolute path into validated components ("/" gives []). */
export function splitPath(path: string): string[] {
  if (!path.startsWith('/')) fail('EINVAL', `path must be absolute: ${JSON.stringify(path.slice(0, 64))}`);
  if (utf8.encode(path).length > PATH_MAX_BYTES) fail('ENAMETOOLONG', `path longer than ${PATH_MAX_BYTES} bytes`);
  const parts = path.split('/').filter((p) => p.length > 0);
  for (const p of parts) checkName(p);
  return parts;
}

const nameSchema = z.string().superRefine((s, ctx) => {
  const p = nameProblem(s);
  if (p !== undefined) ctx.addIssue({ code: 'custom', message: p });
});
const pathSchema = z.string().max(PATH_MAX_BYTES * 2).superRefine((s, ctx) => {
  try {
    splitPath(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});
const ino = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const u32 = z.number().int().min(0).max(0xffff_ffff);
const u53 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const timeMs = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** Where an operation acts: an inode, a path, or a name inside a directory inode. */
export const refSchema = z.union([
  z.object({ ino }).strict(),
  z.object({ path: pathSchema }).strict(),
  z.object({ parent: ino, name: nameSchema }).strict(),
]);
export type Ref = z.infer<typeof refSchema>;

/** A reference that names a directory entry (the thing created, removed or renamed). */
export const entryRefSchema = z.union([
  z.object({ path: pathSchema.refine((p) => splitPath(p).length > 0, 'the root has no name') }).strict(),
  z.object({ parent: ino, name: nameSchema }).strict(),
]);
export type EntryRef = z.infer<typeof entryRefSchema>;

export const extentSchema = z
  .object({
    offset: u53,
    length: u53,
    chunkHash: z.string().regex(/^[0-9a-f]{16,128}$/, 'chunk hash must be lowercase hex'),
    scheme: z.string().min(1).max(32),
    pg: u32,
    /** A slice: the extent is chunk bytes [chunkOffset, chunkOffset + length) of a chunk of chunkLength bytes. */
    chunkOffset: u53.optional(),
    chunkLength: u53.optional(),
  })
  .strict()
  .refine((e) => (e.chunkLength === undefined ? e.chunkOffset === undefined : (e.chunkOffset ?? 0) + e.length <= e.chunkLength), 'a slice must lie within its chunk (chunkOffset + length <= chunkLength)');
export type Extent = z.infer<typeof extentSchema>;

/** Inline file content as canonical base64 (at most INLINE_MAX_BYTES once decoded). */
const inlineB64Schema = z
  .string()
  .max(Math.ceil(INLINE_MAX_BYTES / 3) * 4)
  .refine((b) => Buffer.from(b, 'base64').toString('base64') === b, 'inline data is not canonical base64');
/** The proposer's inline budget: total inline bytes the metadata may hold (the service sets it from its config). */
const inlineBudget = u53;

/** The address (host:port) at which a write lease's holder node serves the peer port (docs/dfs-cache.md). */
const leaseAddr = z.string().min(3).max(256).regex(/^[^\s/]+:\d{1,5}$/, 'an address is host:port');

const owner = { mode: z.number().int().min(0).max(0o7777), uid: u32, gid: u32 };
const lockSessionSchema = z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/, 'a lock session is letters, digits and . _ : -');
const lockOwnerSchema = z.string().min(1).max(64).regex(/^[A-Za-z0-9._:-]+$/, 'a lock owner is letters, digits and . _ : -');

export const opSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('mkdir'), at: entryRefSchema, ...owner }).strict(),
  z
    .object({
      op: z.literal('create'),
      at: entryRefSchema,
      ...owner,
      exclusive: z.boolean(),
      /** The new file comes with this holder's write lease (as leaseAcquire would grant it). */
      lease: z.object({ holder: z.string().min(1).max(128), ttlMs: z.number().int().min(100).max(600_000), addr: leaseAddr.optional() }).strict().optional(),
    })
    .strict(),
  z.object({ op: z.literal('symlink'), at: entryRefSchema, target: z.string().min(1).max(SYMLINK_MAX_BYTES), uid: u32, gid: u32 }).strict(),
  z.object({ op: z.literal('link'), node: refSchema, at: entryRefSchema }).strict(),
  z.object({ op: z.literal('unlink'), at: entryRefSchema }).strict(),
  z.object({ op: z.literal('rmdir'), at: entryRefSchema }).strict(),
  z.object({ op: z.literal('rename'), from: entryRefSchema, to: entryRefSchema, noReplace: z.boolean() }).strict(),
  z
    .object({
      op: z.literal('setattr'),
      node: refSchema,
      mode: owner.mode.optional(),
      uid: u32.optional(),
      gid: u32.optional(),
      mtimeMs: timeMs.optional(),
      atimeMs: timeMs.optional(),
    })
    .strict(),
  z.object({ op: z.literal('truncate'), node: refSchema, size: u53, expectedVersion: u53, fence: u53 }).strict(),
  z
    .object({
      op: z.literal('setxattr'),
      node: refSchema,
      name: z.string().min(1).max(255),
      valueB64: z.string().max(Math.ceil(XATTR_VALUE_MAX_BYTES / 3) * 4 + 4),
      flag: z.enum(['any', 'create', 'replace']),
    })
    .strict(),
  z.object({ op: z.literal('removexattr'), node: refSchema, name: z.string().min(1).max(255) }).strict(),
  z
    .object({
      op: z.literal('commit'),
      ino,
      expectedVersion: u53,
      fence: u53,
      size: u53,
      extents: z.array(extentSchema).max(EXTENTS_MAX),
      mtimeMs: timeMs.optional(),
      /** Every shard of the new chunks is stored already: record the version durable at once (no markDurable). */
      durable: z.boolean().optional(),
      /** The whole content stored inline in the metadata (extents must then be empty); always durable. */
      inlineB64: inlineB64Schema.optional(),
      inlineBudget: inlineBudget.optional(),
      /**
       * A delta: `extents` are only the new layout's extents within [spliceFrom, spliceTo); outside
       * it the new layout is the current one (cut at `size`). A commit then sends O(changed extents).
       */
      spliceFrom: u53.optional(),
      spliceTo: u53.optional(),
    })
    .strict(),
  // A whole small file in one operation: a new inode holding `dataB64` inline (version 1, durable),
  // linked at `at` in place of an existing regular file (as a rename over it would), parents made
  // with mkdirs. The file service's put of a small file is this one Raft write.
  z
    .object({
      op: z.literal('putFile'),
      at: entryRefSchema,
      ...owner,
      dataB64: inlineB64Schema,
      mtimeMs: timeMs.optional(),
      mkdirs: z.boolean(),
      inlineBudget,
    })
    .strict(),
  z.object({ op: z.literal('markDurable'), ino, version: u53 }).strict(),
  // Version pins (GC safety): an open handle's version keeps its chunks until unpinned or expired.
  z.object({ op: z.literal('pin'), ino, version: u53, holder: z.string().min(1).max(128), ttlMs: z.number().int().min(100).max(600_000) }).strict(),
  z.object({ op: z.literal('unpin'), ino, holder: z.string().min(1).max(128) }).strict(),
  z.object({ op: z.literal('pinExpire'), pins: z.array(z.object({ ino, holder: z.string().min(1).max(128) }).strict()).max(10_000) }).strict(),
  // addr (optional; older entries have none): where other nodes reach the holder's peer port (src/peer).
  z.object({ op: z.literal('leaseAcquire'), ino, holder: z.string().min(1).max(128), ttlMs: z.number().int().min(100).max(600_000), addr: leaseAddr.optional() }).strict(),
  z.object({ op: z.literal('leaseRenew'), ino, holder: z.string().min(1).max(128), token: u53, ttlMs: z.number().int().min(100).max(600_000) }).strict(),
  z.object({ op: z.literal('leaseRelease'), ino, holder: z.string().min(1).max(128), token: u53 }).strict(),
  z.object({ op: z.literal('leaseExpire'), inos: z.array(ino).max(10_000) }).strict(),
  z
    .object({
      op: z.literal('diskmapPropose'),
      expectedEpoch: u53,
      documentJson: z.string().min(2).max(DISKMAP_MAX_BYTES),
      diffJson: z.string().max(DISKMAP_MAX_BYTES),
    })
    .strict(),
  // The node registry (src/server/registry.ts): one opaque JSON record per node id, replaced whole.
  z.object({ op: z.literal('nodeRegister'), nodeId: u32.min(1), recordJson: z.string().min(2).max(NODE_RECORD_MAX_BYTES) }).strict(),
  // The cluster version (src/common/version.ts): proposed by the leader once every member runs it; only goes up.
  z.object({ op: z.literal('clusterVersion'), version: z.string().regex(VERSION_PATTERN) }).strict(),
  // Cluster-wide locks (lock-table.ts; docs/mount.md "Locks and SQLite across nodes"). A session is
  // one mount's: created, renewed before it expires (EFENCED once it has), ended; its locks go with it.
  z.object({ op: z.literal('lockSession'), session: lockSessionSchema, ttlMs: z.number().int().min(100).max(600_000), create: z.boolean() }).strict(),
  z
    .object({
      op: z.literal('lockSet'),
      ino,
      session: lockSessionSchema,
      owner: lockOwnerSchema,
      kind: z.enum(['posix', 'flock']),
      mode: z.enum(['read', 'write', 'unlock']),
      start: u53,
      end: u53,
      pid: z.number().int().min(-0x8000_0000).max(0x7fff_ffff),
    })
    .strict(),
  z.object({ op: z.literal('lockRelease'), ino, session: lockSessionSchema, owner: lockOwnerSchema, kind: z.enum(['posix', 'flock']).optional() }).strict(),
  z.object({ op: z.literal('lockSessionEnd'), session: lockSessionSchema }).strict(),
  z.object({ op: z.literal('lockExpire'), sessions: z.array(lockSessionSchema).max(1000) }).strict(),
]);
export type Op = z.infer<typeof opSchema>;
export type OpName = Op['op'];

/**
 * The layout of a delta commit: the current extents wholly outside [from, to), cut at `size` (a cut
 * extent becomes a slice of its chunk), plus `add` (which must lie within [from, to)). EINVAL when
 * a current extent crosses `from` or `to`, or an added one lies outside.
 */
export function spliceExtents(base: readonly Extent[], from: number, to: number, size: number, add: readonly Extent[]): Extent[] {
  if (from > to) fail('EINVAL', `splice range [${from}, ${to}) is empty`);
  for (const e of add) {
    if (e.offset < from || e.offset + e.length > to) fail('EINVAL', `extent at ${e.offset} lies outside the splice range [${from}, ${to})`);
  }
  const out: Extent[] = [];
  for (const e of base) {
    const end = e.offset + e.length;
    if ((e.offset < from && end > from) || (e.offset < to && end > to)) fail('EINVAL', `the extent at ${e.offset} crosses the splice range [${from}, ${to})`);
    if (e.offset >= from && end <= to) continue;
    out.push(...cutAt(e, size));
  }
  out.push(...add);
  return out.sort((a, b) => a.offset - b.offset);
}

/** An extent cut at `size` ([] when wholly past it); a cut one is a slice of its chunk. */
export function cutAt(e: Extent, size: number): Extent[] {
  if (e.offset >= size) return [];
  if (e.offset + e.length <= size) return [e];
  return [{ ...e, length: size - e.offset, chunkOffset: e.chunkOffset ?? 0, chunkLength: e.chunkLength ?? e.length }];
}

/** A format-1 entry (JSON): one operation plus the proposer's clock reading. Still decoded (entry.ts). */
export const entrySchema = z.object({ v: z.literal(1), nowMs: timeMs, op: opSchema }).strict();
export type MetaEntry = z.infer<typeof entrySchema>;

/** Check an operation before proposing it (the same schema apply uses). */
export function validateOp(op: unknown): Op {
  const r = opSchema.safeParse(op);
  if (!r.success) {
    const long = r.error.issues.some((i) => i.message.startsWith('name longer') || i.message.startsWith('path longer'));
    throw new CairnError(long ? 'ENAMETOOLONG' : 'EINVAL', formatZodError('request', r.error));
  }
  return r.data;
}
