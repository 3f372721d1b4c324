/**
 * Chunk layer throughput: put and get of 4 MiB chunks across three chunk servers on 127.0.0.1
 * (separate processes, one directory disk each, all on this machine's file system) at EC 2+1 and
 * replica 3, next to the physical limit measured on the same file system with plain fs:
 *
 *   put   the shard files the scheme stores (k+m shards, or n replicas) written and fsynced, in
 *         the same parallelism, per byte of chunk data (i.e. after the redundancy overhead);
 *   get   the files a get reads (the k data shards, or one replica) read back — from the disk
 *         (the pages dropped from the page cache first, as fio does before a read job, and as
 *         for Cairn's get), and again from the page cache, as a CPU-bound comparison.
 *
 * This file is also its own worker: `tsx bench/chunk.ts --serve <disk>` is a chunk server (what
 * `cairn chunk serve` runs: ChunkStore.open + startChunkServer) and `--raw <json>` measures the
 * plain-fs limit in a process of its own (so that its thread pool can match its parallelism).
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir, mkdir, rm } from 'node:fs/promises';
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
const HERE = fileURLToPath(import.meta.url);
const REPO_ROOT = join(dirname(HERE), '..');
/** Chunks written or read at once by the client (CAIRN_BENCH_CHUNK_IN_FLIGHT to try others). */
const IN_FLIGHT = Number(process.env.CAIRN_BENCH_CHUNK_IN_FLIGHT ?? 4);
/**
 * libuv thread pool of each chunk server process. With the default 4, four shard fsyncs hold
 * every thread and the short fs calls of other puts queue behind them (docs/chunk.md).
 */
export const CHUNK_SERVER_THREADPOOL = 16;

/** Run fn over items, `width` at a time; `slot` (0..width-1) says which of the parallel lanes runs it. */
async function pool<T>(items: T[], width: number, fn: (t: T, slot: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async (_, slot) => {
      while (next < items.length) await fn(items[next++] as T, slot);
    }),
  );
}

/** Read a whole file into the start of buf (as large reads as the file allows). */
async function readInto(path: string, size: number, buf: Buffer): Promise<void> {
  const fh = await open(path, 'r');
  try {
    let at = 0;
    while (at < size) {
      const { bytesRead } = await fh.read(buf, at, size - at, at);
      if (bytesRead === 0) throw new Error(`${path}: ended after ${at} of ${size} bytes`);
      at += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/**
 * Drop files from the page cache (posix_fadvise DONTNEED, through GNU dd's iflag=nocache; the
 * files were fsynced, so their pages are clean). False if that is not possible here.
 */
async function evict(files: string[]): Promise<boolean> {
  for (let i = 0; i < files.length; i += 200) {
    const batch = files.slice(i, i + 200);
    const ok = await new Promise<boolean>((resolve) => {
      const p = spawn('sh', ['-c', 'for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none || exit 1; done', 'sh', ...batch], { stdio: 'ignore' });
      p.on('exit', (c) => resolve(c === 0));
      p.on('error', () => resolve(false));
    });
    if (!ok) return false;
  }
  return true;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.push(join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
  }
  return out;
}

interface RawJob {
  dir: string;
  chunks: number;
  /** Size of each shard file of one chunk. */
  sizes: number[];
  /** Shard indexes a get reads. */
  readIndexes: number[];
}

interface RawResult {
  writeS: number;
  diskReadS: number;
  cachedReadS: number;
  /** CPU ms (user + system) of the limit's process in each phase. */
  writeCpuMs: number;
  diskReadCpuMs: number;
  cachedReadCpuMs: number;
  evicted: boolean;
}

/** The plain-fs limit (runs in the --raw worker process). */
async function rawWorker(job: RawJob): Promise<RawResult> {
  await mkdir(job.dir, { recursive: true });
  const buf = randomBytes(CHUNK_BYTES);
  const files = Array.from({ length: job.chunks }, (_, c) => job.sizes.map((s, i) => ({ path: join(job.dir, `${c}.${i}`), size: s, index: i }))).flat();
  const c0 = ownCpuMs();
  const t0 = process.hrtime.bigint();
  await pool(files, IN_FLIGHT * job.sizes.length, async (f) => {
    const fh = await open(f.path, 'w');
    await fh.write(buf, 0, f.size, 0);
    await fh.sync();
    await fh.close();
  });
  const t1 = process.hrtime.bigint();
  const c1 = ownCpuMs();
  const reads = files.filter((f) => job.readIndexes.includes(f.index));
  const evicted = await evict(reads.map((f) => f.path));
  const c2 = ownCpuMs();
  // Each parallel reader reads into a buffer of its own, reused (as Cairn's get does below).
  const width = IN_FLIGHT * job.readIndexes.length;
  const bufs = Array.from({ length: width }, () => Buffer.allocUnsafe(Math.max(...job.sizes)));
  const t2 = process.hrtime.bigint();
  await pool(reads, width, (f, slot) => readInto(f.path, f.size, bufs[slot] as Buffer));
  const t3 = process.hrtime.bigint();
  const c3 = ownCpuMs();
  await pool(reads, width, (f, slot) => readInto(f.path, f.size, bufs[slot] as Buffer));
  const t4 = process.hrtime.bigint();
  const c4 = ownCpuMs();
  await rm(job.dir, { recursive: true, force: true });
  return {
    writeS: Number(t1 - t0) / 1e9,
    diskReadS: Number(t3 - t2) / 1e9,
    cachedReadS: Number(t4 - t3) / 1e9,
    writeCpuMs: c1 - c0,
    diskReadCpuMs: c3 - c2,
    cachedReadCpuMs: c4 - c3,
    evicted,
  };
}

/** Run this file as a worker process and read the one JSON line it prints. */
function spawnSelf(args: string[], env: Record<string, string>): { child: ChildProcess; line: Promise<string> } {
  const child = spawn(process.execPath, ['--import', 'tsx', HERE, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, CAIRN_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const l = out.split('\n').find((x) => x.startsWith('{'));
      if (l !== undefined) resolve(l);
    });
    child.on('exit', (code) => reject(new Error(`bench worker ${args[0]} exited with ${code}`)));
  });
  return { child, line };
}

async function raw(dir: string, chunks: number, scheme: Scheme): Promise<RawResult> {
  const sizes = scheme.kind === 'ec' ? Array.from({ length: scheme.k + scheme.m }, () => ecShardSize(CHUNK_BYTES, scheme.k)) : Array.from({ length: scheme.n }, () => CHUNK_BYTES);
  const readIndexes = scheme.kind === 'ec' ? Array.from({ length: scheme.k }, (_, i) => i) : [0];
  const job: RawJob = { dir, chunks, sizes, readIndexes };
  // One thread per file in flight: plain fs is never short of threads.
  const w = spawnSelf(['--raw', JSON.stringify(job)], { UV_THREADPOOL_SIZE: String(IN_FLIGHT * sizes.length) });
  return JSON.parse(await w.line) as RawResult;
}

interface ServerProc {
  address: string;
  child: ChildProcess;
}

/** Start a chunk server as its own process, as on a real node. */
async function spawnServer(diskPath: string): Promise<ServerProc> {
  const w = spawnSelf(['--serve', diskPath], { UV_THREADPOOL_SIZE: String(CHUNK_SERVER_THREADPOOL) });
  const address = (JSON.parse(await w.line) as { address: string }).address;
  return { address, child: w.child };
}

interface Servers {
  addresses: string[];
  /** Process ids of the servers when they run as their own processes (for their CPU time). */
  pids: number[];
  /** Incarnation label of each server's disk. */
  labels: Array<{ machine: number; incarnation: string }>;
  /** The stores, when they run in this process (its clients call them directly, as a node daemon calls its own). */
  local: Array<{ address: string; store: ChunkStore }>;
  stop(): Promise<void>;
}

/** Three chunk servers, each its own process (as on real nodes) or all in this process. */
async function startServers(root: string, mode: 'processes' | 'in-process'): Promise<Servers> {
  const addresses: string[] = [];
  const labels: Array<{ machine: number; incarnation: string }> = [];
  const pids: number[] = [];
  const local: Array<{ address: string; store: ChunkStore }> = [];
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
        const store = await ChunkStore.open([p]);
        const s = await startChunkServer('127.0.0.1:0', store);
        addresses.push(s.address);
        local.push({ address: s.address, store });
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
    local,
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

interface Phase {
  s: number;
  /** CPU ms of this process (client; plus the servers in-process). */
  clientMs: number;
  /** CPU ms of the server processes (0 in-process). */
  serverMs: number;
}

interface CairnRound {
  put: Phase;
  /** Gets with short-circuit local reads (the default when the disks are on the client's host). */
  diskGet: Phase;
  cachedGet: Phase;
  /** Gets through the servers (CAIRN_CHUNK_SHORT_CIRCUIT=0), from disk. */
  remoteDiskGet: Phase;
  evicted: boolean;
}

async function measured(pids: number[], fn: () => Promise<void>): Promise<Phase> {
  const c0 = ownCpuMs();
  const s0 = await procCpuMs(pids);
  const t0 = process.hrtime.bigint();
  await fn();
  const t1 = process.hrtime.bigint();
  return { s: Number(t1 - t0) / 1e9, clientMs: ownCpuMs() - c0, serverMs: (await procCpuMs(pids)) - s0 };
}

/** Three servers for one scheme; each round() puts fresh chunks, then gets them from disk and from the page cache. */
async function cairnServers(root: string, scheme: Scheme, mode: 'processes' | 'in-process'): Promise<{ round(chunks: number): Promise<CairnRound>; stop(): Promise<void> }> {
  const n = scheme.kind === 'ec' ? scheme.k + scheme.m : scheme.n;
  const servers = await startServers(root, mode);
  // In-process, the client calls the stores directly (src/chunk/client.ts), as a node daemon
  // writes and reads its own disks: one process serving three disks, the one-box appliance.
  const clients = new ChunkClients({ local: servers.local });
  // The same reads through the servers (as from another host), for comparison.
  const remoteClients = new ChunkClients({ shortCircuit: false });
  const targets: ShardTarget[] = [];
  for (let i = 0; i < n; i++) {
    const label = servers.labels[i % 3] as { machine: number; incarnation: string };
    targets.push({
      bucketId: bucketId({ dc: 0, row: 0, rack: 0, machine: label.machine, disk: 0, bucket: 1 + Math.floor(i / 3), incarnation: BigInt(`0x${label.incarnation}`) }),
      address: servers.addresses[i % 3] as string,
    });
  }
  try {
    // Warm-up: connections and bucket directories.
    await writeChunk(clients, randomBytes(1024), scheme, targets);
    await writeChunk(remoteClients, randomBytes(1024), scheme, targets);
    // Which servers' disks are mounted here (a long-running client has long learned it).
    for (const a of servers.addresses) await clients.get(a).learnLocalDisks();
  } catch (err) {
    clients.close();
    remoteClients.close();
    await servers.stop();
    throw err;
  }
  return {
    async round(chunks) {
      const data = Array.from({ length: chunks }, () => randomBytes(CHUNK_BYTES));
      const hashes: string[] = [];
      const put = await measured(servers.pids, () =>
        pool(
          data.map((d, i) => ({ d, i })),
          IN_FLIGHT,
          async ({ d, i }) => {
            const w = await writeChunk(clients, d, scheme, targets);
            if (w.failed.length > 0) throw new Error(`write failed: ${w.failed[0]?.error.message}`);
            hashes[i] = w.hash;
          },
        ),
      );
      // Each chunk read in flight has a destination buffer of its own, reused (readChunk's
      // `into`), as a reader that consumes chunks into its own buffers would.
      const dest = Array.from({ length: IN_FLIGHT }, () => Buffer.allocUnsafe(CHUNK_BYTES + 64));
      const getAll = (via: ChunkClients) => (): Promise<void> =>
        pool(hashes, IN_FLIGHT, async (h, slot) => {
          await readChunk(via, h, scheme, targets, { into: dest[slot] });
        });
      const shardFiles = (await Promise.all([0, 1, 2].map((i) => filesUnder(join(root, `node${i}`))))).flat().filter((f) => f.includes('/shards/'));
      let evicted = await evict(shardFiles);
      const diskGet = await measured(servers.pids, getAll(clients));
      const cachedGet = await measured(servers.pids, getAll(clients));
      evicted &&= await evict(shardFiles);
      const remoteDiskGet = await measured(servers.pids, getAll(remoteClients));
      return { put, diskGet, cachedGet, remoteDiskGet, evicted };
    },
    async stop() {
      clients.close();
      remoteClients.close();
      await servers.stop();
    },
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export const chunkSuite: BenchSuite = {
  name: 'chunk',
  async run({ quick }) {
    const chunks = quick ? 24 : 96;
    const rounds = 3;
    const root = join(tmpdir(), `cairn-bench-chunk-${process.pid}`);
    const rows: Array<Array<string | number>> = [];
    const schemes: Scheme[] = [
      { kind: 'ec', k: 2, m: 1 },
      { kind: 'replica', n: 3 },
    ];
    const userBytes = chunks * CHUNK_BYTES;
    const mbps = (s: number): number => userBytes / s / 1e6;
    const loadBefore = loadavg()[0] ?? 0;
    let allEvicted = true;
    try {
      for (const scheme of schemes) {
        const tag = scheme.kind === 'ec' ? `EC ${scheme.k}+${scheme.m}` : `replica ${scheme.n}`;
        for (const mode of ['processes', 'in-process'] as const) {
          const servers = await cairnServers(join(root, 'cairn'), scheme, mode);
          const limits: RawResult[] = [];
          const runs: CairnRound[] = [];
          try {
            // Limit and Cairn alternate, round by round, so that both see the same load.
            for (let r = 0; r < rounds; r++) {
              const l = await raw(join(root, 'raw'), chunks, scheme);
              const c = await servers.round(chunks);
              allEvicted &&= l.evicted && c.evicted;
              limits.push(l);
              runs.push(c);
            }
          } finally {
            await servers.stop();
            await rm(root, { recursive: true, force: true });
          }
          const perMb = (ms: number): string => (ms / ((rounds * userBytes) / 1e6)).toFixed(1);
          const row = (op: string, phase: (c: CairnRound) => Phase, limitS: (l: RawResult) => number, limitCpuMs: (l: RawResult) => number): Array<string | number> => {
            const got = runs.map((c) => mbps(phase(c).s));
            const lim = limits.map((l) => mbps(limitS(l)));
            const ratio = median(got.map((g, i) => g / (lim[i] as number)));
            const cpu = (f: (p: Phase) => number): number => runs.reduce((a, c) => a + f(phase(c)), 0);
            return [
              tag,
              mode,
              op,
              Math.round(median(got)),
              Math.round(median(lim)),
              `${Math.round(100 * ratio)}%`,
              perMb(cpu((p) => p.clientMs)),
              mode === 'processes' ? perMb(cpu((p) => p.serverMs)) : '-',
              perMb(limits.reduce((a, l) => a + limitCpuMs(l), 0)),
            ];
          };
          rows.push(row('put', (c) => c.put, (l) => l.writeS, (l) => l.writeCpuMs));
          rows.push(row('get (disk)', (c) => c.diskGet, (l) => l.diskReadS, (l) => l.diskReadCpuMs));
          rows.push(row('get (page cache)', (c) => c.cachedGet, (l) => l.cachedReadS, (l) => l.cachedReadCpuMs));
          rows.push(row('get (disk) via server', (c) => c.remoteDiskGet, (l) => l.diskReadS, (l) => l.diskReadCpuMs));
        }
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
    const table: BenchTable = {
      title: `chunk put/get, ${rounds} rounds × ${chunks} × 4 MiB chunks, ${IN_FLIGHT} in flight, 3 chunk servers on 127.0.0.1 (MB/s of chunk data, medians of the rounds)`,
      headers: ['scheme', 'servers', 'op', 'cairn MB/s', 'limit MB/s', 'of limit', 'client CPU ms/MB', 'servers CPU ms/MB', 'limit CPU ms/MB'],
      rows,
      notes: [
        'limit, put = plain fs on the same file system writing + fsyncing the shard files the scheme stores (k+m shards or n replicas), in the same parallelism (one thread per file in flight), per byte of chunk data (i.e. after the redundancy overhead)',
        'limit, get = plain fs reading the files a get reads (the k data shards, or one replica), in the same parallelism; "disk": their pages dropped from the page cache first (posix_fadvise DONTNEED, as fio does before a read job) — for Cairn\'s get too; "page cache": read again right after, from memory (a CPU comparison, not a storage limit)',
        'get (disk), get (page cache): short-circuit local reads (the client reads the shard files of servers whose disks are on its host, src/chunk/local.ts; the default); "get (disk) via server": the same reads through the chunk servers (CAIRN_CHUNK_SHORT_CIRCUIT=0, as a client on another host), against the same limit',
        'each round measures the limit, then Cairn, on fresh data; "of limit" is the median of the rounds\' ratios, the MB/s columns the medians of the rounds',
        allEvicted ? 'every "get (disk)" row read files dropped from the page cache' : 'WARNING: dropping files from the page cache failed (no GNU dd?): the "get (disk)" rows read from the page cache',
        `servers "processes": each chunk server is its own process (ChunkStore.open + startChunkServer, what \`cairn chunk serve\` runs), UV_THREADPOOL_SIZE=${CHUNK_SERVER_THREADPOOL}; "in-process": the three stores are in the client's process and it calls them directly, with no socket (as a node daemon calls its own disks: the one-box appliance, one process serving three disks); its "via server" row still goes through their RPC servers`,
        'CPU ms/MB: CPU time (user + system) per MB of chunk data, over all rounds, the figure least skewed by other load; "client" is this process (servers included when in-process), "servers" the three server processes together, "limit" the plain-fs process (kernel time of its fsyncs and reads included). When the machine is short of CPU, the "of limit" ratio tends towards limit CPU / (client + servers CPU)',
        `1-minute load average: ${loadBefore.toFixed(1)} when the suite started, ${(loadavg()[0] ?? 0).toFixed(1)} when it ended (2 cores; other work on the machine skews every MB/s column)`,
      ],
    };
    return [table];
  },
};

// ---- worker modes (this file run directly) ----

if (process.argv[1] === HERE && process.argv[2] === '--serve') {
  const store = await ChunkStore.open([process.argv[3] as string]);
  const server = await startChunkServer('127.0.0.1:0', store);
  process.stdout.write(`${JSON.stringify({ ready: true, address: server.address, pid: process.pid })}\n`);
  process.once('SIGTERM', () => {
    void server.stop(500).then(() => process.exit(0));
  });
} else if (process.argv[1] === HERE && process.argv[2] === '--raw') {
  const result = await rawWorker(JSON.parse(process.argv[3] as string) as RawJob);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
