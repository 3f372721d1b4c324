/**
 * Client benchmarks (issue 6): chunker throughput (fixed vs FastCDC, cut only and cut + SHA-256),
 * what each chunker stores after an insertion into a file, and the write cache's throughput with
 * and without fsync; and the whole file API against the real services (3-node metadata cluster
 * and three chunk servers at EC 2+1, all in this process on one machine): sequential write and
 * read, 4 KiB random writes with a commit every N, small files, commit latency.
 */
import { randomBytes, createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchSuite, BenchTable } from './table.js';
import { fixedChunker, fastCdcChunker, cutAll, type Chunker } from '../src/client/chunker.js';
import { CairnFs } from '../src/client/index.js';
import { StubMeta, StubChunks } from '../test/client/helpers/stub-ports.js';
import { startRealServices } from '../test/client/helpers/real-services.js';

const KIB = 1024;
const MIB = 1024 * KIB;

function mbps(bytes: number, ms: number): number {
  return Math.round((bytes / MIB / (ms / 1000)) * 10) / 10;
}

function time(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function chunkHashes(c: Chunker, data: Buffer): Map<string, number> {
  const out = new Map<string, number>();
  let p = 0;
  for (const l of cutAll(c, data)) {
    out.set(createHash('sha256').update(data.subarray(p, p + l)).digest('hex'), l);
    p += l;
  }
  return out;
}

function chunkers(): Chunker[] {
  return [
    fixedChunker(4 * MIB),
    fixedChunker(1 * MIB),
    fastCdcChunker({ minBytes: 1 * MIB, avgBytes: 4 * MIB, maxBytes: 16 * MIB }),
    fastCdcChunker({ minBytes: 256 * KIB, avgBytes: 1 * MIB, maxBytes: 4 * MIB }),
  ];
}

async function chunkerTables(quick: boolean): Promise<BenchTable[]> {
  const size = (quick ? 64 : 256) * MIB;
  const data = randomBytes(size);
  const rows: (string | number)[][] = [];
  for (const c of chunkers()) {
    let n = 0;
    const cutMs = Math.min(...[0, 1, 2].map(() => time(() => (n = cutAll(c, data).length))));
    const hashMs = Math.min(
      ...[0, 1].map(() =>
        time(() => {
          let p = 0;
          for (const l of cutAll(c, data)) {
            createHash('sha256').update(data.subarray(p, p + l)).digest();
            p += l;
          }
        }),
      ),
    );
    rows.push([c.name, n, Math.round(size / n / KIB), c.name.startsWith('fixed') ? 'no scan' : mbps(size, cutMs), mbps(size, hashMs)]);
  }
  // An insertion of 100 bytes in the middle, the file saved again as a whole (editor-style save).
  const file = data.subarray(0, (quick ? 32 : 64) * MIB);
  const mid = Math.floor(file.length / 2) + 12345;
  const edited = Buffer.concat([file.subarray(0, mid), randomBytes(100), file.subarray(mid)]);
  const dedupRows: (string | number)[][] = [];
  for (const c of chunkers()) {
    const a = chunkHashes(c, file);
    const b = chunkHashes(c, edited);
    let newBytes = 0;
    for (const [h, l] of b) if (!a.has(h)) newBytes += l;
    dedupRows.push([c.name, b.size, Math.round((newBytes / MIB) * 100) / 100, `${Math.round((newBytes / edited.length) * 1000) / 10} %`]);
  }
  return [
    {
      title: `chunker throughput over ${size / MIB} MiB of random data (best of 3 / 2)`,
      headers: ['chunker', 'chunks', 'mean KiB', 'cut MB/s', 'cut + SHA-256 MB/s'],
      rows,
      notes: ['MB/s = MiB/s. SHA-256 is node:crypto. Cut for fixed-size chunks is arithmetic only.'],
    },
    {
      title: `bytes to store after inserting 100 bytes in the middle of a ${file.length / MIB} MiB file saved whole`,
      headers: ['chunker', 'chunks', 'new MiB', 'new share'],
      rows: dedupRows,
      notes: [
        'In-place rewrites (what databases and most programs do through a file system) store one chunk with either chunker: the planner rewrites only the extents a write touches.',
      ],
    },
  ];
}

async function cacheTables(quick: boolean): Promise<BenchTable[]> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-client-'));
  try {
    const fs = await CairnFs.start(
      { cacheDir: join(dir, 'cache'), idleCommitDelayMs: 600_000, dirtyThresholdBytes: 4096 * MIB, cacheMaxBytes: 4096 * MIB },
      { meta: new StubMeta(join(dir, 'meta')), chunks: new StubChunks(join(dir, 'store')) },
    );
    const rows: (string | number)[][] = [];
    const total = (quick ? 64 : 256) * MIB;
    const big = randomBytes(MIB);
    const run = async (name: string, writeBytes: number, count: number, fsyncEvery: number): Promise<void> => {
      const fd = await fs.open(`/${name}`, { create: true });
      const buf = big.subarray(0, writeBytes);
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < count; i++) {
        await fs.write(fd, buf, i * writeBytes);
        if (fsyncEvery > 0 && (i + 1) % fsyncEvery === 0) await fs.fsync(fd);
      }
      await fs.fsync(fd);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      rows.push([name, writeBytes / KIB, count, fsyncEvery === 0 ? 'end' : fsyncEvery, mbps(writeBytes * count, ms), Math.round((count / ms) * 1000)]);
      await fs.close(fd);
    };
    await run('seq-1m-nofsync', MIB, total / MIB, 0);
    await run('seq-1m-fsync-each', MIB, total / MIB, 1);
    const n4k = quick ? 2000 : 8000;
    await run('4k-nofsync', 4 * KIB, n4k, 0);
    await run('4k-fsync-each-32', 4 * KIB, n4k, 32);
    await run('4k-fsync-each', 4 * KIB, Math.floor(n4k / 4), 1);
    await fs.shutdown();
    return [
      {
        title: 'write cache (weak mode: journal append; fsync = fdatasync of the journal)',
        headers: ['run', 'write KiB', 'writes', 'fsync every', 'MiB/s', 'writes/s'],
        rows,
        notes: [
          'No commit runs during these (idle delay 10 min): this is the cache alone, the cost a weak-mode write pays.',
          'Anchor (../shared/bench/dfs/RESULTS.md, same machine): local ext4 seq write 356 MiB/s; fio rand 4k fsync/32 24815 IOPS.',
        ],
      },
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 10) / 10;
}

async function pipelineTables(quick: boolean): Promise<BenchTable[]> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-client-e2e-'));
  const svc = await startRealServices(dir);
  const rows: (string | number)[][] = [];
  const lat: (string | number)[][] = [];
  try {
    const start = (cache: string, mode: 'weak' | 'strong') =>
      CairnFs.start({ cacheDir: join(dir, cache), mode, idleCommitDelayMs: 600_000, retryBaseMs: 20 }, { meta: svc.meta, chunks: svc.chunks });
    const total = (quick ? 64 : 256) * MIB;
    const block = randomBytes(MIB);
    for (const mode of ['weak', 'strong'] as const) {
      const fs = await start(`seq-${mode}`, mode);
      const fd = await fs.open(`/seq-${mode}`, { create: true });
      const t0 = process.hrtime.bigint();
      for (let off = 0; off < total; off += MIB) {
        block.writeUInt32BE(off / MIB, 0);
        await fs.write(fd, block, off);
      }
      const tWritten = process.hrtime.bigint();
      await fs.close(fd); // strong: waits for the durable commit
      const tClosed = process.hrtime.bigint();
      await fs.commit(`/seq-${mode}`, 'durable');
      const tDurable = process.hrtime.bigint();
      const ms = (a: bigint, b: bigint): number => Number(b - a) / 1e6;
      rows.push([`seq write 1 MiB × ${total / MIB}, ${mode}`, mbps(total, ms(t0, tClosed)), mbps(total, ms(t0, tDurable))]);
      void tWritten;
      await fs.shutdown();
    }
    {
      const fs = await start('reader', 'weak');
      const fd = await fs.open('/seq-weak');
      const t0 = process.hrtime.bigint();
      for (let off = 0; off < total; off += MIB) await fs.read(fd, MIB, off);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      rows.push([`seq read 1 MiB × ${total / MIB} (another node, cold)`, mbps(total, ms), mbps(total, ms)]);
      await fs.shutdown();
    }
    for (const slices of [false, true]) {
      // 4 KiB random writes into a 64 MiB file, commit (durable) every N writes; without and with
      // slices (a commit stores only the bytes it changed), counting the chunk bytes stored.
      let stored = 0;
      const counting = { ...svc.chunks, putChunk: (h: string, b: Buffer) => ((stored += b.length), svc.chunks.putChunk(h, b)), getChunk: svc.chunks.getChunk.bind(svc.chunks), health: svc.chunks.health.bind(svc.chunks) };
      const fs = await CairnFs.start({ cacheDir: join(dir, `rand-${slices}`), mode: 'weak', idleCommitDelayMs: 600_000, retryBaseMs: 20, slices }, { meta: svc.meta, chunks: counting });
      const size = 64 * MIB;
      const fd = await fs.open('/rand', { create: true });
      for (let off = 0; off < size; off += MIB) await fs.write(fd, block, off);
      await fs.commit(fd, 'durable');
      const every = 32;
      const commits = quick ? 10 : 30;
      const page = randomBytes(4 * KIB);
      const commitMs: number[] = [];
      stored = 0;
      const t0 = process.hrtime.bigint();
      for (let c = 0; c < commits; c++) {
        for (let i = 0; i < every; i++) await fs.write(fd, page, Math.floor(Math.random() * (size / 4096)) * 4096);
        const c0 = process.hrtime.bigint();
        await fs.commit(fd, 'durable');
        commitMs.push(Number(process.hrtime.bigint() - c0) / 1e6);
      }
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const tag = slices ? 'slices' : 'whole chunks';
      rows.push([`4 KiB random writes, durable commit every ${every} (${tag}): writes/s; KiB stored per 4 KiB write`, Math.round(((every * commits) / ms) * 1000), Math.round(stored / (every * commits) / KIB)]);
      commitMs.sort((a, b) => a - b);
      lat.push([`commit of ${every} random 4 KiB pages (4 MiB chunks, ${tag})`, commitMs.length, pct(commitMs, 50), pct(commitMs, 99)]);
      await fs.close(fd);
      await fs.shutdown();
    }
    {
      const fs = await start('small', 'strong');
      const n = quick ? 100 : 500;
      const body = randomBytes(4 * KIB);
      const per: number[] = [];
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        const s0 = process.hrtime.bigint();
        const fd = await fs.open(`/small-${i}`, { create: true });
        await fs.write(fd, body);
        await fs.close(fd);
        per.push(Number(process.hrtime.bigint() - s0) / 1e6);
      }
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      rows.push([`${n} small files (4 KiB), created and committed durable (strong close): files/s`, Math.round((n / ms) * 1000), '-']);
      per.sort((a, b) => a - b);
      lat.push(['create + write 4 KiB + strong close (durable)', per.length, pct(per, 50), pct(per, 99)]);
      await fs.shutdown();
    }
  } finally {
    await svc.close();
    await rm(dir, { recursive: true, force: true });
  }
  return [
    {
      title: 'file API over the real services (3 metadata nodes + 3 chunk servers at EC 2+1, one process, one disk)',
      headers: ['run', 'MiB/s to close (or value)', 'MiB/s to durable'],
      rows,
      notes: [
        'Weak close returns at once (data in the cache); "to durable" includes the commit. Strong close returns durable.',
        'Anchors (../shared/bench/dfs/RESULTS.md, same machine): GlusterFS disperse 2+1 seq write 114 MiB/s, read 230 MiB/s, 170 creates/s; MooseFS 282 / 372 MiB/s; local 356 / 1389 MiB/s.',
      ],
    },
    { title: 'latency (ms)', headers: ['operation', 'samples', 'p50', 'p99'], rows: lat },
  ];
}

export const clientSuite: BenchSuite = {
  name: 'client',
  async run({ quick }) {
    return [...(await chunkerTables(quick)), ...(await cacheTables(quick)), ...(await pipelineTables(quick))];
  },
};
