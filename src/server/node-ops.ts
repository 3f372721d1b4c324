/**
 * The ops service (proto/ops.proto): operators' changes to the cluster's membership, done by the
 * Raft leader (a follower answers ENOTLEADER with the leader's address).
 *
 * RemoveNode (`cairn node remove N`): refused while node N holds data — any of its disks is
 * active or draining in the diskmap (drain it first: `cairn node drain N --yes`; the controller
 * retires each disk once it is empty). Then, in this order: the diskmap without N's machine (a
 * compare-and-set on the epoch), N's registry record marked removed (no disks: the controller
 * never adds it back, the repair job never waits for it, and N itself stops registering), and
 * N out of the Raft group. The leader removing itself first hands leadership to another voter.
 *
 * rejoinCluster (`cairn start --rejoin`, the client side of admin Rejoin in admin-service.ts): a
 * member whose data directory was lost is re-seeded from the others as a new member.
 */
import { z } from 'zod';
import { nodeIdSchema } from '../common/config.js';
import { CairnError } from '../common/errors.js';
import { join } from 'node:path';
import type { NodeConfig } from '../common/config.js';
import type { Logger } from '../common/log.js';
import { DiskStorage } from '../raft/storage.js';
import { call, makeClient, serviceOf, unary, type grpc } from '../rpc/grpc.js';
import { diskLabel, diskmapToJson, planRemove, serializeDiskmap, type TopologyMachine } from '../diskmap/index.js';
import { loadDiskmap } from './diskmap-controller.js';
import { clusterPartsOf } from './cluster.js';
import { listNodes, registerNode } from './registry.js';
import type { NodeServiceFactory } from './services.js';

const removeSchema = z.object({ node_id: z.coerce.number().pipe(nodeIdSchema) });

const sameLoc = (m: TopologyMachine, l: { dc: number; row: number; rack: number; machine: number }): boolean =>
  m.dc === l.dc && m.row === l.row && m.rack === l.rack && m.machine === l.machine;

export const nodeOpsFactory: NodeServiceFactory = async (ctx) => {
  const parts = clusterPartsOf(ctx);

  const leaderOrRedirect = (): NonNullable<ReturnType<typeof ctx.raft>> => {
    const raft = ctx.raft();
    if (raft === undefined) throw new CairnError('EAGAIN', 'this node is still starting');
    if (!raft.isLeader()) {
      const leader = raft.leaderId();
      const address = leader === 0 ? '' : raft.status().peers[String(leader)] ?? '';
      throw new CairnError('ENOTLEADER', `node ${ctx.cfg.nodeId} is not the leader; ask node ${leader || '?'}`, { leader, address });
    }
    return raft;
  };

  const removeNode = async (q: z.infer<typeof removeSchema>): Promise<Record<string, unknown>> => {
    const raft = leaderOrRedirect();
    const id = q.node_id;
    const st = raft.status();
    const member = st.conf.voters.includes(id) || st.conf.learners.includes(id);
    const rec = (await listNodes(() => ctx.meta.nodeRecords(), ctx.log)).find((n) => n.nodeId === id);
    if (!member && (rec === undefined || rec.removed === true)) throw new CairnError('ENOENT', `node ${id} is neither a member of the Raft group nor a registered node: nothing to remove`);
    if (member && st.conf.voters.length === 1 && st.conf.voters[0] === id) throw new CairnError('EINVAL', `node ${id} is the only voter: removing it would leave no cluster`);
    // The data check first: nothing changes while the node holds data.
    const dm = loadDiskmap(await ctx.meta.diskmap());
    const machine = dm === undefined || rec === undefined ? undefined : dm.topology.machines.find((m) => sameLoc(m, rec.location));
    if (dm !== undefined && machine !== undefined) {
      const holding = machine.disks.filter((d) => d.state === 'active' || d.state === 'draining');
      if (holding.length > 0) {
        const refs = holding.map((d) => `${diskLabel({ machine, d })} (${d.state})`);
        throw new CairnError(
          'EBUSY',
          `node ${id} holds data: disk(s) ${refs.join(', ')} of the diskmap. Drain it first (cairn node drain ${id} shows the plan, --yes applies it); each disk is retired once empty, then remove the node`,
        );
      }
    }
    if (id === raft.id) {
      // Hand leadership to another voter; the caller asks it next.
      const to = st.conf.voters.find((v) => v !== id)!;
      await raft.transferLeadership(to);
      const address = raft.status().peers[String(to)] ?? '';
      throw new CairnError('ENOTLEADER', `node ${id} handed leadership to node ${to} before being removed; ask node ${to}`, { leader: to, address });
    }
    const plan = dm !== undefined && machine !== undefined ? planRemove(dm, { machines: [machine.name] }) : undefined;
    if (plan?.refused !== undefined) throw new CairnError('EBUSY', `the diskmap cannot drop node ${id}'s machine: ${plan.refused.join('; ')}`);
    // The registry first: the controller reads the registry after the map, so once the map
    // without N exists, it sees N removed and never adds its machine back as growth.
    if (rec !== undefined && rec.removed !== true) {
      const { repair: _repair, ...rest } = rec;
      await registerNode(parts.meta, { ...rest, disks: [], removed: true, registeredAtMs: Date.now() });
    }
    let epoch = 0;
    if (dm !== undefined && plan !== undefined) {
      // A compare-and-set on the epoch; lost to a controller step, planned again on the new map.
      for (let attempt = 0, cur = dm, p = plan; ; attempt++) {
        try {
          await parts.meta.diskmapPropose(cur.epoch, serializeDiskmap(p.diskmap), JSON.stringify(diskmapToJson(p.diskmap).diff ?? {}));
          epoch = p.diskmap.epoch;
          break;
        } catch (err) {
          if (!(err instanceof CairnError && err.code === 'ECONFLICT') || attempt >= 4) throw err;
          cur = loadDiskmap(await ctx.meta.diskmap())!;
          const m = cur.topology.machines.find((x) => sameLoc(x, rec!.location));
          if (m === undefined) break; // someone removed it meanwhile
          p = planRemove(cur, { machines: [m.name] });
          if (p.refused !== undefined) throw new CairnError('EBUSY', `the diskmap cannot drop node ${id}'s machine: ${p.refused.join('; ')}`);
        }
      }
    }
    if (member) await raft.remove(id);
    ctx.log.info({ removed: id, diskmapEpoch: epoch, raft: member }, 'node removed from the cluster');
    const said = [member ? 'out of the Raft group' : '', epoch > 0 ? `its machine out of the diskmap (epoch ${epoch})` : '', rec !== undefined ? 'its registry record marked removed' : ''].filter((x) => x !== '');
    return { removed_from_raft: member, diskmap_epoch: epoch, message: `node ${id} removed: ${said.join(', ')}` };
  };

  return {
    name: 'ops',
    definitions: [{ service: serviceOf('ops.proto', 'cairn.ops.Ops').service, impl: { RemoveNode: unary(removeSchema, removeNode) } }],
  };
};

/**
 * `cairn start --rejoin`: a member whose data directory was lost asks the cluster to re-seed it
 * (admin Rejoin, with its node certificate). Refused when this node still has Raft state (it is
 * not wiped: start it normally). Resolves once the leader has added it back as a learner; the
 * caller then starts the node in join mode, and it catches up from the others.
 */
export async function rejoinCluster(cfg: NodeConfig, log: Logger): Promise<Array<{ id: number; address: string }>> {
  const storage = await DiskStorage.open(join(cfg.dataDir, 'raft'));
  const empty = storage.isEmpty();
  await storage.close();
  if (!empty) throw new CairnError('EEXIST', `node ${cfg.nodeId}: ${cfg.dataDir} holds Raft state: this node was not wiped; start it without --rejoin`);
  const self = cfg.advertise ?? cfg.listen;
  const queue = cfg.peers.filter((p) => p.id !== cfg.nodeId).map((p) => p.address);
  const tried = new Set<string>();
  const Admin = serviceOf('admin.proto', 'cairn.admin.Admin');
  let last: unknown;
  while (queue.length > 0) {
    const ep = queue.shift()!;
    if (tried.has(ep)) continue;
    tried.add(ep);
    const c = makeClient<grpc.Client>(Admin, ep);
    try {
      const r = await call<unknown, { peers: Array<{ id: number | string; address: string }> }>(c, 'Rejoin', { node_id: cfg.nodeId, address: self, public_key_pem: '' }, 60_000);
      log.info({ through: ep }, 'the cluster took this node back as a learner');
      return r.peers.map((p) => ({ id: Number(p.id), address: p.address }));
    } catch (err) {
      last = err;
      const leader = err instanceof CairnError ? err.details?.address : undefined;
      if (typeof leader === 'string' && leader !== '') {
        tried.delete(leader);
        queue.unshift(leader);
      }
    } finally {
      c.close();
    }
  }
  if (last instanceof CairnError) throw new CairnError(last.code, `node ${cfg.nodeId}: no member took it back: ${last.message}`);
  throw new CairnError('EUNAVAIL', `node ${cfg.nodeId}: no member of the cluster answered (${cfg.peers.map((p) => p.address).join(', ')})`);
}
