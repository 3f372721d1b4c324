/**
 * Metadata operations on a 3-node cluster of real `cairn start` processes on 127.0.0.1:
 * mkdir, create, stat (lookup + getattr, linearizable and serializable), readdir, rename and
 * unlink through MetaClient, at 1 and 64 requests in flight — ops/s, p50 and p99 latency.
 * Anchor (published): JuiceFS with etcd as its metadata engine creates about 1,800 files/s and
 * takes 1.9 ms for a mkdir.
 *
 * Run alone: `npx tsx bench/meta-ops.ts [--quick] [--conc 1,64] [--ops N]`; or as the "meta-ops"
 * suite of `npm run bench`. To profile the nodes, preload a profiler through NODE_OPTIONS
 * (`--cpu-prof` itself is refused there): the nodes inherit this process's environment.
 */
import { report, type BenchSuite, type BenchTable } from './table.js';
import { phase, startLocalCluster } from './local-cluster.js';
import { MetaClient } from '../src/meta/client.js';

/** Options of a direct run (profiling): only some concurrencies, another operation count. */
interface DirectOptions {
  concurrencies?: number[];
  ops?: number;
}

export const metaOpsSuite: BenchSuite & { runWith(quick: boolean, o: DirectOptions): Promise<BenchTable[]> } = {
  name: 'meta-ops',
  run({ quick }): Promise<BenchTable[]> {
    return this.runWith(quick, {});
  },
  async runWith(quick: boolean, direct: DirectOptions): Promise<BenchTable[]> {
    const cluster = await startLocalCluster(3);
    const rows: Array<Array<string | number>> = [];
    let idleMsPerSec = 0;
    try {
      const endpoints = cluster.endpoints;
      const client = new MetaClient({ endpoints });
      // find the leader so that writes do not pay a forwarding hop
      for (;;) {
        try {
          const s = await client.status();
          if (s.leaderAddress !== '') {
            client.close();
            break;
          }
        } catch {
          /* not yet */
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      // Warm-up, not measured: the first few hundred operations after `cairn start` run cold
      // code (tsx-compiled modules, V8 not yet optimized) while the node's services finish
      // starting; measured cold, a mkdir at 1 in flight went from 7.7 ms (first 100) to 5.1 ms
      // (last 100). bench:meta warms every phase for 1 s the same way. Both paths are warmed:
      // at 1 in flight every write is its own RPC, at 64 MetaClient coalesces them into Batch
      // requests (warmed at 4 in flight only, the first phase at 1 in flight ran ~1.5x slower).
      {
        const w = new MetaClient({ endpoints });
        await w.mkdir('/warm');
        const wd = (await w.stat('/warm')).ino;
        const wn = quick ? 300 : 1000;
        for (const [k, conc] of [['a', 1], ['b', 16]] as const) {
          await phase(wn, conc, (i) => w.mkdir({ parent: wd, name: `${k}d${i}` }));
          await phase(wn, conc, (i) => w.create({ parent: wd, name: `${k}f${i}` }));
          await phase(wn, conc, (i) => w.lookup(wd, `${k}f${i}`));
          await phase(wn, conc, (i) => w.rename({ parent: wd, name: `${k}f${i}` }, { parent: wd, name: `${k}r${i}` }));
          await phase(wn, conc, (i) => w.unlink({ parent: wd, name: `${k}r${i}` }));
        }
        w.close();
      }
      // What the idle cluster burns (timers, heartbeats, background services): CPU that every
      // phase's per-operation figure includes in proportion to its duration.
      const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
      const idle0 = sum(cluster.cpuMs());
      await new Promise((r) => setTimeout(r, 2000));
      idleMsPerSec = Math.round(((sum(cluster.cpuMs()) - idle0) / 2000) * 1000);
      for (const conc of direct.concurrencies ?? [1, 64]) {
        // --quick: 400 operations at 1 in flight, 2000 at 64 (400 took 0.1-0.2 s, too short for
        // CPU figures read in 10 ms clock ticks).
        const n = direct.ops ?? (quick ? (conc === 1 ? 400 : 2000) : 3000);
        const c = new MetaClient({ endpoints });
        const d = `/b${conc}`;
        await c.mkdir(d);
        const fileIno: number[] = [];
        const dirIno = (await c.stat(d)).ino;
        // CPU per operation, summed over the three server processes and for this (client) process:
        // the figure that does not depend on how busy the shared machine is.
        let cpu0 = cluster.cpuMs();
        let client0 = process.cpuUsage();
        const add = (name: string, r: { opsPerSec: number; p50: number; p99: number }, count = n): void => {
          const used = cluster.cpuMs().map((ms, i) => ms - cpu0[i]!);
          const client1 = process.cpuUsage(client0);
          const perOp = (ms: number): number => +(ms / count).toFixed(3);
          rows.push([name, conc, count, r.opsPerSec, r.p50, r.p99, perOp(used.reduce((a, b) => a + b, 0)), perOp(Math.max(...used)),
            perOp((client1.user + client1.system) / 1000)]);
          cpu0 = cluster.cpuMs();
          client0 = process.cpuUsage();
        };
        add('mkdir', await phase(n, conc, (i) => c.mkdir({ parent: dirIno, name: `d${i}` })));
        add('create', await phase(n, conc, async (i) => {
          fileIno[i] = (await c.create({ parent: dirIno, name: `f${i}` })).attr.ino;
        }));
        add('stat (lookup+getattr)', await phase(n, conc, (i) => c.lookup(dirIno, `f${i}`)));
        add('stat serializable', await phase(n, conc, (i) => c.lookup(dirIno, `f${i}`, { serializable: true })));
        const pages = Math.max(1, Math.floor(n / 10));
        add('readdir (page of 100)', await phase(pages, conc, (i) => c.readdir({ ino: dirIno }, { limit: 100, after: `f${i}` })), pages);
        add('rename', await phase(n, conc, (i) => c.rename({ parent: dirIno, name: `f${i}` }, { parent: dirIno, name: `r${i}` })));
        add('unlink', await phase(n, conc, (i) => c.unlink({ parent: dirIno, name: `r${i}` })));
        c.close();
      }
    } finally {
      await cluster.stop();
    }
    return [
      {
        title: 'metadata operations, 3-node cluster (real processes, 127.0.0.1, fsync on)',
        headers: ['operation', 'in flight', 'ops', 'ops/s', 'p50 ms', 'p99 ms', 'server CPU ms/op', 'busiest node', 'client CPU ms/op'],
        rows,
        notes: [
          'anchor: JuiceFS + etcd metadata engine, about 1,800 creates/s and 1.9 ms per mkdir (published figures)',
          'client in one process; writes go to the leader (followers redirect), reads are linearizable unless marked',
          'server CPU ms/op: user + system time of the 3 node processes over the phase, per operation (10 ms clock ticks); busiest node: the one that used most (the leader)',
          `after an unmeasured warm-up of ${quick ? 300 : 1000} of each write and lookup at 1 and at 16 in flight`,
          `the idle cluster used ${idleMsPerSec} ms of CPU per second (3 nodes together)`,
        ],
      },
    ];
  },
};

const isMain = process.argv[1] !== undefined && /bench[\\/]meta-ops\.ts$/.test(process.argv[1]);
if (isMain) {
  const quick = process.argv.includes('--quick');
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const conc = arg('--conc');
  const ops = arg('--ops');
  metaOpsSuite.runWith(quick, {
    ...(conc ? { concurrencies: conc.split(',').map(Number) } : {}),
    ...(ops ? { ops: Number(ops) } : {}),
  }).then(
    (tables) => report('meta-ops', tables),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
