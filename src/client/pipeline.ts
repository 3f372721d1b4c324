/**
 * The commit pipeline of one cached file — the design note's steps 3 and 4:
 *
 *   dirty ─seal→ committing: cut the frozen layer into chunks, hash them (SHA-256), store
 *   their shards (ChunkPort) until each is readable; write the commit intent to state.json;
 *   install the new layout with a compare-and-set on the version (MetaPort) → visible: readers
 *   everywhere see it; wait until every new chunk has all its shards → markDurable → drop the
 *   cache segments → durable. When every new chunk had all its shards at once (the usual case),
 *   the compare-and-set itself records the version durable and markDurable is skipped.
 *
 * Crash safety: nothing a reader can see changes before the one compare-and-set, so a crash
 * anywhere leaves the old version or the new one. The intent written before the CAS lets a
 * restarted node tell whether its CAS happened (the file's layout equals the intent's) and
 * resume from there; before the intent, recovery simply commits again from the journal.
 * Failpoints (CAIRN_FAILPOINTS) sit between the steps; their names are FAILPOINTS below.
 *
 * Inline small files: a version no larger than `inlineMaxBytes` stores no chunk at all; its whole
 * content travels in the compare-and-set (the metadata keeps it inline, durable at once), so the
 * commit is one metadata write. A version that grows past the threshold goes to chunks in the same
 * single compare-and-set (the inline base is rewritten as a region), and one that shrinks under it
 * goes back inline: readers see the old or the new version, never a mix. When the metadata's inline
 * budget is full (ENOSPC), the commit stores chunks instead.
 */
import { randomBytes } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import { failpoint } from '../common/failpoint.js';
import type { Logger } from '../common/log.js';
import { planCommit, planSlices, type SliceOptions } from './plan.js';
import { sha256Hex, type ReadCache } from './read-cache.js';
import type { Chunker } from './chunker.js';
import type { CachedFile, CommitIntent } from './cached-file.js';
import { chunkOf, type ChunkPort, type Extent, type FileAttr, type MetaPort, type PutChunkResult } from './ports.js';

export const FAILPOINTS = [
  'client.before-hash',
  'client.after-store',
  'client.before-meta-commit',
  'client.after-meta-commit',
  'client.after-health',
  'client.before-cache-drop',
  'client.after-cache-drop',
] as const;

export interface PipelineDeps {
  meta: MetaPort;
  chunks: ChunkPort;
  readCache: ReadCache;
  chunker: Chunker;
  holder: string;
  leaseTtlMs: number;
  /** Called before a commit's compare-and-set installs `version` (the replicated level's intent, src/peer). */
  beforeCommit?: (f: CachedFile, version: number) => Promise<void>;
  /** This node's peer address, named in the leases it takes (src/peer); undefined: none. */
  addr?: () => string | undefined;
  /** Chunks hashed and stored at once (memory: this many × chunker.maxBytes). */
  parallelism: number;
  /** Attempts to make one chunk readable before the commit fails (it is retried later). */
  putAttempts: number;
  /** First wait between retries; doubles up to 16×. */
  retryBaseMs: number;
  /** Versions up to this size are committed inline in the metadata (0: never). */
  inlineMaxBytes: number;
  /** Store only the changed bytes of a commit, keeping old chunks as slices (null: rewrite touched chunks whole). */
  slices: SliceOptions | null;
  /** True once the file system is closing: background waits stop. */
  closing: () => boolean;
  log: Logger;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Compared against, never written: one small block instead of a chunk-sized zero buffer per commit. */
const ZERO_BLOCK = Buffer.alloc(64 * 1024);

/** True when every byte is zero (the chunk is a hole and is not stored). */
export function allZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZERO_BLOCK.length) {
    const n = Math.min(ZERO_BLOCK.length, b.length - at);
    if (!b.subarray(at, at + n).equals(ZERO_BLOCK.subarray(0, n))) return false;
  }
  return true;
}

function sameLayout(attr: FileAttr, intent: CommitIntent): boolean {
  if (attr.size !== intent.newSize || attr.extents.length !== intent.extents.length) return false;
  if ((attr.inline === undefined) !== (intent.inline === undefined)) return false;
  if (attr.inline !== undefined && !attr.inline.equals(Buffer.from(intent.inline!, 'base64'))) return false;
  return attr.extents.every((e, i) => {
    const x = intent.extents[i]!;
    return e.offset === x.offset && e.length === x.length && e.chunkHash === x.chunkHash && (e.chunkOffset ?? 0) === (x.chunkOffset ?? 0);
  });
}

/** A lease for the file, acquired if we hold none. */
export async function ensureLease(f: CachedFile, d: PipelineDeps): Promise<string> {
  if (f.st.leaseToken !== null) return f.st.leaseToken;
  const lease = await d.meta.acquireLease(f.fileId, d.holder, d.leaseTtlMs, d.addr?.());
  f.st = { ...f.st, leaseToken: lease.token };
  return lease.token;
}

async function putReadable(hash: string, bytes: Buffer, d: PipelineDeps): Promise<PutChunkResult> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < d.putAttempts; attempt++) {
    if (attempt > 0) await sleep(d.retryBaseMs * 2 ** Math.min(attempt - 1, 4));
    try {
      const r = await d.chunks.putChunk(hash, bytes);
      if (r.stored >= r.needed) return r;
      lastErr = new CairnError('EIO', `only ${r.stored} of ${r.wanted} shards stored, ${r.needed} needed to read`);
    } catch (err) {
      lastErr = err;
    }
  }
  throw new CairnError('EIO', `chunk ${hash.slice(0, 16)}… could not be stored readably after ${d.putAttempts} attempts: ${String(lastErr)}`);
}

/** Step 3a: cut, hash and store the frozen layer's new chunks. Returns the new layout. */
async function storeChunks(f: CachedFile, d: PipelineDeps): Promise<{ extents: Extent[]; fresh: string[]; weak: Set<string> }> {
  const frozen = f.frozen!;
  const baseInline = f.baseView().inline?.length ?? 0;
  const plan = d.slices !== null
    ? planSlices(f.st.base.extents, frozen.all(), frozen.size, baseInline, d.slices)
    : planCommit(f.st.base.extents, frozen.all(), frozen.size, baseInline);
  const created: Extent[] = [];
  const puts = new Map<string, Promise<PutChunkResult>>();
  const weak = new Set<string>();
  const inflight = new Set<Promise<void>>();
  let failure: unknown = null;

  for (const region of plan.regions) {
    let pos = region.start;
    while (pos < region.end) {
      if (failure !== null) throw failure;
      const take = Math.min(d.chunker.maxBytes, region.end - pos);
      const window = await f.readFrozen(pos, pos + take, d.readCache);
      // A whole region no longer than one chunk stays one chunk: a small rewrite never splits.
      const n = region.end - pos <= d.chunker.maxBytes ? take : d.chunker.cut(window);
      const bytes = window.subarray(0, n);
      const at = pos;
      pos += n;
      if (allZero(bytes)) continue; // all zeros: leave a hole
      const hash = sha256Hex(bytes);
      let put = puts.get(hash);
      if (put === undefined) {
        // A view of this iteration's window (nothing else holds it); copied when it is much
        // shorter than the window, so the read cache does not pin a whole window for a small chunk.
        const own = n * 2 < window.length ? Buffer.from(bytes) : bytes;
        put = putReadable(hash, own, d);
        puts.set(hash, put);
        const job: Promise<void> = put.then(
          (r) => {
            if (r.stored < r.wanted) weak.add(hash);
            // Read-your-writes after the cache is dropped: the bytes just stored are verified by
            // construction (we hashed them), so the read cache may keep them.
            d.readCache.insert(hash, own);
          },
          (err: unknown) => {
            failure ??= err;
          },
        );
        const tracked = job.finally(() => inflight.delete(tracked));
        inflight.add(tracked);
      }
      const p = put;
      created.push({ offset: at, length: n, chunkHash: hash, scheme: '', pg: 0 });
      void p.catch(() => undefined);
      while (inflight.size >= d.parallelism) await Promise.race(inflight);
    }
  }
  await Promise.all(inflight);
  if (failure !== null) throw failure;
  for (const e of created) {
    const r = await puts.get(e.chunkHash)!;
    e.scheme = r.scheme;
    e.pg = r.pg;
  }
  const extents = [...plan.kept, ...created].sort((a, b) => a.offset - b.offset);
  return { extents, fresh: [...puts.keys()], weak };
}

const sameExtent = (a: Extent, b: Extent): boolean =>
  a.offset === b.offset && a.length === b.length && a.chunkHash === b.chunkHash && a.scheme === b.scheme && a.pg === b.pg &&
  (a.chunkOffset ?? 0) === (b.chunkOffset ?? 0) && (a.chunkLength ?? a.length) === (b.chunkLength ?? b.length);

/** Smallest delta worth sending (below it the whole layout goes: it is short anyway). */
const SPLICE_MIN_EXTENTS = 8;

/**
 * The delta between the base layout and the new one: the extents that differ lie in [from, to)
 * (after the common prefix, before the common suffix). Null when sending everything is as cheap.
 */
export function spliceOf(base: readonly Extent[], next: readonly Extent[]): { from: number; to: number; extents: Extent[] } | null {
  if (base.length < SPLICE_MIN_EXTENTS) return null;
  let p = 0;
  while (p < base.length && p < next.length && sameExtent(base[p]!, next[p]!)) p++;
  let s = 0;
  while (s < base.length - p && s < next.length - p && sameExtent(base[base.length - 1 - s]!, next[next.length - 1 - s]!)) s++;
  const from = p === 0 ? 0 : base[p - 1]!.offset + base[p - 1]!.length;
  const to = s === 0 ? Number.MAX_SAFE_INTEGER : base[base.length - s]!.offset;
  const extents = next.slice(p, next.length - s);
  if (extents.length + SPLICE_MIN_EXTENTS / 2 >= next.length) return null;
  return { from, to, extents };
}

/** Install the intent's layout. Returns the new version, or throws (conflict, unreachable metadata). */
async function compareAndSet(f: CachedFile, intent: CommitIntent, d: PipelineDeps, durable = false): Promise<number> {
  // The base this intent was computed on is still f.st.base (it moves only once the commit is durable).
  const delta = intent.inline === undefined && f.st.base.inline === undefined && f.st.base.version === intent.baseVersion ? spliceOf(f.st.base.extents, intent.extents) : null;
  await d.beforeCommit?.(f, intent.baseVersion + 1);
  for (let attempt = 0; ; attempt++) {
    const token = await ensureLease(f, d);
    try {
      const { version } = await d.meta.commitVersion({
        fileId: f.fileId,
        expectedVersion: intent.baseVersion,
        leaseToken: token,
        commitId: intent.commitId,
        size: intent.newSize,
        extents: delta?.extents ?? intent.extents,
        ...(delta !== null ? { splice: { from: delta.from, to: delta.to } } : {}),
        mtimeMs: intent.mtimeMs,
        durable: durable || intent.inline !== undefined,
        ...(intent.inline !== undefined ? { inline: Buffer.from(intent.inline, 'base64') } : {}),
      });
      return version;
    } catch (err) {
      if (!(err instanceof CairnError)) throw err;
      if (err.code === 'EFENCED' && attempt === 0) {
        d.log.warn({ path: f.st.path }, 'write lease was lost before commit; taking a new one');
        f.st = { ...f.st, leaseToken: null };
        continue;
      }
      if (err.code === 'ECONFLICT') {
        // Perhaps our own CAS landed and only the answer was lost.
        const attr = await d.meta.getattr(f.fileId);
        if (attr.version > intent.baseVersion && sameLayout(attr, intent)) return attr.version;
      }
      throw err;
    }
  }
}

/** Step 4: every fresh chunk reaches full health (all shards). Retries forever, backing off, until closing. */
async function awaitFullHealth(f: CachedFile, intent: CommitIntent, weak: Set<string> | null, d: PipelineDeps): Promise<void> {
  const byHash = new Map(intent.extents.map((e) => [e.chunkHash, chunkOf(e)]));
  for (const hash of intent.fresh) {
    if (weak !== null && !weak.has(hash)) continue;
    const ref = byHash.get(hash);
    if (ref === undefined) continue;
    for (let attempt = 0; ; attempt++) {
      if (d.closing()) throw new CairnError('ECANCELED', `${f.st.path}: closed while waiting for full chunk health`);
      try {
        const h = await d.chunks.health(ref);
        if (h.stored >= h.wanted) break;
        const bytes = await d.readCache.get(ref);
        const r = await d.chunks.putChunk(hash, bytes);
        if (r.stored >= r.wanted) break;
      } catch (err) {
        d.log.warn({ path: f.st.path, chunk: hash.slice(0, 16), err: String(err) }, 'chunk not yet at full health');
      }
      await sleep(d.retryBaseMs * 2 ** Math.min(attempt, 6));
    }
  }
}

/**
 * Run one commit of the file to the end (durable), or throw leaving everything recoverable.
 * The caller makes sure only one runs per file at a time.
 */
export async function runCommit(f: CachedFile, d: PipelineDeps): Promise<void> {
  let intent = f.st.commit;
  let weak: Set<string> | null = null;
  let newVersion: number;
  /** Every new chunk had all its shards when stored: the CAS recorded the version durable. */
  let durableAtCommit = false;

  if (intent === null) {
    const nothing = await f.lock.run(async () => {
      if (f.frozen !== null) return false;
      if (!f.hasDirty()) {
        f.durableSeq = f.writeSeq;
        f.visibleSeq = f.writeSeq;
        return true;
      }
      f.seal();
      f.setState('committing'); // wakes writers waiting for the live layer to empty
      return false;
    });
    if (nothing) {
      f.setState(f.state === 'clean' ? 'clean' : 'durable');
      return;
    }
    f.setState('committing');
    await failpoint('client.before-hash');
    const newSize = f.frozen!.size;
    // Small: the whole content goes inline with the compare-and-set, no chunk is stored.
    const inline = d.inlineMaxBytes > 0 && newSize <= d.inlineMaxBytes ? await f.readFrozen(0, newSize, d.readCache) : undefined;
    const stored = inline !== undefined ? { extents: [], fresh: [], weak: new Set<string>() } : await storeChunks(f, d);
    weak = stored.weak;
    await failpoint('client.after-store');
    await ensureLease(f, d);
    intent = {
      commitId: randomBytes(16).toString('hex'),
      sealedThrough: f.frozenThrough,
      state: 'committing',
      baseVersion: f.st.base.version,
      newVersion: null,
      newSize: f.frozen!.size,
      extents: stored.extents,
      fresh: stored.fresh,
      mtimeMs: f.mtimeMs,
      ...(inline !== undefined ? { inline: inline.toString('base64') } : {}),
    };
    const i = intent;
    await f.lock.run(async () => {
      f.st = { ...f.st, commit: i };
      await f.saveState();
    });
    await failpoint('client.before-meta-commit');
    // The usual case: every shard of every new chunk is stored already, so the commit record can
    // say durable at once and step 4 needs no metadata write of its own.
    durableAtCommit = weak.size === 0;
    try {
      newVersion = await compareAndSet(f, intent, d, durableAtCommit);
    } catch (err) {
      if (!(inline !== undefined && err instanceof CairnError && err.code === 'ENOSPC')) throw err;
      // The metadata's inline budget is full: the same version, stored in chunks.
      d.log.warn({ path: f.st.path, size: newSize, err: err.message }, 'inline budget of the metadata is full; storing this small file in chunks');
      const chunked = await storeChunks(f, d);
      weak = chunked.weak;
      const { inline: _dropped, ...rest } = intent;
      const c: CommitIntent = { ...rest, extents: chunked.extents, fresh: chunked.fresh };
      intent = c;
      await f.lock.run(async () => {
        f.st = { ...f.st, commit: c };
        await f.saveState();
      });
      durableAtCommit = weak.size === 0;
      newVersion = await compareAndSet(f, intent, d, durableAtCommit);
    }
  } else if (intent.state === 'committing') {
    // Restarted with an intent: did our compare-and-set happen?
    f.setState('committing');
    const attr = await d.meta.getattr(f.fileId);
    if (attr.version === intent.baseVersion) {
      if (intent.inline === undefined && intent.fresh.length > 0) {
        // The chunks this intent stored lost their protection from GC with the lease that died
        // with the process (GC keeps shards newer than the oldest live lease, then a grace
        // period): store them again from the journal — idempotent, it refreshes them — then CAS.
        const again = await storeChunks(f, d);
        const redo: CommitIntent = { ...intent, extents: again.extents, fresh: again.fresh };
        intent = redo;
        await f.lock.run(async () => {
          f.st = { ...f.st, commit: redo };
          await f.saveState();
        });
      }
      newVersion = await compareAndSet(f, intent, d);
    } else if (sameLayout(attr, intent)) {
      newVersion = attr.version;
    } else {
      throw new CairnError(
        'ECONFLICT',
        `${f.st.path}: version ${attr.version} was installed by another writer after our base ${intent.baseVersion}; the cached data is kept in ${f.dir}`,
      );
    }
  } else {
    newVersion = intent.newVersion!;
  }

  if (intent.state !== 'visible') {
    await failpoint('client.after-meta-commit');
    const visible: CommitIntent = { ...intent, state: 'visible', newVersion };
    intent = visible;
    await f.lock.run(async () => {
      f.st = { ...f.st, commit: visible };
      await f.saveState();
    });
  }
  f.visibleSeq = Math.max(f.visibleSeq, f.sealedSeq);
  f.setState('visible');

  if (!durableAtCommit) await awaitFullHealth(f, intent, weak, d);
  await failpoint('client.after-health');
  if (!durableAtCommit) await d.meta.markDurable(f.fileId, newVersion, intent.commitId);
  await failpoint('client.before-cache-drop');
  const done = intent;
  await f.lock.run(() => f.dropCommitted(done, newVersion));
  f.durableSeq = Math.max(f.durableSeq, f.sealedSeq);
  await failpoint('client.after-cache-drop');
  f.setState(f.hasDirty() ? 'dirty' : 'durable');
}
