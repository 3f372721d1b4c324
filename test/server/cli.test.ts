/**
 * The file CLI against real node processes: three `cairn start` daemons, then `cairn put`,
 * `get`, `cat`, `commit` and `status` as real processes, with --json where a script reads them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInterface } from 'node:readline';
import { randomBytes, createHash } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { runCairn, spawnCairn, tempDir } from '../helpers/env.js';
import { clusterConfigs } from './helpers.js';

describe('cairn put / get / cat / commit / status', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const procs: ChildProcess[] = [];
  let endpoints: string[] = [];

  beforeAll(async () => {
    dir = await tempDir('cairn-cli-');
    const cfgs = await clusterConfigs(dir.path, 3);
    endpoints = cfgs.map((c) => c.listen);
    await Promise.all(
      cfgs.map(async (c) => {
        const file = join(dir.path, `node${c.nodeId}.json`);
        await mkdir(dir.path, { recursive: true });
        await writeFile(file, JSON.stringify(c));
        const p = spawnCairn(['start', '--config', file]);
        procs.push(p);
        await new Promise<void>((resolve, reject) => {
          const rl = createInterface({ input: p.stdout! });
          rl.on('line', (l) => l.includes('"ready":true') && resolve());
          p.once('exit', (code) => reject(new Error(`node ${c.nodeId} exited with ${code}`)));
        });
      }),
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.all(
      procs.map(async (p) => {
        if (p.exitCode !== null) return;
        const done = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
        await done;
        clearTimeout(t);
      }),
    );
    await dir.remove();
  }, 60_000);

  it('round-trips a file and reports the cluster and the file as durable', async () => {
    const local = join(dir.path, 'in.bin');
    const data = randomBytes(3 * 1024 * 1024 + 77);
    await writeFile(local, data);
    // The cluster first needs its diskmap (and a leader: an election may run meanwhile): status --json shows it.
    let cluster: { diskmapEpoch: number; leaderId: number; nodes: Array<{ disks: Array<{ inDiskmap: boolean }> }> } | undefined;
    for (let i = 0; i < 100; i++) {
      const st = await runCairn(['status', '--json', '--endpoint', endpoints[0]!]);
      if (st.code === 0) {
        cluster = JSON.parse(st.stdout) as typeof cluster;
        if (cluster!.diskmapEpoch > 0 && cluster!.leaderId > 0) break;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(cluster!.diskmapEpoch).toBe(1);
    expect(cluster!.leaderId).toBeGreaterThan(0);
    expect(cluster!.nodes.flatMap((n) => n.disks.map((d) => d.inDiskmap))).toEqual([true, true, true]);

    const put = await runCairn(['put', local, '/cli/in.bin', '--strong', '--json', '--endpoint', endpoints[0]!], { timeoutMs: 120_000 });
    expect(put.stderr).toBe('');
    expect(put.code).toBe(0);
    expect(JSON.parse(put.stdout)).toMatchObject({ path: '/cli/in.bin', size: data.length, state: 'durable' });

    const out = join(dir.path, 'out.bin');
    const get = await runCairn(['get', '/cli/in.bin', out, '--endpoint', endpoints[2]!], { timeoutMs: 120_000 });
    expect(get.code).toBe(0);
    const back = await readFile(out);
    expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));

    const small = join(dir.path, 'small.txt');
    await writeFile(small, 'hello from the cli\n');
    const weak = await runCairn(['put', small, '/cli/small.txt', '--weak', '--json', '--endpoint', endpoints[1]!]);
    expect(weak.code, weak.stderr).toBe(0);
    // A weak put reports the version it made visible (it once said 0 for a file at version 1).
    expect(JSON.parse(weak.stdout)).toMatchObject({ path: '/cli/small.txt', version: 1 });
    const commit = await runCairn(['commit', '/cli/small.txt', '--wait', 'durable', '--json', '--endpoint', endpoints[1]!]);
    expect(commit.code).toBe(0);
    expect(JSON.parse(commit.stdout)).toMatchObject({ state: 'durable', pendingBytes: 0 });
    const cat = await runCairn(['cat', '/cli/small.txt', '--endpoint', endpoints[0]!]);
    expect(cat.code).toBe(0);
    expect(cat.stdout).toBe('hello from the cli\n');

    const fst = await runCairn(['status', '/cli/in.bin', '--json', '--endpoint', endpoints[1]!]);
    expect(fst.code).toBe(0);
    expect(JSON.parse(fst.stdout)).toMatchObject({ path: '/cli/in.bin', state: 'durable', pendingBytes: 0, size: data.length });

    const human = await runCairn(['status', '--endpoint', endpoints[0]!]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/diskmap: epoch 1/);
    // Disk fill: the 3 MiB file's shards (EC 2+1: 1.5 times its size) are counted on the disks.
    expect(human.stdout).toMatch(/capacity: .*; used .*, free .* \(\d+\.\d% full/);
    expect(human.stdout).toMatch(/used\s+free\s+fill/);
    const js = JSON.parse((await runCairn(['status', '--json', '--endpoint', endpoints[0]!])).stdout) as {
      capacity: { usedBytes: number; freeBytes: number; fill: number };
      nodes: Array<{ disks: Array<{ usedBytes: number; freeBytes: number; capacityBytes: number; fill: number }> }>;
    };
    const disks = js.nodes.flatMap((n) => n.disks);
    for (const d of disks) {
      expect(d.usedBytes + d.freeBytes).toBe(d.capacityBytes);
      expect(d.fill).toBeCloseTo(d.usedBytes / d.capacityBytes);
    }
    expect(js.capacity.usedBytes).toBe(disks.reduce((a, d) => a + d.usedBytes, 0));
    expect(js.capacity.usedBytes).toBeGreaterThanOrEqual(1.5 * data.length);
    expect(js.capacity.fill).toBeGreaterThan(0);
  }, 180_000);

  it('rejects bad arguments as usage errors and missing files with ENOENT', async () => {
    const rel = await runCairn(['cat', 'not/absolute', '--endpoint', endpoints[0]!]);
    expect(rel.code).toBe(2);
    const missing = await runCairn(['cat', '/cli/nope', '--endpoint', endpoints[0]!]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/ENOENT/);
    const badWait = await runCairn(['commit', '/cli/small.txt', '--wait', 'soon', '--endpoint', endpoints[0]!]);
    expect(badWait.code).toBe(2);
    const help = await runCairn(['put', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--strong/);
  }, 60_000);
});
