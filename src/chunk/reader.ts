/**
 * The chunk reader: fetch enough shards of a chunk (data shards first, parity only when a data
 * shard is missing or damaged), reconstruct it, and verify its SHA-256 before returning a byte.
 * If the decoded chunk does not match its hash, every other shard is fetched and other k-subsets
 * are tried; a chunk that cannot be verified is ECORRUPT, never wrong bytes.
 *
 * A range read fetches and verifies the whole chunk and returns a view of the range: chunks are
 * small (≤ 64 MiB, 4 MiB typical) and verification needs every byte.
 */
import type { HandoffOptions } from './handoff.js';
import { sha256Hex } from '../common/hash-pool.js';
import { CairnError } from '../common/errors.js';
import { counter } from '../common/metrics.js';
import type { ChunkClients } from './client.js';
import { joinDataShards, reconstructShards } from './codec.js';
import { payloadCrc } from './format.js';
import { checkTargets, formatBucketId, schemeTag, shardCount, type Scheme, type ShardInfo, type ShardTarget } from './types.js';

const metrics = {
  reads: counter('cairn_chunk_reader_reads_total', 'Chunk reads by this process, by outcome', ['outcome']),
  badShards: counter('cairn_chunk_reader_bad_shards_total', 'Shards that could not be used during reads, by error code', ['code']),
};

/** Upper bound on k-subsets tried when the hash check fails with all shards "good". */
const MAX_SUBSETS_TRIED = 256;

export interface ReadChunkOptions {
  /** A byte range of the chunk; default the whole chunk. */
  range?: { offset: number; length: number };
  /** Deadline of each shard fetch. */
  timeoutMs?: number;
  /**
   * When the shards needed have not all arrived after this long, ask one more target (a paused
   * or overloaded node then costs this delay, not the whole deadline). Default 2000 ms.
   */
  hedgeAfterMs?: number;
  /**
   * Where to put the chunk: the result is then a view of this buffer when the read is not
   * degraded and the buffer is long enough (the chunk; for EC its k data shards, i.e. the chunk
   * rounded up to k × 8 bytes). Otherwise the chunk comes back in a new buffer. Nothing is
   * written into it once readChunk has returned (fetches still running are cancelled).
   */
  into?: Buffer;
  /**
   * Where a shard goes when its home is down (src/chunk/handoff.ts): a shard whose home cannot
   * serve it is asked of these candidates in order, so a chunk written during an outage stays
   * readable after one more disk is lost.
   */
  handoff?: HandoffOptions;
}

const DEFAULT_HEDGE_AFTER_MS = 2000;

/**
 * Run fetches over `count` targets in index order until `need` have succeeded: `need` at first,
 * one more for each failure, and one more every hedgeAfterMs while some are still missing.
 * Resolves once `need` succeeded or every target has answered; late answers are ignored.
 */
function gather(count: number, need: number, hedgeAfterMs: number, fetch: (i: number) => Promise<void>, succeeded: () => number, from = 0): Promise<number> {
  return new Promise((resolve) => {
    let next = from;
    let inflight = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (done) return;
      done = true;
      if (timer !== undefined) clearInterval(timer);
      resolve(next);
    };
    const start = (i: number): void => {
      inflight++;
      fetch(i).finally(() => {
        inflight--;
        if (done) return;
        pump();
      });
    };
    const pump = (): void => {
      if (succeeded() >= need) return finish();
      while (succeeded() + inflight < need && next < count) start(next++);
      if (inflight === 0 && next >= count) finish();
    };
    timer = setInterval(() => {
      if (!done && succeeded() < need && next < count) start(next++);
    }, Math.max(1, hedgeAfterMs));
    timer.unref();
    pump();
  });
}

export interface ShardProblem {
  index: number;
  target: ShardTarget;
  error: CairnError;
}

export interface ReadChunkResult {
  data: Buffer;
  /** True when parity or a second replica had to stand in for a missing or damaged shard. */
  degraded: boolean;
  /** Shards that were missing, unreachable or damaged (for repair). */
  problems: ShardProblem[];
}

/** Read and verify a whole chunk or a range of it. */
export async function readChunk(
  clients: ChunkClients,
  hash: string,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  opts: ReadChunkOptions = {},
): Promise<Buffer> {
  return (await readChunkDetailed(clients, hash, scheme, targets, opts)).data;
}

/** Like readChunk, and tells which shards were missing or damaged. */
export async function readChunkDetailed(
  clients: ChunkClients,
  hash: string,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  opts: ReadChunkOptions = {},
): Promise<ReadChunkResult> {
  checkTargets(scheme, targets);
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new CairnError('EINVAL', 'chunk hash must be 64 lowercase hex characters');
  let res: ReadChunkResult;
  // Once the answer is decided, fetches still running (hedged, late) are cancelled: they would
  // only cost bandwidth, and must not write into the caller's buffer afterwards.
  const fetches: Fetches = { abort: new AbortController(), running: new Set() };
  try {
    res = scheme.kind === 'replica' ? await readReplicas(clients, hash, scheme, targets, opts, fetches) : await readEc(clients, hash, scheme, targets, opts, fetches);
  } catch (err) {
    metrics.reads.inc({ outcome: err instanceof CairnError ? err.code : 'error' });
    throw err;
  } finally {
    fetches.abort.abort();
    // A fetch through the server stops at once; a local read (short-circuit) may be inside a
    // read() into the caller's buffer: wait for it, so that nothing lands there after we return.
    if (fetches.running.size > 0) await Promise.allSettled(fetches.running);
  }
  metrics.reads.inc({ outcome: res.degraded ? 'degraded' : 'ok' });
  for (const p of res.problems) metrics.badShards.inc({ code: p.error.code });
  if (opts.range !== undefined) {
    const { offset, length } = opts.range;
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > res.data.length) {
      throw new CairnError('EINVAL', `range ${offset}+${length} is outside the chunk's ${res.data.length} bytes`);
    }
    res = { ...res, data: res.data.subarray(offset, offset + length) };
  }
  return res;
}

/** The shard fetches of one read: how to cancel them, and the ones still running. */
interface Fetches {
  abort: AbortController;
  running: Set<Promise<unknown>>;
}

function asCairn(err: unknown): CairnError {
  return err instanceof CairnError ? err : new CairnError('EIO', String(err));
}

async function fetchShard(
  clients: ChunkClients,
  hash: string,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  index: number,
  timeoutMs: number,
  fetches: Fetches,
  into?: (info: ShardInfo, length: number) => Buffer | undefined,
  handoff?: HandoffOptions,
): Promise<{ info: ShardInfo; data: Buffer }> {
  const t = targets[index] as ShardTarget;
  const from = (bucketId: ShardTarget['bucketId'], address: string): Promise<{ info: ShardInfo; data: Buffer }> => {
    // The chunk hash verifies everything; per-shard CRCs are checked only to find a culprit.
    const p = clients.get(address).getShard({ bucket: formatBucketId(bucketId), hash, scheme, index }, { timeoutMs, verifyCrc: false, into, signal: fetches.abort.signal });
    fetches.running.add(p);
    return p.finally(() => fetches.running.delete(p));
  };
  try {
    return await from(t.bucketId, t.address);
  } catch (err) {
    if (handoff === undefined || fetches.abort.signal.aborted) throw err;
    // The home cannot serve it: a guest copy on a handoff disk may (written while home was down).
    for (const c of handoff.candidates(index)) {
      if (fetches.abort.signal.aborted) break;
      try {
        return await from(c.bucket, handoff.addressOf(c.bucket));
      } catch {
        // not there, or that disk is down too: next candidate
      }
    }
    throw err;
  }
}

function crcOk(s: { info: ShardInfo; data: Buffer }): boolean {
  return payloadCrc(s.data) === s.info.payloadCrc32;
}

async function readReplicas(
  clients: ChunkClients,
  hash: string,
  scheme: Scheme,
  targets: readonly ShardTarget[],
  opts: ReadChunkOptions,
  fetches: Fetches,
): Promise<ReadChunkResult> {
  const problems: ShardProblem[] = [];
  let found: Buffer | undefined;
  // The caller's buffer goes to the first fetch only: a hedged one must not share it.
  let intoFree = opts.into !== undefined;
  const into = (_info: ShardInfo, length: number): Buffer | undefined => {
    if (!intoFree || opts.into === undefined || opts.into.length < length) return undefined;
    intoFree = false;
    return opts.into.subarray(0, length);
  };
  await gather(
    targets.length,
    1,
    opts.hedgeAfterMs ?? DEFAULT_HEDGE_AFTER_MS,
    async (i) => {
      try {
        const { info, data } = await fetchShard(clients, hash, scheme, targets, i, opts.timeoutMs ?? 30_000, fetches, into, opts.handoff);
        if ((await sha256Hex(data)) !== hash) throw new CairnError('ECORRUPT', `replica ${i} does not match the chunk hash (${payloadCrc(data) === info.payloadCrc32 ? 'wrong content' : 'CRC-32 mismatch: bit rot or damage in transit'})`);
        found ??= data;
      } catch (err) {
        problems.push({ index: i, target: targets[i] as ShardTarget, error: asCairn(err) });
      }
    },
    () => (found === undefined ? 0 : 1),
  );
  if (found !== undefined) return { data: found, degraded: problems.length > 0, problems: [...problems] };
  throw new CairnError('ECORRUPT', `chunk ${hash.slice(0, 16)}… (${schemeTag(scheme)}): no replica could be read and verified (${problems.map((p) => `${p.index}: ${p.error.code}`).join(', ')})`, {
    problems: problems.map((p) => ({ index: p.index, code: p.error.code })),
  });
}

async function readEc(
  clients: ChunkClients,
  hash: string,
  scheme: { kind: 'ec'; k: number; m: number },
  targets: readonly ShardTarget[],
  opts: ReadChunkOptions,
  fetches: Fetches,
): Promise<ReadChunkResult> {
  const { k } = scheme;
  const n = shardCount(scheme);
  const good = new Map<number, { info: ShardInfo; data: Buffer }>();
  const problems: ShardProblem[] = [];
  let next = 0;
  // Data shards land side by side in one buffer, so that the chunk is a view of it (no join copy).
  let contiguous: Buffer | undefined;
  let shardBytes = -1;
  const into = (i: number) => (info: ShardInfo, length: number): Buffer | undefined => {
    if (i >= k || info.payloadLength !== length) return undefined;
    if (contiguous === undefined) {
      shardBytes = length;
      contiguous = opts.into !== undefined && opts.into.length >= length * k ? opts.into.subarray(0, length * k) : Buffer.allocUnsafe(length * k);
    }
    return length === shardBytes ? contiguous.subarray(i * length, (i + 1) * length) : undefined;
  };
  let settled = false;
  const fetchOne = async (i: number): Promise<void> => {
    try {
      const s = await fetchShard(clients, hash, scheme, targets, i, opts.timeoutMs ?? 30_000, fetches, into(i), opts.handoff);
      // A shard that arrives after the answer was decided is not used (nor recorded).
      if (!settled) good.set(i, s);
    } catch (err) {
      if (!settled) problems.push({ index: i, target: targets[i] as ShardTarget, error: asCairn(err) });
    }
  };
  // Data shards first (no decoding needed when all are there), then parity as needed, with hedging.
  next = await gather(n, k, opts.hedgeAfterMs ?? DEFAULT_HEDGE_AFTER_MS, fetchOne, () => good.size);
  const fetchMore = async (): Promise<void> => {
    next = await gather(n, n, opts.hedgeAfterMs ?? DEFAULT_HEDGE_AFTER_MS, fetchOne, () => good.size + problems.length, next);
  };

  const tryDecode = async (indexes: number[]): Promise<Buffer | undefined> => {
    const first = good.get(indexes[0] as number);
    if (first === undefined) return undefined;
    const { chunkLength, payloadLength } = first.info;
    const slots: Array<Buffer | undefined> = new Array<Buffer | undefined>(n).fill(undefined);
    for (const i of indexes) {
      const s = good.get(i);
      if (s === undefined || s.info.chunkLength !== chunkLength || s.info.payloadLength !== payloadLength) return undefined;
      slots[i] = s.data;
    }
    let dataShards: Buffer[];
    if (indexes.every((i) => i < k)) dataShards = indexes.map((i) => slots[i] as Buffer);
    else {
      const wantData = Array.from({ length: k }, (_, i) => i);
      try {
        dataShards = (await reconstructShards(scheme, slots, wantData)).slice(0, k);
      } catch {
        return undefined;
      }
    }
    let chunk: Buffer;
    try {
      chunk = joinDataShards(dataShards, chunkLength);
    } catch {
      return undefined;
    }
    return (await sha256Hex(chunk)) === hash ? chunk : undefined;
  };

  if (good.size >= k) {
    const first = [...good.keys()].sort((a, b) => a - b).slice(0, k);
    const chunk = await tryDecode(first);
    if (chunk !== undefined) {
      settled = true;
      return { data: chunk, degraded: first.some((i) => i >= k), problems: [...problems] };
    }
    // Something is wrong: drop shards that fail their CRC-32, fetch the rest, try other subsets.
    await fetchMore();
    for (const [i, s] of [...good]) {
      if (!crcOk(s)) {
        good.delete(i);
        problems.push({ index: i, target: targets[i] as ShardTarget, error: new CairnError('ECORRUPT', `shard ${i} failed its CRC-32 check (bit rot or damage in transit)`) });
      }
    }
    let tried = 0;
    for (const subset of subsets([...good.keys()].sort((a, b) => a - b), k)) {
      if (++tried > MAX_SUBSETS_TRIED) break;
      const c = await tryDecode(subset);
      if (c !== undefined) {
        for (const i of good.keys()) {
          if (!subset.includes(i) && !problems.some((p) => p.index === i)) problems.push({ index: i, target: targets[i] as ShardTarget, error: new CairnError('ECORRUPT', `shard ${i} is not consistent with the verified chunk`) });
        }
        settled = true;
        return { data: c, degraded: true, problems: [...problems] };
      }
    }
  }
  settled = true;
  throw new CairnError(
    'ECORRUPT',
    `chunk ${hash.slice(0, 16)}… (${schemeTag(scheme)}): could not read and verify it from ${good.size} usable shards of the ${k} needed (${problems
      .map((p) => `${p.index}: ${p.error.code}`)
      .join(', ')})`,
    { problems: problems.map((p) => ({ index: p.index, code: p.error.code })) },
  );
}

/** k-subsets of xs in lexicographic order. */
function* subsets(xs: number[], k: number, start = 0, acc: number[] = []): Generator<number[]> {
  if (acc.length === k) {
    yield [...acc];
    return;
  }
  for (let i = start; i <= xs.length - (k - acc.length); i++) {
    acc.push(xs[i] as number);
    yield* subsets(xs, k, i + 1, acc);
    acc.pop();
  }
}
