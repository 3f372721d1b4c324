/**
 * A real 3-node cluster of `cairn start` processes for the DFS cache (docs/dfs-cache.md): nodes 1
 * and 2 each serve a coherent FUSE mount (daemon.mounts[].durability), node 3 none. Short write
 * leases (5 s) so that lease expiry after kill -9 fits in a test.
 */
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { eventually, freePort, runCairn, spawnCairn, tempDir, waitReady } from '../helpers/env.js';
import { isMounted } from '../fuse/helpers.js';

const exec = promisify(execFile);

export const LEASE_TTL_MS = 5_000;

export interface DfsCluster {
  dir: string;
  /** Mount points: [0] on node 1, [1] on node 2. */
  mounts: string[];
  endpoints: string[];
  configs: string[];
  kill(i: number): Promise<void>;
  start(i: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startDfsCluster(durability: 'local' | 'replicated' | 'committed' = 'local'): Promise<DfsCluster> {
  const tmp = await tempDir('cairn-dfs-');
  const dir = tmp.path;
  const mounts = [join(dir, 'mnt1'), join(dir, 'mnt2')];
  for (const m of mounts) await mkdir(m);
  const base = await freePort();
  const init = await runCairn(['init', '--nodes', '3', '--dir', dir, '--base-port', String(base), '--disk-size-bytes', String(1 << 30), '--insecure', '--json'], { timeoutMs: 120_000 });
  if (init.code !== 0) throw new Error(`cairn init failed: ${init.stderr}`);
  const nodes = (JSON.parse(init.stdout) as { nodes: Array<{ config: string; listen: string }> }).nodes;
  for (const [i, n] of nodes.entries()) {
    const c = JSON.parse(await readFile(n.config, 'utf8')) as Record<string, any>;
    c.raft = { tickMs: 20, electionTicks: 10, heartbeatTicks: 2 };
    c.daemon = {
      ...c.daemon,
      controllerIntervalMs: 200,
      file: { ...c.daemon?.file, idleCommitDelayMs: 200, leaseTtlMs: LEASE_TTL_MS },
      gc: { enabled: false },
      scrub: { enabled: false },
    };
    if (i < 2) c.daemon.mounts = [{ dir: mounts[i], durability }];
    await writeFile(n.config, JSON.stringify(c));
  }
  const procs: Array<ChildProcess | undefined> = [undefined, undefined, undefined];
  const start = async (i: number): Promise<void> => {
    const p = spawnCairn(['start', '--config', nodes[i]!.config], { env: { CAIRN_LOG_LEVEL: process.env.DFS_LOG ?? 'warn' } });
    if (process.env.DFS_LOG !== undefined) p.stderr?.pipe(process.stderr);
    else p.stderr?.resume();
    procs[i] = p;
    await waitReady(p);
    if (i < 2) await eventually(() => isMounted(mounts[i]!), 30_000, 100);
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
  const detach = async (i: number): Promise<void> => {
    const m = mounts[i];
    if (m !== undefined && (await isMounted(m))) await exec('fusermount3', ['-uz', m]).catch(() => undefined);
  };
  const stop = async (): Promise<void> => {
    for (let i = 0; i < 3; i++) await stopOne(i, 'SIGTERM').catch(() => undefined);
    for (let i = 0; i < 2; i++) await detach(i);
    await tmp.remove().catch(() => undefined);
  };
  try {
    await Promise.all([0, 1, 2].map(start));
    return {
      dir,
      mounts,
      endpoints: nodes.map((n) => n.listen),
      configs: nodes.map((n) => n.config),
      kill: async (i) => {
        await stopOne(i, 'SIGKILL');
        await detach(i);
      },
      start,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
