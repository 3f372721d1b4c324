/**
 * The admin service (proto/admin.proto): a new machine joins the cluster. The caller holds a
 * join token's certificate (kind "join", short-lived, made by `cairn token create`) and its own
 * new key; the leader issues it a node certificate from the cluster's CA, adds it to the Raft
 * group as a learner, and makes it a voter once its log has caught up with the leader's commit.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { addressSchema, nodeIdSchema } from '../common/config.js';
import { CairnError } from '../common/errors.js';
import { serviceOf, unary } from '../rpc/grpc.js';
import { issueCert } from '../rpc/pki.js';
import type { NodeContext, NodeServiceFactory } from './services.js';

const joinSchema = z.object({
  node_id: z.coerce.number().pipe(nodeIdSchema),
  address: addressSchema,
  public_key_pem: z.string().min(1).max(4096),
});

/** Rejoin: the key is not used (the node keeps its certificate). */
const rejoinSchema = joinSchema.extend({ public_key_pem: z.string().max(4096) });

/** How long the leader waits for a learner to catch up before it gives up promoting it. */
const PROMOTE_WITHIN_MS = 10 * 60_000;

export const adminServiceFactory: NodeServiceFactory = async (ctx) => {
  let stopped = false;
  const promoting = new Set<number>();

  const promoteWhenCaughtUp = (id: number): void => {
    if (promoting.has(id)) return;
    promoting.add(id);
    const deadline = Date.now() + PROMOTE_WITHIN_MS;
    const step = async (): Promise<void> => {
      const raft = ctx.raft();
      if (stopped || raft === undefined || !raft.isLeader() || Date.now() > deadline) {
        ctx.log.warn({ joining: id }, 'gave up promoting a learner (stopped, no longer leader or too slow): it stays a learner');
        promoting.delete(id);
        return;
      }
      const match = raft.peerMatch(id);
      if (match !== undefined && match >= raft.status().commit) {
        try {
          await raft.promote(id);
          ctx.log.info({ joined: id }, 'a joining node caught up and is a voter now');
          promoting.delete(id);
          return;
        } catch (err) {
          ctx.log.warn({ joining: id, err: (err as Error).message }, 'promotion failed; retrying');
        }
      }
      setTimeout(() => void step(), 200).unref();
    };
    void step();
  };

  const join = async (q: z.infer<typeof joinSchema>): Promise<Record<string, unknown>> => {
    const raft = ctx.raft();
    if (raft === undefined) throw new CairnError('EAGAIN', 'this node is still starting');
    const tls = ctx.cfg.tls;
    if (tls?.caKeyFile === undefined) throw new CairnError('EINVAL', `node ${ctx.cfg.nodeId} holds no CA key (tls.caKeyFile): ask another member`);
    if (!raft.isLeader()) {
      const leader = raft.leaderId();
      const address = leader === 0 ? '' : raft.status().peers[String(leader)] ?? '';
      throw new CairnError('ENOTLEADER', `node ${ctx.cfg.nodeId} is not the leader; join through node ${leader || '?'}`, { leader, address });
    }
    const st = raft.status();
    if (st.conf.voters.includes(q.node_id)) throw new CairnError('EEXIST', `node ${q.node_id} is already a member of the cluster`);
    const ca = { keyPem: readFileSync(tls.caKeyFile, 'utf8'), certPem: readFileSync(tls.caFile, 'utf8') };
    const host = q.address.slice(0, q.address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
    let cert: string;
    try {
      cert = issueCert(ca, { kind: 'node', name: `node-${q.node_id}`, publicKeyPem: q.public_key_pem, ...(isIP(host) ? { ips: [host] } : { dns: [host] }) }).certPem;
    } catch (err) {
      throw new CairnError('EINVAL', `public_key_pem: not a usable public key (${(err as Error).message})`);
    }
    if (!st.conf.learners.includes(q.node_id)) await raft.addLearner(q.node_id, q.address);
    ctx.log.info({ joining: q.node_id, address: q.address }, 'a node joins as a learner');
    promoteWhenCaughtUp(q.node_id);
    const after = raft.status();
    const peers = [...after.conf.voters, ...after.conf.learners].map((id) => ({ id, address: id === raft.id ? raft.listenAddress : after.peers[String(id)] ?? (id === q.node_id ? q.address : '') }));
    return { ca_pem: ca.certPem, cert_pem: cert, ca_key_pem: ca.keyPem, peers, cluster_name: ctx.cfg.clusterName };
  };

  /**
   * A member whose data directory was lost asks to be re-seeded (`cairn start --rejoin`, with
   * its node certificate): its old self leaves the Raft group (its log is gone, so it must not
   * count in a quorum), and it comes back as a learner, a voter once caught up. Its disks keep
   * their labels and shards: the registry and the diskmap are unchanged.
   */
  const rejoin = async (q: z.infer<typeof joinSchema>): Promise<Record<string, unknown>> => {
    const raft = ctx.raft();
    if (raft === undefined) throw new CairnError('EAGAIN', 'this node is still starting');
    if (!raft.isLeader()) {
      const leader = raft.leaderId();
      const address = leader === 0 ? '' : raft.status().peers[String(leader)] ?? '';
      throw new CairnError('ENOTLEADER', `node ${ctx.cfg.nodeId} is not the leader; rejoin through node ${leader || '?'}`, { leader, address });
    }
    if (q.node_id === raft.id) throw new CairnError('EINVAL', `node ${q.node_id} is the leader: it has its data, it need not rejoin`);
    const st = raft.status();
    if (st.conf.voters.includes(q.node_id) || st.conf.learners.includes(q.node_id)) {
      await raft.remove(q.node_id);
      ctx.log.warn({ rejoining: q.node_id }, 'a member lost its data directory: its old self left the Raft group');
    }
    await raft.addLearner(q.node_id, q.address);
    ctx.log.info({ rejoining: q.node_id, address: q.address }, 'a member rejoins as a learner');
    promoteWhenCaughtUp(q.node_id);
    const after = raft.status();
    const peers = [...after.conf.voters, ...after.conf.learners].map((id) => ({ id, address: id === raft.id ? raft.listenAddress : after.peers[String(id)] ?? (id === q.node_id ? q.address : '') }));
    return { ca_pem: '', cert_pem: '', ca_key_pem: '', peers, cluster_name: ctx.cfg.clusterName };
  };

  return {
    name: 'admin',
    definitions: [{ service: serviceOf('admin.proto', 'cairn.admin.Admin').service, impl: { Join: unary(joinSchema, join), Rejoin: unary(rejoinSchema, rejoin) } }],
    stop: async () => {
      stopped = true;
    },
  };
};

