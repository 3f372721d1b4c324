/**
 * A node or a disk down, with real processes (three `cairn start` daemons from `cairn init`, one
 * directory disk each, EC 2+1): a strong-mode write loop keeps completing while a node is killed
 * with kill -9 (an upload cut by the kill leaves no sibling once the node is back); the node
 * restarted at once serves its disk (no stale lock); guests written during the outage go home by
 * themselves (catch-up) until no handoff bucket holds anything; a disk directory removed under
 * load: writes go on and the repair job rebuilds its shards elsewhere; after that repair one more
 * loss (a node) loses nothing. Every file's SHA-256 is checked through every node. A node whose
 * data directory was wiped refuses to start, and rejoins with `cairn start --rejoin`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileClient } from '../../src/server/file-client.js';
import { MetaClient } from '../../src/meta/client.js';
import { eventually, runCairn, spawnCairn, tempDir } from '../helpers/env.js';

interface Node {
  id: number;
  config: string;
  listen: string;
  dir: string;
  proc?: ChildProcess;
}

let dir: { path: string; remove: () => Promise<void> };
const nodes: Node[] = [];

async function start(n: Node, extra: string[] = []): Promise<void> {
  const p = spawnCairn(['start', '--config', n.config, ...extra], { env: { CAIRN_LOG_LEVEL: 'warn' } });
  n.proc = p;
  let out = '';
  await new Promise<void>((resolve, reject) => {
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('"ready":true')) resolve();
    });
    p.once('exit', (c) => reject(new Error(`node ${n.id} exited with ${c}`)));
  });
  p.stderr!.resume();
}

async function kill9(n: Node): Promise<void> {
  const p = n.proc!;
  p.kill('SIGKILL');
  await once(p, 'exit');
}

/** Shard files in the handoff buckets (bucket number ffff) of every node's disk. */
async function guests(): Promise<number> {
  let count = 0;
  for (const n of nodes) {
    const disk = join(n.dir, 'disk0');
    for (const b of await readdir(disk).catch(() => [] as string[])) {
      if (!/-ffff-/.test(b)) continue;
      for (const sub of await readdir(join(disk, b, 'shards')).catch(() => [] as string[])) count += (await readdir(join(disk, b, 'shards', sub))).length;
    }
  }
  return count;
}

/** Every acknowledged file: path → SHA-256. */
const files = new Map<string, string>();
let seq = 0;

/** One strong put of a random file of 64 KiB–1 MiB; recorded once acknowledged durable. */
async function putOne(via: FileClient): Promise<void> {
  const data = randomBytes(64 * 1024 + Math.floor(Math.random() * 1024 * 1024));
  const path = `/loop-${seq++}`;
  const r = await via.put(path, [data], { mode: 'strong' });
  expect(r.state).toBe('durable');
  files.set(path, createHash('sha256').update(data).digest('hex'));
}

async function readAll(c: FileClient, path: string): Promise<string> {
  const { data } = await c.get(path);
  const h = createHash('sha256');
  for await (const p of data) h.update(p);
  return h.digest('hex');
}

beforeAll(async () => {
  dir = await tempDir('cairn-avail-');
  const base = 20_000 + Math.floor(Math.random() * 30_000);
  const init = await runCairn(['init', '--nodes', '3', '--dir', dir.path, '--base-port', String(base), '--disk-size-bytes', String(512 * 1024 * 1024), '--insecure', '--json'], { timeoutMs: 120_000 });
  expect(init.code).toBe(0);
  for (const n of (JSON.parse(init.stdout) as { nodes: Array<{ nodeId: number; config: string; listen: string }> }).nodes) {
    const cfg = JSON.parse(await readFile(n.config, 'utf8')) as { daemon?: Record<string, unknown> };
    cfg.daemon = { ...(cfg.daemon ?? {}), controllerIntervalMs: 200, repair: { catchUpIntervalMs: 300 } };
    await writeFile(n.config, JSON.stringify(cfg));
    nodes.push({ id: n.nodeId, config: n.config, listen: n.listen, dir: join(dir.path, `node${n.nodeId}`) });
  }
  await Promise.all(nodes.map((n) => start(n)));
}, 180_000);

afterAll(async () => {
  for (const n of nodes) {
    if (n.proc !== undefined && n.proc.exitCode === null && n.proc.signalCode === null) {
      n.proc.kill('SIGKILL');
      await once(n.proc, 'exit');
    }
  }
  await dir?.remove();
});

describe('a node down: writes go on, the cluster heals itself', () => {
  it('keeps strong writes completing through kill -9 of a node, catches up when it returns, and loses nothing', async () => {
    const via = new FileClient(nodes[0]!.listen);
    const put = (): Promise<void> => putOne(via);
    await eventually(async () => (await via.cluster()).diskmapEpoch >= 1, 30_000, 100);
    for (let j = 0; j < 4; j++) await put();

    // kill -9 node 3 while a strong put goes through node 1 and another one through node 3
    // itself (cut short: its hidden sibling is left in the namespace); the loop goes on.
    const meta = new MetaClient({ endpoints: nodes.map((n) => n.listen) });
    const sibling = async (): Promise<boolean> => (await meta.readdir('/')).entries.some((e) => e.name.startsWith('.cut-short.put-'));
    const inFlight = put();
    const cut = new FileClient(nodes[2]!.listen);
    let sent = 0;
    let killed: Promise<void> | undefined;
    async function* slow(): AsyncGenerator<Buffer> {
      for (;;) {
        yield randomBytes(256 * 1024);
        sent++;
        if (sent === 8) {
          await eventually(sibling, 20_000, 20); // the upload is under way on node 3
          killed = kill9(nodes[2]!);
        }
        if (sent > 8) await new Promise((r) => setTimeout(r, 50));
        if (sent > 400) return;
      }
    }
    await expect(cut.put('/cut-short', slow(), { mode: 'strong' })).rejects.toThrow();
    cut.close();
    await killed;
    await inFlight;
    const during = files.size;
    for (let j = 0; j < 6; j++) await put();
    expect(files.size).toBe(during + 6);
    expect(await sibling()).toBe(true);
    const guestsDuring = await guests();
    expect(guestsDuring).toBeGreaterThan(0); // written as guests, not waited for

    // Restart at once: the node serves its disk (the lock of the killed process is stale).
    await start(nodes[2]!);
    await eventually(async () => {
      const c = await new FileClient(nodes[2]!.listen).cluster();
      const me = c.nodes.find((n) => n.nodeId === 3);
      return me !== undefined && me.disks.every((d) => d.state === 'ok');
    }, 30_000, 200);
    // The restarted node removed the sibling of the upload it never finished.
    await eventually(async () => (await meta.readdir('/')).entries.every((e) => !e.name.includes('.put-')), 30_000, 200);
    meta.close();
    // Catch-up: every guest goes home and is dropped, by itself.
    await eventually(async () => (await guests()) === 0, 60_000, 200);

    // Every file, through every node, byte for byte; and durable.
    for (const n of nodes) {
      const c = new FileClient(n.listen);
      for (const [path, sha] of files) expect(await readAll(c, path)).toBe(sha);
      c.close();
    }
    for (const path of files.keys()) expect((await via.commitStatus(path)).state).toBe('durable');
    // A drain the map cannot take (EC 2+1 on 3 disks: every group on all of them) is refused, with the reason.
    const drain = await runCairn(['disk', 'drain', 'node3/0', '--endpoint', nodes[0]!.listen], { timeoutMs: 120_000 });
    expect(drain.code).toBe(1);
    expect(drain.stderr).toMatch(/cannot drain node3\/0: .*Add a disk first/);
    via.close();
  }, 300_000);

  it('a disk directory removed under load: writes go on, the repair job rebuilds its shards elsewhere, nothing is lost', async () => {
    const via = new FileClient(nodes[0]!.listen);
    let stop = false;
    let afterLoss = 0;
    let lost = false;
    const loop = (async () => {
      while (!stop) {
        await putOne(via);
        if (lost) afterLoss++;
      }
    })();
    await eventually(() => files.size >= 14, 60_000, 50);
    await rename(join(nodes[1]!.dir, 'disk0'), join(nodes[1]!.dir, 'disk0.gone'));
    lost = true;
    await eventually(() => afterLoss >= 5, 60_000, 50); // strong writes keep completing
    stop = true;
    await loop;
    // The leader's repair job sees the failed disk and rebuilds every chunk with a shard on it.
    const done = await eventually(async () => {
      const r = (await via.cluster()).repair;
      return r !== null && r.state === 'done' && r.lost.length === 1 ? r : undefined;
    }, 120_000, 200);
    expect(done.reason).toMatch(/disk .*disk0 of node 2 failed/);
    expect(done.chunksTotal).toBeGreaterThan(0);
    expect(done.shardsRebuilt).toBeGreaterThan(0);
    // Progress is in chunk bytes and ends at the total the pass went through (writes go on meanwhile).
    expect(done.bytesDone).toBeGreaterThan(0);
    expect(done.bytesDone).toBe(done.bytesTotal);
    // Full health: every file durable (every shard exists somewhere), and every byte right through every node.
    for (const path of files.keys()) expect((await via.commitStatus(path)).state).toBe('durable');
    for (const n of nodes) {
      const c = new FileClient(n.listen);
      for (const [path, sha] of files) expect(await readAll(c, path)).toBe(sha);
      c.close();
    }
    // `cairn repair status` says so.
    const cli = await runCairn(['repair', 'status', '--endpoint', nodes[0]!.listen], { timeoutMs: 120_000 });
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/repair: done — \d+ shards rebuilt elsewhere for 1 lost disk/);
    via.close();
  }, 240_000);

  it('after the repair, one more loss (node 3 killed) loses nothing; a write that cannot keep redundancy fails at once', async () => {
    const via = new FileClient(nodes[0]!.listen);
    await kill9(nodes[2]!);
    // Only node 1's disk is left: every file still reads, from it alone (homes and guests).
    for (const [path, sha] of files) expect(await readAll(via, path)).toBe(sha);
    // Health is true: files with shards on the two lost disks are not "durable".
    const st = await via.commitStatus('/loop-0');
    expect(st.state).toBe('visible');
    expect(st.error).toMatch(/missing shards/);
    // A strong write now cannot keep its promise: it fails, naming the missing redundancy.
    await expect(via.put('/no-redundancy', [randomBytes(1024 * 1024)], { mode: 'strong' })).rejects.toThrow(/redundancy|live disk/);
    // Draining now could move the last copies: refused, saying why.
    const drain = await runCairn(['disk', 'drain', 'node1/0', '--endpoint', nodes[0]!.listen], { timeoutMs: 120_000 });
    expect(drain.code).toBe(1);
    expect(drain.stderr).toMatch(/refusing to drain while the cluster is degraded: .*node 3/);
    via.close();
  }, 240_000);

  it('a node restarted with an empty data directory refuses to start, saying why, instead of founding a second cluster', async () => {
    const n = nodes[2]!; // down since the previous test
    await rm(join(n.dir, 'data'), { recursive: true, force: true });
    const r = await runCairn(['start', '--config', n.config], { timeoutMs: 120_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/data directory .* is empty or lost .*Raft state is gone/s);
    expect(r.stderr).toMatch(/--rejoin/);
  }, 300_000);

  it('the wiped node rejoins with `cairn start --rejoin`: re-seeded from the others as a new member, its disk kept', async () => {
    const n = nodes[2]!;
    await start(n, ['--rejoin']);
    // A voter again (promoted once caught up), serving its disk; every file reads through it.
    await eventually(async () => {
      const c = await new FileClient(nodes[0]!.listen).cluster();
      const me = c.nodes.find((x) => x.nodeId === 3);
      if (me === undefined || me.role !== 'follower' || !me.disks.every((d) => d.state === 'ok')) return false;
      // ...and the rejoined node routes reads itself (it has loaded the diskmap): a first read works.
      const own = new FileClient(n.listen);
      try {
        const [path, sha] = [...files][0]!;
        return (await readAll(own, path)) === sha;
      } catch {
        return false;
      } finally {
        own.close();
      }
    }, 120_000, 200);
    const c = new FileClient(n.listen);
    for (const [path, sha] of files) expect(await readAll(c, path)).toBe(sha);
    c.close();
    // Started again with its Raft state in place, --rejoin is refused (it was not wiped).
    await kill9(n);
    const again = await runCairn(['start', '--config', n.config, '--rejoin'], { timeoutMs: 120_000 });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/holds Raft state: this node was not wiped/);
  }, 300_000);
});
