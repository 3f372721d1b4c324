/**
 * `cairn chunk …`: the chunk layer by hand (development, tests, benchmarks, recovery).
 *   format  write a disk label on a directory (a new disk incarnation)
 *   serve   run a chunk service over some disks until SIGTERM/SIGINT
 *   disks   show the disk status of a running chunk service
 *   scrub   verify every shard on local disks once (quarantines bad ones; no rebuild)
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
}
