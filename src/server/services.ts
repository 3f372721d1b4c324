/**
 * The services a Cairn node serves on its one gRPC address, besides the Raft transport.
 * Adding a service to every node (the chunk service, the client daemon's API) is one more
 * entry in NODE_SERVICES: a factory that gets the node's context and returns its gRPC
 * definitions plus hooks for start-up and shutdown.
 */
import type { NodeConfig } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { grpc } from '../rpc/grpc.js';
import type { RaftNode } from '../raft/node.js';
import type { MetaStateMachine } from '../meta/state-machine.js';
import { MetaService, type MetaServiceOptions } from '../meta/service.js';
import { clusterSupports } from '../common/version.js';
import { chunkNodeFactory } from './chunk-node.js';
import { clusterFactory } from './cluster.js';
import { fileServiceFactory } from './file-service.js';
import { metaCopyFactory, type AppliedFeed } from './meta-copy.js';
import { adminServiceFactory } from './admin-service.js';
import { nodeMetricsFactory } from './node-metrics.js';
import { tokenBookFactory } from './token-book.js';
import { nodeOpsFactory } from './node-ops.js';

export interface NodeContext {
  cfg: NodeConfig;
  /** The metadata state machine (open before any service starts). */
  meta: MetaStateMachine;
  /** The Raft node, once started (services are built before it, since Raft serves them). */
  raft: () => RaftNode | undefined;
  log: Logger;
  /** Started with --join (an empty membership, waiting to be added): a data directory may be new. */
  join?: boolean;
  /** Every committed entry the state machine applies (src/server/meta-copy.ts); absent in some tests. */
  feed?: AppliedFeed;
}

export interface NodeServiceInstance {
  name: string;
  definitions: Array<{ service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation }>;
  /** Called once Raft runs. */
  started?(): void;
  /** Called before Raft stops: end streams, stop timers. */
  stop?(): Promise<void>;
}

export type NodeServiceFactory = (ctx: NodeContext) => Promise<NodeServiceInstance>;

/** The metadata service (proto/meta.proto) on top of the node's Raft group. */
export const metaServiceFactory: NodeServiceFactory = (ctx) => metaServiceWith({})(ctx);

/** The metadata service with extra options (tests: a faster lease sweep). */
export function metaServiceWith(extra: Pick<MetaServiceOptions, 'leaseSweepMs' | 'forwardWrites' | 'binaryPutFile'>): NodeServiceFactory {
  return async (ctx) => metaInstance(ctx, extra);
}

function metaInstance(ctx: NodeContext, extra: Pick<MetaServiceOptions, 'leaseSweepMs' | 'forwardWrites' | 'binaryPutFile'>): NodeServiceInstance {
  const svc = new MetaService({
    // The binary putFile entry only once every node reads it (docs/upgrade.md); a test may force it.
    binaryPutFile: () => clusterSupports(ctx.meta, 'binaryPutFile'),
    ...extra,
    inlineBudgetBytes: ctx.cfg.daemon.inlineBudgetBytes,
    sm: ctx.meta,
    replicator: ctx.raft,
    node: {
      nodeId: ctx.cfg.nodeId,
      get address() {
        return ctx.raft()?.listenAddress ?? ctx.cfg.advertise ?? ctx.cfg.listen;
      },
      leaderId: () => ctx.raft()?.leaderId() ?? 0,
      leaderAddress: () => {
        const r = ctx.raft();
        if (r === undefined) return undefined;
        const leader = r.leaderId();
        if (leader === 0) return undefined;
        if (leader === r.id) return r.listenAddress;
        return r.status().peers[String(leader)];
      },
      // A learner (a node that joined and is catching up) says so.
      role: () => {
        const st = ctx.raft()?.status();
        if (st === undefined) return 'starting';
        return st.conf.learners.includes(st.id) ? 'learner' : String(st.role);
      },
      term: () => ctx.raft()?.status().term ?? 0,
      memberVersions: (withinMs) => ctx.raft()?.memberVersions(withinMs) ?? [],
    },
  });
  return {
    name: 'meta',
    definitions: [svc.definition()],
    started: () => {
      svc.startLeaseSweeper();
      svc.startVersionGate();
    },
    stop: async () => svc.stop(),
  };
}

/**
 * The chunk service (proto/chunk.proto) over the node's configured disks: formats a disk on the
 * node's first start (or opens one `cairn init` labelled), serves a missing or unreadable disk as
 * failed. See src/server/chunk-node.ts.
 */
export const chunkServiceFactory: NodeServiceFactory = chunkNodeFactory;

/** Every service a node runs. Add one line per service. */
export const NODE_SERVICES: NodeServiceFactory[] = [
  metaServiceFactory,
  // The chunk service over this node's disks (formats them on first start).
  chunkServiceFactory,
  // The metadata copies on this node's data disks (docs/recovery.md); needs the chunk store.
  metaCopyFactory,
  // Registry, diskmap controller (on the leader), cluster view, chunk GC and scrub; needs the chunk store.
  clusterFactory,
  // The node's CairnFs (write cache + commit pipeline) over gRPC; needs the cluster view.
  fileServiceFactory,
  // How a new machine joins (cairn join): certificates from the CA, learner, then voter.
  adminServiceFactory,
  // Raft, disk fill and repair gauges read at scrape time (no RPCs); needs the cluster parts.
  nodeMetricsFactory,
  // The client tokens this node accepts (read from the cluster every few seconds).
  tokenBookFactory,
  // Operators' membership changes (cairn node remove); needs the cluster parts.
  nodeOpsFactory,
];
