import { describe, it, expect } from 'vitest';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { crc32, crc32Impl } from '../../src/common/crc32.js';
import { REPO_ROOT } from '../helpers/env.js';

describe('crc32', () => {
  it('uses the SIMD binding here (a fresh npm ci installs it)', () => {
    expect(crc32Impl).toBe('simd');
  });

  it('gives the standard check value and is unsigned', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
    expect(crc32(Buffer.from([0xff, 0xfe, 1, 2, 3, 4, 5, 6, 7]))).toBe(2821695851);
  });

  it('agrees with zlib on any bytes, split anywhere, views and plain Uint8Arrays alike', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5000 }), fc.nat(), (bytes, cut) => {
        const at = bytes.length === 0 ? 0 : cut % bytes.length;
        const whole = zlibCrc32(bytes);
        expect(crc32(bytes)).toBe(whole);
        const b = Buffer.from(bytes);
        expect(crc32(b.subarray(at), crc32(b.subarray(0, at)))).toBe(whole);
      }),
    );
  });

  it('falls back to zlib with CAIRN_CRC32=zlib, with the same values', () => {
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', '-e', "import('./src/common/crc32.ts').then((m) => console.log(m.crc32Impl, m.crc32(Buffer.from('123456789'))))"],
      { cwd: REPO_ROOT, env: { ...process.env, CAIRN_CRC32: 'zlib' }, encoding: 'utf8' },
    );
    expect(out.trim()).toBe(`zlib ${0xcbf43926}`);
  });
});
