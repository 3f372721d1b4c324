/**
 * The node registry: which nodes exist, where they are served, where their machine sits in the
 * topology and which disks they bring (capacity, class, incarnation from the disk label). It is
 * the input of the diskmap controller (topology) and of chunk routing (bucket → machine
 * location → node address).
 *
 * Storage: one record per node in the replicated metadata (op `nodeRegister`, key `n:<nodeId>`,
 * RPC NodeRegister; one Raft entry per registration). The metadata keeps the record as opaque
 * JSON; it is validated with zod here whenever it is read back, and a bad one is skipped and
 * logged, never trusted.
 */
import { repairProgressSchema } from './repair-progress.js';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { parseWith } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { MetaClient } from '../meta/client.js';
import type { BucketId, Topology, TopologyDisk, TopologyMachine } from '../diskmap/index.js';

const u8 = z.number().int().min(0).max(255);

export const nodeRecordSchema = z
  .object({
    v: z.literal(1),
    nodeId: z.number().int().min(1).max(0xffff_ffff),
    /** host:port serving every gRPC service of the node (raft, meta, chunk, file). */
    address: z.string().min(3).max(300),
    location: z.object({ dc: u8, row: u8, rack: u8, machine: u8 }).strict(),
    disks: z
      .array(
        z
          .object({
            disk: z.number().int().min(0).max(0xffff),
            path: z.string().max(4096),
            capacityBytes: z.number().int().positive(),
            class: z.enum(['hdd', 'ssd']),
            /** 16 hex digits from the disk label; "" when the label could not be read. */
            incarnation: z.string().regex(/^([0-9a-f]{16})?$/),
            state: z.enum(['ok', 'failed']),
            reason: z.string().max(2000),
          })
          .strict(),
      )
      .max(1024),
    registeredAtMs: z.number().int().min(0),
    /** The repair job's progress, published by the node running it (the Raft leader). */
    repair: repairProgressSchema.optional(),
    /** `cairn node remove` took it out of the cluster: no disks, no routing, never re-registered. */
    removed: z.literal(true).optional(),
  })
  .strict();
export type NodeRecord = z.infer<typeof nodeRecordSchema>;

function locKey(l: { dc: number; row: number; rack: number; machine: number }): string {
  return `${l.dc}.${l.row}.${l.rack}.${l.machine}`;
}

/** Write (or replace) this node's record. One Raft entry; the MetaClient finds the leader. */
export async function registerNode(meta: MetaClient, rec: NodeRecord): Promise<void> {
  parseWith(nodeRecordSchema, rec, 'node record');
  await meta.nodeRegister(rec.nodeId, JSON.stringify(rec));
}

/** Where registry records are read from (the local state machine's nodeRecords()). */
export type RegistrySource = () => Promise<Array<{ nodeId: number; recordJson: string }>>;

/** Every valid record, by node id. An empty list when nothing registered yet. */
export async function listNodes(src: RegistrySource, log?: Logger): Promise<NodeRecord[]> {
  const out: NodeRecord[] = [];
  for (const r of await src()) {
    try {
      const rec = parseWith(nodeRecordSchema, JSON.parse(r.recordJson), `node record ${r.nodeId}`);
      if (rec.nodeId !== r.nodeId) throw new CairnError('EINVAL', `record stored under node ${r.nodeId} names node ${rec.nodeId}`);
      out.push(rec);
    } catch (err) {
      log?.warn({ nodeId: r.nodeId, err: String(err) }, 'skipping an unreadable node record');
    }
  }
  return out;
}

/**
 * The topology of the registered disks that are usable (label readable), one machine per
 * registered location. Two nodes claiming one location is a configuration error.
 */
export function topologyOf(nodes: readonly NodeRecord[], name = 'cairn'): Topology {
  const seen = new Map<string, number>();
  const machines: TopologyMachine[] = [];
  for (const n of nodes) {
    if (n.removed === true) continue;
    const k = locKey(n.location);
    const other = seen.get(k);
    if (other !== undefined) throw new CairnError('EINVAL', `nodes ${other} and ${n.nodeId} both claim machine location ${k}; give each node its own location.machine`);
    seen.set(k, n.nodeId);
    const disks: TopologyDisk[] = n.disks
      .filter((d) => d.state === 'ok' && d.incarnation !== '')
      .map((d) => ({ disk: d.disk, capacityBytes: d.capacityBytes, class: d.class, state: 'active' as const, incarnation: BigInt(`0x${d.incarnation}`) }));
    if (disks.length > 0) machines.push({ name: `node${n.nodeId}`, ...n.location, disks });
  }
  return { name, machines };
}

/** bucket → the address of the node serving its machine location. */
export function addressResolver(nodes: readonly NodeRecord[]): (b: BucketId) => string {
  const byLoc = new Map(nodes.map((n) => [locKey(n.location), n.address]));
  return (b) => {
    const a = byLoc.get(locKey(b));
    if (a === undefined) throw new CairnError('EUNAVAIL', `no registered node serves machine ${locKey(b)} (bucket on disk ${b.disk})`);
    return a;
  };
}
