/**
 * Property tests (fast-check) of the slice planner (plan.ts planSlices): a commit stores only
 * the bytes it changed. Against a Buffer model, random sequences of writes and truncations are
 * committed one after another (new chunks kept in a map by hash, exactly as the pipeline cuts
 * regions), and after every commit the layout reads back as the model; an aligned 4 KiB write
 * into a 1 GiB file stores 4 KiB; no aligned window ever holds more pieces than the bound.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { planSlices, type SliceOptions } from '../../src/client/plan.js';
import { DirtyLayer } from '../../src/client/extent-map.js';
import { chunkOf, type Extent } from '../../src/client/ports.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

function hashOf(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Read a layout back (chunks by hash), as CachedFile.fill does. */
function readLayout(extents: readonly Extent[], size: number, chunks: Map<string, Buffer>, inline?: Buffer): Buffer {
  const out = Buffer.alloc(size);
  inline?.copy(out, 0, 0, Math.min(size, inline.length));
  let prevEnd = 0;
  for (const e of extents) {
    expect(e.offset).toBeGreaterThanOrEqual(prevEnd);
    prevEnd = e.offset + e.length;
    const c = chunks.get(e.chunkHash)!;
    expect(c.length).toBe(chunkOf(e).length);
    c.copy(out, e.offset, e.chunkOffset ?? 0, (e.chunkOffset ?? 0) + e.length);
  }
  expect(prevEnd).toBeLessThanOrEqual(size);
  return out;
}

type Step = { kind: 'write'; at: number; len: number; seed: number } | { kind: 'truncate'; size: number };

describe('slice planner', () => {
  const o: SliceOptions = { windowBytes: 16 * KIB, maxPiecesPerWindow: 6 };

  it('after every commit the layout reads back as the model, and windows stay within the bound', () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('write' as const), at: fc.integer({ min: 0, max: 96 * KIB }), len: fc.integer({ min: 1, max: 20 * KIB }), seed: fc.integer() }),
      fc.record({ kind: fc.constant('truncate' as const), size: fc.integer({ min: 0, max: 100 * KIB }) }),
    );
    fc.assert(
      fc.property(fc.array(fc.array(step, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 12 }), fc.boolean(), (commits, startInline) => {
        let model: Buffer = startInline ? Buffer.from('inline base content') : Buffer.alloc(0);
        let inline: Buffer | undefined = startInline ? Buffer.from(model) : undefined;
        let extents: Extent[] = [];
        const chunks = new Map<string, Buffer>();
        for (const steps of commits) {
          const layer = new DirtyLayer(model.length);
          const journal = new Map<number, Buffer>();
          for (const s of steps) {
            if (s.kind === 'write') {
              const bytes = Buffer.alloc(s.len, (s.seed & 0xff) | 1);
              const pos = journal.size;
              journal.set(pos, bytes);
              layer.write(s.at, s.len, pos, 0);
              const grown = Buffer.alloc(Math.max(model.length, s.at + s.len));
              model.copy(grown);
              bytes.copy(grown, s.at);
              model = grown;
            } else {
              layer.truncate(s.size);
              const cut = Buffer.alloc(s.size);
              model.copy(cut, 0, 0, Math.min(s.size, model.length));
              model = cut;
            }
          }
          const plan = planSlices(extents, layer.all(), layer.size, inline?.length ?? 0, o);
          // Regions become chunks of the new bytes (the model is what readFrozen would give).
          const created: Extent[] = [];
          for (const r of plan.regions) {
            for (let p = r.start; p < r.end; p += o.windowBytes) {
              const bytes = Buffer.from(model.subarray(p, Math.min(r.end, p + o.windowBytes)));
              const h = hashOf(bytes);
              chunks.set(h, bytes);
              created.push({ offset: p, length: bytes.length, chunkHash: h, scheme: 'rs', pg: 0 });
            }
          }
          extents = [...plan.kept, ...created].sort((a, b) => a.offset - b.offset);
          inline = undefined;
          expect(layer.size).toBe(model.length);
          expect(readLayout(extents, model.length, chunks).equals(model)).toBe(true);
          const per = new Map<number, number>();
          for (const e of extents) per.set(Math.floor(e.offset / o.windowBytes), (per.get(Math.floor(e.offset / o.windowBytes)) ?? 0) + 1);
          for (const n of per.values()) expect(n).toBeLessThanOrEqual(o.maxPiecesPerWindow + 1);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('an aligned 4 KiB write anywhere in a 1 GiB file stores 4 KiB and keeps every other byte as slices', () => {
    const CHUNK = 4 * MIB;
    const base: Extent[] = [];
    for (let off = 0, i = 0; off < GIB; off += CHUNK, i++) base.push({ offset: off, length: CHUNK, chunkHash: hashOf(Buffer.from(String(i))), scheme: 'rs', pg: 0 });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: GIB / 4096 - 1 }), (page) => {
        const layer = new DirtyLayer(GIB);
        layer.write(page * 4096, 4096, 1, 0);
        const plan = planSlices(base, layer.all(), GIB, 0, { windowBytes: CHUNK, maxPiecesPerWindow: 16 });
        expect(plan.regions).toEqual([{ start: page * 4096, end: page * 4096 + 4096 }]);
        const keptBytes = plan.kept.reduce((n, e) => n + e.length, 0);
        expect(keptBytes).toBe(GIB - 4096);
        expect(plan.kept.length).toBeLessThanOrEqual(base.length + 1);
      }),
      { numRuns: 200 },
    );
  });
});
