/**
 * `cairn repair status [--watch]`: the repair job's progress (src/server/repair-job.ts) as any
 * node sees it — which disks are lost and why, chunks and bytes checked, shards rebuilt, rate and
 * ETA; with --watch, a progress bar until the repair is done (or Ctrl-C).
 */
import type { Command } from 'commander';
import { z } from 'zod';
import cliProgress from 'cli-progress';
import { addressSchema } from '../../common/config.js';
import { FileClient } from '../../server/file-client.js';
import type { RepairProgress } from '../../server/repair-progress.js';
import { formatBytes, printJson } from '../output.js';
import { parseOptions } from '../usage.js';

const schema = z.object({
  endpoint: addressSchema,
  json: z.boolean().default(false),
  watch: z.boolean().default(false),
  intervalMs: z.coerce.number().int().min(100).max(60_000).default(1_000),
});

function endpointOf(raw: { endpoint?: string }): string {
  return raw.endpoint ?? process.env.CAIRN_ENDPOINT ?? process.env.CAIRN_ENDPOINTS?.split(',')[0] ?? '127.0.0.1:7400';
}

function eta(sec: number | null): string {
  if (sec === null) return '-';
  if (sec < 60) return `${sec} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${sec % 60} s`;
  return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
}

/** One line: what the repair is doing. Used by `cairn status` too. */
export function repairLine(p: RepairProgress | null): string {
  if (p === null) return 'repair: none needed so far (every disk up)';
  switch (p.state) {
    case 'idle':
      return 'repair: none needed (every disk up)';
    case 'waiting':
      return `repair: waiting — ${p.reason}`;
    case 'done':
      return `repair: done — ${p.shardsRebuilt} shards rebuilt elsewhere for ${p.lost.length} lost disk(s) (${p.reason})`;
    default:
      return (
        `repair: ${p.state} — ${p.reason}\n` +
        `  ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)} checked (${p.chunksDone} of ${p.chunksTotal} chunks), ` +
        `${p.shardsRebuilt} shards rebuilt, ${formatBytes(p.rateBytesPerSec)}/s, ETA ${eta(p.etaSec)}`
      );
  }
}

export function register(program: Command): void {
  const repair = program.command('repair').description('rebuilding the shards of lost disks (failed, or their node down past the grace)');
  repair
    .command('status')
    .description('the repair job\'s progress: lost disks, bytes checked, shards rebuilt, rate and ETA')
    .option('--endpoint <host:port>', 'a node of the cluster (default $CAIRN_ENDPOINT or 127.0.0.1:7400)')
    .option('--json', 'print JSON')
    .option('--watch', 'follow it with a progress bar until it is done')
    .option('--interval-ms <ms>', 'how often --watch asks', '1000')
    .action(async (raw: { endpoint?: string; json?: boolean; watch?: boolean; intervalMs?: string }) => {
      const o = parseOptions(schema, { ...raw, endpoint: endpointOf(raw) });
      const c = new FileClient(o.endpoint);
      try {
        const first = (await c.cluster()).repair;
        if (!o.watch) {
          if (o.json) printJson(first);
          else process.stdout.write(`${repairLine(first)}\n`);
          return;
        }
        const bar = new cliProgress.SingleBar(
          { stream: process.stderr, format: 'repair [{bar}] {percentage}% | {done} of {all} | {rate}/s | ETA {eta_t} | {shards} shards rebuilt', hideCursor: true },
          cliProgress.Presets.shades_classic,
        );
        let started = false;
        for (let p = first; ; ) {
          if (p === null || p.state === 'idle' || p.state === 'done' || p.state === 'waiting') {
            if (started) bar.stop();
            process.stdout.write(`${repairLine(p)}\n`);
            if (p === null || p.state !== 'waiting') return;
          } else {
            const fields = { done: formatBytes(p.bytesDone), all: formatBytes(p.bytesTotal), rate: formatBytes(p.rateBytesPerSec), eta_t: eta(p.etaSec), shards: p.shardsRebuilt };
            if (!started) bar.start(Math.max(1, p.bytesTotal), p.bytesDone, fields);
            else {
              bar.setTotal(Math.max(1, p.bytesTotal));
              bar.update(p.bytesDone, fields);
            }
            started = true;
          }
          await new Promise((r) => setTimeout(r, o.intervalMs));
          p = (await c.cluster()).repair;
        }
      } finally {
        c.close();
      }
    });
}
