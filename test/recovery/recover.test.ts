/**
 * Recovery without backups, end to end with real processes: a 3-node cluster (`cairn start`)
 * stores files in strong and weak mode; the nodes stop; every node's metadata, Raft and cache
 * directories are deleted; `cairn recover` rebuilds node directories from the data disks alone
 * (one disk's copy corrupted: another is used); the recovered cluster serves every durable file
 * byte for byte from every node. (A missing disk, two clusters' disks and offline inspection:
 * offline.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { eventually, runCairn, spawnCairn, tempDir } from '../helpers/env.js';
import { clusterConfigs, waitForDiskmap } from '../server/helpers.js';
import { FileClient } from '../../src/server/file-client.js';
import { nodeConfigSchema, type NodeConfig } from '../../src/common/config.js';
import { listCopies } from '../../src/meta/disk-copy.js';
import type { RecoveryReport } from '../../src/server/recover.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function startProc(file: string, procs: ChildProcess[]): Promise<void> {
  const p = spawnCairn(['start', '--config', file]);
  procs.push(p);
  await new Promise<void>((resolve, reject) => {
    const rl = createInterface({ input: p.stdout! });
    rl.on('line', (l) => l.includes('"ready":true') && resolve());
    p.once('exit', (code) => reject(new Error(`${file}: node exited with ${code}`)));
  });
}

async function stopProcs(procs: ChildProcess[]): Promise<void> {
  await Promise.all(
    procs.splice(0).map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return;
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
      await done;
      clearTimeout(t);
    }),
  );
}

async function readAll(c: FileClient, path: string): Promise<Buffer> {
  const { data } = await c.get(path);
  const parts: Buffer[] = [];
  for await (const p of data) parts.push(p);
  return Buffer.concat(parts);
}

async function recoverJson(args: string[]): Promise<{ code: number; report?: RecoveryReport; stderr: string }> {
  const r = await runCairn(['recover', ...args, '--json']);
  let report: RecoveryReport | undefined;
  try {
    report = JSON.parse(r.stdout) as RecoveryReport;
  } catch {
    report = undefined;
  }
  return { code: r.code ?? -1, report, stderr: r.stderr };
}

describe('cairn recover: a cluster rebuilt from its data disks alone', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const procs: ChildProcess[] = [];
  let cfgs: NodeConfig[] = [];
  let disks: string[] = [];
  const files = new Map<string, string>();

  beforeAll(async () => {
    dir = await tempDir('cairn-recover-');
    cfgs = (await clusterConfigs(dir.path, 3)).map((c) => nodeConfigSchema.parse({ ...c, daemon: { ...c.daemon, metaCopy: { flushIntervalMs: 50 } } }));
    disks = cfgs.flatMap((c) => c.disks.map((d) => d.path));
    for (const c of cfgs) {
      const file = join(dir.path, `node${c.nodeId}.json`);
      await writeFile(file, JSON.stringify(c));
    }
    await Promise.all(cfgs.map((c) => startProc(join(dir.path, `node${c.nodeId}.json`), procs)));
    const fc = cfgs.map((c) => new FileClient(c.listen));
    try {
      await waitForDiskmap(fc[0]!);
      for (let i = 0; i < 6; i++) {
        // Odd files are chunked (over the 64 KiB inline threshold), even ones after the first
        // are small enough to live inline in the metadata: both must come back.
        const data = randomBytes(i === 0 ? 3 * 1024 * 1024 + 5 : (i % 2 === 1 ? 100_000 : 1000) + i * 4099);
        const path = `/strong/f${i}.bin`;
        await eventually(() => fc[i % 3]!.put(path, [data], { mode: 'strong', mkdirs: true }).then(() => true, () => false), 30_000, 200);
        files.set(path, sha(data));
      }
      for (let i = 0; i < 6; i++) {
        const data = randomBytes(2 * 1024 * 1024 + i * 333);
        const path = `/weak/w${i}.bin`;
        await fc[(i + 1) % 3]!.put(path, [data], { mode: 'weak', mkdirs: true });
        files.set(path, sha(data));
      }
      // A weak file is durable once its commit is: wait for that (what the goal promises to bring back).
      for (const [i, path] of [...files.keys()].filter((p) => p.startsWith('/weak/')).entries()) {
        await fc[(i + 1) % 3]!.commit(path, 'durable');
      }
      // An overwritten file: only its newest version must come back.
      const v2 = randomBytes(70_000);
      await fc[2]!.put('/strong/f1.bin', [v2], { mode: 'strong' });
      files.set('/strong/f1.bin', sha(v2));
    } finally {
      for (const c of fc) c.close();
    }
    await stopProcs(procs);
    // The loss: every node's metadata, Raft log and write cache.
    for (const c of cfgs) {
      await rm(c.dataDir, { recursive: true, force: true });
      await rm(c.cacheDir, { recursive: true, force: true });
    }
  }, 300_000);

  afterAll(async () => {
    await stopProcs(procs);
    await dir?.remove();
  }, 60_000);

  it('every data disk holds checked copies of the metadata', async () => {
    for (const d of disks) {
      const copies = await listCopies(d);
      expect(copies.length).toBeGreaterThan(0);
      expect(copies[0]!.problems).toEqual([]);
      expect(copies[0]!.manifest!.clusterName).toBe('test');
      expect(copies[0]!.manifest!.diskmapEpoch).toBeGreaterThanOrEqual(1);
    }
  });

  it('--dry-run reports every durable file intact and writes nothing', async () => {
    const out = join(dir.path, 'dry');
    const r = await recoverJson(['--disks', disks.join(','), '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    const rep = r.report!;
    expect(rep.dryRun).toBe(true);
    // The files were written after the copy's first snapshot: they come from its tail of entries.
    expect(rep.copy.tailEntries).toBeGreaterThan(0);
    expect(new Set(rep.filesIntact.map((f) => f.path))).toEqual(new Set(files.keys()));
    expect(rep.filesUnrecoverable).toEqual([]);
    // The first version of f1 is a chunk no file references any more.
    expect(rep.unreferencedChunks.length).toBeGreaterThan(0);
    expect(rep.scan.bytesChecked).toBeGreaterThan(0);
    expect(await readdir(out).catch(() => 'absent')).toBe('absent');
  }, 60_000);

  it('uses another disk\'s copy when one is corrupt, and the recovered cluster serves every file from every node', async () => {
    // Corrupt the newest copy on the first disk (one flipped byte of its snapshot).
    const first = (await listCopies(disks[0]!))[0]!;
    const snap = join(first.dir, 'snapshot');
    const b = await readFile(snap);
    b[Math.floor(b.length / 2)]! ^= 0xff;
    await writeFile(snap, b);
    const out = join(dir.path, 'out');
    const r = await recoverJson(['--disks', disks.join(','), '--dir', out]);
    expect(r.code, r.stderr).toBe(0);
    const rep = r.report!;
    expect(rep.copiesConsidered.find((c) => c.dir === first.dir)?.problems.join(' ')).toMatch(/SHA-256/);
    expect(rep.copy.dir).not.toBe(first.dir);
    expect(rep.nodes.length).toBe(3);
    for (const n of rep.nodes) {
      const c = nodeConfigSchema.parse(JSON.parse(await readFile(n.config, 'utf8')));
      await writeFile(n.config, JSON.stringify({ ...c, raft: { ...c.raft, tickMs: 20, electionTicks: 10 } }));
    }
    await Promise.all(rep.nodes.map((n) => startProc(n.config, procs)));
    const fc = rep.nodes.map((n) => new FileClient(n.listen));
    try {
      for (const c of fc) {
        for (const [path, want] of files) {
          const got = await eventually(() => readAll(c, path).catch(() => undefined), 30_000, 200);
          expect(sha(got), `${path} via ${c.address}`).toBe(want);
        }
      }
      // The recovered cluster takes new writes.
      const fresh = randomBytes(5000);
      await fc[1]!.put('/after/recovery.bin', [fresh], { mode: 'strong', mkdirs: true });
      expect(sha(await readAll(fc[2]!, '/after/recovery.bin'))).toBe(sha(fresh));
    } finally {
      for (const c of fc) c.close();
    }
    await stopProcs(procs);
    await rm(out, { recursive: true, force: true });
  }, 300_000);
});
