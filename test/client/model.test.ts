/**
 * Model-based property test of the cached file: random sequences of writes (sparse, overlapping,
 * appends), truncations, commits and daemon restarts against a plain Buffer. After every step
 * the file reads exactly like the model — from the cache, from chunks after a commit, and after
 * a restart that replays the journal. Real files in a temp dir; the metadata and chunks are
 * the directory-backed stand-ins.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { join } from 'node:path';
import { tempDir } from '../helpers/env.js';
import { CairnFs } from '../../src/client/index.js';
import { StubMeta, StubChunks } from './helpers/stub-ports.js';

const CHUNK = 8 * 1024;

type Op =
  | { k: 'write'; off: number; len: number; fill: number }
  | { k: 'append'; len: number; fill: number }
  | { k: 'truncate'; size: number }
  | { k: 'commit' }
  | { k: 'restart' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ k: fc.constant('write' as const), off: fc.integer({ min: 0, max: 6 * CHUNK }), len: fc.integer({ min: 1, max: 3 * CHUNK }), fill: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('append' as const), len: fc.integer({ min: 1, max: 2 * CHUNK }), fill: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('truncate' as const), size: fc.integer({ min: 0, max: 8 * CHUNK }) }) },
  { weight: 2, arbitrary: fc.constant({ k: 'commit' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'restart' as const }) },
);

function pattern(len: number, fill: number, salt: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (fill + i * 31 + salt) & 0xff;
  return b;
}

describe('cached file against a Buffer model', () => {
  it('reads always match the model through writes, truncations, commits and restarts', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        const dir = await tempDir('cairn-model-');
        const ports = { meta: new StubMeta(join(dir.path, 'meta')), chunks: new StubChunks(join(dir.path, 'store')) };
        const start = () =>
          CairnFs.start(
            { cacheDir: join(dir.path, 'cache'), chunker: { kind: 'fixed', sizeBytes: CHUNK }, idleCommitDelayMs: 600_000, retryBaseMs: 5 },
            ports,
          );
        let fs = await start();
        try {
          let fd = await fs.open('/m', { create: true });
          let model = Buffer.alloc(0);
          let salt = 0;
          for (const op of ops) {
            salt++;
            if (op.k === 'write' || op.k === 'append') {
              const data = pattern(op.len, op.fill, salt);
              const off = op.k === 'append' ? model.length : op.off;
              if (op.k === 'append') await fs.append(fd, data);
              else await fs.write(fd, data, off);
              if (off + data.length > model.length) model = Buffer.concat([model, Buffer.alloc(off + data.length - model.length)]);
              data.copy(model, off);
            } else if (op.k === 'truncate') {
              await fs.truncate(fd, op.size);
              model = op.size <= model.length ? Buffer.from(model.subarray(0, op.size)) : Buffer.concat([model, Buffer.alloc(op.size - model.length)]);
            } else if (op.k === 'commit') {
              await fs.commit(fd, 'durable');
              expect((await ports.meta.lookup('/m'))!.size).toBe(model.length);
            } else {
              await fs.shutdown();
              fs = await start();
              fd = await fs.open('/m', { write: true });
            }
            expect((await fs.stat('/m')).size).toBe(model.length);
            const got = await fs.read(fd, model.length + 100, 0);
            expect(got.equals(model)).toBe(true);
          }
          await fs.commit(fd, 'durable');
          const other = await CairnFs.start({ cacheDir: join(dir.path, 'other') }, ports);
          const r = await other.open('/m');
          expect((await other.read(r, model.length + 100, 0)).equals(model)).toBe(true);
          await other.shutdown();
        } finally {
          await fs.shutdown();
          await dir.remove();
        }
      }),
      { numRuns: 30 },
    );
  });
});
