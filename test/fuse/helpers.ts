/**
 * A real 3-node cluster of `cairn start` processes whose daemons serve FUSE mounts: node 1 a
 * weak mount from daemon.mounts, node 2 a strong one made by `cairn mount --mode strong`.
 * Programs run as child processes (never synchronously: nothing here may block on the mount).
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { eventually, freePort, runCairn, spawnCairn, tempDir, waitReady } from '../helpers/env.js';

const exec = promisify(execFile);

export async function isMounted(dir: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[4] === dir);
}

/** Run a program; rejects with its stderr on a non-zero exit. */
export async function sh(cmd: string, opts: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await exec('bash', ['-c', cmd], { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 });
  return r.stdout;
}

export interface MountedCluster {
  dir: string;
  /** Mount points: [0] node 1 (weak), [1] node 2 (strong). */
  mounts: string[];
  endpoints: string[];
  /** Node config files, by node (0-based). */
  configs: string[];
  /** Node 1's Prometheus /metrics URL. */
  metricsUrl: string;
  procs: Array<ChildProcess | undefined>;
  /** kill -9 node i (0-based). */
  kill(i: number): Promise<void>;
  /** Start node i again (after kill). */
  start(i: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startMountedCluster(): Promise<MountedCluster> {
  const tmp = await tempDir('cairn-fuse-');
  const dir = tmp.path;
  const mounts = [join(dir, 'mnt1'), join(dir, 'mnt2')];
  for (const m of mounts) await mkdir(m);
  const ports = [await freePort(), await freePort(), await freePort()];
  const metricsPort = await freePort();
  // cairn init wants consecutive ports: write the configs from its output, with ours.
  const base = ports[0]!;
  const init = await runCairn(['init', '--nodes', '3', '--dir', dir, '--base-port', String(base), '--disk-size-bytes', String(1 << 30), '--insecure', '--json']);
  if (init.code !== 0) throw new Error(`cairn init failed: ${init.stderr}`);
  const configs = (JSON.parse(init.stdout) as { nodes: Array<{ config: string; listen: string }> }).nodes;
  for (const [i, n] of configs.entries()) {
    const c = JSON.parse(await readFile(n.config, 'utf8')) as Record<string, any>;
    c.raft = { tickMs: 20, electionTicks: 10, heartbeatTicks: 2 };
    c.daemon = { ...c.daemon, controllerIntervalMs: 200, file: { ...c.daemon?.file, idleCommitDelayMs: 200 }, gc: { enabled: false }, scrub: { enabled: false } };
    if (i === 0) {
      c.daemon.mounts = [{ dir: mounts[0], mode: 'weak' }];
      c.metricsListen = `127.0.0.1:${metricsPort}`;
    }
    await writeFile(n.config, JSON.stringify(c));
  }
  const procs: Array<ChildProcess | undefined> = [undefined, undefined, undefined];
  const start = async (i: number): Promise<void> => {
    const p = spawnCairn(['start', '--config', configs[i]!.config], { env: { CAIRN_LOG_LEVEL: 'warn' } });
    p.stderr?.resume();
    procs[i] = p;
    await waitReady(p);
  };
  const stopOne = async (i: number, signal: NodeJS.Signals): Promise<void> => {
    const p = procs[i];
    if (p === undefined) return;
    procs[i] = undefined;
    if (p.exitCode === null && p.signalCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      await gone;
    }
  };
  const stop = async (): Promise<void> => {
    for (let i = 0; i < 3; i++) await stopOne(i, 'SIGTERM').catch(() => undefined);
    for (const m of mounts) if (await isMounted(m)) await exec('fusermount3', ['-uz', m]).catch(() => undefined);
    await tmp.remove().catch(() => undefined);
  };
  try {
    await Promise.all([0, 1, 2].map(start));
    await eventually(() => isMounted(mounts[0]!), 30_000, 100);
    // node 2's mount by the CLI, as a user would
    await eventually(async () => {
      const r = await runCairn(['mount', mounts[1]!, '--mode', 'strong', '--endpoint', configs[1]!.listen, '--json']);
      return r.code === 0;
    }, 30_000, 500);
    return {
      dir,
      mounts,
      endpoints: configs.map((c) => c.listen),
      configs: configs.map((c) => c.config),
      metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
      procs,
      kill: (i) => stopOne(i, 'SIGKILL'),
      start,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
