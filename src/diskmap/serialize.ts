/**
 * The diskmap document as JSON: bigints (incarnations) and bucket ids as strings, the key-space
 * slot table run-length encoded. parseDiskmap validates everything it reads back with zod and
 * then checks the invariants (known disks, distinct disks per group, group width, slot table),
 * so a damaged or hand-edited document is refused with a clear error, never half-used.
 */
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { parseWith } from '../common/config.js';
import { diskKeyOf, parseBucketId, type BucketId } from './bucket-id.js';
import { widthOf } from './redundancy.js';
import { diskEntries, parseTopology, topologyToJson, type TopologyFile } from './topology.js';
import type { Diskmap, DiskmapDiff, PlacementGroup, Scheme } from './types.js';
import { DOMAIN_LEVELS } from './types.js';

const bucketText = z.string().transform((s, ctx) => {
  try {
    return parseBucketId(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

export const schemeSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('ec'), k: z.number().int().min(1).max(31), m: z.number().int().min(1).max(31) }),
  z.object({ kind: z.literal('replica'), n: z.number().int().min(1).max(8) }),
]);

const diskStateSchema = z.enum(['active', 'draining', 'failed', 'removed']);

const diffSchema = z.object({
  fromEpoch: z.number().int().min(1),
  reason: z.string(),
  addedDisks: z.array(z.string()),
  removedDisks: z.array(z.string()),
  stateChanges: z.array(z.object({ disk: z.string(), from: diskStateSchema, to: diskStateSchema })),
  addedGroups: z.array(z.number().int().min(0)),
  retiredGroups: z.array(z.number().int().min(0)),
  slotMoves: z.array(
    z.object({
      kind: z.enum(['move', 'repair', 'new']),
      group: z.number().int().min(0),
      index: z.number().int().min(0),
      from: bucketText.nullable(),
      to: bucketText,
    }),
  ),
  keyMoves: z.array(z.object({ fromGroup: z.number().int().min(0), toGroup: z.number().int().min(0), vslots: z.number().int().min(1) })),
});

export const diskmapJsonSchema = z.object({
  format: z.literal(1),
  epoch: z.number().int().min(1),
  /** Validated by parseTopology (the topology file schema). */
  topology: z.unknown(),
  bucketSizeBytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  dataClass: z.enum(['hdd', 'ssd']),
  scheme: schemeSchema,
  failureDomain: z.enum(DOMAIN_LEVELS),
  maxShardsPerDomain: z.number().int().min(1).max(32),
  unsafe: z.boolean(),
  /** Repair headroom (absent in documents written before it existed: none). */
  headroom: z.enum(['none', 'disk']).default('none'),
  /** Bucket ids as text; parsed and checked by parseDiskmap (faster than a zod transform per id). */
  groups: z.array(
    z.object({
      id: z.number().int().min(0),
      buckets: z.array(z.string()),
      retired: z.boolean().default(false),
      /** Positions whose bucket is lost (failed or removed disk) and not yet rebuilt. */
      lost: z.array(z.number().int().min(0).max(31)).optional(),
    }),
  ),
  vslotBits: z.number().int().min(0).max(30),
  /** Run-length encoded slot table: [runLength, group, runLength, group, …]. */
  vslotRuns: z.array(z.number().int().min(0)),
  diff: diffSchema.nullable(),
});

export type DiskmapJson = Omit<z.input<typeof diskmapJsonSchema>, 'topology'> & { topology: TopologyFile };

const HEX2 = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const hex4 = (v: number): string => (HEX2[v >>> 8] as string) + (HEX2[v & 0xff] as string);

/** formatBucketId, with the incarnation text cached (a map has few disks and many buckets). */
function textFormatter(): (b: BucketId) => string {
  // Per disk (incarnation + location) the text before and after the bucket number.
  const cache = new Map<bigint, { b: BucketId; head: string; tail: string }>();
  return (b) => {
    let c = cache.get(b.incarnation);
    if (c === undefined || c.b.disk !== b.disk || c.b.machine !== b.machine || c.b.rack !== b.rack || c.b.row !== b.row || c.b.dc !== b.dc) {
      c = {
        b,
        head: `${HEX2[b.dc] as string}${HEX2[b.row] as string}${HEX2[b.rack] as string}${HEX2[b.machine] as string}-${hex4(b.disk)}-`,
        tail: `-${b.incarnation.toString(16).padStart(16, '0')}`,
      };
      cache.set(b.incarnation, c);
    }
    return c.head + hex4(b.bucket) + c.tail;
  };
}

function encodeRuns(table: Uint32Array): number[] {
  const runs: number[] = [];
  let v = 0;
  while (v < table.length) {
    const g = table[v] as number;
    let n = 1;
    while (v + n < table.length && table[v + n] === g) n++;
    runs.push(n, g);
    v += n;
  }
  return runs;
}

/** The JSON value of a diskmap (stringify it as you like). */
export function diskmapToJson(dm: Diskmap): DiskmapJson {
  const diff: DiskmapDiff | null = dm.diff;
  const text = textFormatter();
  return {
    format: 1,
    epoch: dm.epoch,
    topology: topologyToJson(dm.topology),
    bucketSizeBytes: dm.bucketSizeBytes,
    dataClass: dm.dataClass,
    scheme: dm.scheme,
    failureDomain: dm.failureDomain,
    maxShardsPerDomain: dm.maxShardsPerDomain,
    unsafe: dm.unsafe,
    headroom: dm.headroom ?? 'none',
    groups: dm.groups.map((g) => ({ id: g.id, buckets: g.buckets.map(text), retired: g.retired, ...(g.lost !== undefined && g.lost.length > 0 ? { lost: [...g.lost] } : {}) })),
    vslotBits: dm.vslotBits,
    vslotRuns: encodeRuns(dm.vslotGroup),
    diff:
      diff === null
        ? null
        : {
            ...diff,
            addedDisks: [...diff.addedDisks],
            removedDisks: [...diff.removedDisks],
            stateChanges: diff.stateChanges.map((c) => ({ ...c })),
            addedGroups: [...diff.addedGroups],
            retiredGroups: [...diff.retiredGroups],
            slotMoves: diff.slotMoves.map((m) => ({ kind: m.kind, group: m.group, index: m.index, from: m.from === null ? null : text(m.from), to: text(m.to) })),
            keyMoves: diff.keyMoves.map((k) => ({ ...k })),
          },
  };
}

export function serializeDiskmap(dm: Diskmap): string {
  return `${JSON.stringify(diskmapToJson(dm))}\n`;
}

function corrupt(source: string, message: string): never {
  throw new CairnError('EINVAL', `${source}: ${message}`);
}

/** Validate and load a diskmap JSON value (or text); `source` names it in errors. */
export function parseDiskmap(input: string | unknown, source = 'diskmap'): Diskmap {
  let value: unknown = input;
  if (typeof input === 'string') {
    try {
      value = JSON.parse(input);
    } catch (err) {
      corrupt(source, `not valid JSON (${(err as Error).message})`);
    }
  }
  const j = parseWith(diskmapJsonSchema, value, source);
  const topology = parseTopology(j.topology, `${source}: topology`);
  const scheme: Scheme = j.scheme;
  const width = widthOf(scheme);
  // Disks by the text of their bucket ids without the bucket number: "DDRRKKMM-DDDD" + "IIII…".
  const known = new Map<string, { key: string; incarnation: bigint; loc: { dc: number; row: number; rack: number; machine: number; disk: number } }>();
  for (const e of diskEntries(topology)) {
    const m = e.machine;
    known.set(`${HEX2[m.dc] as string}${HEX2[m.row] as string}${HEX2[m.rack] as string}${HEX2[m.machine] as string}-${hex4(e.d.disk)}/${e.d.incarnation.toString(16).padStart(16, '0')}`, {
      key: e.key,
      incarnation: e.d.incarnation,
      loc: { dc: m.dc, row: m.row, rack: m.rack, machine: m.machine, disk: e.d.disk },
    });
  }
  const TEXT = /^([0-9a-f]{8}-[0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{16})$/;
  const groups: PlacementGroup[] = j.groups.map((g, i) => {
    if (g.id !== i) corrupt(source, `groups.${i}.id: expected ${i}, got ${g.id} (ids are dense)`);
    if (g.retired ? g.buckets.length !== 0 : g.buckets.length !== width) {
      corrupt(source, `groups.${i}.buckets: ${g.retired ? 'a retired group has no buckets' : `expected ${width} buckets for ${JSON.stringify(scheme)}, got ${g.buckets.length}`}`);
    }
    const disks = new Set<string>();
    const lost = [...new Set(g.lost ?? [])].sort((a, b) => a - b);
    for (const p of lost) if (p >= g.buckets.length) corrupt(source, `groups.${i}.lost: position ${p} is beyond the group's ${g.buckets.length} buckets`);
    const ids = g.buckets.map((t, s): BucketId => {
      const m = TEXT.exec(t);
      if (m === null) corrupt(source, `groups.${i}.buckets.${s}: "${t.slice(0, 64)}" is not a bucket id (DDRRKKMM-DDDD-BBBB-IIIIIIIIIIIIIIII)`);
      const disk = known.get(`${m[1] as string}/${m[3] as string}`);
      if (disk === undefined && lost.includes(s)) {
        // A lost slot of a disk removed from the topology: kept until rebuilt elsewhere.
        const b = parseBucketId(t);
        if (disks.has(diskKeyOf(b))) corrupt(source, `groups.${i}.buckets.${s}: disk ${diskKeyOf(b)} appears twice in the group`);
        disks.add(diskKeyOf(b));
        return b;
      }
      if (disk === undefined) corrupt(source, `groups.${i}.buckets.${s}: bucket ${t} is on a disk that is not in the topology (and the slot is not listed as lost)`);
      if (disks.has(disk.key)) corrupt(source, `groups.${i}.buckets.${s}: disk ${disk.key} appears twice in the group`);
      disks.add(disk.key);
      // Every field is in range by construction (hex digits of the right width, a known disk).
      const l = disk.loc;
      return Object.freeze({ dc: l.dc, row: l.row, rack: l.rack, machine: l.machine, disk: l.disk, bucket: parseInt(m[2] as string, 16), incarnation: disk.incarnation });
    });
    return Object.freeze({ id: i, buckets: Object.freeze(ids), retired: g.retired, ...(lost.length > 0 ? { lost: Object.freeze(lost) } : {}) });
  });
  const V = 2 ** j.vslotBits;
  if (j.vslotRuns.length % 2 !== 0) corrupt(source, 'vslotRuns: expected [runLength, group] pairs');
  const table = new Uint32Array(V);
  let v = 0;
  for (let r = 0; r < j.vslotRuns.length; r += 2) {
    const n = j.vslotRuns[r] as number;
    const g = j.vslotRuns[r + 1] as number;
    const grp = groups[g];
    if (grp === undefined || grp.retired) corrupt(source, `vslotRuns.${r + 1}: group ${g} does not exist or is retired`);
    if (n < 1 || v + n > V) corrupt(source, `vslotRuns.${r}: runs exceed the ${V} slots of vslotBits ${j.vslotBits}`);
    table.fill(g, v, v + n);
    v += n;
  }
  if (v !== V) corrupt(source, `vslotRuns: cover ${v} of ${V} slots`);
  const diff: DiskmapDiff | null = j.diff;
  return Object.freeze({
    format: 1 as const,
    epoch: j.epoch,
    topology,
    bucketSizeBytes: j.bucketSizeBytes,
    dataClass: j.dataClass,
    scheme,
    failureDomain: j.failureDomain,
    maxShardsPerDomain: j.maxShardsPerDomain,
    unsafe: j.unsafe,
    headroom: j.headroom,
    groups: Object.freeze(groups),
    vslotBits: j.vslotBits,
    vslotGroup: table,
    diff,
  });
}
