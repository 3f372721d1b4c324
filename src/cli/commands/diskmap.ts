/**
 * `cairn diskmap show | plan | explain-failure`: the placement planner from the command line.
 * Reads a topology file (or a diskmap document), prints readable tables, or JSON with --json.
 * Pure planning: nothing here talks to a cluster; `plan --out` writes the next document to a file.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import { CairnError } from '../../common/errors.js';
import { writeFileDurable } from '../../common/durable.js';
import {
  analyzeFailure,
  buildDiskmap,
  chooseRedundancy,
  diskEntries,
  diskLabel,
  diskmapToJson,
  formatBucketId,
  movementBetween,
  parseDiskmap,
  parseSize,
  parseTopology,
  planChange,
  planNodeDrain,
  planReplace,
  repairOutlook,
  summarizePlan,
  type PlanResult,
  schemeText,
  serializeDiskmap,
  widthOf,
  withDiskState,
  type BuildOptions,
  type Diskmap,
  type RedundancyChoice,
  type Scheme,
  type Topology,
} from '../../diskmap/index.js';
import { diskKeyOf } from '../../diskmap/bucket-id.js';
import { formatBytes, formatTable, printJson } from '../output.js';
import { parseOptions, usageError } from '../usage.js';

/** "2+1", "ec:4+2", "3x", "replica:3". */
export function parseSchemeText(s: string): Scheme {
  const ec = /^(?:ec:)?(\d{1,2})\+(\d{1,2})$/.exec(s);
  if (ec !== null) return { kind: 'ec', k: Number(ec[1]), m: Number(ec[2]) };
  const rep = /^(?:replica:(\d)|(\d)x)$/.exec(s);
  if (rep !== null) return { kind: 'replica', n: Number(rep[1] ?? rep[2]) };
  throw usageError(`--scheme "${s}": expected K+M (e.g. 4+2) or NX / replica:N (e.g. 3x)`);
}

const buildOptsSchema = z.object({
  bucketSize: z
    .string()
    .optional()
    .transform((s, ctx) => {
      if (s === undefined) return undefined;
      const v = parseSize(s);
      if (v === undefined || v < 1) {
        ctx.addIssue({ code: 'custom', message: `--bucket-size "${s}" is not a size (e.g. 64GiB, 1GiB, 1048576)` });
        return z.NEVER;
      }
      return v;
    }),
  scheme: z.string().optional(),
  unsafe: z.boolean().optional(),
  dataClass: z.enum(['hdd', 'ssd']).optional(),
  headroom: z.enum(['auto', 'disk', 'none'], { error: '--headroom must be auto, disk or none' }).optional(),
  json: z.boolean().optional(),
});

function buildOpts(raw: unknown): { opts: BuildOptions; json: boolean } {
  const o = parseOptions(buildOptsSchema, raw);
  return {
    opts: {
      ...(o.bucketSize !== undefined ? { bucketSizeBytes: o.bucketSize } : {}),
      ...(o.scheme !== undefined ? { scheme: parseSchemeText(o.scheme) } : {}),
      ...(o.unsafe === true ? { unsafe: true } : {}),
      ...(o.dataClass !== undefined ? { dataClass: o.dataClass } : {}),
      ...(o.headroom !== undefined ? { headroom: o.headroom } : {}),
    },
    json: o.json === true,
  };
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CairnError('ENOENT', `${path}: cannot read (${(err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CairnError('EINVAL', `${path}: not valid JSON (${(err as Error).message})`);
  }
}

const isDiskmapDoc = (v: unknown): boolean => typeof v === 'object' && v !== null && 'format' in v && 'epoch' in v && 'groups' in v;

/** A file that is either a diskmap document or a topology (then built into epoch 1). */
async function loadMapOrTopology(path: string, opts: BuildOptions): Promise<{ diskmap: Diskmap; built: boolean }> {
  const v = await readJson(path);
  if (isDiskmapDoc(v)) return { diskmap: parseDiskmap(v, path), built: false };
  return { diskmap: buildDiskmap(parseTopology(v, path), opts), built: true };
}

/**
 * `cairn diskmap show | head` closes the pipe early: that ends the output, it is not an error
 * (no EPIPE stack trace). Installed once, before the first line is written.
 */
let pipeGuard = false;
function guardPipe(): void {
  if (pipeGuard) return;
  pipeGuard = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

const out = (s: string): void => {
  guardPipe();
  process.stdout.write(`${s}\n`);
};
const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

function candidatesTable(choice: RedundancyChoice): string {
  return formatTable(
    ['scheme', 'survives', 'max/domain', 'repair room', 'groups', 'usable', 'efficiency', 'note'],
    choice.candidates.map((c) => [
      schemeText(c.scheme),
      c.feasible ? `any 1 ${c.failureDomain}` : '-',
      c.maxShardsPerDomain,
      c.headroom === 'disk' ? 'yes' : 'no',
      c.groups,
      formatBytes(c.usableBytes),
      pct(c.efficiency),
      c.note,
    ]),
  );
}

interface DiskRow {
  label: string;
  key: string;
  cls: string;
  state: string;
  capacityBytes: number;
  buckets: number;
  used: number;
  spareBuckets: number;
  remainderBytes: number;
}

function diskRows(dm: Diskmap): DiskRow[] {
  const used = new Map<string, number>();
  for (const g of dm.groups) for (const b of g.buckets) used.set(diskKeyOf(b), (used.get(diskKeyOf(b)) ?? 0) + 1);
  return diskEntries(dm.topology).map((e) => {
    const data = e.d.class === dm.dataClass && e.d.state !== 'removed';
    const buckets = data ? Math.min(0xffff, Math.floor(e.d.capacityBytes / dm.bucketSizeBytes)) : 0;
    const u = used.get(e.key) ?? 0;
    return {
      label: diskLabel(e),
      key: e.key,
      cls: e.d.class,
      state: e.d.state,
      capacityBytes: e.d.capacityBytes,
      buckets,
      used: u,
      spareBuckets: buckets - u,
      remainderBytes: data ? e.d.capacityBytes - buckets * dm.bucketSizeBytes : e.d.capacityBytes,
    };
  });
}

function summary(dm: Diskmap): { groups: number; usableBytes: number; rawBytes: number } {
  const groups = dm.groups.filter((g) => !g.retired).length;
  const k = dm.scheme.kind === 'ec' ? dm.scheme.k : 1;
  const rawBytes = diskRows(dm)
    .filter((r) => r.buckets > 0)
    .reduce((s, r) => s + r.capacityBytes, 0);
  return { groups, usableBytes: groups * k * dm.bucketSizeBytes, rawBytes };
}

function printShow(dm: Diskmap, choice: RedundancyChoice | undefined, groupsShown: number): void {
  const s = summary(dm);
  out(`diskmap "${dm.topology.name}" epoch ${dm.epoch}`);
  out(`  redundancy:   ${schemeText(dm.scheme)}, at most ${dm.maxShardsPerDomain} shard(s) of a group per ${dm.failureDomain}: survives the loss of any one ${dm.failureDomain}${dm.unsafe ? ' — NO: unsafe single copy' : ''}`);
  out(`  buckets:      ${formatBytes(dm.bucketSizeBytes)} each on ${dm.dataClass} disks`);
  out(`  groups:       ${s.groups} of ${widthOf(dm.scheme)} buckets; key space in ${2 ** dm.vslotBits} slots`);
  out(`  usable:       ${formatBytes(s.usableBytes)} of ${formatBytes(s.rawBytes)} raw (${pct(s.rawBytes > 0 ? s.usableBytes / s.rawBytes : 0)})`);
  out(`  largest disk: ${choice !== undefined ? `${pct(choice.maxDiskShare)} of all buckets` : 'see the disks below'}`);
  out(`  repair:       ${repairOutlook(dm).summary}`);
  if (choice !== undefined) {
    out(`  headroom:     ${choice.repairNote}`);
    out('\nredundancy candidates:');
    out(candidatesTable(choice));
  }
  out('\ndisks:');
  out(
    formatTable(
      ['disk', 'class', 'state', 'capacity', 'buckets', 'in groups', 'spare', 'unused remainder'],
      diskRows(dm).map((r) => [r.label, r.cls, r.state, formatBytes(r.capacityBytes), r.buckets, r.used, r.spareBuckets, formatBytes(r.remainderBytes)]),
    ),
  );
  const copysets = new Set(dm.groups.filter((g) => !g.retired).map((g) => g.buckets.map(diskKeyOf).sort().join(' '))).size;
  out(`\nplacement groups (${s.groups}, on ${copysets} distinct disk combination(s)); first ${Math.min(groupsShown, dm.groups.length)}:`);
  out(
    formatTable(
      ['group', 'buckets (shard 0 …)'],
      dm.groups.slice(0, groupsShown).map((g) => [g.id, g.retired ? 'retired' : g.buckets.map(formatBucketId).join(' ')]),
    ),
  );
}

const groupsOptSchema = z.coerce.number().int().min(0).max(1_000_000);

export function register(program: Command): void {
  const dm = program
    .command('diskmap')
    .description('the placement planner: buckets, redundancy, placement groups, change plans, failure analysis');
  dm.hook('preAction', () => guardPipe());

  dm.command('show')
    .description('build the diskmap of a topology file (or read a diskmap document) and print it')
    .argument('<file>', 'topology file (JSON, see docs/diskmap.md) or diskmap document')
    .option('--bucket-size <size>', 'bucket size, e.g. 64GiB (default) or 1GiB')
    .option('--scheme <scheme>', 'force a scheme: K+M (e.g. 4+2) or NX (e.g. 3x)')
    .option('--unsafe', 'allow a map without redundancy (one disk)')
    .option('--data-class <class>', 'disk class that holds data: hdd or ssd')
    .option('--headroom <policy>', 'spare room to rebuild a lost disk: auto (default), disk or none')
    .option('--groups <n>', 'placement groups to list', '10')
    .option('--json', 'print the diskmap document and the redundancy choice as JSON')
    .action(async (file: string, raw: Record<string, unknown>) => {
      const groupsShown = parseOptions(groupsOptSchema, raw.groups);
      const { opts, json } = buildOpts({ ...raw, groups: undefined });
      const v = await readJson(file);
      let diskmap: Diskmap;
      let choice: RedundancyChoice | undefined;
      if (isDiskmapDoc(v)) {
        diskmap = parseDiskmap(v, file);
      } else {
        const topology = parseTopology(v, file);
        choice = chooseRedundancy(topology, opts);
        diskmap = buildDiskmap(topology, opts);
      }
      if (json) {
        printJson({ redundancy: choice ?? null, summary: summary(diskmap), disks: diskRows(diskmap), diskmap: diskmapToJson(diskmap) });
        return;
      }
      printShow(diskmap, choice, groupsShown);
    });

  dm.command('plan')
    .description('plan the next epoch: from an old diskmap (or topology) to a new topology, or drain/fail disks')
    .argument('<old>', 'current diskmap document, or the old topology file')
    .argument('[new]', 'new topology file')
    .option('--drain <disks...>', 'drain these disks (MACHINE/DISK, e.g. box1/0)')
    .option('--fail <disks...>', 'mark these disks failed and plan their repair')
    .option('--drain-node <machines...>', 'drain every disk of these machines (name or DC.ROW.RACK.MACHINE)')
    .option('--replace <old>', 'replace this disk (MACHINE/DISK) with the one given by --with, the new device in first')
    .option('--with <disk>', 'the new disk of --replace: MACHINE/DISK:SIZE[:INCARNATION], e.g. box1/3:6TB:5c1e9a0b7d3f4a21')
    .option('--bucket-size <size>', 'bucket size when <old> is a topology')
    .option('--scheme <scheme>', 'scheme when <old> is a topology')
    .option('--unsafe', 'allow a single copy when <old> is a topology of one disk')
    .option('--data-class <class>', 'disk class that holds data: hdd or ssd')
    .option('--headroom <policy>', 'spare room to rebuild a lost disk when <old> is a topology: auto, disk or none')
    .option('--out <file>', 'write the next diskmap document to this file')
    .option('--moves <n>', 'moves to list', '20')
    .option('--json', 'print the plan as JSON')
    .action(async (oldFile: string, newFile: string | undefined, raw: Record<string, unknown>) => {
      const movesShown = parseOptions(groupsOptSchema, raw.moves);
      const drain = (raw.drain as string[] | undefined) ?? [];
      const failed = (raw.fail as string[] | undefined) ?? [];
      const drainNodes = (raw.drainNode as string[] | undefined) ?? [];
      const replace = raw.replace as string | undefined;
      const withDisk = raw.with as string | undefined;
      const outFile = raw.out as string | undefined;
      const { opts, json } = buildOpts({ ...raw, drain: undefined, fail: undefined, out: undefined, moves: undefined, drainNode: undefined, replace: undefined, with: undefined });
      if (newFile === undefined && drain.length === 0 && failed.length === 0 && drainNodes.length === 0 && replace === undefined) {
        throw usageError('plan needs a new topology file, --drain DISK, --drain-node MACHINE, --replace OLD --with NEW or --fail DISK');
      }
      if ((replace === undefined) !== (withDisk === undefined)) throw usageError('--replace OLD and --with MACHINE/DISK:SIZE go together');
      if (replace !== undefined && (newFile !== undefined || drain.length + failed.length + drainNodes.length > 0)) {
        throw usageError('--replace is planned on its own (no new topology, --drain or --fail with it)');
      }
      if (drainNodes.length > 0 && (newFile !== undefined || drain.length + failed.length > 0)) throw usageError('--drain-node is planned on its own');
      const { diskmap: old } = await loadMapOrTopology(oldFile, opts);
      let plan: PlanResult;
      if (replace !== undefined) {
        const m = /^([^/:]+)\/(\d{1,5}):([^:]+)(?::([0-9a-fA-F]{1,16}))?$/.exec(withDisk as string);
        const size = m === null ? undefined : parseSize(m[3] as string);
        if (m === null || size === undefined || size <= 0) throw usageError(`--with "${withDisk as string}": expected MACHINE/DISK:SIZE[:INCARNATION], e.g. box1/3:6TB:5c1e9a0b7d3f4a21`);
        const incarnation = m[4] !== undefined ? BigInt(`0x${m[4]}`) : BigInt(`0x${randomBytes(8).toString('hex')}`);
        plan = planReplace(old, replace, { machine: m[1] as string, disk: Number(m[2]), capacityBytes: size, incarnation });
      } else if (drainNodes.length > 0) {
        plan = planNodeDrain(old, drainNodes);
      } else {
        let topology: Topology = newFile !== undefined ? parseTopology(await readJson(newFile), newFile) : old.topology;
        if (drain.length > 0) topology = withDiskState(topology, drain, 'draining');
        if (failed.length > 0) topology = withDiskState(topology, failed, 'failed');
        plan = planChange(old, topology, { reason: [newFile !== undefined ? `topology ${newFile}` : '', ...drain.map((d) => `drain ${d}`), ...failed.map((d) => `fail ${d}`)].filter(Boolean).join('; ') });
      }
      if (plan.refused !== undefined) {
        if (json) printJson({ refused: plan.refused, epoch: old.epoch });
        throw new CairnError('ENOTEMPTY', `plan refused:\n  ${plan.refused.join('\n  ')}`);
      }
      const next = plan.diskmap;
      const movement = next === old ? { movedShare: 0, localShare: 0, minimumShare: 0 } : movementBetween(old, next);
      if (outFile !== undefined && next !== old) await writeFileDurable(outFile, serializeDiskmap(next));
      const kinds = { move: 0, repair: 0, new: 0 };
      for (const m of plan.moves) kinds[m.kind]++;
      const figures = summarizePlan(old, plan);
      if (json) {
        printJson({
          summary: figures,
          fromEpoch: old.epoch,
          epoch: next.epoch,
          changed: next !== old,
          warnings: plan.warnings,
          movement,
          counts: { ...kinds, keyMoves: plan.keyMoves.length },
          diff: next.diff === null || next === old ? null : diskmapToJson(next).diff,
          diskmap: diskmapToJson(next),
        });
        return;
      }
      if (next === old) {
        out(`nothing to change: the diskmap stays at epoch ${old.epoch}`);
        for (const w of plan.warnings) out(`warning: ${w}`);
        return;
      }
      const before = summary(old);
      const after = summary(next);
      out(`plan: epoch ${old.epoch} → ${next.epoch} (${next.diff?.reason ?? ''})`);
      out(`  disks added ${next.diff?.addedDisks.length ?? 0}, removed ${next.diff?.removedDisks.length ?? 0}, state changes ${next.diff?.stateChanges.length ?? 0}`);
      out(`  groups ${before.groups} → ${after.groups} (${next.diff?.addedGroups.length ?? 0} new, ${next.diff?.retiredGroups.length ?? 0} retired); usable ${formatBytes(before.usableBytes)} → ${formatBytes(after.usableBytes)}`);
      out(`  bucket moves: ${kinds.move} copy, ${kinds.repair} rebuild, ${kinds.new} new-group buckets; key-space hand-overs: ${plan.keyMoves.length}`);
      out(`  data crossing disks: ${pct(movement.movedShare)} (minimum ${pct(movement.minimumShare)}); copied within a disk: ${pct(movement.localShare)}`);
      out(`  bytes to move: at most ${formatBytes(figures.maxBytes)} (${kinds.move + kinds.repair} bucket(s) of ${formatBytes(old.bucketSizeBytes)}, if full)`);
      if (figures.from.length > 0 || figures.to.length > 0) {
        const fromText = figures.from.map((r) => `${r.disk} ${r.buckets}`).join(', ');
        const toText = figures.to.map((r) => `${r.disk} ${r.buckets}`).join(', ');
        out(`  from: ${fromText === '' ? '-' : fromText} (rebuilt slots have no readable source)`);
        out(`  to:   ${toText}`);
      }
      for (const w of plan.warnings) out(`warning: ${w}`);
      if (plan.moves.length > 0) {
        out(`\nbucket moves (first ${Math.min(movesShown, plan.moves.length)} of ${plan.moves.length}):`);
        out(
          formatTable(
            ['kind', 'group', 'shard', 'from', 'to'],
            plan.moves.slice(0, movesShown).map((m) => [m.kind, m.group, m.index, m.from === null ? '-' : formatBucketId(m.from), formatBucketId(m.to)]),
          ),
        );
      }
      if (outFile !== undefined) out(`\nwrote the epoch ${next.epoch} diskmap to ${outFile}`);
    });

  dm.command('explain-failure')
    .description('what a failure of disks or machines does: degraded and lost groups, unreadable data, writes')
    .argument('<file>', 'diskmap document or topology file')
    .option('--disk <disks...>', 'failed disks (MACHINE/DISK, e.g. box1/0, or DC.ROW.RACK.MACHINE.DISK)')
    .option('--machine <machines...>', 'failed machines (name or DC.ROW.RACK.MACHINE)')
    .option('--bucket-size <size>', 'bucket size when <file> is a topology')
    .option('--scheme <scheme>', 'scheme when <file> is a topology')
    .option('--unsafe', 'allow a single copy when <file> is a topology of one disk')
    .option('--data-class <class>', 'disk class that holds data: hdd or ssd')
    .option('--json', 'print the report as JSON')
    .action(async (file: string, raw: Record<string, unknown>) => {
      const disks = (raw.disk as string[] | undefined) ?? [];
      const machines = (raw.machine as string[] | undefined) ?? [];
      const { opts, json } = buildOpts({ ...raw, disk: undefined, machine: undefined });
      if (disks.length === 0 && machines.length === 0) throw usageError('explain-failure needs --disk DISK and/or --machine MACHINE');
      const { diskmap } = await loadMapOrTopology(file, opts);
      const r = analyzeFailure(diskmap, { disks, machines });
      if (json) {
        printJson(r);
        return;
      }
      out(`failure of ${[...disks, ...machines].join(', ')} in "${diskmap.topology.name}" epoch ${diskmap.epoch} (${schemeText(diskmap.scheme)}):`);
      for (const line of r.summary) out(`  ${line}`);
      out('');
      out(
        formatTable(
          ['groups', 'count', 'share of data'],
          [
            ['healthy', r.healthyGroups, pct(1 - r.degradedShare - r.unreadableShare)],
            ['degraded (readable, to repair)', r.degradedGroups.length, pct(r.degradedShare)],
            ['lost (unreadable)', r.lostGroups.length, pct(r.unreadableShare)],
          ],
        ),
      );
      out(`\nfewest shards left in a group: ${r.minShardsLeft} of ${r.width}; writes: ${r.writeState} (${r.writesMayContinue ? 'may continue' : 'should stop'}${r.writesMayContinue && !r.newWritesProtected ? ', without redundancy until repaired' : ''})`);
    });
}
