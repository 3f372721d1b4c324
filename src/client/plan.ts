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
