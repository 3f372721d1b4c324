/**
 * Recovery without backups (docs/recovery.md), on a 3-node cluster of real `cairn start`
 * processes on 127.0.0.1:
 *  1. the cost of the metadata copies on foreground metadata writes: creates at 64 in flight and
 *     mkdirs at 1 in flight with daemon.metaCopy on and off (alternating runs), and how far the
 *     disk copies lag behind (cairn_meta_copy_lag_seconds from every node's /metrics);
 *  2. `cairn recover --dry-run` over the stopped cluster's disks: total time and the scan rate
 *     (MB of shards read and checked per second) against the raw read rate of the same files.
 *
 * Run alone: `npx tsx bench/recovery.ts [--quick]`; or `npm run bench -- --only recovery`.
 * CAIRN_BENCH_RECOVERY_ROUNDS=N alternates N off/on rounds; CAIRN_BENCH_RECOVERY_SCAN=0 skips part 2.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { report, type BenchSuite, type BenchTable } from './table.js';
import { phase, startLocalCluster, type LocalCluster } from './local-cluster.js';
import { MetaClient } from '../src/meta/client.js';
import { FileClient } from '../src/server/file-client.js';
import { recover } from '../src/server/recover.js';

async function until<T>(fn: () => Promise<T | undefined>, what: string, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function ready(c: LocalCluster): Promise<void> {
  const fc = new FileClient(c.endpoints[0]!);
  try {
    await until(async () => ((await fc.cluster()).diskmapEpoch >= 1 ? true : undefined), 'the first diskmap');
  } finally {
    fc.close();
  }
}

/** Sum of a histogram's _sum and _count, and its buckets, over every node's /metrics. */
async function lagOf(c: LocalCluster): Promise<{ mean: number; p99: number; count: number }> {
  const buckets = new Map<number, number>();
  let sum = 0;
  let count = 0;
  for (const a of c.metricsAddresses) {
    const text = await (await fetch(`http://${a}/metrics`)).text();
    for (const line of text.split('\n')) {
      const b = /^cairn_meta_copy_lag_seconds_bucket\{le="([^"]+)"\} (\d+)/.exec(line);
      if (b) buckets.set(b[1] === '+Inf' ? Infinity : Number(b[1]), (buckets.get(b[1] === '+Inf' ? Infinity : Number(b[1])) ?? 0) + Number(b[2]));
      const s = /^cairn_meta_copy_lag_seconds_sum (\S+)/.exec(line);
      if (s) sum += Number(s[1]);
      const n = /^cairn_meta_copy_lag_seconds_count (\S+)/.exec(line);
      if (n) count += Number(n[1]);
    }
  }
  let p99 = Infinity;
  for (const [le, n] of [...buckets].sort((x, y) => x[0] - y[0])) {
    if (n >= 0.99 * count) {
      p99 = le;
      break;
    }
  }
  return { mean: count > 0 ? sum / count : 0, p99, count };
}

/** CAIRN_BENCH_RECOVERY_FLUSH_MS: daemon.metaCopy.flushIntervalMs of the "on" runs (default 200). */
const FLUSH_MS = Number(process.env.CAIRN_BENCH_RECOVERY_FLUSH_MS ?? 200);

async function metaPhases(quick: boolean, copies: boolean): Promise<{ create64: number; cpuPerCreate: number; mkdir1: number; lag?: { mean: number; p99: number; count: number } }> {
  const c = await startLocalCluster(3, {
    metrics: true,
    configure: (cfg) => ({ ...cfg, daemon: { ...(cfg.daemon as object), metaCopy: { enabled: copies, flushIntervalMs: FLUSH_MS } } }),
  });
  try {
    await ready(c);
    const m = new MetaClient({ endpoints: c.endpoints });
    try {
      await until(async () => ((await m.status()).leaderAddress !== '' ? true : undefined), 'a leader');
      const tag = `/r${Date.now()}`;
      await m.mkdir(tag);
      const d = (await m.stat(tag)).ino;
      await phase(quick ? 300 : 1000, 16, (i) => m.create({ parent: d, name: `w${i}` })); // warm-up
      const n64 = quick ? 2000 : 6000;
      const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
      const cpu0 = sum(c.cpuMs());
      const create64 = (await phase(n64, 64, (i) => m.create({ parent: d, name: `f${i}` }))).opsPerSec;
      const cpuPerCreate = (sum(c.cpuMs()) - cpu0) / n64;
      const mkdir1 = (await phase(quick ? 300 : 1000, 1, (i) => m.mkdir({ parent: d, name: `d${i}` }))).opsPerSec;
      await new Promise((r) => setTimeout(r, 500)); // the last flush (≤ flushIntervalMs) before reading the lag
      return { create64, cpuPerCreate, mkdir1, ...(copies ? { lag: await lagOf(c) } : {}) };
    } finally {
      m.close();
    }
  } finally {
    await c.stop();
  }
}

async function shardFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (d.includes('/shards/')) out.push(join(d, e.name));
    }
  };
  await walk(dir);
  return out;
}

export const recoverySuite: BenchSuite = {
  name: 'recovery',
  async run({ quick }): Promise<BenchTable[]> {
    const tables: BenchTable[] = [];
    // 1. Foreground cost, alternating off/on.
    const rows: Array<Array<string | number>> = [];
    // CAIRN_BENCH_RECOVERY_ROUNDS: more alternating off/on rounds (a loaded machine swings 2x between runs).
    const rounds = Number(process.env.CAIRN_BENCH_RECOVERY_ROUNDS ?? (quick ? 1 : 2));
    let lagNote = '';
    for (let r = 0; r < rounds; r++) {
      for (const copies of [false, true]) {
        const x = await metaPhases(quick, copies);
        rows.push([copies ? 'on' : 'off', r + 1, x.create64, +x.cpuPerCreate.toFixed(3), x.mkdir1, x.lag ? +(x.lag.mean * 1000).toFixed(1) : '-', x.lag ? (x.lag.p99 === Infinity ? '>10000' : x.lag.p99 * 1000) : '-']);
        if (x.lag) lagNote = `${x.lag.count} flushes observed on the three nodes`;
      }
    }
    tables.push({
      title: 'metadata writes with and without the disk copies (3 processes, 127.0.0.1, fsync on)',
      headers: ['copies', 'run', 'create ops/s (64 in flight)', 'servers\' CPU ms per create', 'mkdir ops/s (1 in flight)', 'copy lag mean ms', 'copy lag p99 ms (bucket bound)'],
      rows,
      notes: [
        `lag: time from an entry's apply on a node to its fdatasync in every disk copy of that node (daemon.metaCopy.flushIntervalMs = ${FLUSH_MS})`,
        lagNote,
        'the cluster\'s disks are directories on the same virtual disk as the Raft logs here; on the appliance they are separate HDDs',
      ],
    });
    if (process.env.CAIRN_BENCH_RECOVERY_SCAN === '0') return tables;
    // 2. Recovery time and scan rate.
    const files = quick ? 100 : 1000;
    const size = quick ? 512 * 1024 : 1024 * 1024;
    const c = await startLocalCluster(3, { keepDir: true, configure: (cfg) => ({ ...cfg, daemon: { ...(cfg.daemon as object), gc: { enabled: false } } }) });
    let disks: string[] = [];
    try {
      await ready(c);
      const fc = c.endpoints.map((e) => new FileClient(e));
      try {
        const payload = randomBytes(size);
        await phase(files, 8, (i) => {
          payload.writeUInt32BE(i, 0); // distinct chunks
          return fc[i % 3]!.put(`/bench/f${i}.bin`, [Buffer.from(payload)], { mode: 'strong', mkdirs: true });
        });
      } finally {
        for (const f of fc) f.close();
      }
      await c.stop();
      for (const n of await readdir(c.dir)) {
        if (!n.startsWith('node')) continue;
        for (const e of await readdir(join(c.dir, n))) if (e.startsWith('disk')) disks.push(join(c.dir, n, e));
      }
      const shards = (await Promise.all(disks.map(shardFiles))).flat();
      const t0 = performance.now();
      let raw = 0;
      for (const f of shards) raw += (await readFile(f)).length;
      const rawSec = (performance.now() - t0) / 1000;
      const t1 = performance.now();
      const rep = await recover({ disks, outDir: '', dryRun: true });
      const total = (performance.now() - t1) / 1000;
      tables.push({
        title: `cairn recover --dry-run: ${files} files of ${size / 1024} KiB (strong puts), 3 disks`,
        headers: ['files intact', 'unrecoverable', 'shards', 'MB checked', 'scan s', 'scan MB/s', 'raw read MB/s', 'scan / raw', 'recovery total s'],
        rows: [[rep.filesIntact.length, rep.filesUnrecoverable.length, rep.scan.shards, +(rep.scan.bytesChecked / 1e6).toFixed(1), +rep.scan.seconds.toFixed(2), Math.round(rep.scan.mbPerSec), Math.round(raw / 1e6 / rawSec), `${Math.round((rep.scan.mbPerSec / (raw / 1e6 / rawSec)) * 100)}%`, +total.toFixed(2)]],
        notes: [
          'raw read: every shard file read once with readFile, one after another, just before the scan (page cache warm for both)',
          'scan: headers of every shard, then for every chunk a file references: its shards read, CRC-32 checked, EC reassembled, SHA-256 checked (one chunk at a time, main thread)',
          `total: copy checks + database restore + tail replay + scan; metadata copy: index ${rep.copy.index} (${rep.copy.tailEntries} tail entries)`,
        ],
      });
    } finally {
      await c.stop();
      await rm(c.dir, { recursive: true, force: true });
    }
    return tables;
  },
};

if (process.argv[1]?.endsWith('recovery.ts')) {
  const quick = process.argv.includes('--quick');
  const tables = await recoverySuite.run({ quick });
  await report('recovery', tables);
  process.exit(0);
}
