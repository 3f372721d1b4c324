/**
 * The mount benchmark end to end: a 3-process local cluster (bench/local-cluster.ts) whose node 1
 * daemon serves a weak and a strong mount (daemon.mounts), then bench/mount-bench.sh (local dir,
 * passthrough FUSE through Cairn's binding, Cairn weak — one run) and bench-fs.sh on the strong
 * mount, then node 1's VFS/FUSE metrics. Knobs of bench-fs.sh pass through the environment
 * (SEQ_SIZE, RAND_RUNTIME, NFILES, NTX; STRONG_* for the strong run). MOUNT_PROFILE=DIR writes a
 * --cpu-prof of every node process there.
 * `ttl` (or `all`: everything) adds a weak mount with 30 s VFS and kernel caches (TTL_* knobs).
 *   node --import tsx bench/mount-run.ts [weak|strong|both|ttl|all]   (default both)
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MetaClient } from '../src/meta/client.js';
import { startLocalCluster } from './local-cluster.js';

const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const which = process.argv[2] ?? 'both';
const mnt = (name: string): string => `/tmp/cairn-mount-bench-${process.pid}-${name}`;
const weak = mnt('weak');
const strong = mnt('strong');
// A weak mount with 30 s caches (VFS and kernel) instead of 1 s: what the staleness bound costs.
const longTtl = mnt('weak-ttl30');
const withLong = which === 'ttl' || which === 'all';
mkdirSync(weak, { recursive: true });
mkdirSync(strong, { recursive: true });
if (withLong) mkdirSync(longTtl, { recursive: true });

const prof = process.env.MOUNT_PROFILE;
if (prof !== undefined) {
  mkdirSync(prof, { recursive: true });
  process.env.BENCH_NODE_ARGS = `--cpu-prof --cpu-prof-dir=${prof}`;
}
const c = await startLocalCluster(3, {
  metrics: true,
  configure: (cfg) => {
    if (cfg.nodeId !== 1) return cfg;
    const d = (cfg.daemon ?? {}) as Record<string, unknown>;
    const mounts: Array<Record<string, unknown>> = [{ dir: weak, mode: 'weak' }, { dir: strong, mode: 'strong' }];
    if (withLong) mounts.push({ dir: longTtl, mode: 'weak', cacheTtlMs: 30_000, attrTimeoutS: 30 });
    return { ...cfg, daemon: { ...d, mounts } };
  },
});
if (prof !== undefined) delete process.env.BENCH_NODE_ARGS;

const mounted = (dir: string): boolean => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
const run = (cmd: string, args: string[], env: Record<string, string> = {}): Promise<number> =>
  new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: ROOT, stdio: 'inherit', env: { ...process.env, ...env } });
    p.on('exit', (code) => resolve(code ?? 1));
  });

try {
  const all = withLong ? [weak, strong, longTtl] : [weak, strong];
  for (let i = 0; i < 120 && !all.every(mounted); i++) await new Promise((r) => setTimeout(r, 500));
  if (!all.every(mounted)) throw new Error('node 1 did not mount its daemon.mounts in 60 s');
  // Whether node 1 (the mounts' node) leads the metadata group changes every metadata round trip.
  const leader = async (): Promise<number> => {
    const m = new MetaClient({ endpoints: [c.endpoints[0]!] });
    try {
      return (await m.status()).leaderId;
    } finally {
      m.close();
    }
  };
  process.stdout.write(`=== metadata leader at start: node ${await leader()}\n`);
  if (which === 'weak' || which === 'both' || which === 'all') await run('bash', [join(ROOT, 'bench', 'mount-bench.sh'), weak, 'cairn-weak']);
  if (withLong) {
    mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
    const env: Record<string, string> = { BENCH_OUT: join(ROOT, 'bench', 'results', 'mount-cairn-weak-ttl30.txt') };
    for (const k of ['SEQ_SIZE', 'RAND_RUNTIME', 'NFILES', 'NTX']) {
      const v = process.env[`TTL_${k}`];
      if (v !== undefined) env[k] = v;
    }
    await run('bash', [process.env.BENCH_FS ?? '/work/shared/bench/dfs/bench-fs.sh', longTtl, 'cairn-weak-ttl30'], env);
  }
  if (which === 'strong' || which === 'both' || which === 'all') {
    const env: Record<string, string> = { BENCH_OUT: join(ROOT, 'bench', 'results', 'mount-cairn-strong.txt') };
    for (const k of ['SEQ_SIZE', 'RAND_RUNTIME', 'NFILES', 'NTX']) {
      const v = process.env[`STRONG_${k}`];
      if (v !== undefined) env[k] = v;
    }
    mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
    await run('bash', [process.env.BENCH_FS ?? '/work/shared/bench/dfs/bench-fs.sh', strong, 'cairn-strong'], env);
  }
  process.stdout.write(`=== metadata leader at the end: node ${await leader()}\n`);
  const m = await (await fetch(`http://${c.metricsAddresses[0]}/metrics`)).text();
  process.stdout.write('=== node 1 metrics (vfs)\n');
  process.stdout.write(`${m.split('\n').filter((l) => /^cairn_vfs_|^cairn_fuse_/.test(l)).join('\n')}\n`);
} finally {
  await c.stop();
  for (const d of [weak, strong, longTtl]) {
    if (mounted(d)) await run('fusermount3', ['-uz', d]);
    await rmdir(d).catch(() => undefined);
  }
}
