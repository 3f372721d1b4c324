/**
 * Plumbing of the availability tests (test/server/availability*.test.ts): a local cluster of real
 * `cairn start` processes made by `cairn init --nodes N --disks D --insecure`, with fast
 * controller, catch-up and repair timers (and a short down grace when asked); a write loop of
 * strong puts whose acknowledged files are remembered with their SHA-256; and the end check —
 * every file read through every live node, byte for byte, and durable.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { FileClient } from '../../src/server/file-client.js';
import { MetaClient } from '../../src/meta/client.js';
import { loadDiskmap } from '../../src/server/diskmap-controller.js';
import { diskEntries, diskLabel, type Diskmap } from '../../src/diskmap/index.js';
import { eventually, runCairn, spawnCairn, tempDir, waitReady } from '../helpers/env.js';

export interface AvailNode {
  id: number;
  config: string;
  listen: string;
  dir: string;
  proc?: ChildProcess;
}

export class AvailCluster {
  readonly nodes: AvailNode[] = [];
  /** Every acknowledged file: path → SHA-256. */
  readonly files = new Map<string, string>();
  private seq = 0;
  /** Stop switches of the write loops (close() stops any a failed test left running). */
  private readonly loops: Array<() => void> = [];
  private dir: { path: string; remove: () => Promise<void> } | undefined;

  static async make(opts: { nodes: number; disks: number; diskBytes: number; daemon?: Record<string, unknown> }): Promise<AvailCluster> {
    const c = new AvailCluster();
    c.dir = await tempDir('cairn-avail-');
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const init = await runCairn(['init', '--nodes', String(opts.nodes), '--disks', String(opts.disks), '--dir', c.dir.path, '--base-port', String(base), '--disk-size-bytes', String(opts.diskBytes), '--insecure', '--json']);
    expect(init.code, init.stderr).toBe(0);
    for (const n of (JSON.parse(init.stdout) as { nodes: Array<{ nodeId: number; config: string; listen: string }> }).nodes) {
      const cfg = JSON.parse(await readFile(n.config, 'utf8')) as { daemon?: Record<string, unknown> };
      cfg.daemon = { ...(cfg.daemon ?? {}), controllerIntervalMs: 200, ...(opts.daemon ?? {}) };
      await writeFile(n.config, JSON.stringify(cfg));
      c.nodes.push({ id: n.nodeId, config: n.config, listen: n.listen, dir: join(c.dir.path, `node${n.nodeId}`) });
    }
    await Promise.all(c.nodes.map((n) => c.start(n)));
    return c;
  }

  get path(): string {
    return this.dir!.path;
  }

  async start(n: AvailNode, extra: string[] = []): Promise<void> {
    const p = spawnCairn(['start', '--config', n.config, ...extra], { env: { CAIRN_LOG_LEVEL: 'warn' } });
    n.proc = p;
    let err = '';
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
    await waitReady(p, `node ${n.id}`, () => err);
  }

  /** Stop a node: SIGKILL (a crash), SIGTERM (a clean stop). */
  async stop(n: AvailNode, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = n.proc;
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    p.kill(signal);
    await once(p, 'exit');
  }

  running(n: AvailNode): boolean {
    return n.proc !== undefined && n.proc.exitCode === null && n.proc.signalCode === null;
  }

  async close(): Promise<void> {
    for (const s of this.loops) s();
    for (const n of this.nodes) await this.stop(n);
    await this.dir?.remove();
  }

  /** One strong put of a random file of 64–320 KiB through `via`; recorded once acknowledged durable. */
  async putOne(via: FileClient, prefix = 'loop'): Promise<void> {
    const data = randomBytes(64 * 1024 + Math.floor(Math.random() * 256 * 1024));
    const path = `/${prefix}-${this.seq++}`;
    const r = await via.put(path, [data], { mode: 'strong' });
    expect(r.state).toBe('durable');
    this.files.set(path, createHash('sha256').update(data).digest('hex'));
  }

  /** A write loop until stop() is called; resolves with the count written. */
  writeLoop(via: FileClient, prefix = 'loop'): { stop: () => Promise<number>; count: () => number } {
    let stopped = false;
    let n = 0;
    const done = (async () => {
      while (!stopped) {
        await this.putOne(via, prefix);
        n++;
      }
      return n;
    })();
    done.catch(() => undefined); // a failed put is reported by stop(), never as an unhandled rejection
    this.loops.push(() => {
      stopped = true;
    });
    return {
      count: () => n,
      stop: async () => {
        stopped = true;
        return done;
      },
    };
  }

  /** The current diskmap as node `via` reads it. */
  async diskmap(via: AvailNode): Promise<Diskmap> {
    const meta = new MetaClient({ endpoints: [via.listen] });
    try {
      const dm = loadDiskmap(await meta.diskmapGet());
      if (dm === undefined) throw new Error('no diskmap yet');
      return dm;
    } finally {
      meta.close();
    }
  }

  /** State of a disk ("node2/1") in the current map, or undefined when it is not in it. */
  async diskState(via: AvailNode, ref: string): Promise<string | undefined> {
    return diskEntries((await this.diskmap(via)).topology).find((e) => diskLabel(e) === ref)?.d.state;
  }

  /** Shard files in the handoff buckets (bucket number ffff) of every disk of every node. */
  async guests(): Promise<number> {
    const { readdir } = await import('node:fs/promises');
    let count = 0;
    for (const n of this.nodes) {
      for (const d of (await readdir(n.dir)).filter((x) => /^disk\d+$/.test(x))) {
        const disk = join(n.dir, d);
        for (const b of await readdir(disk).catch(() => [] as string[])) {
          if (!/-ffff-/.test(b)) continue;
          for (const sub of await readdir(join(disk, b, 'shards')).catch(() => [] as string[])) count += (await readdir(join(disk, b, 'shards', sub)).catch(() => [])).length;
        }
      }
    }
    return count;
  }

  /** Every acknowledged file, through every running node, byte for byte; and durable (unless a node is known down). */
  async checkAll(opts: { durable?: boolean } = {}): Promise<void> {
    for (const n of this.nodes) {
      if (!this.running(n)) continue;
      const c = new FileClient(n.listen);
      try {
        for (const [path, sha] of this.files) expect(await readAll(c, path), `${path} through node ${n.id}`).toBe(sha);
      } finally {
        c.close();
      }
    }
    if (opts.durable === false) return;
    const via = new FileClient(this.nodes.find((n) => this.running(n))!.listen);
    try {
      for (const path of this.files.keys()) expect((await via.commitStatus(path)).state, path).toBe('durable');
    } finally {
      via.close();
    }
  }
}

export async function readAll(c: FileClient, path: string): Promise<string> {
  const { data } = await c.get(path);
  const h = createHash('sha256');
  for await (const p of data) h.update(p);
  return h.digest('hex');
}

export { eventually, runCairn };
