/**
 * The whole file path on a 3-node cluster of real `cairn start` processes (directory-backed
 * disks, EC 2+1 with one shard per node, fsync on), through the file service as `cairn put` /
 * `cairn get` use it: a large file written strong and weak through node 1 and read back cold
 * through node 3, and small files written strong — beside the DFS anchors measured on this
 * machine (../shared/bench/dfs/RESULTS.md). Server CPU per MiB (or per file) is summed over the
 * three node processes; the client is this process.
 *
 * Run alone: `npx tsx bench/files.ts [--quick]`; or as the "files" suite of `npm run bench`.
 */
import { randomBytes } from 'node:crypto';
import { report, type BenchSuite, type BenchTable } from './table.js';
import { phase, startLocalCluster } from './local-cluster.js';
import { FileClient } from '../src/server/file-client.js';
import { MetaClient } from '../src/meta/client.js';

const MIB = 1024 * 1024;
const PIECE = MIB;

function* pieces(data: Buffer): Generator<Buffer> {
  for (let at = 0; at < data.length; at += PIECE) yield data.subarray(at, Math.min(data.length, at + PIECE));
}

async function drain(c: FileClient, path: string): Promise<number> {
  const { data } = await c.get(path);
  let n = 0;
  for await (const p of data) n += p.length;
  return n;
}

export const filesSuite: BenchSuite = {
  name: 'files',
  async run({ quick }): Promise<BenchTable[]> {
    const cluster = await startLocalCluster(3);
    const [n1, , n3] = cluster.endpoints.map((e) => new FileClient(e)) as [FileClient, FileClient, FileClient];
    const rows: Array<Array<string | number>> = [];
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    try {
      // The diskmap is built once every node registered its disks: until then a put is refused.
      const deadline = Date.now() + 60_000;
      for (;;) {
        try {
          await n1.put('/warm', [randomBytes(64 * 1024)], { mode: 'strong', mkdirs: true });
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      // Warm-up, not measured (as meta-ops does): the nodes' code is cold after start (tsx-compiled
      // modules, V8 not yet optimized); the first small files cost about twice the later ones.
      const warm = randomBytes(4096);
      await phase(quick ? 60 : 200, 4, (i) => n1.put(`/warm-up/f${i}`, [warm], { mode: i % 2 === 0 ? 'strong' : 'weak', mkdirs: true }));
      await n1.put('/warm-up/big', pieces(randomBytes(16 * MIB)), { mode: 'strong' });
      await drain(n3, '/warm-up/big');
      const measure = async (name: string, units: number, unit: 'MiB' | 'file', conc: number, op: (i: number) => Promise<unknown>): Promise<void> => {
        const cpu0 = sum(cluster.cpuMs());
        const c0 = process.cpuUsage();
        // A large file is one operation of `units` MiB; small files are `units` operations.
        const r = await phase(unit === 'MiB' ? 1 : units, conc, op);
        const serverMs = sum(cluster.cpuMs()) - cpu0;
        const c1 = process.cpuUsage(c0);
        const per = units;
        const rate = unit === 'MiB' ? +(units / r.seconds).toFixed(1) : r.opsPerSec;
        rows.push([name, conc, rate, unit === 'MiB' ? 'MiB/s' : 'files/s', unit === 'file' ? r.p50 : '-', unit === 'file' ? r.p99 : '-',
          +(serverMs / per).toFixed(2), +((c1.user + c1.system) / 1000 / per).toFixed(2), `ms/${unit}`]);
      };
      const bigMiB = quick ? 64 : 256;
      const big = randomBytes(bigMiB * MIB);
      await measure(`write ${bigMiB} MiB, strong (returns durable)`, bigMiB, 'MiB', 1, () => n1.put('/big-strong', pieces(big), { mode: 'strong' }));
      await measure(`write ${bigMiB} MiB, weak, then commit --wait durable`, bigMiB, 'MiB', 1, async () => {
        await n1.put('/big-weak', pieces(big), { mode: 'weak' });
        await n1.commit('/big-weak', 'durable');
      });
      // One unmeasured large read through node 3 first (the weak file, never read there): its read
      // path is cold after start, and a first read ran at a third of later ones.
      await drain(n3, '/big-weak');
      await measure(`read ${bigMiB} MiB through another node (not cached there)`, bigMiB, 'MiB', 1, async () => {
        const n = await drain(n3, '/big-strong');
        if (n !== big.length) throw new Error(`read ${n} bytes of ${big.length}`);
      });
      const small = randomBytes(4096);
      const files = quick ? 100 : 400;
      for (const conc of [1, 16]) {
        await measure(`4 KiB files, strong (each durable when put returns)`, files, 'file', conc, (i) => n1.put(`/small-${conc}/f${i}`, [small], { mode: 'strong', mkdirs: true }));
      }
      await measure(`4 KiB files, weak (durable in the node's cache)`, files, 'file', 16, (i) => n1.put(`/small-weak/f${i}`, [small], { mode: 'weak', mkdirs: true }));
      // Where a small put's time goes: the same inline write straight to the metadata (no file
      // service, no Put stream), the part of a put that is the one Raft write.
      const meta = new MetaClient({ endpoints: cluster.endpoints });
      try {
        for (const conc of [1, 16]) {
          await measure(`  of which: the metadata write alone (MetaClient.putFile)`, files, 'file', conc, (i) => meta.putFile(`/small-meta-${conc}/f${i}`, small, { mkdirs: true }));
        }
      } finally {
        meta.close();
      }
      await measure(`read 4 KiB files through another node`, files, 'file', 16, (i) => drain(n3, `/small-16/f${i}`));
    } finally {
      for (const c of [n1, n3]) c.close();
      await cluster.stop();
    }
    return [
      {
        title: 'files through the file service, 3-node cluster of real processes (EC 2+1, one disk per node, fsync on)',
        headers: ['run', 'in flight', 'rate', 'unit', 'p50 ms', 'p99 ms', 'server CPU', 'client CPU', 'per'],
        rows,
        notes: [
          'anchors (../shared/bench/dfs/RESULTS.md, same machine, FUSE + fio/small-file loop): seq write GlusterFS disperse 2+1 114 MiB/s, MooseFS 282, local ext4 356;',
          '  seq read (cold) GlusterFS 230 MiB/s, MooseFS 372, local 1,389; file creates GlusterFS 170/s, MooseFS 734/s, local 9,441/s (no fsync per file there)',
          'server CPU: user + system time of the 3 node processes over the run (10 ms clock ticks); client: this process',
          `after an unmeasured warm-up of ${quick ? 60 : 200} small files and one 16 MiB file; the large read after one unmeasured read of the other large file through node 3`,
          'all three nodes and the client share 2 cores: a real 3-machine cluster has 3 times the CPU',
        ],
      },
    ];
  },
};

const isMain = process.argv[1] !== undefined && /bench[\\/]files\.ts$/.test(process.argv[1]);
if (isMain) {
  filesSuite.run({ quick: process.argv.includes('--quick') }).then(
    (tables) => report('files', tables),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
