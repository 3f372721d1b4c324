/**
 * `npm run bench:meta [-- --quick] [-- --duration S] [-- --procs N] [-- --conc 1,16,128]`:
 * the metadata anchor. Starts a 3-process Cairn KV Raft group (`cairn kv serve`) on
 * 127.0.0.1, runs the shared harness /work/shared/bench/etcd/kvbench.js against it through
 * bench/adapters/cairn-kv.cjs with the etcd anchor's options (256 B puts on 10k keys,
 * linearizable and serializable gets, 1/16/128 in flight), stops the group, and prints the
 * figures beside etcd's published ones (RESULTS.md of the anchor), server CPU per op included.
 * `--transport lane|grpc|both` picks how the benchmark client talks to the servers (the lane,
 * like Cairn's own clients, by default; plain grpc-js to compare).
 * Then the metadata operations on a 3-node `cairn start` cluster (bench/meta-ops.ts: mkdir,
 * create, stat, readdir, rename, unlink at 1 and 64 in flight, beside the JuiceFS + etcd
 * anchor); `--kv-only` skips them (they also run alone: `npm run bench -- --only meta-ops`).
 */
import { parseArgs } from 'node:util';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { report, type BenchTable } from './table.js';
import { metaOpsSuite } from './meta-ops.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ANCHOR_DIR = process.env.CAIRN_ETCD_ANCHOR ?? '/work/shared/bench/etcd';
const KVBENCH = join(ANCHOR_DIR, 'kvbench.js');

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    warmup: { type: 'string', default: '1' },
    conc: { type: 'string', default: '1,16,128' },
    ops: { type: 'string', default: 'put,get-lin,get-ser' },
    procs: { type: 'string', default: '1' },
    keys: { type: 'string', default: '10000' },
    'max-other': { type: 'string' },
    transport: { type: 'string', default: 'lane' },
    'kv-only': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: npm run bench:meta -- [--quick] [--duration S] [--warmup S] [--conc 1,16,128] [--ops put,get-lin,get-ser] [--procs N] [--keys N]\n' +
      '  --quick: 3 s per phase instead of 10 s\n' +
      '  --transport lane|grpc|both: the client adapter speaks the lane (Cairn\'s own clients, default), plain grpc-js, or both in turn\n' +
      '  --kv-only: only the KV comparison with etcd, not the metadata operations that follow it\n' +
      '  --max-other X: shared-machine guard of kvbench: wait for quiet and re-run (up to 3 times) a phase whose foreign load exceeded X cores\n',
  );
  process.exit(0);
}
const durationS = Number(values.duration ?? (values.quick ? 3 : 10));
if (!Number.isFinite(durationS) || durationS <= 0) {
  process.stderr.write('--duration must be a positive number of seconds\n');
  process.exit(2);
}
const transports = values.transport === 'both' ? ['lane', 'grpc'] : [values.transport!];
if (!transports.every((t) => t === 'lane' || t === 'grpc')) {
  process.stderr.write('--transport must be lane, grpc or both\n');
  process.exit(2);
}
if (!existsSync(KVBENCH)) {
  process.stderr.write(`the shared harness ${KVBENCH} is missing (set CAIRN_ETCD_ANCHOR to its folder)\n`);
  process.exit(1);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a !== null && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

interface Row {
  C: number;
  op: string;
  opsPerSec: number;
  p50: number;
  p99: number;
  errors: number;
  misses: number;
  serverCores: number;
  clientCores: number;
  otherCores: number;
}

/** A 3-node Cairn KV group, one process per node. */
async function startCluster(base: string): Promise<{ endpoints: string[]; children: ChildProcess[] }> {
  const ids = [1, 2, 3];
  const endpoints = await Promise.all(ids.map(async () => `127.0.0.1:${await freePort()}`));
  const peers = ids.map((id, i) => ({ id, address: endpoints[i]! }));
  const children: ChildProcess[] = [];
  for (const [i, id] of ids.entries()) {
    const dataDir = join(base, `n${id}`);
    const config = join(base, `n${id}.json`);
    await writeFile(
      config,
      JSON.stringify({ clusterName: 'bench', nodeId: id, listen: endpoints[i], peers, dataDir, cacheDir: join(dataDir, 'cache'), location: { machine: id } }),
    );
    // CAIRN_BENCH_NODE_ARGS: extra node flags for the servers (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
    const extra = (process.env.CAIRN_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...extra, '--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'kv', 'serve', '--config', config], {
      cwd: ROOT,
      env: { ...process.env, CAIRN_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
  }
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve, reject) => {
          let out = '';
          c.stdout!.setEncoding('utf8').on('data', (d: string) => {
            out += d;
            if (out.includes('"ready":true')) resolve();
          });
          c.once('exit', (code) => reject(new Error(`a kv node exited with ${code} during start-up`)));
        }),
    ),
  );
  // Wait for a leader.
  const { KvClient } = await import('../src/raft/kv/client.js');
  const client = new KvClient(endpoints, 2000);
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const st = await Promise.all(endpoints.map((_, i) => client.status(i).catch(() => undefined)));
      if (st.some((s) => s?.role === 'leader') && st.every((s) => s !== undefined && s.leader !== 0)) break;
      if (Date.now() > deadline) throw new Error('no leader elected within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    client.close();
  }
  return { endpoints, children };
}

async function stopCluster(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
          c.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
}

function runKvbench(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [KVBENCH, ...args], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`kvbench exited with ${code}`))));
  });
}

/** etcd's published figures (run1, run3 = 2 client processes, CPU per op) from the anchor's RESULTS.md. */
async function etcdPublished(): Promise<Map<string, { run1: number; p50: number; p99: number; run3: number; cpuMs: number | undefined }>> {
  const out = new Map<string, { run1: number; p50: number; p99: number; run3: number; cpuMs: number | undefined }>();
  let text = '';
  try {
    text = await readFile(join(ANCHOR_DIR, 'RESULTS.md'), 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    if (!['put', 'get-lin', 'get-ser'].includes(cells[0] ?? '')) continue;
    const key = `${cells[0]}@${cells[1]}`;
    if (cells.length === 11) {
      out.set(key, { run1: Number(cells[2]), p50: Number(cells[3]), p99: Number(cells[4]), run3: Number(cells[8]), cpuMs: out.get(key)?.cpuMs });
    } else if (cells.length === 5) {
      const m = /~([\d.]+) ms/.exec(cells[4] ?? '');
      const cur = out.get(key);
      if (cur !== undefined && m !== null) cur.cpuMs = Number(m[1]);
    }
  }
  return out;
}

const base = await mkdtemp(join(tmpdir(), 'cairn-bench-meta-'));
let children: ChildProcess[] = [];
const stopOnSignal = (): void => {
  for (const c of children) c.kill('SIGKILL');
  process.exit(130);
};
process.once('SIGINT', stopOnSignal);
process.once('SIGTERM', stopOnSignal);
/** Rows of one kvbench run per client transport, measured against the same group. */
const rowsBy = new Map<string, Row[]>();
try {
  const c = await startCluster(base);
  children = c.children;
  for (const transport of transports) {
    const out = join(base, `cairn-${transport}.json`);
    await runKvbench(
      [
        '--adapter', join(ROOT, 'bench', 'adapters', 'cairn-kv.cjs'),
        '--endpoints', c.endpoints.join(','),
        '--pids', children.map((x) => x.pid).join(','),
        '--duration', String(durationS),
        '--warmup', values.warmup!,
        '--conc', values.conc!,
        '--ops', values.ops!,
        '--keys', values.keys!,
        '--value-size', '256',
        '--procs', values.procs!,
        '--out', out,
        ...(values['max-other'] !== undefined ? ['--max-other', values['max-other'], '--phase-retries', '3', '--quiet-max-s', '120'] : []),
      ],
      { ...process.env, CAIRN_BENCH_KV_TRANSPORT: transport },
    );
    rowsBy.set(transport, (JSON.parse(await readFile(out, 'utf8')) as { rows: Row[] }).rows);
  }
} finally {
  await stopCluster(children);
  await rm(base, { recursive: true, force: true });
}
const rows: Array<Row & { transport: string }> = [...rowsBy].flatMap(([t, rs]) => rs.map((r) => ({ ...r, transport: t === 'lane' ? 'lane' : 'grpc-js' })));

const etcd = await etcdPublished();
const etcdLive = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).stdout.trim();
// etcd side by side from the same run, when it is installed (the anchor's own scripts start and stop it).
let live: Map<string, Row> | undefined;
let liveNote = 'etcd is not on PATH: no live etcd run (the published figures stand in).';
if (etcdLive !== '') {
  const base = '/tmp/anchors/etcd';
  try {
    spawnSync('mkdir', ['-p', base]);
    const started = spawnSync('bash', [join(ANCHOR_DIR, 'start-cluster.sh')], { encoding: 'utf8' });
    if (started.status !== 0) throw new Error(`start-cluster.sh failed: ${started.stderr}`);
    await new Promise((r) => setTimeout(r, 3000));
    const pids = (await readFile(join(base, 'pids'), 'utf8')).split('\n').filter(Boolean).join(',');
    const out = join(tmpdir(), `cairn-bench-etcd-${process.pid}.json`);
    await runKvbench([
      '--adapter', join(ANCHOR_DIR, 'adapter-etcd.js'),
      '--endpoints', '127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379',
      '--pids', pids, '--duration', String(durationS), '--warmup', values.warmup!, '--conc', values.conc!, '--ops', values.ops!,
      '--keys', values.keys!, '--value-size', '256', '--procs', values.procs!, '--out', out,
    ]);
    live = new Map((JSON.parse(await readFile(out, 'utf8')) as { rows: Row[] }).rows.map((r) => [`${r.op}@${r.C}`, r]));
    await rm(out, { force: true });
    liveNote = `etcd live: ${etcdLive}, same options, same run.`;
  } catch (err) {
    liveNote = `etcd found at ${etcdLive} but the live run failed: ${(err as Error).message}`;
  } finally {
    spawnSync('bash', [join(ANCHOR_DIR, 'stop-cluster.sh')]);
  }
}
const cpuPerOp = (r: Row): number => (r.opsPerSec > 0 ? (r.serverCores * 1000) / r.opsPerSec : NaN);
const table: BenchTable = {
  title: `Cairn KV Raft group (3 processes) vs etcd 3.4 — ${durationS} s per phase, 256 B values, 10k keys, ${values.procs} client process(es)`,
  headers: [
    'op', 'C', 'client rpc', 'cairn ops/s', 'p50 ms', 'p99 ms', 'srv CPU/op ms', 'srv cores', 'cli cores', 'other cores', 'errors',
    'etcd ops/s', 'etcd p50', 'etcd p99', 'etcd 2-proc ops/s', 'etcd CPU/op ms',
    ...(live !== undefined ? ['etcd live ops/s', 'etcd live p50', 'etcd live CPU/op ms'] : []),
  ],
  rows: rows.map((r) => {
    const e = etcd.get(`${r.op}@${r.C}`);
    return [
      r.op, r.C, r.transport, Math.round(r.opsPerSec), r.p50.toFixed(2), r.p99.toFixed(2), cpuPerOp(r).toFixed(3), r.serverCores, r.clientCores, r.otherCores,
      r.errors + r.misses, e?.run1, e?.p50, e?.p99, e?.run3, e?.cpuMs,
      ...(live !== undefined
        ? ((l: Row | undefined) => [l === undefined ? undefined : Math.round(l.opsPerSec), l?.p50.toFixed(2), l === undefined ? undefined : cpuPerOp(l).toFixed(3)])(
            live.get(`${r.op}@${r.C}`),
          )
        : []),
    ];
  }),
  notes: [
    'client rpc: how the benchmark client reached the servers — lane (Cairn\'s own framing, what Cairn\'s clients use) or grpc-js (plain gRPC); the servers and their Raft peers use the lane either way.',
    'etcd columns: published figures of the anchor on this machine (run1, 1 client process; run3 with 2) from ' + join(ANCHOR_DIR, 'RESULTS.md'),
    liveNote,
    'srv CPU/op = CPU time of the 3 server processes per operation (lower is better; the fairest cross-system figure on 2 shared cores).',
    'The machine is shared: foreign load shows in the JSON (otherCores); rerun before drawing conclusions from a single run.',
  ],
};
await report('meta', [table]);
if (!values['kv-only']) await report('meta-ops', await metaOpsSuite.run({ quick: values.quick === true }));
