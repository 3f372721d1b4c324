/**
 * Diskmap benchmark: build a diskmap of 1,000 disks × 800 buckets (50 machines × 20 disks of
 * 800 × 64 GiB), map 1 million content hashes to placement groups, plan the addition of 10 disks
 * (a new machine), and measure the size of the document. --quick uses 100 disks.
 */
import { randomBytes } from 'node:crypto';
import { buildDiskmap, groupForKey, movementBetween, parseDiskmap, parseTopology, planChange, schemeText, serializeDiskmap } from '../src/diskmap/index.js';
import { measure as measureWall, type BenchSuite, type BenchTable } from './table.js';

/** Wall time, heap growth, and CPU time (this machine is shared: CPU time is the steadier figure). */
async function measure<T>(fn: () => T): Promise<{ value: T; ms: number; heapMiB: number; cpuMs: number }> {
  const c0 = process.cpuUsage();
  const r = await measureWall(fn);
  const c = process.cpuUsage(c0);
  return { ...r, cpuMs: (c.user + c.system) / 1000 };
}

const BUCKET_BYTES = 64 * 2 ** 30;

function topology(machines: number, disksPerMachine: number, bucketsPerDisk: number, extraMachineDisks = 0) {
  const ms = Array.from({ length: machines }, (_, m) => ({
    name: `node${m}`,
    machine: m,
    disks: Array.from({ length: disksPerMachine }, (_, d) => ({ disk: d, capacity: bucketsPerDisk * BUCKET_BYTES })),
  }));
  if (extraMachineDisks > 0) {
    ms.push({ name: `node${machines}`, machine: machines, disks: Array.from({ length: extraMachineDisks }, (_, d) => ({ disk: d, capacity: bucketsPerDisk * BUCKET_BYTES })) });
  }
  return parseTopology({ name: 'bench', machines: ms });
}

export const diskmapSuite: BenchSuite = {
  name: 'diskmap',
  async run({ quick }) {
    const machines = quick ? 5 : 50;
    const disks = 20;
    const buckets = 800;
    const keysN = quick ? 100_000 : 1_000_000;
    const t0 = topology(machines, disks, buckets);
    const built = await measure(() => buildDiskmap(t0));
    const dm = built.value;
    const keys = randomBytes(32 * keysN);
    const mapped = await measure(() => {
      let sum = 0;
      for (let i = 0; i < keysN; i++) sum += groupForKey(dm, keys.subarray(i * 32, i * 32 + 32)).id;
      return sum;
    });
    // Same machines (same incarnations) plus a new machine of 10 disks.
    const t1 = topology(machines, disks, buckets, 10);
    const planned = await measure(() => planChange(dm, t1));
    const mv = movementBetween(dm, planned.value.diskmap);
    const ser = await measure(() => serializeDiskmap(planned.value.diskmap));
    const parsed = await measure(() => parseDiskmap(ser.value));
    const groups = dm.groups.length;
    const rows: BenchTable['rows'] = [
      [`build: ${machines * disks} disks × ${buckets} buckets`, built.ms.toFixed(0), built.cpuMs.toFixed(0), built.heapMiB.toFixed(0), `${groups} groups, ${schemeText(dm.scheme)} per ${dm.failureDomain}`],
      [`map ${keysN.toLocaleString('en')} keys`, mapped.ms.toFixed(0), mapped.cpuMs.toFixed(0), mapped.heapMiB.toFixed(0), `${((keysN / mapped.ms) * 1000 / 1e6).toFixed(1)} M keys/s`],
      [
        'plan: add 10 disks (a new machine)',
        planned.ms.toFixed(0),
        planned.cpuMs.toFixed(0),
        planned.heapMiB.toFixed(0),
        `${planned.value.diskmap.diff?.addedGroups.length ?? 0} new groups, ${planned.value.moves.length} bucket moves; data crossing disks ${(mv.movedShare * 100).toFixed(2)}% (minimum ${(mv.minimumShare * 100).toFixed(2)}%, C/(T+C) ${((10 / (machines * disks + 10)) * 100).toFixed(2)}%)`,
      ],
      ['serialize the epoch-2 document', ser.ms.toFixed(0), ser.cpuMs.toFixed(0), ser.heapMiB.toFixed(0), `${(ser.value.length / 2 ** 20).toFixed(1)} MiB of JSON`],
      ['parse + validate it', parsed.ms.toFixed(0), parsed.cpuMs.toFixed(0), parsed.heapMiB.toFixed(0), ''],
    ];
    return [
      {
        title: 'diskmap: build, address, plan',
        headers: ['operation', 'wall ms', 'cpu ms', 'heap MiB', 'notes'],
        rows,
        notes: [
          'heap MiB = heapUsed growth across the operation (garbage included, GC not forced): a rough figure.',
          'cpu ms = user+system CPU of the process (includes GC threads); on a loaded machine it is steadier than wall time.',
          'one process, this shared 2-core machine; pure logic, no I/O.',
        ],
      },
    ];
  },
};
