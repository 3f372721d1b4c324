/**
 * A node or a disk down (docs/chunk.md "A node or disk down", issue 13), on a cluster of real
 * `cairn start` processes in the appliance's shape (3 nodes × 3 directory disks, EC 4+2):
 *  1. strong-write throughput and p99 with every node up, then with one node killed (kill -9);
 *  2. catch-up: writes go on through an outage of 60 s, the node
 *     is restarted, and the time until every guest shard went home (no handoff bucket holds one)
 *     is measured from the moment the node is ready;
 *  3. repair: with DATA bytes stored (2 GiB; --quick 256 MiB), a disk directory is removed; the
 *     time from the loss to full health (the repair job done) and the rate at which the lost
 *     disk's shard bytes were rebuilt, against the raw disk (dd on the same file system, same
 *     run: sequential write with fsync, and direct read); client write throughput during the
 *     repair against before it.
 * The repair throttle (daemon.repair.rateBytesPerSec) is set to 1 GiB/s here so that the rate
 * measured is what the repair can do; the default is 64 MiB/s.
 *
 * Run alone: `npx tsx bench/avail.ts [--quick]`; or `npm run bench -- --only avail`.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, rename, stat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { report, type BenchSuite, type BenchTable } from './table.js';
import { phase, restartNode, startLocalCluster, type LocalCluster } from './local-cluster.js';
import { FileClient } from '../src/server/file-client.js';

const MIB = 1024 * 1024;

async function until<T>(fn: () => Promise<T | undefined | false>, what: string, ms = 300_000, stepMs = 100): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Files under the shard folders of the buckets whose name matches, on every disk of every node; with bytes. */
async function shardFiles(dir: string, bucket: (name: string) => boolean, disk = (_: string) => true): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  for (const node of (await readdir(dir)).filter((n) => /^node\d+$/.test(n))) {
    for (const d of (await readdir(join(dir, node))).filter((x) => /^disk\d+$/.test(x) && disk(`${node}/${x}`))) {
      for (const b of (await readdir(join(dir, node, d)).catch(() => [] as string[])).filter(bucket)) {
        for (const sub of await readdir(join(dir, node, d, b, 'shards')).catch(() => [] as string[])) {
          for (const f of await readdir(join(dir, node, d, b, 'shards', sub)).catch(() => [] as string[])) {
            files++;
            bytes += (await stat(join(dir, node, d, b, 'shards', sub, f)).catch(() => ({ size: 0 }))).size;
          }
        }
      }
    }
  }
  return { files, bytes };
}
const guests = (dir: string): Promise<{ files: number; bytes: number }> => shardFiles(dir, (b) => /-ffff-/.test(b));

/** Distinct file contents without generating random bytes per put: a random pool, stamped. */
function contentOf(pool: Buffer, i: number, size: number): Buffer {
  const off = (i * 4099) % (pool.length - size);
  const b = Buffer.from(pool.subarray(off, off + size));
  b.writeUInt32LE(i >>> 0, 0);
  b.writeUInt32LE(Date.now() >>> 0, 4);
  return b;
}

/** dd on the cluster's file system: sequential write (fsync at the end) and direct read, MB/s. */
function rawDisk(dir: string, bytes: number): { writeMBs: number; readMBs: number } {
  const f = join(dir, 'raw-dd.bin');
  const rate = (out: string): number => {
    const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(out);
    return m ? Number(m[1]) / Number(m[2]) / 1e6 : 0;
  };
  const count = String(Math.max(1, Math.round(bytes / MIB)));
  const wOut = execFileSync('sh', ['-c', `dd if=/dev/zero of=${f} bs=1M count=${count} conv=fsync 2>&1`], { encoding: 'utf8' });
  const rOut = execFileSync('sh', ['-c', `dd if=${f} of=/dev/null bs=1M iflag=direct 2>&1`], { encoding: 'utf8' });
  execFileSync('rm', ['-f', f]);
  return { writeMBs: +rate(wOut).toFixed(1), readMBs: +rate(rOut).toFixed(1) };
}

async function roleOf(fc: FileClient): Promise<Map<number, string>> {
  return new Map((await fc.cluster()).nodes.map((n) => [n.nodeId, n.role]));
}

export async function runAvail(quick: boolean): Promise<BenchTable[]> {
  const N = quick ? 40 : 150;
  const FILE = MIB;
  const OUTAGE_S = 60;
  const DATA = quick ? 256 * MIB : 2048 * MIB;
  const pool = randomBytes(64 * MIB);
  let seq = 0;
  const c: LocalCluster = await startLocalCluster(3, {
    disks: 3,
    diskSizeBytes: 8 * 1024 * MIB,
    configure: (cfg) => ({
      ...cfg,
      daemon: { ...(cfg.daemon as object), controllerIntervalMs: 500, repair: { catchUpIntervalMs: 1_000, downGraceMs: 3_600_000, rateBytesPerSec: 1024 * MIB } },
    }),
  });
  const rows: BenchTable[] = [];
  try {
    const fc = new FileClient(c.endpoints[0]!);
    const cl = await until(async () => {
      const x = await fc.cluster();
      return x.diskmapEpoch >= 1 ? x : undefined;
    }, 'the first diskmap');
    // A put that fails (an overloaded machine: a metadata call past its deadline) is counted, not fatal.
    const failures: string[] = [];
    const put = (size: number) => async (): Promise<void> => {
      const i = seq++;
      try {
        await fc.put(`/b-${i}`, [contentOf(pool, i, size)], { mode: 'strong' });
      } catch (err) {
        failures.push(String(err).slice(0, 160));
      }
    };

    // 1. all up, then one node down
    await phase(8, 4, put(FILE)); // warm-up
    const up = await phase(N, 8, put(FILE));
    const roles = await roleOf(fc);
    const victim = [2, 3].find((id) => roles.get(id) === 'follower') ?? 3;
    c.procs[victim - 1]!.kill('SIGKILL');
    await new Promise((r) => c.procs[victim - 1]!.once('exit', r));
    const down = await phase(N, 8, put(FILE));

    // 2. writes through the rest of an outage, then catch-up
    const outageEnd = Date.now() + Math.max(0, OUTAGE_S * 1000 - down.seconds * 1000);
    let during = 0;
    while (Date.now() < outageEnd) {
      await put(FILE)();
      during++;
    }
    const missed = await guests(c.dir);
    const tBack = Date.now();
    await restartNode(c, victim - 1);
    const tReady = Date.now();
    await until(async () => (await guests(c.dir)).files === 0, 'every guest shard home', 600_000, 200);
    const catchUpS = (Date.now() - tReady) / 1000;
    rows.push({
      title: `Writes with one node down (strong puts of 1 MiB, 8 in flight, ${N} each; ${cl.scheme} on 3 nodes × 3 disks)`,
      headers: ['phase', 'puts/s', 'MB/s', 'p50 ms', 'p99 ms', 'vs all up'],
      rows: [
        ['all up', up.opsPerSec, +((up.opsPerSec * FILE) / 1e6).toFixed(1), up.p50, up.p99, '100%'],
        [`node ${victim} killed (-9)`, down.opsPerSec, +((down.opsPerSec * FILE) / 1e6).toFixed(1), down.p50, down.p99, `${Math.round((100 * down.opsPerSec) / Math.max(1, up.opsPerSec))}%`],
      ],
      notes: ['goal: ≥ 70% of all-up throughput with one node down'],
    });
    rows.push({
      title: `Catch-up after a ${OUTAGE_S} s outage with writes in between`,
      headers: ['outage s', 'files written during', 'guest shards', 'guest MB', 'node start s', 'catch-up s (ready → no guest left)'],
      rows: [[OUTAGE_S, N + during, missed.files, +(missed.bytes / 1e6).toFixed(1), +((tReady - tBack) / 1000).toFixed(1), +catchUpS.toFixed(1)]],
      notes: ['goal: catch-up under 10 s; the guests are what the node missed (nothing else is read or compared)'],
    });

    // 3. repair of a lost disk with DATA stored
    let stored = (up.opsPerSec > 0 ? 2 * N + during + 8 : 0) * FILE;
    const BIG = 8 * MIB;
    const fill = Math.max(0, Math.ceil((DATA - stored) / BIG));
    await phase(fill, 4, put(BIG));
    stored += fill * BIG;
    const before = await phase(N, 8, put(FILE));
    const lostDisk = join(c.dir, 'node2', 'disk1');
    const lostBytes = (await shardFiles(c.dir, (b) => /^[0-9a-f]{8}-/.test(b), (d) => d === 'node2/disk1')).bytes;
    const t0 = Date.now();
    await rename(lostDisk, `${lostDisk}.gone`);
    let duringRepair: Awaited<ReturnType<typeof phase>> | undefined;
    const load = (async () => {
      // Client writes while the repair runs (started once it is under way).
      await until(async () => ((await fc.cluster()).repair?.state === 'repairing' ? true : undefined), 'the repair to start', 120_000, 100);
      duringRepair = await phase(N, 8, put(FILE));
    })();
    const done = await until(async () => {
      const r = (await fc.cluster()).repair;
      return r !== null && r.state === 'done' && r.lost.length >= 1 ? r : undefined;
    }, 'the repair to finish', 1_800_000, 200);
    const repairS = (Date.now() - t0) / 1000;
    await load.catch(() => undefined);
    const raw = rawDisk(c.dir, Math.min(lostBytes, 1024 * MIB) || 256 * MIB);
    const rateMBs = lostBytes / 1e6 / repairS;
    rows.push({
      title: `Repair of a lost disk (${(stored / 2 ** 30).toFixed(2)} GiB of files stored; the lost disk held ${(lostBytes / 2 ** 20).toFixed(0)} MiB of shards)`,
      headers: ['loss → full health s', 'lost shard MB/s rebuilt', 'chunk MB checked', 'shards rebuilt', 'raw disk write MB/s (dd, fsync)', 'raw disk read MB/s (dd, direct)', 'repair vs raw write'],
      rows: [[+repairS.toFixed(1), +rateMBs.toFixed(1), +(done.bytesDone / 1e6).toFixed(0), done.shardsRebuilt, raw.writeMBs, raw.readMBs, `${Math.round((100 * rateMBs) / Math.max(0.1, raw.writeMBs))}%`]],
      notes: [
        'loss → full health includes failure detection (the node checks its disks every controllerIntervalMs = 500 ms here) and the counting pass',
        'repair rate: the bytes of shards the lost disk held, rebuilt elsewhere (each from k = 4 others), per second of the whole repair; goal ≥ 50% of the raw disk',
        'the raw disk is the same file system (one virtual disk under every node\'s directories); repair throttle 1 GiB/s (default 64 MiB/s)',
      ],
    });
    rows.push({
      title: 'Client writes during the repair (strong puts of 1 MiB, 8 in flight)',
      headers: ['phase', 'puts/s', 'p50 ms', 'p99 ms', 'vs before'],
      rows: [
        ['before the loss', before.opsPerSec, before.p50, before.p99, '100%'],
        ['during the repair', duringRepair?.opsPerSec ?? '-', duringRepair?.p50 ?? '-', duringRepair?.p99 ?? '-', duringRepair !== undefined ? `${Math.round((100 * duringRepair.opsPerSec) / Math.max(1, before.opsPerSec))}%` : '-'],
      ],
      notes: [duringRepair !== undefined && duringRepair.seconds > repairS ? 'the client phase outlasted the repair: part of it ran after' : 'the client phase ran within the repair'],
    });
    if (failures.length > 0) rows[rows.length - 1]!.notes!.push(`${failures.length} put(s) failed in the whole run (not retried), e.g. ${failures[0]}`);
    fc.close();
    await rm(`${lostDisk}.gone`, { recursive: true, force: true });
  } finally {
    await c.stop();
  }
  return rows;
}

export const availSuite: BenchSuite = { name: 'avail', run: ({ quick }) => runAvail(quick) };

if (import.meta.url === `file://${process.argv[1]}`) {
  const quick = process.argv.includes('--quick');
  await report('avail', await runAvail(quick));
}
