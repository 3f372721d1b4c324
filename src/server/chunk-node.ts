/**
 * The chunk service in the node daemon: formats each configured disk on its first start (label
 * with the node's location and a fresh random incarnation, durably), opens every disk on later
 * starts (the label is validated; a missing or unreadable disk is marked failed and reported,
 * the node keeps serving the others), and serves proto/chunk.proto on the node's one address.
 *
 * A disk is formatted only once per node: <dataDir>/disks.json remembers every disk this node
 * formatted, so an unmounted disk (an empty mount-point directory) is reported failed instead
 * of being silently formatted again under a new incarnation.
 */
import { join } from 'node:path';
import { readFile, readdir } from 'node:fs/promises';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { parseWith } from '../common/config.js';
import { writeFileDurable, mkdirDurable, pathExists } from '../common/durable.js';
import type { Logger } from '../common/log.js';
import { ChunkStore } from '../chunk/store.js';
import { DISK_LABEL_FILE } from '../chunk/format.js';
import { chunkService, widenReceiveWindows } from '../chunk/service.js';
import type { grpc } from '../rpc/grpc.js';
import type { NodeConfig } from '../common/config.js';
import type { NodeContext, NodeServiceFactory } from './services.js';

const formattedSchema = z.object({
  v: z.literal(1),
  disks: z.array(z.object({ path: z.string(), disk: z.number().int(), incarnation: z.string() }).strict()).max(65_536),
});
type Formatted = z.infer<typeof formattedSchema>;


async function readFormatted(file: string): Promise<Formatted> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return { v: 1, disks: [] };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CairnError('ECORRUPT', `${file} is not valid JSON; it lists the disks this node formatted — fix or remove it by hand`);
  }
  return parseWith(formattedSchema, json, file);
}

/**
 * Format the configured disks this node never formatted, then open them all. A disk formatted
 * before whose label is gone is NOT reformatted: ChunkStore.open marks it failed.
 */
export async function openNodeDisks(cfg: NodeConfig, log: Logger, opts: { join?: boolean } = {}): Promise<ChunkStore> {
  await mkdirDurable(cfg.dataDir);
  const file = join(cfg.dataDir, 'disks.json');
  if (!(await pathExists(file)) && opts.join !== true) await refuseWipedDataDir(cfg);
  const formatted = await readFormatted(file);
  const known = new Set(formatted.disks.map((d) => d.path));
  for (const d of cfg.disks) {
    if (known.has(d.path)) continue;
    if (await pathExists(join(d.path, DISK_LABEL_FILE))) {
      // Formatted by someone else (cairn init, cairn chunk format, or a re-created data dir):
      // open it as is, and remember it, so that it is never formatted again if it goes missing.
      const label = await readFile(join(d.path, DISK_LABEL_FILE), 'utf8')
        .then((t) => String((JSON.parse(t) as { incarnation?: unknown }).incarnation ?? ''))
        .catch(() => '');
      formatted.disks.push({ path: d.path, disk: d.disk, incarnation: label });
      await writeFileDurable(file, `${JSON.stringify(formatted, null, 2)}\n`);
      known.add(d.path);
      continue;
    }
    const label = await ChunkStore.formatDisk(d.path, { ...cfg.location, disk: d.disk });
    formatted.disks.push({ path: d.path, disk: d.disk, incarnation: label.incarnation });
    await writeFileDurable(file, `${JSON.stringify(formatted, null, 2)}\n`);
    known.add(d.path);
    log.info({ disk: d.path, number: d.disk, incarnation: label.incarnation }, 'formatted disk');
  }
  const store = await ChunkStore.open(cfg.disks.map((d) => d.path));
  for (const s of store.diskStatus()) {
    const want = cfg.disks.find((d) => d.path === s.path);
    if (s.label !== undefined && want !== undefined && (s.label.disk !== want.disk || s.label.machine !== cfg.location.machine)) {
      log.error({ disk: s.path, label: s.diskKey }, 'disk label does not match this node\'s config (location or disk number): it is served as labelled');
    }
    if (s.state === 'failed') log.error({ disk: s.path, reason: s.reason }, 'disk failed; the node serves its other disks');
  }
  return store;
}

/**
 * A data directory without disks.json whose disks already hold buckets is a wiped (or lost) data
 * directory of a node that was a member: started as is, it would bootstrap a new Raft group of
 * its own beside the cluster's. Refuse, and say what to do.
 */
async function refuseWipedDataDir(cfg: NodeConfig): Promise<void> {
  for (const d of cfg.disks) {
    if (!(await pathExists(join(d.path, DISK_LABEL_FILE)))) continue;
    const entries = await readdir(d.path).catch(() => [] as string[]);
    const buckets = entries.filter((e) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}$/.test(e));
    if (buckets.length === 0) continue; // formatted by `cairn init`, never used: a first start
    throw new CairnError(
      'ESTALE',
      `node ${cfg.nodeId}: the data directory ${cfg.dataDir} is empty or lost (no disks.json), but disk ${d.path} holds ${buckets.length} bucket(s) of this cluster: ` +
        'this node was a member and its Raft state is gone. Starting would found a second cluster beside the first, so the node refuses to start. ' +
        `Restore the data directory, or rejoin as a new member re-seeded from the others: \`cairn start --config FILE --rejoin\` (its disks' shards are kept and used).`,
    );
  }
}

const stores = new WeakMap<NodeContext, ChunkStore>();

/** The chunk store a node's chunk service opened (for the other services of the same node). */
export function chunkStoreOf(ctx: NodeContext): ChunkStore {
  const s = stores.get(ctx);
  if (s === undefined) throw new CairnError('EINVAL', 'the chunk service must come before services that use the node\'s chunk store in NODE_SERVICES');
  return s;
}

export const chunkNodeFactory: NodeServiceFactory = async (ctx) => {
  const store = await openNodeDisks(ctx.cfg, ctx.log, { join: ctx.join === true });
  stores.set(ctx, store);
  return {
    name: 'chunk',
    definitions: [chunkService(store)],
    started: () => {
      // RaftNode owns the gRPC server; widen its HTTP/2 windows for shard uploads when reachable.
      const srv = (ctx.raft() as unknown as { server?: { server?: grpc.Server } } | undefined)?.server?.server;
      if (srv !== undefined) widenReceiveWindows(srv);
    },
    // Release the disks' locks: the next process to serve them need not wait for this one to exit.
    stop: () => store.close(),
  };
};
