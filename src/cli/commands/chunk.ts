/**
 * `cairn chunk …`: the chunk layer by hand (development, tests, benchmarks, recovery).
 *   format  write a disk label on a directory (a new disk incarnation)
 *   serve   run a chunk service over some disks until SIGTERM/SIGINT
 *   disks   show the disk status of a running chunk service
 *   scrub   verify every shard on local disks once (quarantines bad ones; no rebuild)
 * Offline, on a disk directory alone (no cluster, nothing changed; a disk moved to another machine):
 *   ls      the disk's label, buckets and metadata copies; with --bucket, that bucket's shards
 *   verify  every shard's header and payload CRC-32 (replicas: the chunk's SHA-256 too)
 *   header  one shard file's header, checked against its name and size
 */
import { CairnError } from '../../common/errors.js';
import type { Command } from 'commander';
import { z } from 'zod';
import { addressSchema } from '../../common/config.js';
import { logger } from '../../common/log.js';
import { printJson, printTable } from '../output.js';
import { parseOptions } from '../usage.js';
import { untilSignal } from '../signals.js';

const byte = z.coerce.number().int().min(0).max(255);

const formatSchema = z.object({
  dc: byte.default(0),
  row: byte.default(0),
  rack: byte.default(0),
  machine: byte,
  disk: z.coerce.number().int().min(0).max(0xffff),
  json: z.boolean().optional(),
});

/** host:port where port 0 (any free port) is allowed. */
const listenSchema = z.string().regex(/^[A-Za-z0-9.\-_:[\]]+:\d{1,5}$/, 'must be host:port').refine((a) => Number(a.slice(a.lastIndexOf(':') + 1)) < 65536, 'port must be 0..65535');
const serveSchema = z.object({ listen: listenSchema, disk: z.array(z.string().min(1)).min(1) });
const disksSchema = z.object({ address: addressSchema, json: z.boolean().optional() });
const scrubSchema = z.object({
  disk: z.array(z.string().min(1)).min(1),
  rateMibS: z.coerce.number().positive().max(100_000).default(64),
  json: z.boolean().optional(),
});

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];
const lsSchema = z.object({ bucket: z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}$/, 'must be a bucket id').optional(), json: z.boolean().optional() });
const jsonOnly = z.object({ json: z.boolean().optional() });

export function register(program: Command): void {
  const chunk = program.command('chunk').description('the object layer on this node\'s disks (development and recovery)');

  chunk
    .command('format <path>')
    .description('label a directory (or mount point) as a Cairn disk with a fresh incarnation')
    .requiredOption('--machine <n>', 'machine id (0..255)')
    .requiredOption('--disk <n>', 'disk number within the machine (0..65535)')
    .option('--dc <n>', 'datacenter id', '0')
    .option('--row <n>', 'row id', '0')
    .option('--rack <n>', 'rack id', '0')
    .option('--json', 'print JSON')
    .action(async (path: string, raw: unknown) => {
      const o = parseOptions(formatSchema, raw);
      const { ChunkStore } = await import('../../chunk/store.js');
      const label = await ChunkStore.formatDisk(path, { dc: o.dc, row: o.row, rack: o.rack, machine: o.machine, disk: o.disk });
      if (o.json === true) printJson({ path, label });
      else process.stdout.write(`formatted ${path}: machine ${label.machine} disk ${label.disk} incarnation ${label.incarnation}\n`);
    });

  chunk
    .command('serve')
    .description('serve the chunk service over these disks until SIGTERM or SIGINT')
    .requiredOption('--listen <host:port>', 'address to listen on (port 0: any free port)')
    .requiredOption('--disk <path>', 'a formatted disk directory (repeat for more)', collect)
    .action(async (raw: unknown) => {
      const o = parseOptions(serveSchema, raw);
      const { ChunkStore } = await import('../../chunk/store.js');
      const { startChunkServer } = await import('../../chunk/service.js');
      const log = logger('chunk-serve');
      const store = await ChunkStore.open(o.disk);
      const server = await startChunkServer(o.listen, store);
      process.stdout.write(`${JSON.stringify({ ready: true, address: server.address, pid: process.pid, disks: store.diskStatus().map((d) => ({ path: d.path, state: d.state })) })}\n`);
      await untilSignal(log);
      await server.stop();
      await store.close();
    });

  chunk
    .command('disks')
    .description('disk status of a running chunk service')
    .requiredOption('--address <host:port>', 'the chunk service')
    .option('--json', 'print JSON')
    .action(async (raw: unknown) => {
      const o = parseOptions(disksSchema, raw);
      const { ChunkClient } = await import('../../chunk/client.js');
      const c = new ChunkClient(o.address);
      try {
        const disks = await c.diskStatus({ timeoutMs: 5000 });
        if (o.json === true) printJson(disks);
        else printTable(['path', 'disk', 'state', 'buckets', 'reason'], disks.map((d) => [d.path, d.diskKey, d.state, d.buckets, d.reason]));
      } finally {
        c.close();
      }
    });

  chunk
    .command('scrub')
    .description('verify every shard on these local disks once; bad shards go to quarantine')
    .requiredOption('--disk <path>', 'a formatted disk directory (repeat for more)', collect)
    .option('--rate-mib-s <n>', 'read at most this many MiB per second', '64')
    .option('--json', 'print JSON')
    .action(async (raw: unknown) => {
      const o = parseOptions(scrubSchema, raw);
      const { ChunkStore } = await import('../../chunk/store.js');
      const { Scrubber } = await import('../../chunk/scrub.js');
      const store = await ChunkStore.open(o.disk);
      // A disk that cannot be opened (gone, unreadable, or in use by a running node) is not scrubbed: say so.
      for (const d of store.diskStatus()) if (d.state !== 'ok') process.stderr.write(`not scrubbed: ${d.path}: ${d.reason}\n`);
      try {
        const report = await new Scrubber(store, { rateBytesPerSec: o.rateMibS * 1024 * 1024 }).runOnce();
        if (o.json === true) printJson(report);
        else printTable(['checked', 'bytes', 'bad', 'quarantined', 'rebuilt'], [[report.shardsChecked, report.bytesChecked, report.bad, report.quarantined, report.rebuilt]]);
      } finally {
        await store.close();
      }
      const skipped = store.diskStatus().filter((d) => d.state !== 'ok');
      if (skipped.length > 0) throw new CairnError('EIO', `${skipped.length} disk(s) not scrubbed: ${skipped.map((d) => d.path).join(', ')}`);
    });

  chunk
    .command('ls <disk>')
    .description('offline: a disk\'s label, buckets and metadata copies (--bucket: its shards); no cluster needed')
    .option('--bucket <id>', 'list this bucket\'s shards with their headers')
    .option('--json', 'print JSON')
    .action(async (disk: string, raw: unknown) => {
      const o = parseOptions(lsSchema, raw);
      const { readDiskLabel } = await import('../../chunk/store.js');
      const { listBucketsOffline, scanDiskShards } = await import('../../chunk/scan.js');
      const { listCopies } = await import('../../meta/disk-copy.js');
      const label = await readDiskLabel(disk);
      if (o.bucket !== undefined) {
        const rows = [];
        for await (const s of scanDiskShards(disk, o.bucket)) {
          rows.push({
            file: s.path.slice(s.path.lastIndexOf('/') + 1), bytes: s.fileBytes, ok: s.info !== undefined, problem: s.problem ?? '',
            chunkLength: s.info?.chunkLength, diskmapEpoch: s.info?.diskmapEpoch, created: s.info ? new Date(s.info.createdMs).toISOString() : undefined,
          });
        }
        if (o.json === true) printJson({ disk, bucket: o.bucket, shards: rows });
        else printTable(['shard', 'bytes', 'chunk bytes', 'epoch', 'created', 'header'], rows.map((r) => [r.file, r.bytes, r.chunkLength, r.diskmapEpoch, r.created, r.ok ? 'ok' : r.problem]));
        return;
      }
      const buckets = await listBucketsOffline(disk);
      const copies = await listCopies(disk);
      if (o.json === true) {
        printJson({ disk, label, buckets, copies: copies.map((c) => ({ dir: c.dir, manifest: c.manifest, lastIndex: c.lastIndex, lastTerm: c.lastTerm, tailEntries: c.tailEntries, bytes: c.bytes, problems: c.problems })) });
        return;
      }
      process.stdout.write(`disk ${disk}: machine ${label.dc}.${label.row}.${label.rack}.${label.machine} disk ${label.disk}, incarnation ${label.incarnation}, formatted ${label.formattedAt}\n`);
      printTable(['bucket', 'shards', 'label'], buckets.map((b) => [b.bucket, b.shards, b.labelProblem ?? 'ok']));
      printTable(['metadata copy', 'cluster', 'index', 'term', 'bytes', 'state'], copies.map((c) => [c.dir.slice(c.dir.lastIndexOf('/') + 1), c.manifest ? `${c.manifest.clusterName}/${c.manifest.clusterId.slice(0, 8)}` : '?', c.lastIndex, c.lastTerm, c.bytes, c.problems.length ? c.problems.join('; ') : 'ok']));
    });

  chunk
    .command('verify <disk>')
    .description('offline: check every shard on a disk (header, payload CRC-32; replicas also SHA-256); changes nothing')
    .option('--json', 'print JSON')
    .action(async (disk: string, raw: unknown) => {
      const o = parseOptions(jsonOnly, raw);
      const { readDiskLabel } = await import('../../chunk/store.js');
      const { scanDiskShards, readShardPayload } = await import('../../chunk/scan.js');
      const { createHash } = await import('node:crypto');
      await readDiskLabel(disk);
      let shards = 0;
      let bytes = 0;
      const bad: Array<{ path: string; problem: string }> = [];
      const t0 = performance.now();
      for await (const s of scanDiskShards(disk)) {
        shards++;
        bytes += s.fileBytes;
        const { payload, problem } = await readShardPayload(s);
        if (payload === undefined || s.info === undefined) bad.push({ path: s.path, problem: problem ?? 'bad header' });
        else if (s.info.scheme.kind === 'replica' && createHash('sha256').update(payload.subarray(0, s.info.chunkLength)).digest('hex') !== s.info.hash) {
          bad.push({ path: s.path, problem: 'replica fails the chunk\'s SHA-256' });
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      if (o.json === true) printJson({ disk, shards, bytes, seconds, bad });
      else {
        process.stdout.write(`${disk}: ${shards} shards, ${bytes} bytes checked in ${seconds.toFixed(2)} s, ${bad.length} bad\n`);
        for (const b of bad) process.stdout.write(`  ${b.path}: ${b.problem}\n`);
      }
      if (bad.length > 0) throw new CairnError('ECORRUPT', `${bad.length} bad shard(s) on ${disk} (listed above); nothing was changed`);
    });

  chunk
    .command('header <shard-file>')
    .description('offline: show one shard file\'s header, checked against its name and size')
    .option('--json', 'print JSON')
    .action(async (file: string, raw: unknown) => {
      const o = parseOptions(jsonOnly, raw);
      const { resolve, dirname, basename } = await import('node:path');
      const { readShardHeaderAt } = await import('../../chunk/scan.js');
      const { schemeTag } = await import('../../chunk/types.js');
      const path = resolve(file);
      // <disk>/<bucket>/shards/<hh>/<file>
      const bucket = basename(dirname(dirname(dirname(path))));
      const disk = dirname(dirname(dirname(dirname(path))));
      const s = await readShardHeaderAt(disk, bucket, path);
      const header = s.info === undefined ? undefined : { ...s.info, scheme: schemeTag(s.info.scheme), created: new Date(s.info.createdMs).toISOString() };
      if (o.json === true) printJson({ path, bytes: s.fileBytes, ok: s.info !== undefined, problem: s.problem, header });
      else if (header !== undefined) printTable(['field', 'value'], Object.entries(header).map(([k, v]) => [k, String(v)]));
      if (s.info === undefined) throw new CairnError('ECORRUPT', `${path}: ${s.problem ?? 'bad header'}`);
    });
}
