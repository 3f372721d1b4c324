/**
 * Chunk layer throughput: put and get of 4 MiB chunks across three chunk servers on 127.0.0.1
 * (separate processes, one directory disk each, all on this machine's file system) at EC 2+1 and replica 3, next to
 * the physical limit measured on the same file system with plain fs: sequential write+fsync and
 * read of the same bytes the scheme stores (shards included), divided by the redundancy overhead.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir, loadavg } from 'node:os';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import { ChunkStore } from '../src/chunk/store.js';
import { bucketId } from '../src/diskmap/bucket-id.js';
import { startChunkServer } from '../src/chunk/service.js';
import { ChunkClients } from '../src/chunk/client.js';
import { writeChunk } from '../src/chunk/writer.js';
import { readChunk } from '../src/chunk/reader.js';
import { ecShardSize } from '../src/chunk/codec.js';
import type { Scheme, ShardTarget } from '../src/chunk/types.js';
import type { BenchSuite, BenchTable } from './table.js';

const CHUNK_BYTES = 4 * 1024 * 1024;
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const IN_FLIGHT = 4;

async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

/** Raw: write each shard-sized file with fsync (same count and sizes as the scheme stores), then read them. */
async function raw(dir: string, chunks: number, scheme: Scheme): Promise<{ writeS: number; readS: number }> {
  await mkdir(dir, { recursive: true });
  const sizes = scheme.kind === 'ec' ? Array.from({ length: scheme.k + scheme.m }, () => ecShardSize(CHUNK_BYTES, scheme.k)) : Array.from({ length: scheme.n }, () => CHUNK_BYTES);
  const buf = randomBytes(CHUNK_BYTES);
  const files = Array.from({ length: chunks }, (_, c) => sizes.map((s, i) => ({ path: join(dir, `${c}.${i}`), size: s }))).flat();
  const t0 = process.hrtime.bigint();
  await pool(files, IN_FLIGHT * sizes.length, async (f) => {
    const fh = await open(f.path, 'w');
    await fh.write(buf, 0, f.size, 0);
    await fh.sync();
    await fh.close();
  });
  const t1 = process.hrtime.bigint();
  await pool(files, IN_FLIGHT * sizes.length, async (f) => {
    await readFile(f.path);
  });
  const t2 = process.hrtime.bigint();
  return { writeS: Number(t1 - t0) / 1e9, readS: Number(t2 - t1) / 1e9 };
}

interface ServerProc {
  address: string;
  diskPath: string;
  child: ChildProcess;
}

/** Start a chunk server as its own process (`cairn chunk serve`), as on a real node. */
async function spawnServer(diskPath: string): Promise<ServerProc> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli', 'main.ts'), 'chunk', 'serve', '--listen', '127.0.0.1:0', '--disk', diskPath], {
    cwd: REPO_ROOT,
    env: { ...process.env, CAIRN_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => l.includes('"ready"'));
      if (line !== undefined) resolve((JSON.parse(line) as { address: string }).address);
    });
    child.on('exit', (code) => reject(new Error(`chunk server exited with ${code}`)));
  });
  return { address, diskPath, child };
}

interface Servers {
  addresses: string[];
  /** Process ids of the servers when they run as their own processes (for their CPU time). */
  pids: number[];
  /** Incarnation label of each server's disk. */
  labels: Array<{ machine: number; incarnation: string }>;
  stop(): Promise<void>;
}

/** Three chunk servers, each its own process (as on real nodes) or all in this process. */
async function startServers(root: string, mode: 'processes' | 'in-process'): Promise<Servers> {
  const addresses: string[] = [];
  const labels: Array<{ machine: number; incarnation: string }> = [];
  const pids: number[] = [];
  const stops: Array<() => Promise<void>> = [];
  try {
    for (let i = 0; i < 3; i++) {
      const p = join(root, `node${i}`);
      const label = await ChunkStore.formatDisk(p, { dc: 0, row: 0, rack: 0, machine: i + 1, disk: 0 });
      labels.push(label);
      if (mode === 'processes') {
        const s = await spawnServer(p);
        addresses.push(s.address);
        if (s.child.pid !== undefined) pids.push(s.child.pid);
        stops.push(async () => {
          s.child.kill('SIGTERM');
          await new Promise((r) => s.child.once('exit', r));
        });
      } else {
        const s = await startChunkServer('127.0.0.1:0', await ChunkStore.open([p]));
        addresses.push(s.address);
        stops.push(() => s.stop());
      }
    }
  } catch (err) {
    for (const stop of stops) await stop();
    throw err;
  }
  return {
    addresses,
    pids,
    labels,
    stop: async () => {
      for (const stop of stops) await stop();
    },
  };
}

/** CPU time (user + system) of other processes, ms, from /proc/<pid>/stat (clock ticks of 10 ms). */
async function procCpuMs(pids: number[]): Promise<number> {
  let ticks = 0;
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  }
  return ticks * 10;
}

function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

interface CairnRun {
  writeS: number;
  readS: number;
  /** CPU ms of this process (client; plus the servers in-process) during puts and gets. */
  clientPutMs: number;
  clientGetMs: number;
  /** CPU ms of the server processes (0 in-process). */
  serverPutMs: number;
  serverGetMs: number;
}

async function cairn(root: string, chunks: number, scheme: Scheme, mode: 'processes' | 'in-process'): Promise<CairnRun> {
  const n = scheme.kind === 'ec' ? scheme.k + scheme.m : scheme.n;
  const servers = await startServers(root, mode);
  const clients = new ChunkClients();
  try {
    const targets: ShardTarget[] = [];
    for (let i = 0; i < n; i++) {
      const label = servers.labels[i % 3] as { machine: number; incarnation: string };
      targets.push({
        bucketId: bucketId({ dc: 0, row: 0, rack: 0, machine: label.machine, disk: 0, bucket: 1 + Math.floor(i / 3), incarnation: BigInt(`0x${label.incarnation}`) }),
        address: servers.addresses[i % 3] as string,
      });
    }
    const data = Array.from({ length: chunks }, () => randomBytes(CHUNK_BYTES));
    const hashes: string[] = [];
    // Warm-up: connections and bucket directories.
    await writeChunk(clients, randomBytes(1024), scheme, targets);
    const c0 = ownCpuMs();
    const s0 = await procCpuMs(servers.pids);
    const t0 = process.hrtime.bigint();
    await pool(
      data.map((d, i) => ({ d, i })),
      IN_FLIGHT,
      async ({ d, i }) => {
        const w = await writeChunk(clients, d, scheme, targets);
        if (w.failed.length > 0) throw new Error(`write failed: ${w.failed[0]?.error.message}`);
        hashes[i] = w.hash;
      },
    );
    const t1 = process.hrtime.bigint();
    const c1 = ownCpuMs();
    const s1 = await procCpuMs(servers.pids);
    await pool(hashes, IN_FLIGHT, async (h) => {
      await readChunk(clients, h, scheme, targets);
    });
    const t2 = process.hrtime.bigint();
    const c2 = ownCpuMs();
    const s2 = await procCpuMs(servers.pids);
    return {
      writeS: Number(t1 - t0) / 1e9,
      readS: Number(t2 - t1) / 1e9,
      clientPutMs: c1 - c0,
      clientGetMs: c2 - c1,
      serverPutMs: s1 - s0,
      serverGetMs: s2 - s1,
    };
  } finally {
    clients.close();
    await servers.stop();
  }
}

export const chunkSuite: BenchSuite = {
  name: 'chunk',
  async run({ quick }) {
    const chunks = quick ? 24 : 96;
    const root = join(tmpdir(), `cairn-bench-chunk-${process.pid}`);
    const rows: Array<Array<string | number>> = [];
    const schemes: Scheme[] = [
      { kind: 'ec', k: 2, m: 1 },
      { kind: 'replica', n: 3 },
    ];
    const mbps = (bytes: number, s: number): number => Math.round(bytes / s / 1e6);
    const loadBefore = loadavg()[0] ?? 0;
    try {
      for (const scheme of schemes) {
        const tag = scheme.kind === 'ec' ? `EC ${scheme.k}+${scheme.m}` : `replica ${scheme.n}`;
        const userBytes = chunks * CHUNK_BYTES;
        const r = await raw(join(root, 'raw'), chunks, scheme);
        await rm(root, { recursive: true, force: true });
        const limitW = mbps(userBytes, r.writeS);
        const limitR = mbps(userBytes, r.readS);
        for (const mode of ['processes', 'in-process'] as const) {
          const c = await cairn(join(root, 'cairn'), chunks, scheme, mode);
          await rm(root, { recursive: true, force: true });
          const putW = mbps(userBytes, c.writeS);
          const getR = mbps(userBytes, c.readS);
          const perMb = (ms: number): string => (mode === 'in-process' && ms === 0 ? '-' : (ms / (userBytes / 1e6)).toFixed(1));
          rows.push([tag, mode, 'put', putW, limitW, `${Math.round((100 * putW) / limitW)}%`, perMb(c.clientPutMs), mode === 'processes' ? perMb(c.serverPutMs) : '-']);
          rows.push([tag, mode, 'get', getR, limitR, `${Math.round((100 * getR) / limitR)}%`, perMb(c.clientGetMs), mode === 'processes' ? perMb(c.serverGetMs) : '-']);
        }
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
    const table: BenchTable = {
      title: `chunk put/get, ${chunks} × 4 MiB chunks, ${IN_FLIGHT} in flight, 3 chunk servers on 127.0.0.1 (MB/s of chunk data)`,
      headers: ['scheme', 'servers', 'op', 'cairn MB/s', 'limit MB/s', 'of limit', 'client CPU ms/MB', 'servers CPU ms/MB'],
      rows,
      notes: [
        'limit = plain fs on the same file system writing (write+fsync) / reading the same shard files the scheme stores, in the same parallelism, expressed per byte of chunk data (i.e. after redundancy overhead)',
        'servers "processes": each chunk server is its own process (`cairn chunk serve`), as on real nodes; "in-process": the three servers share the client\'s process and thread',
        'CPU ms/MB: CPU time (user + system) per MB of chunk data, the figure least skewed by other load; "client" is this process (servers included when in-process), "servers" the three server processes together',
        'everything shares this 2-core machine; reads come from the page cache in both columns',
        `1-minute load average when the suite started: ${loadBefore.toFixed(1)} (other work on the machine skews every column)`,
      ],
    };
    return [table];
  },
};
