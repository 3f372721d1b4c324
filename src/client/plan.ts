/**
 * The commit planner: given the layout of the version a commit starts from and the dirty
 * layer being committed, which extents stay as they are and which byte runs ("regions")
 * must be cut into new chunks. Pure logic.
 *
 * Rules (they give the chunking guarantees of docs/client.md):
 *  - an old extent that no dirty range touches and that ends within the new size is kept;
 *  - an old extent that is touched, or cut by a truncation, is rewritten whole: it joins
 *    a region together with the dirty ranges that overlap or touch it;
 *  - dirty ranges outside every old extent (appends, writes into holes) form regions of
 *    their own, so appending never rewrites an existing chunk;
 *  - extents wholly past the new size are dropped.
 */
import type { Entry } from './extent-map.js';
import type { Extent } from './ports.js';

export interface Region {
  start: number;
  end: number;
}

export interface CommitPlan {
  kept: Extent[];
  regions: Region[];
  newSize: number;
}

function mergeRuns(runs: Region[]): Region[] {
  runs.sort((a, b) => a.start - b.start);
  const out: Region[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last !== undefined && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}

/**
 * `baseInlineBytes`: the base version's content is stored inline (base has no extents then);
 * a commit that goes to chunks rewrites that part as one region.
 */
export function planCommit(base: readonly Extent[], entries: readonly Entry[], newSize: number, baseInlineBytes = 0): CommitPlan {
  // Touched = every dirty or zeroed range, merged (sorted already; merging joins neighbours).
  const touched = mergeRuns(entries.map((e) => ({ start: e.start, end: e.end })));
  const kept: Extent[] = [];
  const runs: Region[] = [];
  let t = 0;
  for (const ext of base) {
    const end = ext.offset + ext.length;
    if (ext.offset >= newSize) continue;
    while (t < touched.length && touched[t]!.end <= ext.offset) t++;
    const hit = t < touched.length && touched[t]!.start < end;
    if (!hit && end <= newSize) {
      kept.push(ext);
      continue;
    }
    runs.push({ start: ext.offset, end: Math.min(end, newSize) });
  }
  if (baseInlineBytes > 0 && newSize > 0) runs.push({ start: 0, end: Math.min(baseInlineBytes, newSize) });
  for (const e of entries) {
    if (e.src.kind !== 'data') continue;
    const end = Math.min(e.end, newSize);
    if (e.start < end) runs.push({ start: e.start, end });
  }
  return { kept, regions: mergeRuns(runs), newSize };
}

/** Slices: how the planner keeps old chunks when a commit changes only part of them. */
export interface SliceOptions {
  /** Aligned window (the chunk size) within which pieces are counted. */
  windowBytes: number;
  /** A window that would hold more pieces than this is rewritten whole (compaction). */
  maxPiecesPerWindow: number;
}

/** The parts of `ext` outside every range of `cover` (sorted, merged) and below `size`, as slices of the same chunk. */
function trimExtent(ext: Extent, cover: readonly Region[], size: number, out: Extent[]): void {
  const end = Math.min(ext.offset + ext.length, size);
  let cur = ext.offset;
  const keep = (s: number, e: number): void => {
    if (e <= s) return;
    const chunkOffset = (ext.chunkOffset ?? 0) + (s - ext.offset);
    const chunkLength = ext.chunkLength ?? ext.length;
    const piece: Extent = { offset: s, length: e - s, chunkHash: ext.chunkHash, scheme: ext.scheme, pg: ext.pg };
    if (chunkOffset !== 0 || e - s !== chunkLength) {
      piece.chunkOffset = chunkOffset;
      piece.chunkLength = chunkLength;
    }
    out.push(piece);
  };
  for (const c of cover) {
    if (c.end <= cur) continue;
    if (c.start >= end) break;
    keep(cur, Math.min(c.start, end));
    cur = Math.max(cur, c.end);
    if (cur >= end) return;
  }
  keep(cur, end);
}

/**
 * The planner with slices (JuiceFS's idea on this layout): a commit stores only the bytes it
 * changed. Old extents are kept around the dirty ranges as slices of their chunks (chunkOffset,
 * chunkLength), dirty data ranges become new chunks of their own, zeroed ranges become holes, and
 * the inline base (if any) is one region. So a 4 KiB write into a 4 MiB chunk stores 4 KiB.
 * Fragmentation is bounded: an aligned window that would hold more than `maxPiecesPerWindow`
 * pieces is rewritten whole (one chunk), which also merges the small chunks of earlier commits.
 */
export function planSlices(base: readonly Extent[], entries: readonly Entry[], newSize: number, baseInlineBytes: number, o: SliceOptions): CommitPlan {
  const touched = mergeRuns(entries.map((e) => ({ start: e.start, end: e.end })));
  const data: Region[] = [];
  for (const e of entries) {
    if (e.src.kind !== 'data') continue;
    const end = Math.min(e.end, newSize);
    if (e.start < end) data.push({ start: e.start, end });
  }
  const forced: Region[] = [];
  if (baseInlineBytes > 0 && newSize > 0) forced.push({ start: 0, end: Math.min(baseInlineBytes, newSize) });
  for (;;) {
    const cover = mergeRuns([...touched, ...forced]);
    const kept: Extent[] = [];
    for (const ext of base) if (ext.offset < newSize) trimExtent(ext, cover, newSize, kept);
    const regions = mergeRuns([...data, ...forced]);
    // Pieces per window (a piece counts in the window it starts in); crowded windows are rewritten.
    const count = new Map<number, number>();
    for (const p of [...kept.map((e) => e.offset), ...regions.map((r) => r.start)]) {
      const w = Math.floor(p / o.windowBytes);
      count.set(w, (count.get(w) ?? 0) + 1);
    }
    let grew = false;
    for (const [w, n] of count) {
      if (n <= o.maxPiecesPerWindow) continue;
      const start = w * o.windowBytes;
      const end = Math.min(newSize, start + o.windowBytes);
      if (forced.some((f) => f.start <= start && f.end >= end)) continue;
      forced.push({ start, end });
      grew = true;
    }
    if (!grew) return { kept, regions, newSize };
  }
}
