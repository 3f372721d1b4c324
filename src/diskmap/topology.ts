/**
 * The topology file (JSON): machines with their location (dc/row/rack/machine) and disks.
 * Validated with zod; every error names the field. Also: disk references ("box1/0"), the
 * canonical disk key, and the data disks that hold buckets. See docs/diskmap.md for the format.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { formatZodError } from '../common/config.js';
import type { DiskClass, Topology, TopologyDisk, TopologyMachine } from './types.js';

const UNITS: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  PB: 1e15,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
  PIB: 2 ** 50,
};

/** "6TB", "1.5 TiB", "64GiB" or a plain number of bytes. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (m === null) return undefined;
  const unit = (m[2] ?? '').toUpperCase() || 'B';
  const mult = UNITS[unit];
  if (mult === undefined) return undefined;
  const v = Math.floor(Number(m[1]) * mult);
  return Number.isSafeInteger(v) ? v : undefined;
}

export const sizeSchema = z.union(
  [
  z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  z.string().transform((s, ctx) => {
    const v = parseSize(s);
    if (v === undefined || v <= 0) {
      ctx.addIssue({ code: 'custom', message: `"${s}" is not a size (a number of bytes or e.g. "6TB", "64GiB")` });
      return z.NEVER;
    }
    return v;
  }),
  ],
  { error: 'must be a positive whole number of bytes or a size such as "6TB" or "64GiB"' },
);

const incarnationSchema = z
  .string()
  .regex(/^(0x)?[0-9a-fA-F]{1,16}$/, 'must be a 64-bit hex string (1 to 16 hex digits)')
  .transform((s) => BigInt(s.startsWith('0x') ? s : `0x${s}`));

const diskSchema = z.object({
  disk: z.number().int().min(0).max(0xffff),
  capacity: sizeSchema,
  class: z.enum(['hdd', 'ssd']).default('hdd'),
  state: z.enum(['active', 'draining', 'failed', 'removed']).default('active'),
  incarnation: incarnationSchema.optional(),
});

const machineSchema = z.object({
  name: z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." and "-"').optional(),
  dc: z.number().int().min(0).max(255).default(0),
  row: z.number().int().min(0).max(255).default(0),
  rack: z.number().int().min(0).max(255).default(0),
  machine: z.number().int().min(0).max(255),
  disks: z.array(diskSchema).max(0x10000),
});

export const topologyFileSchema = z
  .object({
    name: z.string().min(1).max(128).default('cairn'),
    machines: z.array(machineSchema).min(1, 'at least one machine').max(256 * 256 * 256),
  })
  .superRefine((t, ctx) => {
    const locs = new Map<string, number>();
    const names = new Map<string, number>();
    t.machines.forEach((m, i) => {
      const loc = `${m.dc}.${m.row}.${m.rack}.${m.machine}`;
      const prev = locs.get(loc);
      if (prev !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['machines', i, 'machine'], message: `location dc ${m.dc} row ${m.row} rack ${m.rack} machine ${m.machine} is also used by machines.${prev}` });
      }
      locs.set(loc, i);
      const name = m.name ?? `m${m.machine}`;
      const prevName = names.get(name);
      if (prevName !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['machines', i, 'name'], message: `name "${name}" is also used by machines.${prevName}` });
      }
      names.set(name, i);
      const disks = new Map<number, number>();
      m.disks.forEach((d, j) => {
        const p = disks.get(d.disk);
        if (p !== undefined) ctx.addIssue({ code: 'custom', path: ['machines', i, 'disks', j, 'disk'], message: `disk number ${d.disk} is also used by disks.${p}` });
        disks.set(d.disk, j);
      });
    });
  });

export type TopologyFile = z.input<typeof topologyFileSchema>;

/**
 * The incarnation used when a topology file leaves it out: derived from the disk's location, so
 * the same file always gives the same ids. Real nodes write the random incarnation of the disk
 * label into the topology; a replaced disk must get a new one.
 */
export function defaultIncarnation(dc: number, row: number, rack: number, machine: number, disk: number): bigint {
  const h = createHash('sha256').update(`cairn-disk:${dc}.${row}.${rack}.${machine}.${disk}`).digest();
  return h.readBigUInt64BE(0);
}

/** Validate a parsed JSON value as a topology; `source` names the file in errors. */
export function parseTopology(value: unknown, source = 'topology'): Topology {
  const r = topologyFileSchema.safeParse(value);
  if (!r.success) {
    // At most 10 findings: a wholly wrong file should not print thousands of lines.
    const issues = r.error.issues;
    const shown = { ...r.error, issues: issues.slice(0, 10) } as z.ZodError;
    const more = issues.length > 10 ? `\n(and ${issues.length - 10} more)` : '';
    throw new CairnError('EINVAL', `${formatZodError(source, shown)}${more}`);
  }
  const t = r.data;
  const machines: TopologyMachine[] = t.machines.map((m) => ({
    name: m.name ?? `m${m.machine}`,
    dc: m.dc,
    row: m.row,
    rack: m.rack,
    machine: m.machine,
    disks: m.disks.map(
      (d): TopologyDisk => ({
        disk: d.disk,
        capacityBytes: d.capacity,
        class: d.class,
        state: d.state,
        incarnation: d.incarnation ?? defaultIncarnation(m.dc, m.row, m.rack, m.machine, d.disk),
      }),
    ),
  }));
  return { name: t.name, machines };
}

/** The canonical JSON form of a topology (the same file format; incarnations as 16 hex digits). */
export function topologyToJson(t: Topology): TopologyFile {
  return {
    name: t.name,
    machines: t.machines.map((m) => ({
      name: m.name,
      dc: m.dc,
      row: m.row,
      rack: m.rack,
      machine: m.machine,
      disks: m.disks.map((d) => ({
        disk: d.disk,
        capacity: d.capacityBytes,
        class: d.class,
        state: d.state,
        incarnation: d.incarnation.toString(16).padStart(16, '0'),
      })),
    })),
  };
}

/** A disk with its machine, flattened, in a stable order. */
export interface DiskEntry {
  readonly key: string;
  readonly machine: TopologyMachine;
  readonly d: TopologyDisk;
  /** Domain ids per level, index 0 disk … 4 dc (strings, unique across the topology). */
  readonly domains: readonly [string, string, string, string, string];
}

export function diskKey(m: { dc: number; row: number; rack: number; machine: number }, disk: number, incarnation: bigint): string {
  return `${m.dc}.${m.row}.${m.rack}.${m.machine}.${disk}/${incarnation.toString(16).padStart(16, '0')}`;
}

export function diskEntries(t: Topology): DiskEntry[] {
  const out: DiskEntry[] = [];
  for (const m of t.machines) {
    for (const d of m.disks) {
      const mk = `${m.dc}.${m.row}.${m.rack}.${m.machine}`;
      out.push({
        key: diskKey(m, d.disk, d.incarnation),
        machine: m,
        d,
        domains: [`${mk}.${d.disk}`, mk, `${m.dc}.${m.row}.${m.rack}`, `${m.dc}.${m.row}`, `${m.dc}`],
      });
    }
  }
  return out;
}

/** The class that holds data: hdd when any usable hdd exists, else ssd. */
export function defaultDataClass(t: Topology): DiskClass {
  return t.machines.some((m) => m.disks.some((d) => d.class === 'hdd' && d.state !== 'removed')) ? 'hdd' : 'ssd';
}

/** Human label of a disk: "box1/0". */
export function diskLabel(e: { machine: TopologyMachine; d: TopologyDisk }): string {
  return `${e.machine.name}/${e.d.disk}`;
}

/**
 * Resolve a disk reference: "NAME/DISK" or "DC.ROW.RACK.MACHINE.DISK" (machine by name or by
 * its numeric location). Returns every matching disk key (one, or several incarnations).
 */
export function resolveDiskRef(t: Topology, ref: string): DiskEntry[] {
  const slash = ref.lastIndexOf('/');
  let machinePart: string;
  let diskNo: number;
  if (slash > 0) {
    machinePart = ref.slice(0, slash);
    diskNo = Number(ref.slice(slash + 1));
  } else {
    const parts = ref.split('.');
    if (parts.length !== 5) throw new CairnError('EINVAL', `disk "${ref}": expected MACHINE/DISK (e.g. box1/0) or DC.ROW.RACK.MACHINE.DISK`);
    machinePart = parts.slice(0, 4).join('.');
    diskNo = Number(parts[4]);
  }
  if (!Number.isInteger(diskNo) || diskNo < 0) throw new CairnError('EINVAL', `disk "${ref}": disk number must be a non-negative integer`);
  const machines = resolveMachineRef(t, machinePart);
  const hits = diskEntries(t).filter((e) => machines.includes(e.machine) && e.d.disk === diskNo);
  if (hits.length === 0) throw new CairnError('ENOENT', `disk "${ref}": no such disk in topology "${t.name}"`);
  return hits;
}

/** Resolve a machine reference: its name or "DC.ROW.RACK.MACHINE". */
export function resolveMachineRef(t: Topology, ref: string): TopologyMachine[] {
  const byName = t.machines.filter((m) => m.name === ref);
  if (byName.length > 0) return byName;
  const parts = ref.split('.').map(Number);
  if (parts.length === 4 && parts.every((p) => Number.isInteger(p))) {
    const hit = t.machines.filter((m) => m.dc === parts[0] && m.row === parts[1] && m.rack === parts[2] && m.machine === parts[3]);
    if (hit.length > 0) return hit;
  }
  throw new CairnError('ENOENT', `machine "${ref}": no machine of that name or location (DC.ROW.RACK.MACHINE) in topology "${t.name}"`);
}
