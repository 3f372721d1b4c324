/**
 * Recovery cases beside the main one (recover.test.ts), on in-process nodes (real LevelDB, real
 * gRPC on 127.0.0.1): a data disk moved elsewhere is inspected with `cairn chunk ls/header/verify`
 * without any cluster; a recovery with one data disk gone still brings every file back (EC 2+1
 * reads from the two others); disks of two different clusters are refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { cp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { spawn } from 'node:child_process';
import { eventually, runCairn, tempDir } from '../helpers/env.js';
import { clusterConfigs, startAll, waitForDiskmap } from '../server/helpers.js';
import { FileClient } from '../../src/server/file-client.js';
import { nodeConfigSchema, type NodeConfig } from '../../src/common/config.js';
import { startNode, type CairnNode } from '../../src/server/node.js';
import { COPY_DIR, listCopies } from '../../src/meta/disk-copy.js';
import { recover, summarize } from '../../src/server/recover.js';
import { CairnError } from '../../src/common/errors.js';
import { MetaClient } from '../../src/meta/client.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function readAll(c: FileClient, path: string): Promise<Buffer> {
  const { data } = await c.get(path);
  const parts: Buffer[] = [];
  for await (const p of data) parts.push(p);
  return Buffer.concat(parts);
}

/**
 * A 3-node in-process cluster that stores `files` durably, then stops. With `overwrite`, /d/f0.bin
 * is overwritten once (small: one chunk) and the new version's chunk hash returned; `files` keeps
 * the first version's hash.
 */
async function makeCluster(dir: string, files: Map<string, string>, count: number, overwrite?: { chunk: string }): Promise<NodeConfig[]> {
  const cfgs = (await clusterConfigs(dir, 3)).map((c) => nodeConfigSchema.parse({ ...c, daemon: { ...c.daemon, metaCopy: { flushIntervalMs: 50 } } }));
  const nodes = await startAll(cfgs);
  const fc = new FileClient(nodes[0]!.address);
  try {
    await waitForDiskmap(fc);
    for (let i = 0; i < count; i++) {
      const data = randomBytes(1024 * 1024 + i * 7777);
      const path = `/d/f${i}.bin`;
      await eventually(() => fc.put(path, [data], { mode: 'strong', mkdirs: true }).then(() => true, () => false), 30_000, 200);
      files.set(path, sha(data));
    }
    if (overwrite !== undefined) {
      // A second version of the same inode (a put replaces the inode by a rename, so the commit is
      // made here as the write cache makes it): the content of a scratch file, whose chunk then
      // belongs to f0's version 2 alone once the scratch file is removed.
      const v2 = randomBytes(100_000);
      await fc.put('/scratch.bin', [v2], { mode: 'strong' });
      const m = new MetaClient({ endpoints: cfgs.map((c) => c.listen) });
      try {
        const scratch = await m.layout({ path: '/scratch.bin' });
        const f0 = await m.layout({ path: '/d/f0.bin' });
        const lease = await m.leaseAcquire(f0.attr.ino, 'test', 10_000);
        await m.commitVersion({ ino: f0.attr.ino, expectedVersion: f0.version, fence: lease.token, size: v2.length, extents: scratch.extents, durable: true });
        await m.leaseRelease(f0.attr.ino, 'test', lease.token);
        await m.unlink({ path: '/scratch.bin' });
      } finally {
        m.close();
      }
      overwrite.chunk = sha(v2);
    }
    await eventually(async () => (await listCopies(cfgs[0]!.disks[0]!.path)).some((c) => c.problems.length === 0), 30_000, 100);
  } finally {
    fc.close();
    await Promise.all(nodes.map((n) => n.stop()));
  }
  return cfgs;
}

describe('offline inspection, a missing disk, two clusters', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cfgs: NodeConfig[] = [];
  let disks: string[] = [];
  const files = new Map<string, string>();
  const running: CairnNode[] = [];
  const overwritten = { chunk: '' };

  beforeAll(async () => {
    dir = await tempDir('cairn-recover-offline-');
    cfgs = await makeCluster(join(dir.path, 'a'), files, 4, overwritten);
    disks = cfgs.flatMap((c) => c.disks.map((d) => d.path));
  }, 120_000);

  afterAll(async () => {
    await Promise.all(running.map((n) => n.stop().catch(() => undefined)));
    await dir?.remove();
  }, 60_000);

  it('inspects a data disk moved to another machine with cairn chunk, without any cluster', async () => {
    const moved = join(dir.path, 'moved-disk');
    await cp(disks[1]!, moved, { recursive: true });
    const ls = await runCairn(['chunk', 'ls', moved, '--json']);
    expect(ls.code, ls.stderr).toBe(0);
    const info = JSON.parse(ls.stdout) as { label: { machine: number }; buckets: Array<{ bucket: string; shards: number }>; copies: Array<{ problems: string[]; manifest: { clusterName: string } }> };
    expect(info.label.machine).toBe(1);
    const bucket = info.buckets.find((b) => b.shards > 0)!;
    expect(bucket).toBeDefined();
    expect(info.copies[0]!.problems).toEqual([]);
    expect(info.copies[0]!.manifest.clusterName).toBe('test');

    const lsb = await runCairn(['chunk', 'ls', moved, '--bucket', bucket.bucket, '--json']);
    expect(lsb.code, lsb.stderr).toBe(0);
    const shards = (JSON.parse(lsb.stdout) as { shards: Array<{ file: string; ok: boolean }> }).shards;
    expect(shards.length).toBe(bucket.shards);
    expect(shards.every((s) => s.ok)).toBe(true);

    const hh = shards[0]!.file.slice(0, 2);
    const shardPath = join(moved, bucket.bucket, 'shards', hh, shards[0]!.file);
    const hd = await runCairn(['chunk', 'header', shardPath, '--json']);
    expect(hd.code, hd.stderr).toBe(0);
    const h = JSON.parse(hd.stdout) as { ok: boolean; header: { hash: string; bucket: string } };
    expect(h.ok).toBe(true);
    expect(h.header.hash).toBe(shards[0]!.file.slice(0, 64));
    expect(h.header.bucket).toBe(bucket.bucket);

    const ok = await runCairn(['chunk', 'verify', moved, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect((JSON.parse(ok.stdout) as { bad: unknown[]; shards: number }).bad).toEqual([]);
    // One flipped payload byte: verify names that shard and fails; nothing is moved or changed.
    const b = await readFile(shardPath);
    b[b.length - 1]! ^= 0x01;
    await writeFile(shardPath, b);
    const bad = await runCairn(['chunk', 'verify', moved, '--json']);
    expect(bad.code).toBe(1);
    const rep = JSON.parse(bad.stdout) as { bad: Array<{ path: string; problem: string }> };
    expect(rep.bad.map((x) => x.path)).toEqual([shardPath]);
    expect(rep.bad[0]!.problem).toMatch(/CRC/);
    expect(await readFile(shardPath)).toEqual(b);
  }, 120_000);

  it('recovers with one data disk gone: every file comes back (EC reads from the others); a version whose shards are lost falls back to the one before', async () => {
    for (const c of cfgs) {
      await rm(c.dataDir, { recursive: true, force: true });
      await rm(c.cacheDir, { recursive: true, force: true });
    }
    // Every shard of /d/f0.bin's second version is lost: the file must come back with its first version's bytes.
    expect(overwritten.chunk).toMatch(/^[0-9a-f]{64}$/);
    let removed = 0;
    for (const d of disks) {
      for (const b of await readdir(d)) {
        const hh = join(d, b, 'shards', overwritten.chunk.slice(0, 2));
        for (const f of await readdir(hh).catch(() => [] as string[])) {
          if (f.startsWith(overwritten.chunk)) {
            await rm(join(hh, f));
            removed++;
          }
        }
      }
    }
    expect(removed).toBe(3);
    const gone = `${disks[2]}.gone`;
    await rename(disks[2]!, gone);
    try {
      const out = join(dir.path, 'out');
      const rep = await recover({ disks, outDir: out });
      expect(rep.disks.find((d) => d.path === disks[2])?.state).toBe('missing');
      expect(rep.filesUnrecoverable).toEqual([]);
      expect(rep.filesOlderVersion.map((f) => [f.path, f.lostVersion, f.contentOfVersion, f.newVersion])).toEqual([['/d/f0.bin', 2, 1, 3]]);
      expect(new Set([...rep.filesIntact.map((f) => f.path), '/d/f0.bin'])).toEqual(new Set(files.keys()));
      const text = summarize(rep);
      expect(text).toMatch(/files recovered intact \(every chunk's SHA-256 checked\): 3\n/);
      expect(text).toMatch(/\/d\/f0\.bin: version 2 lost .*content of version 1 installed as version 3/);
      expect(text).toMatch(new RegExp(`disk ${disks[2]}: MISSING`));
      // Every chunk was reassembled from two shards and its SHA-256 checked.
      expect(rep.scan.bytesChecked).toBeGreaterThan(0);
      for (const n of rep.nodes) {
        const c = nodeConfigSchema.parse(JSON.parse(await readFile(n.config, 'utf8')));
        running.push(await startNode(nodeConfigSchema.parse({ ...c, raft: { ...c.raft, tickMs: 20, electionTicks: 10 } })));
      }
      for (const node of running) {
        const c = new FileClient(node.address);
        try {
          for (const [path, want] of files) {
            const got = await eventually(() => readAll(c, path).catch(() => undefined), 30_000, 200);
            expect(sha(got), `${path} via ${node.address}`).toBe(want);
          }
        } finally {
          c.close();
        }
      }
    } finally {
      await Promise.all(running.splice(0).map((n) => n.stop().catch(() => undefined)));
      await rename(gone, disks[2]!).catch(() => undefined);
    }
  }, 120_000);

  it('refuses disks of two different clusters, and a disk outside the cluster\'s diskmap', async () => {
    const other = await makeCluster(join(dir.path, 'b'), new Map(), 1);
    const err = await recover({ disks: [disks[0]!, disks[1]!, other[0]!.disks[0]!.path], outDir: '', dryRun: true }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('EINVAL');
    expect((err as Error).message).toMatch(/2 different clusters/);
    // The other cluster's disk without its copies: refused by its label.
    const bare = join(dir.path, 'bare-disk');
    await cp(other[1]!.disks[0]!.path, bare, { recursive: true });
    await rm(join(bare, COPY_DIR), { recursive: true, force: true });
    const err2 = await recover({ disks: [disks[0]!, bare], outDir: '', dryRun: true }).then(() => undefined, (e: unknown) => e);
    expect((err2 as Error).message).toMatch(/not in cluster test\/[0-9a-f]{32}'s diskmap/);
    expect(await readdir(bare)).toContain('cairn-disk.json');
    // A disk a live process serves (its lock names a running pid on this host): refused, offline only.
    const lock = join(disks[0]!, 'cairn-disk.lock');
    const holder = spawn('sleep', ['120'], { stdio: 'ignore' });
    await writeFile(lock, JSON.stringify({ pid: holder.pid, host: hostname(), sinceMs: Date.now() }));
    try {
      const busy = await recover({ disks, outDir: join(dir.path, 'busy') }).then(() => undefined, (e: unknown) => e);
      expect((busy as CairnError).code).toBe('EBUSY');
      expect(await readdir(join(dir.path, 'busy')).catch(() => 'absent')).toBe('absent');
    } finally {
      holder.kill('SIGKILL');
      await rm(lock, { force: true });
    }
  }, 120_000);
});
