/**
 * What the benchmarks over a real cluster share: a 3-node cluster of `cairn start` processes on
 * 127.0.0.1 with directory-backed disks (`cairn init`), CPU time of processes from /proc, and a
 * closed-loop phase runner (n operations, `conc` in flight, latency percentiles).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A base port with the next `count` ports free. */
async function basePort(count: number): Promise<number> {
  for (let p = 21_000 + Math.floor(Math.random() * 20_000); ; p += count + 4) {
    let free = true;
    for (let i = 0; i < count && free; i++) free = await portFree(p + i);
    if (free) return p;
  }
}

function cairn(args: string[]): ChildProcess {
  // BENCH_NODE_ARGS: extra node flags for every cairn process (e.g. --cpu-prof, not allowed in NODE_OPTIONS).
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  return spawn(process.execPath, [...nodeArgs, '--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), ...args], {
    cwd: ROOT,
    // The cluster is --insecure: no credentials (not ./.cairn-local/client of `npm start`).
    env: { ...process.env, CAIRN_LOG_LEVEL: 'warn', CAIRN_CREDENTIALS: 'none' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

async function runToEnd(child: ChildProcess): Promise<string> {
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  if (code !== 0) throw new Error(`cairn exited with ${code}`);
  return out;
}

async function waitReady(p: ChildProcess): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let out = '';
    p.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('"ready":true')) resolve();
    });
    p.once('exit', (c) => reject(new Error(`node exited with ${c}`)));
  });
}

export interface LocalCluster {
  endpoints: string[];
  /** The directory `cairn init` wrote (node configs, data dirs, disks); removed by stop() unless kept. */
  dir: string;
  /** host:port of each node's /metrics (startLocalCluster with metrics), else empty. */
  metricsAddresses: string[];
  procs: ChildProcess[];
  /** CPU time (ms) each node process has used so far. */
  cpuMs(): number[];
  stop(): Promise<void>;
}

/**
 * Start `nodes` `cairn start` processes (configs and disks from `cairn init`); resolves once all
 * are ready. `metrics`: serve each node's /metrics (on ports after the nodes' own).
 */
export async function startLocalCluster(
  nodes = 3,
  opts: { metrics?: boolean; configure?: (cfg: Record<string, unknown>) => Record<string, unknown>; keepDir?: boolean; disks?: number; diskSizeBytes?: number } = {},
): Promise<LocalCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-cluster-'));
  const procs: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const p of procs) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : undefined)));
    if (opts.keepDir !== true) await rm(dir, { recursive: true, force: true });
  };
  try {
    const port = await basePort(opts.metrics === true ? 2 * nodes : nodes);
    const metrics = opts.metrics === true ? ['--metrics-base-port', String(port + nodes)] : [];
    const shape = [...(opts.disks !== undefined ? ['--disks', String(opts.disks)] : []), ...(opts.diskSizeBytes !== undefined ? ['--disk-size-bytes', String(opts.diskSizeBytes)] : [])];
    const init = JSON.parse(await runToEnd(cairn(['init', '--nodes', String(nodes), '--dir', dir, '--base-port', String(port), ...metrics, ...shape, '--insecure', '--json']))) as {
      nodes: Array<{ config: string; listen: string }>;
    };
    if (opts.configure) for (const n of init.nodes) writeFileSync(n.config, JSON.stringify(opts.configure(JSON.parse(readFileSync(n.config, 'utf8')) as Record<string, unknown>)));
    for (const n of init.nodes) procs.push(cairn(['start', '--config', n.config]));
    await Promise.all(procs.map(waitReady));
    return {
      endpoints: init.nodes.map((n) => n.listen),
      dir,
      metricsAddresses: opts.metrics === true ? init.nodes.map((_, i) => `127.0.0.1:${port + nodes + i}`) : [],
      procs,
      cpuMs: () => procs.map((p) => cpuMs(p.pid)),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Start node i (0-based) of a cluster again (after a kill): its process replaces procs[i]; resolves once ready. */
export async function restartNode(c: LocalCluster, i: number): Promise<void> {
  const p = cairn(['start', '--config', join(c.dir, `node${i + 1}`, 'cairn.json')]);
  c.procs[i] = p;
  await waitReady(p);
}

/** CPU time (user + system, ms) a process has used so far, from /proc (0 where /proc is missing). */
export function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    // Fields after the command name: state is field 3, utime 14, stime 15 (clock ticks, 100/s on Linux).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}

export function pct(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Run n operations with `conc` in flight; returns ops/s and latency percentiles in ms. */
export async function phase(n: number, conc: number, op: (i: number) => Promise<unknown>): Promise<{ opsPerSec: number; p50: number; p99: number; seconds: number }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: conc }, async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        const s = process.hrtime.bigint();
        await op(i);
        lat.push(Number(process.hrtime.bigint() - s) / 1e6);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  return { opsPerSec: Math.round(n / seconds), p50: +pct(lat, 0.5).toFixed(2), p99: +pct(lat, 0.99).toFixed(2), seconds };
}
