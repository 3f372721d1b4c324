/**
 * Operators' commands on a running cluster's disks: `cairn disk drain DISK`, `cairn disk replace
 * OLD NEW`, `cairn node drain N`, `cairn node remove N` (once drained: out of the Raft group and
 * the diskmap, by the leader's ops service, src/server/node-ops.ts; while it holds data, refused
 * with the drain plan). Each reads the current diskmap, asks the diskmap's planner for
 * the next epoch (planDrain: the disks become `draining`, their slots move elsewhere), shows the
 * plan — slots and bytes to move (the shard bytes stored in the buckets that leave, asked of the
 * nodes), where to, an ETA at the data mover's rate — and applies it only with --yes, as a
 * compare-and-set on the epoch; the nodes' data movers then copy each shard before deleting it,
 * and the leader's diskmap controller retires the disk (state "removed") once it holds no shard.
 * It refuses, with the reason and what to do instead, what would lose data: a plan the planner
 * refuses, and any drain while a disk is failed or a node is unreachable (the shards to move may
 * be the last copies; repair first).
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { CairnError } from '../../common/errors.js';
import { addressSchema } from '../../common/config.js';
import { ChunkClients } from '../../chunk/client.js';
import { MetaClient } from '../../meta/client.js';
import { FileClient, type ClusterInfo } from '../../server/file-client.js';
import { loadDiskmap } from '../../server/diskmap-controller.js';
import { diskLabel, diskmapToJson, formatBucketId, planChange, planDrain, resolveDiskRef, serializeDiskmap, withDiskState, type Diskmap, type PlanResult } from '../../diskmap/index.js';
import { formatBytes, printJson, printTable } from '../output.js';
import { parseOptions } from '../usage.js';
import { call, makeClient, serviceOf, type grpc } from '../../rpc/grpc.js';

/** Rate used for the ETA: what one node's mover sustains here (a shard at a time), conservatively. */
const MOVER_BYTES_PER_SEC = 64 * 1024 * 1024;

const schema = z.object({ endpoint: addressSchema, json: z.boolean().default(false), yes: z.boolean().default(false) });

function endpointOf(raw: { endpoint?: string }): string {
  return raw.endpoint ?? process.env.CAIRN_ENDPOINT ?? process.env.CAIRN_ENDPOINTS?.split(',')[0] ?? '127.0.0.1:7400';
}

/** Refuse a drain while the cluster is degraded: the shards it moves may be the last copies. */
function degradedReasons(cl: ClusterInfo): string[] {
  const out: string[] = [];
  for (const n of cl.nodes) {
    if (n.role === 'unreachable') out.push(`node ${n.nodeId} (${n.address}) is unreachable`);
    for (const d of n.disks) if (!d.state.startsWith('ok')) out.push(`disk ${d.path} of node ${n.nodeId} is ${d.state}${d.reason ? ` (${d.reason.slice(0, 120)})` : ''}`);
  }
  return out;
}

interface DrainPlan {
  fromEpoch: number;
  epoch: number;
  disks: string[];
  slots: number;
  bytes: number;
  etaSec: number;
  moves: Array<{ group: number; shard: number; from: string; to: string; bytes: number }>;
  warnings: string[];
}

async function planAndApply(endpoint: string, refs: string[], opts: { json: boolean; yes: boolean; check?: (dm: Diskmap) => void; plan?: (dm: Diskmap) => PlanResult }): Promise<void> {
  const files = new FileClient(endpoint);
  const meta = new MetaClient({ endpoints: [endpoint] });
  const chunks = new ChunkClients();
  try {
    const cl = await files.cluster();
    const dm = loadDiskmap(await meta.diskmapGet());
    if (dm === undefined) throw new CairnError('EAGAIN', 'the cluster has no diskmap yet: nothing to drain');
    for (const r of refs) resolveDiskRef(dm.topology, r); // EINVAL naming the disk when unknown
    opts.check?.(dm);
    const degraded = degradedReasons(cl);
    if (degraded.length > 0) {
      throw new CairnError('EBUSY', `refusing to drain while the cluster is degraded: ${degraded.join('; ')}. The shards to move may be the last copies: bring the node or disk back, or let repair finish (cairn repair status), then drain`);
    }
    const plan = opts.plan !== undefined ? opts.plan(dm) : planDrain(dm, refs);
    if (plan.refused !== undefined) throw new CairnError('ENOSPC', `the diskmap cannot drain ${refs.join(', ')}: ${plan.refused.join('; ')}. Add a disk first (the cluster adds a registered disk by itself), then drain`);
    const next = plan.diskmap;
    // Bytes: the shard files now in each bucket that a slot leaves, asked of its node.
    const addressOf = new Map(cl.nodes.map((n) => [n.location, n.address]));
    const moves: DrainPlan['moves'] = [];
    for (const m of plan.moves) {
      if (m.kind !== 'move' || m.from === null) continue;
      const from = formatBucketId(m.from);
      const addr = addressOf.get(`${m.from.dc}.${m.from.row}.${m.from.rack}.${m.from.machine}`);
      let bytes = 0;
      if (addr !== undefined) {
        for (let after = ''; ; ) {
          const page = await chunks.get(addr).listBucket(from, after, 1000, { timeoutMs: 10_000 }).catch(() => ({ shards: [], next: '' }));
          for (const s of page.shards) if (s.key.index === m.index) bytes += s.fileBytes;
          if (page.next === '') break;
          after = page.next;
        }
      }
      moves.push({ group: m.group, shard: m.index, from, to: formatBucketId(m.to), bytes });
    }
    const bytes = moves.reduce((a, m) => a + m.bytes, 0);
    const p: DrainPlan = { fromEpoch: dm.epoch, epoch: next.epoch, disks: refs, slots: moves.length, bytes, etaSec: Math.ceil(bytes / MOVER_BYTES_PER_SEC), moves, warnings: [...plan.warnings] };
    if (opts.json) printJson({ ...p, applied: opts.yes });
    else {
      process.stdout.write(`plan: drain ${refs.join(', ')} — diskmap epoch ${dm.epoch} → ${next.epoch}\n`);
      process.stdout.write(`  ${p.slots} bucket slots move, ${formatBytes(bytes)} of shards, ETA ≈ ${p.etaSec} s at ${formatBytes(MOVER_BYTES_PER_SEC)}/s\n`);
      for (const w of p.warnings) process.stdout.write(`  warning: ${w}\n`);
      if (moves.length > 0) printTable(['group', 'shard', 'from', 'to', 'bytes'], moves.slice(0, 20).map((m) => [m.group, m.shard, m.from, m.to, formatBytes(m.bytes)]));
      if (moves.length > 20) process.stdout.write(`  … and ${moves.length - 20} more\n`);
    }
    if (!opts.yes) {
      if (!opts.json) process.stdout.write('\nnothing applied: run again with --yes to apply this plan\n');
      return;
    }
    await meta.diskmapPropose(dm.epoch, serializeDiskmap(next), JSON.stringify(diskmapToJson(next).diff ?? {}));
    if (!opts.json) process.stdout.write(`\napplied: diskmap epoch ${next.epoch}; the nodes' data movers copy each shard, then delete the old copy; the disk is retired (state "removed") once it holds nothing\n`);
  } finally {
    files.close();
    meta.close();
    chunks.close();
  }
}

export function register(program: Command): void {
  const opt = (c: Command): Command =>
    c
      .option('--endpoint <host:port>', 'a node of the cluster (default $CAIRN_ENDPOINT or 127.0.0.1:7400)')
      .option('--yes', 'apply the plan (without it, only show it)')
      .option('--json', 'print JSON');
  const disk = program.command('disk').description('drain or replace a disk of the running cluster (shows the plan; --yes applies it)');
  opt(disk.command('drain').description('move every shard off a disk (MACHINE/DISK, e.g. node2/0), then it holds nothing').argument('<disk>')).action(
    async (ref: string, raw: { endpoint?: string; yes?: boolean; json?: boolean }) => {
      const o = parseOptions(schema, { ...raw, endpoint: endpointOf(raw) });
      await planAndApply(o.endpoint, [ref], o);
    },
  );
  opt(
    disk
      .command('replace')
      .description('the new disk in first (configured on its node; the cluster adds it), then the old one drained onto the disks that can take it')
      .argument('<old>')
      .argument('<new>'),
  ).action(async (oldRef: string, newRef: string, raw: { endpoint?: string; yes?: boolean; json?: boolean }) => {
    const o = parseOptions(schema, { ...raw, endpoint: endpointOf(raw) });
    await planAndApply(o.endpoint, [oldRef], {
      ...o,
      check: (dm) => {
        let fresh: ReturnType<typeof resolveDiskRef>[number] | undefined;
        try {
          fresh = resolveDiskRef(dm.topology, newRef)[0];
        } catch {
          fresh = undefined; // not in the map at all
        }
        if (fresh === undefined || fresh.d.state !== 'active') throw new CairnError('ENOENT', `new disk ${newRef} is not an active disk of the diskmap yet: add it to its node's config and restart the node (the cluster adds it by itself), then replace`);
      },
      // The old disk's slots go to the new one first (same failure domains, one copy per slot).
      plan: (dm) => {
        const old = resolveDiskRef(dm.topology, oldRef)[0]!;
        const fresh = resolveDiskRef(dm.topology, newRef)[0]!;
        return planChange(dm, withDiskState(dm.topology, [oldRef], 'draining'), { reason: `replace ${diskLabel(old)} with ${diskLabel(fresh)}`, prefer: new Map([[diskLabel(old), diskLabel(fresh)]]) });
      },
    });
  });
  const node = program.command('node').description('drain or remove a node of the running cluster (shows the plan; --yes applies it)');
  opt(node.command('drain').description('drain every disk of a node (by node id)').argument('<node>')).action(async (id: string, raw: { endpoint?: string; yes?: boolean; json?: boolean }) => {
    const o = parseOptions(schema, { ...raw, endpoint: endpointOf(raw) });
    const files = new FileClient(o.endpoint);
    let refs: string[];
    try {
      const n = (await files.cluster()).nodes.find((x) => String(x.nodeId) === id);
      if (n === undefined) throw new CairnError('ENOENT', `no node ${id} in the registry (cairn status lists them)`);
      refs = n.disks.map((d) => `node${n.nodeId}/${d.disk}`);
    } finally {
      files.close();
    }
    await planAndApply(o.endpoint, refs, o);
  });
  opt(node.command('remove').description('take a drained node out of the cluster: the Raft group and the diskmap (refused while it holds data)').argument('<node>')).action(
    async (id: string, raw: { endpoint?: string; yes?: boolean; json?: boolean }) => {
      const o = parseOptions(schema, { ...raw, endpoint: endpointOf(raw) });
      await removeNode(o.endpoint, id, o);
    },
  );
}

/** `cairn node remove N`: the plan, then (with --yes) the leader's RemoveNode. */
async function removeNode(endpoint: string, id: string, o: { json: boolean; yes: boolean }): Promise<void> {
  if (!/^[1-9][0-9]{0,9}$/.test(id)) throw new CairnError('EINVAL', `node id "${id}": expected a positive number (cairn status lists the nodes)`);
  const files = new FileClient(endpoint);
  const meta = new MetaClient({ endpoints: [endpoint] });
  let holding: string[] = [];
  let machine: string | undefined;
  try {
    const cl = await files.cluster();
    const n = cl.nodes.find((x) => String(x.nodeId) === id);
    const dm = loadDiskmap(await meta.diskmapGet());
    if (n !== undefined && dm !== undefined) {
      const m = dm.topology.machines.find((x) => `${x.dc}.${x.row}.${x.rack}.${x.machine}` === n.location);
      machine = m?.name;
      holding = (m?.disks ?? []).filter((d) => d.state === 'active' || d.state === 'draining').map((d) => `${m!.name}/${d.disk} (${d.state})`);
    }
  } finally {
    files.close();
    meta.close();
  }
  if (holding.length > 0) {
    // Show what draining it would do (the plan of `cairn node drain N`), then refuse.
    if (!o.json) {
      process.stdout.write(`node ${id} holds data on ${holding.join(', ')}: it must be drained before it is removed\n`);
      const disks = holding.filter((h) => h.endsWith('(active)')).map((h) => h.split(' ')[0]!);
      if (disks.length > 0) await planAndApply(endpoint, disks, { json: false, yes: false }).catch((err: unknown) => process.stdout.write(`(no drain plan: ${(err as Error).message})\n`));
    }
    throw new CairnError('EBUSY', `node ${id} holds data (${holding.join(', ')}): drain it first (cairn node drain ${id} --yes), wait until its disks are retired (cairn diskmap show), then remove it`);
  }
  if (!o.yes) {
    if (o.json) printJson({ node: Number(id), machine: machine ?? null, applied: false });
    else {
      process.stdout.write(`plan: remove node ${id} — out of the Raft group${machine !== undefined ? `, machine ${machine} out of the diskmap` : ''}; its registry record is marked removed\n`);
      process.stdout.write('\nnothing applied: run again with --yes to apply this plan\n');
    }
    return;
  }
  const Ops = serviceOf('ops.proto', 'cairn.ops.Ops');
  let at = endpoint;
  for (let hop = 0; ; hop++) {
    const c = makeClient<grpc.Client>(Ops, at);
    try {
      const r = await call<unknown, { removed_from_raft: boolean; diskmap_epoch: string | number; message: string }>(c, 'RemoveNode', { node_id: Number(id) }, 60_000);
      if (o.json) printJson({ node: Number(id), removedFromRaft: r.removed_from_raft, diskmapEpoch: Number(r.diskmap_epoch), applied: true });
      else process.stdout.write(`${r.message}\n`);
      return;
    } catch (err) {
      const next = err instanceof CairnError && err.code === 'ENOTLEADER' ? err.details?.address : undefined;
      if (typeof next !== 'string' || next === '' || hop >= 3) throw err;
      at = next;
    } finally {
      c.close();
    }
  }
}
