/**
 * Splitting a chunk into shards and joining it back: Reed–Solomon k+m through the native
 * @ronomon/reed-solomon addon (runs in libuv's thread pool), or n identical replicas.
 * Shards are views into one buffer (no per-shard copy); the chunk is padded with zeros up to
 * k × shardSize and its real length is recorded in every shard header.
 */
import { createRequire } from 'node:module';
import { CairnError, assert } from '../common/errors.js';
import type { Scheme } from './types.js';

interface RsContext {
  readonly __brand: 'rs-context';
}
interface RsModule {
  MAX_K: number;
  MAX_M: number;
  create(k: number, m: number): RsContext;
  encode(
    ctx: RsContext,
    sources: number,
    targets: number,
    buffer: Buffer,
    bufferOffset: number,
    bufferSize: number,
    parity: Buffer,
    parityOffset: number,
    paritySize: number,
    cb: (err: Error | undefined) => void,
  ): void;
}

const RS = createRequire(import.meta.url)('@ronomon/reed-solomon') as RsModule;
const contexts = new Map<string, RsContext>();

function context(k: number, m: number): RsContext {
  const key = `${k}+${m}`;
  let c = contexts.get(key);
  if (c === undefined) {
    c = RS.create(k, m);
    contexts.set(key, c);
  }
  return c;
}

/** Shard size for a chunk at k data shards: ceil(len / k) rounded up to 8 bytes, at least 8. */
export function ecShardSize(chunkLength: number, k: number): number {
  return Math.max(8, Math.ceil(Math.ceil(chunkLength / k) / 8) * 8);
}

function runEncode(k: number, m: number, sources: number, targets: number, data: Buffer, parity: Buffer, shardSize: number): Promise<void> {
  return new Promise((resolve, reject) => {
    RS.encode(context(k, m), sources, targets, data, 0, shardSize * k, parity, 0, shardSize * m, (err) =>
      err ? reject(new CairnError('EIO', `reed-solomon: ${err.message}`)) : resolve(),
    );
  });
}

/** Parity buffers kept for reuse (a 4 MiB chunk at 2+1 has 2 MiB of parity): at most this many. */
const MAX_FREE_PARITY = 8;
const freeParity: Buffer[] = [];
const lentParity = new WeakSet<ArrayBuffer>();

function takeParity(bytes: number): Buffer {
  const i = freeParity.findIndex((b) => b.length === bytes);
  const b = i >= 0 ? (freeParity.splice(i, 1)[0] as Buffer).fill(0) : Buffer.alloc(bytes);
  if (b.byteOffset === 0 && b.buffer.byteLength === bytes) lentParity.add(b.buffer as ArrayBuffer);
  return b;
}

/**
 * Give back the parity of encodeChunk's shards once nothing uses them any more (every shard
 * stored: all their bytes have left). Optional: parity not given back is simply collected.
 */
export function releaseShards(shards: readonly Buffer[], scheme: Scheme): void {
  if (scheme.kind !== 'ec') return;
  const p = shards[scheme.k];
  if (p === undefined) return;
  const ab = p.buffer as ArrayBuffer;
  if (!lentParity.has(ab)) return;
  lentParity.delete(ab);
  if (freeParity.length < MAX_FREE_PARITY) freeParity.push(Buffer.from(ab));
}

/** Split a chunk into its shards (index order). Replica shards are the chunk itself. */
export async function encodeChunk(chunk: Buffer, scheme: Scheme): Promise<Buffer[]> {
  if (scheme.kind === 'replica') return Array.from({ length: scheme.n }, () => chunk);
  const { k, m } = scheme;
  const size = ecShardSize(chunk.length, k);
  let data: Buffer;
  if (chunk.length === size * k) data = chunk;
  else {
    data = Buffer.allocUnsafe(size * k);
    chunk.copy(data, 0);
    data.fill(0, chunk.length);
  }
  const parity = takeParity(size * m);
  let sources = 0;
  for (let i = 0; i < k; i++) sources |= 1 << i;
  let targets = 0;
  for (let i = k; i < k + m; i++) targets |= 1 << i;
  await runEncode(k, m, sources, targets, data, parity, size);
  const shards: Buffer[] = [];
  for (let i = 0; i < k; i++) shards.push(data.subarray(i * size, (i + 1) * size));
  for (let i = 0; i < m; i++) shards.push(parity.subarray(i * size, (i + 1) * size));
  return shards;
}

/**
 * Rebuild shards from any k of them. `shards[i]` is the payload of shard i or undefined if
 * missing; `want` lists the indexes to produce (data or parity). Returns every shard 0..k+m-1
 * that is now known (the given ones and the wanted ones).
 */
export async function reconstructShards(
  scheme: { k: number; m: number },
  shards: ReadonlyArray<Buffer | undefined>,
  want: readonly number[],
): Promise<Buffer[]> {
  const { k, m } = scheme;
  const present = shards.map((s, i) => (s !== undefined ? i : -1)).filter((i) => i >= 0);
  if (present.length < k) throw new CairnError('ECORRUPT', `reed-solomon: only ${present.length} of the ${k} shards needed are available`);
  const size = (shards[present[0] as number] as Buffer).length;
  assert(size % 8 === 0 && size > 0, 'shard size is a positive multiple of 8');
  for (const i of present) {
    if ((shards[i] as Buffer).length !== size) throw new CairnError('ECORRUPT', 'reed-solomon: shards of one chunk differ in length');
  }
  const data = Buffer.alloc(size * k);
  const parity = Buffer.alloc(size * m);
  let sources = 0;
  for (const i of present.slice(0, k)) {
    sources |= 1 << i;
    (shards[i] as Buffer).copy(i < k ? data : parity, (i < k ? i : i - k) * size);
  }
  let targets = 0;
  for (const i of want) if (!(sources & (1 << i))) targets |= 1 << i;
  if (targets !== 0) await runEncode(k, m, sources, targets, data, parity, size);
  const out: Buffer[] = [];
  for (let i = 0; i < k; i++) out.push(data.subarray(i * size, (i + 1) * size));
  for (let i = 0; i < m; i++) out.push(parity.subarray(i * size, (i + 1) * size));
  return out;
}

/** Join k data shards back into the chunk of the given length. */
export function joinDataShards(dataShards: readonly Buffer[], chunkLength: number): Buffer {
  const first = dataShards[0];
  if (first === undefined) throw new CairnError('ECORRUPT', 'no data shards to join');
  const size = first.length;
  if (chunkLength > size * dataShards.length) throw new CairnError('ECORRUPT', `chunk length ${chunkLength} exceeds the shards' capacity`);
  // Contiguous views from reconstructShards: one subarray, no copy.
  const contiguous = dataShards.every((s, i) => s.buffer === first.buffer && s.byteOffset === first.byteOffset + i * size);
  if (contiguous) return Buffer.from(first.buffer, first.byteOffset, chunkLength);
  const out = Buffer.allocUnsafe(chunkLength);
  let at = 0;
  for (const s of dataShards) {
    if (at >= chunkLength) break;
    at += s.copy(out, at, 0, Math.min(size, chunkLength - at));
  }
  return out;
}
