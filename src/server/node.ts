/**
 * The Cairn node daemon (`cairn start --config FILE`): opens the metadata state machine under
 * <dataDir>/meta, builds every service of NODE_SERVICES, starts the Raft node that serves
 * them with its transport on config.listen, and exposes Prometheus metrics on
 * config.metricsListen. stop() ends streams, stops Raft (which closes the state machine)
 * and the metrics server.
 */
import { createServer, type Server } from 'node:http';
import type { NodeConfig } from '../common/config.js';
import { logger } from '../common/log.js';
import { enableDefaultMetrics, registry } from '../common/metrics.js';
import { RaftNode } from '../raft/node.js';
import { CairnError } from '../common/errors.js';
import { loadIdentity, mayCall, setTlsIdentity } from '../rpc/security.js';
import { laneMethods, listenLaneUnix } from '../rpc/lane.js';
import { MetaStateMachine } from '../meta/state-machine.js';
import { CAIRN_VERSION, compareVersions } from '../common/version.js';
import { AppliedFeed } from './meta-copy.js';
import { startStatusPage, type StatusPage } from './status-page.js';
import { NODE_SERVICES, type NodeContext, type NodeServiceFactory, type NodeServiceInstance } from './services.js';

export interface CairnNode {
  raft: RaftNode;
  meta: MetaStateMachine;
  /** The gRPC address the node serves on (after binding port 0). */
  address: string;
  metricsAddress: string | undefined;
  /** The status page's address (config statusPage), if it runs. */
  statusPageAddress: string | undefined;
  /** Resolves with the error if Raft stopped itself (a failed fsync or apply): the process must end. */
  failed: Promise<Error>;
  stop(): Promise<void>;
}

export interface StartNodeOptions {
  /** Start with an empty membership and wait to be added (not bootstrapping a new group). */
  join?: boolean;
  /** Services to run instead of NODE_SERVICES (tests). */
  services?: NodeServiceFactory[];
  /** Options of the metadata state machine (tests: a small watch log). */
  meta?: { maxEvents?: number; syncApply?: boolean };
}

export async function startNode(cfg: NodeConfig, opts: StartNodeOptions = {}): Promise<CairnNode> {
  const log = logger('node', { node: cfg.nodeId });
  // The node's TLS identity is the process's: its server requires certificates of the cluster's
  // CA and its connections to other nodes present its own (src/rpc/security.ts).
  if (cfg.tls !== undefined) {
    const id = loadIdentity(cfg.tls);
    if (id.subject.kind !== 'node') throw new CairnError('EINVAL', `${cfg.tls.certFile}: a ${id.subject.kind} certificate, not a node's`);
    setTlsIdentity(id);
  } else {
    setTlsIdentity(undefined);
    log.warn('no tls section in the config: this node serves anyone who can reach its port');
  }
  const meta = await MetaStateMachine.open({ dataDir: cfg.dataDir, ...opts.meta });
  // A node older than the cluster version could not apply what the cluster writes now (docs/upgrade.md).
  if (compareVersions(meta.clusterVersion(), CAIRN_VERSION) > 0) {
    await meta.close();
    throw new CairnError('EINVAL', `this node runs release ${CAIRN_VERSION}, older than the cluster version ${meta.clusterVersion()} its metadata records: install release ${meta.clusterVersion()} or newer (ops/upgrade.md)`);
  }
  let raft: RaftNode | undefined;
  const feed = new AppliedFeed();
  const ctx: NodeContext = { cfg, meta, raft: () => raft, log, join: opts.join === true, feed };
  const services: NodeServiceInstance[] = [];
  let metrics: Server | undefined;
  let page: StatusPage | undefined;
  let local: { close(graceMs: number): Promise<void> } | undefined;
  let onFatal: (err: Error) => void = () => undefined;
  const failed = new Promise<Error>((res) => (onFatal = res));
  try {
    for (const f of opts.services ?? NODE_SERVICES) services.push(await f(ctx));
    raft = await RaftNode.start({
      id: cfg.nodeId,
      dataDir: cfg.dataDir,
      listen: cfg.listen,
      advertise: cfg.advertise,
      peers: cfg.peers,
      join: opts.join === true || cfg.join === true,
      raft: cfg.raft,
      stateMachine: feed.wrap(meta), // the same state machine; the feed shows applied entries to the disk copies
      onFatal: (err) => {
        log.fatal({ err: err.message }, 'raft failed: the node must stop');
        onFatal(err);
      },
      services: services.flatMap((s) => s.definitions),
    });
    for (const s of services) s.started?.();
    let metricsAddress: string | undefined;
    if (cfg.metricsListen !== undefined) {
      enableDefaultMetrics();
      metrics = await serveMetrics(cfg.metricsListen);
      const a = metrics.address();
      metricsAddress = a !== null && typeof a === 'object' ? `${a.address}:${a.port}` : cfg.metricsListen;
    }
    if (cfg.localSocket !== undefined) {
      const defs = services.flatMap((s) => s.definitions).filter((d) => Object.values(d.service).every((m) => mayCall('client', m.path)));
      local = await listenLaneUnix(cfg.localSocket.path, laneMethods(defs), parseInt(cfg.localSocket.mode, 8), cfg.localSocket.gid);
    }
    if (cfg.statusPage !== undefined) {
      enableDefaultMetrics();
      const r = raft;
      page = await startStatusPage({ ...cfg.statusPage, nodeAddress: () => r.listenAddress, log: log.child({ component: 'status-page' }) });
    }
    log.info({ address: raft.listenAddress, services: services.map((s) => s.name), metrics: metricsAddress, statusPage: page?.address }, 'node started');
    const r = raft;
    const m = metrics;
    const pg = page;
    const lc = local;
    let stopping: Promise<void> | undefined;
    return {
      raft: r,
      meta,
      address: r.listenAddress,
      metricsAddress,
      statusPageAddress: pg?.address,
      failed,
      stop: () =>
        (stopping ??= (async () => {
          if (pg) await pg.close().catch(() => undefined);
          if (lc) await lc.close(2_000).catch(() => undefined);
          for (const s of services) await s.stop?.().catch(() => undefined);
          await r.stop();
          if (m) await new Promise<void>((res) => m.close(() => res()));
          log.info('node stopped');
        })()),
    };
  } catch (err) {
    for (const s of services) await s.stop?.().catch(() => undefined);
    if (raft) await raft.stop().catch(() => undefined);
    else await meta.close().catch(() => undefined);
    if (metrics) metrics.close();
    if (page) await page.close().catch(() => undefined);
    if (local) await local.close(0).catch(() => undefined);
    throw err;
  }
}

async function serveMetrics(address: string): Promise<Server> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i);
  const port = Number(address.slice(i + 1));
  const srv = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: unknown) => {
          res.writeHead(500);
          res.end(String(err));
        },
      );
      return;
    }
    res.writeHead(404);
    res.end('not found: try /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, host, () => resolve());
  });
  return srv;
}
