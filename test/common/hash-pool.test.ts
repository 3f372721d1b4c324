import { afterEach, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { HashPool, OFFLOAD_MIN_BYTES } from '../../src/common/hash-pool.js';
import { registry } from '../../src/common/metrics.js';
import { execFileSync } from 'node:child_process';
import { REPO_ROOT } from '../helpers/env.js';

const pools: HashPool[] = [];
afterEach(async () => {
  while (pools.length) await pools.pop()?.close();
});

function pool(threads: number): HashPool {
  const p = new HashPool(threads);
  pools.push(p);
  return p;
}

const ref = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function hashedBy(where: string): Promise<number> {
  const m = await registry.getSingleMetric('cairn_hash_bytes_total')?.get();
  return m?.values.find((v) => v.labels.where === where)?.value ?? 0;
}

describe('hash pool', () => {
  it('gives the SHA-256 of any buffer: small, large, views, shared memory', async () => {
    const p = pool(2);
    const big = randomBytes(3 * OFFLOAD_MIN_BYTES + 17);
    const shared = new Uint8Array(new SharedArrayBuffer(big.length + 100));
    shared.set(big, 50);
    const cases: Uint8Array[] = [
      Buffer.alloc(0),
      randomBytes(100),
      randomBytes(OFFLOAD_MIN_BYTES - 1),
      randomBytes(OFFLOAD_MIN_BYTES),
      big,
      big.subarray(7, big.length - 3),
      shared.subarray(50, 50 + big.length),
      new Uint8Array(big.buffer, big.byteOffset + 1, OFFLOAD_MIN_BYTES + 5),
    ];
    for (const c of cases) expect(await p.sha256Hex(c)).toBe(ref(c));
  });

  it('hashes large buffers on a worker thread, and many at once each get their own answer', async () => {
    const p = pool(2);
    const before = await hashedBy('worker');
    const bufs = Array.from({ length: 24 }, (_, i) => randomBytes(OFFLOAD_MIN_BYTES + i * 1000));
    const got = await Promise.all(bufs.map((b) => p.sha256Hex(b)));
    expect(got).toEqual(bufs.map(ref));
    expect((await hashedBy('worker')) - before).toBe(bufs.reduce((a, b) => a + b.length, 0));
  });

  it('with no threads, hashes on the calling thread', async () => {
    const p = pool(0);
    const before = await hashedBy('worker');
    const b = randomBytes(2 * OFFLOAD_MIN_BYTES);
    expect(await p.sha256Hex(b)).toBe(ref(b));
    expect(await hashedBy('worker')).toBe(before);
  });

  it('answers correctly when its workers die mid-request, and starts new ones after', async () => {
    const p = pool(1);
    const bufs = Array.from({ length: 8 }, () => randomBytes(4 * OFFLOAD_MIN_BYTES));
    const answers = Promise.all(bufs.map((b) => p.sha256Hex(b)));
    await p.close();
    expect(await answers).toEqual(bufs.map(ref));
    const before = await hashedBy('worker');
    const b = randomBytes(OFFLOAD_MIN_BYTES * 2);
    expect(await p.sha256Hex(b)).toBe(ref(b));
    expect(await hashedBy('worker')).toBe(before + b.length);
  });

  it('keeps a process alive while a hash is in flight, and lets it exit once idle', () => {
    // The answer must be printed (an idle-unref'd worker must not let the process end before
    // it), and the process must then end by itself (the timeout kills it otherwise).
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', '-e', "import('./src/common/hash-pool.ts').then(async (m) => { console.log(await m.sha256Hex(Buffer.alloc(1 << 20, 7))); })"],
      { cwd: REPO_ROOT, encoding: 'utf8', timeout: 20_000, env: { ...process.env, CAIRN_HASH_THREADS: '1' } },
    );
    expect(out.trim()).toBe(ref(Buffer.alloc(1 << 20, 7)));
  });
});
