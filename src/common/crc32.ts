/**
 * CRC-32 (the zlib / IEEE 802.3 polynomial) of a buffer, continuing from a previous value: the
 * one checksum of Cairn's on-disk and on-wire formats (shard payloads, write-cache journal, Raft
 * log records, metadata entries).
 *
 * It is computed by @node-rs/crc32 (SIMD, carry-less multiplication: ≈ 11.6 GB/s on this machine)
 * when its prebuilt binding loads, and by node:zlib's crc32 (≈ 4 GB/s) otherwise; both give the
 * same values, so data written with one is read with the other. The binding ships as an optional
 * per-platform package (no install script); a platform without one falls back silently.
 */
import { createRequire } from 'node:module';
import { crc32 as zlibCrc32 } from 'node:zlib';

type Crc32 = (data: Buffer, prev?: number) => number;

function load(): { fn: Crc32; impl: 'simd' | 'zlib' } {
  if (process.env.CAIRN_CRC32 !== 'zlib') {
    try {
      const mod = createRequire(import.meta.url)('@node-rs/crc32') as { crc32?: Crc32 };
      const fn = mod.crc32;
      // Trust it only if it agrees with zlib on a known value.
      if (typeof fn === 'function' && fn(Buffer.from('123456789')) >>> 0 === 0xcbf43926) return { fn, impl: 'simd' };
    } catch {
      // No binding for this platform: zlib below.
    }
  }
  return { fn: (data, prev = 0) => zlibCrc32(data, prev), impl: 'zlib' };
}

const loaded = load();

/** Which implementation computes CRC-32 in this process ('zlib' also when CAIRN_CRC32=zlib). */
export const crc32Impl: 'simd' | 'zlib' = loaded.impl;

/** CRC-32 of data, continuing from prev (the CRC of the bytes before it); unsigned. */
export function crc32(data: Uint8Array, prev = 0): number {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return loaded.fn(buf, prev >>> 0) >>> 0;
}
