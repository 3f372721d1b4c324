/**
 * Cluster-wide locks (src/vfs/locks.ts) on a 3-process cluster with a weak mount on node 1 (A)
 * and a strong mount on node 2 (B): lock acquire/release latency through the metadata client and
 * through a mount (fcntl from perl, timed inside the process), and SQLite DELETE-journal
 * transactions/s with the writer on A, alone and with a reader polling on B; lock operations per
 * transaction from node 1's metrics say where the time goes. `npm run bench -- --only locks`.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MetaClient } from '../src/meta/client.js';
import { LOCK_EOF } from '../src/meta/lock-table.js';
import { pct, startLocalCluster } from './local-cluster.js';
import { report, type BenchSuite, type BenchTable } from './table.js';

const exec = promisify(execFile);

const PERL_LOOP = `use strict; use Fcntl; use Time::HiRes qw(time);
my ($file, $n) = @ARGV;
open(my $fh, '+<', $file) or die "open: $!";
my @lat;
for (my $i = 0; $i < $n; $i++) {
  my $t0 = time;
  my $w = pack('s s x4 q q i x4', F_WRLCK, 0, 0, 0, 0);
  fcntl($fh, F_SETLK, $w) or die "lock: $!";
  my $t1 = time;
  my $u = pack('s s x4 q q i x4', F_UNLCK, 0, 0, 0, 0);
  fcntl($fh, F_SETLK, $u) or die "unlock: $!";
  my $t2 = time;
  print sprintf("%.3f %.3f\\n", ($t1 - $t0) * 1000, ($t2 - $t1) * 1000);
}
`;

async function sh(cmd: string, timeoutMs = 600_000): Promise<string> {
  return (await exec('bash', ['-c', cmd], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 })).stdout;
}

async function lockOps(metrics: string): Promise<number> {
  const text = await (await fetch(`http://${metrics}/metrics`)).text();
  let n = 0;
  for (const l of text.split('\n')) if (l.startsWith('cairn_vfs_lock_ops_total{')) n += Number(l.split(' ').pop());
  return n;
}

export const locksSuite: BenchSuite = {
  name: 'locks',
  async run({ quick }): Promise<BenchTable[]> {
    let mountA = '';
    let mountB = '';
    const cluster = await startLocalCluster(3, {
      metrics: true,
      configure: (cfg) => {
        const c = cfg as Record<string, any>;
        const id = Number(c.nodeId);
        if (id === 1 || id === 2) {
          const dir = join(String(c.dataDir), '..', `mnt${id}`);
          mkdirSync(dir, { recursive: true });
          if (id === 1) mountA = dir;
          else mountB = dir;
          c.daemon = { ...c.daemon, mounts: [{ dir, mode: id === 1 ? 'weak' : 'strong' }] };
        }
        return c;
      },
    });
    const meta = new MetaClient({ endpoints: cluster.endpoints });
    const n = quick ? 100 : 300;
    const txs = quick ? 100 : 300;
    const tables: BenchTable[] = [];
    try {
      // Mounts are made in the background once the node runs: wait for both, and for the diskmap.
      const deadline = Date.now() + 120_000;
      for (;;) {
        try {
          await sh(`grep -q ' ${mountA} ' /proc/self/mountinfo && grep -q ' ${mountB} ' /proc/self/mountinfo && head -c 100000 /dev/urandom > '${mountA}/warm' && cat '${mountB}/warm' > /dev/null`, 30_000);
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      // 1. The metadata client: one Raft write per operation on the leader.
      const f = await meta.stat('/warm');
      await meta.lockSession('bench.1', 30_000, true);
      const acq: number[] = [];
      const rel: number[] = [];
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await meta.lock({ ino: f.ino, session: 'bench.1', owner: 'o', kind: 'posix', mode: 'write', start: 0, end: LOCK_EOF, pid: 1 });
        const t1 = performance.now();
        await meta.lock({ ino: f.ino, session: 'bench.1', owner: 'o', kind: 'posix', mode: 'unlock', start: 0, end: LOCK_EOF, pid: 1 });
        rel.push(performance.now() - t1);
        acq.push(t1 - t0);
      }
      await meta.lockSessionEnd('bench.1');
      acq.sort((a, b) => a - b);
      rel.sort((a, b) => a - b);
      // 2. Through the mount (FUSE → VFS → metadata), timed inside the process.
      const perl = join(cluster.dir, 'lockloop.pl');
      writeFileSync(perl, PERL_LOOP);
      const out = await sh(`perl '${perl}' '${mountA}/warm' ${n}`);
      const pairs = out.trim().split('\n').map((l) => l.split(' ').map(Number) as [number, number]);
      const mAcq = pairs.map((p) => p[0]).sort((a, b) => a - b);
      const mRel = pairs.map((p) => p[1]).sort((a, b) => a - b);
      tables.push({
        title: 'Lock acquire/release latency (ms), uncontended, 1 in flight',
        headers: ['path', 'ops', 'acquire p50', 'acquire p99', 'release p50', 'release p99'],
        rows: [
          ['MetaClient → leader (one Raft write each)', n, acq[Math.floor(n / 2)]!.toFixed(2), pct(acq, 0.99).toFixed(2), rel[Math.floor(n / 2)]!.toFixed(2), pct(rel, 0.99).toFixed(2)],
          ['fcntl F_SETLK through node 1\'s mount', n, mAcq[Math.floor(n / 2)]!.toFixed(2), pct(mAcq, 0.99).toFixed(2), mRel[Math.floor(n / 2)]!.toFixed(2), pct(mRel, 0.99).toFixed(2)],
        ],
        notes: ['release through the mount includes the commit of the file\'s dirty data (none here) and the lease check'],
      });
      // 3. SQLite DELETE journal: the writer on A (one process, one INSERT per transaction).
      const dbA = `${mountA}/bench.db`;
      const dbB = `${mountB}/bench.db`;
      await sh(`sqlite3 '${dbA}' 'PRAGMA journal_mode=delete; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);'`);
      const script = join(cluster.dir, 'tx.sql');
      writeFileSync(script, `PRAGMA busy_timeout=60000;\n${Array.from({ length: txs }, () => "INSERT INTO t(v) VALUES(randomblob(100));").join('\n')}\n`);
      const rows: Array<Array<string | number>> = [];
      for (const withReader of [false, true]) {
        const ops0 = await lockOps(cluster.metricsAddresses[0]!);
        let reads = 0;
        let stopReader = false;
        const reader = withReader
          ? (async () => {
              while (!stopReader) {
                await sh(`sqlite3 '${dbB}' 'PRAGMA busy_timeout=60000; SELECT count(*) FROM t;'`).catch(() => undefined);
                reads++;
              }
            })()
          : Promise.resolve();
        const t0 = performance.now();
        await new Promise<void>((resolve, reject) => {
          const p = spawn('bash', ['-c', `sqlite3 '${dbA}' < '${script}'`], { stdio: 'ignore' });
          p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`sqlite3 exited ${code}`))));
        });
        const s = (performance.now() - t0) / 1000;
        stopReader = true;
        await reader;
        const ops = (await lockOps(cluster.metricsAddresses[0]!)) - ops0;
        rows.push([withReader ? 'writer on A, reader polling on B' : 'writer on A alone', txs, (txs / s).toFixed(1), (s * 1000 / txs).toFixed(1), (ops / txs).toFixed(1), withReader ? reads : '-']);
      }
      const check = (await sh(`sqlite3 '${dbB}' 'PRAGMA integrity_check; SELECT count(*) FROM t;'`)).trim().replace(/\n/g, ' ');
      tables.push({
        title: 'SQLite DELETE journal through the mounts, transactions/s',
        headers: ['run', 'transactions', 'tx/s', 'ms per tx', 'lock ops per tx on A', 'reads on B'],
        rows,
        notes: [`after both runs on B: ${check}`, 'goal (issue 14): >= 200 tx/s with readers elsewhere'],
      });
    } finally {
      meta.close();
      await cluster.stop();
    }
    return tables;
  },
};

if (import.meta.url === `file://${process.argv[1]}`) {
  locksSuite.run({ quick: process.argv.includes('--quick') }).then(
    (tables) => report('locks', tables),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
