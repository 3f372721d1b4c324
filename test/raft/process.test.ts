/**
 * Real processes: three `cairn kv serve` nodes with their own data dirs and ports. kill -9 of
 * the leader loses no acknowledged put and a new leader takes over; the killed node restarts
 * and catches up through a snapshot (the log was compacted while it was down); a paused
 * (SIGSTOP) node that resumes never serves a stale linearizable read.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { KvClient, type KvStatus } from '../../src/raft/kv/client.js';
import { eventually, freePort, runCairn, spawnCairn, tempDir } from '../helpers/env.js';

interface Proc {
  id: number;
  address: string;
  config: string;
  dataDir: string;
  child: ChildProcess | undefined;
  client: KvClient;
}

const children = new Set<ChildProcess>();
const cleanups: Array<() => Promise<void>> = [];

function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  }
  children.clear();
}
afterEach(async () => {
  killAll();
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(killAll);

async function start(p: Proc): Promise<void> {
  const child = spawnCairn(['kv', 'serve', '--config', p.config], { env: { CAIRN_LOG_LEVEL: process.env.CAIRN_TEST_LOG ?? 'warn' } });
  children.add(child);
  p.child = child;
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err = (err + d).slice(-4000);
    if (process.env.CAIRN_TEST_LOG !== undefined) process.stderr.write(`[n${p.id}] ${d}`);
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('"ready":true')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`node ${p.id} exited with ${code} before it was ready: ${err}`)));
  });
}

function kill(p: Proc, sig: NodeJS.Signals): Promise<void> {
  const c = p.child!;
  if (sig !== 'SIGKILL') {
    c.kill(sig);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    c.once('exit', () => resolve());
    c.kill('SIGKILL');
    p.child = undefined;
    children.delete(c);
  });
}

async function cluster(raft: Record<string, number>): Promise<Proc[]> {
  const base = await tempDir('cairn-kvproc-');
  cleanups.push(base.remove);
  const ids = [1, 2, 3];
  const addrs = await Promise.all(ids.map(async () => `127.0.0.1:${await freePort()}`));
  const peers = ids.map((id, i) => ({ id, address: addrs[i]! }));
  const procs: Proc[] = [];
  for (const [i, id] of ids.entries()) {
    const dataDir = join(base.path, `n${id}`);
    const config = join(base.path, `n${id}.json`);
    const cfg = {
      clusterName: 'kvtest',
      nodeId: id,
      listen: addrs[i],
      peers,
      dataDir,
      cacheDir: join(dataDir, 'cache'),
      location: { machine: id },
      raft,
    };
    await writeFile(config, JSON.stringify(cfg));
    const client = new KvClient([addrs[i]!], 3000);
    cleanups.push(async () => client.close());
    procs.push({ id, address: addrs[i]!, config, dataDir, child: undefined, client });
  }
  await Promise.all(procs.map(start));
  return procs;
}

async function status(p: Proc): Promise<KvStatus | undefined> {
  try {
    return await p.client.status(0);
  } catch {
    return undefined;
  }
}

/** The leader every live node agrees on. */
async function leader(procs: Proc[]): Promise<Proc> {
  return eventually(async () => {
    const live = procs.filter((p) => p.child !== undefined);
    const st = await Promise.all(live.map(status));
    const l = st.find((s) => s?.role === 'leader');
    if (l === undefined || !st.every((s) => s?.leader === l.id)) return undefined;
    return procs.find((p) => p.id === l.id);
  }, 30_000);
}

const RAFT = { tickMs: 20, electionTicks: 15, heartbeatTicks: 2, snapshotEntries: 60, compactionMarginEntries: 10 };

describe('KV Raft group of real processes', () => {
  it('survives kill -9 of the leader without losing acknowledged puts; the node restarts and catches up by snapshot', async () => {
    const procs = await cluster(RAFT);
    const l1 = await leader(procs);
    const acked = new Map<string, string>();
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const others = procs.filter((p) => p !== l1);
        const via = i % 2 === 0 ? l1 : others[i % others.length]!;
        await via.client.put(`a${i}`, Buffer.from(`v${i}`));
        acked.set(`a${i}`, `v${i}`);
      }),
    );
    const before = (await status(l1))!;
    await kill(l1, 'SIGKILL');
    const rest = procs.filter((p) => p !== l1);
    const l2 = await leader(rest);
    expect(l2.id).not.toBe(l1.id);
    // Enough writes while it is down to compact the log past what the killed node has.
    for (let i = 0; i < 150; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, async (_, j) => {
          await l2.client.put(`b${i + j}`, Buffer.from(`w${i + j}`));
          acked.set(`b${i + j}`, `w${i + j}`);
        }),
      );
    }
    for (const p of rest) {
      const got = await Promise.all([...acked.keys()].map(async (k) => (await p.client.get(k, true))?.toString()));
      expect(got).toEqual([...acked.values()]);
    }
    // Every live node has compacted past what the killed node holds, whoever leads when it returns.
    await eventually(async () => (await Promise.all(rest.map(status))).every((s) => (s?.first_index ?? 0) > before.applied + 1));
    // Restart the killed node on its old data dir: it catches up through a snapshot.
    await start(l1);
    await eventually(async () => (await l1.client.get('b149', false))?.toString() === 'w149', 30_000);
    // The state machine is restored before the log records the snapshot: wait for both.
    await eventually(async () => ((await status(l1))?.snapshot_index ?? 0) > before.applied);
    const got = await Promise.all([...acked.keys()].map(async (k) => (await l1.client.get(k, false))?.toString()));
    expect(got).toEqual([...acked.values()]);
  });

  it('a paused node that resumes does not serve a stale linearizable read', async () => {
    const procs = await cluster({ ...RAFT, snapshotEntries: 10_000 });
    const l1 = await leader(procs);
    await l1.client.put('x', Buffer.from('old'));
    for (const p of procs) await eventually(async () => (await p.client.get('x', false))?.toString() === 'old');

    // Pause the leader: the others elect a new one and accept a newer value.
    await kill(l1, 'SIGSTOP');
    const rest = procs.filter((p) => p !== l1);
    const l2 = await leader(rest);
    await l2.client.put('x', Buffer.from('new'));
    await kill(l1, 'SIGCONT');
    // Through the resumed (deposed) leader a linearizable read returns the new value, or fails; never the old one.
    for (let i = 0; i < 5; i++) {
      try {
        expect((await l1.client.get('x', true))?.toString()).toBe('new');
      } catch (err) {
        expect((err as { code?: string }).code).toMatch(/ETIMEDOUT|ENOTLEADER|EUNAVAIL/);
      }
    }
    await eventually(async () => (await l1.client.get('x', true))?.toString() === 'new');

    // Pause a follower, write, resume: a linearizable read through it sees the write.
    const f = rest.find((p) => p !== l2)!;
    await kill(f, 'SIGSTOP');
    await l2.client.put('x', Buffer.from('newer'));
    await kill(f, 'SIGCONT');
    expect((await f.client.get('x', true))?.toString()).toBe('newer');

    // The CLI client: put through one endpoint, linearizable get through another.
    const eps = procs.map((p) => p.address);
    const put = await runCairn(['kv', 'put', 'cli', 'hello', '--endpoints', eps.join(',')]);
    expect(put.code, put.stderr).toBe(0);
    const got = await runCairn(['kv', 'get', 'cli', '--json', '--endpoints', [...eps].reverse().join(',')]);
    expect(got.code, got.stderr).toBe(0);
    expect(JSON.parse(got.stdout)).toEqual({ found: true, value: 'hello' });
  });
});
