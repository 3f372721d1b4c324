'use strict';
/*
 * kvbench adapter for the Cairn KV service (proto/kv.proto) — the Raft group of `cairn kv serve`.
 * Like the etcd adapter, every request goes to a random endpoint (a follower proposes through
 * Raft, which forwards to the leader; linearizable gets use the serving node's ReadIndex).
 *
 * Two transports, chosen by the environment variable CAIRN_BENCH_KV_TRANSPORT (read when the
 * module loads, so that kvbench's result carries the transport in the adapter's name):
 *   lane (default) — Cairn's own client path: makeClient() + call() of src/rpc/grpc.ts, loaded
 *                    through tsx, which speak the lane (src/rpc/lane.ts) like every Cairn client;
 *   grpc           — plain grpc-js (the client the etcd adapter's gRPC stack compares with).
 * Options (--opt k=v): mode=all (default) | mode=leader (only the first endpoint);
 * timeoutMs=N (default 10000).
 */
const path = require('path');

const ROOT = path.join(__dirname, '..', '..');
const TRANSPORT = process.env.CAIRN_BENCH_KV_TRANSPORT === 'grpc' ? 'grpc' : 'lane';

/** Unary calls over plain grpc-js. */
function grpcClients(endpoints, timeoutMs) {
  const grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');
  const def = protoLoader.loadSync(path.join(ROOT, 'proto', 'kv.proto'), { keepCase: true, longs: Number, enums: String, bytes: Buffer, defaults: true });
  const Kv = grpc.loadPackageDefinition(def).cairn.kv.Kv;
  const clients = endpoints.map((e) => new Kv(e, grpc.credentials.createInsecure()));
  const unary = (c, method, req) =>
    new Promise((resolve, reject) => {
      c[method](req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  return { clients, unary, close: () => clients.forEach((c) => c.close()) };
}

/** Unary calls over the lane, through Cairn's own rpc module (TypeScript, loaded with tsx). */
async function laneClients(endpoints, timeoutMs) {
  if (process.env.CAIRN_RPC === 'grpc') throw new Error('CAIRN_RPC=grpc disables the lane; use CAIRN_BENCH_KV_TRANSPORT=grpc instead');
  const { tsImport } = await import('tsx/esm/api'); // (the require() form of tsx's api cannot load ESM here)
  const rpc = await tsImport(path.join(ROOT, 'src', 'rpc', 'grpc.ts'), __filename);
  const lane = await tsImport(path.join(ROOT, 'src', 'rpc', 'lane.ts'), __filename);
  const Kv = rpc.serviceOf('kv.proto', 'cairn.kv.Kv');
  const clients = endpoints.map((e) => rpc.makeClient(Kv, e));
  const unary = (c, method, req) => rpc.call(c, method, req, timeoutMs);
  return {
    clients,
    unary,
    close: () => {
      clients.forEach((c) => c.close());
      lane.closeAllLanes();
    },
  };
}

module.exports = {
  name: `cairn-kv (${TRANSPORT === 'lane' ? 'lane' : 'grpc-js'})`,
  transport: TRANSPORT,
  async create(opts) {
    const endpoints = opts.mode === 'leader' ? opts.endpoints.slice(0, 1) : opts.endpoints;
    const timeoutMs = Number(opts.timeoutMs || 10000);
    const { clients, unary, close } = TRANSPORT === 'lane' ? await laneClients(endpoints, timeoutMs) : grpcClients(endpoints, timeoutMs);
    const pick = () => clients[(Math.random() * clients.length) | 0];
    await Promise.all(clients.map((c) => unary(c, 'Status', {})));
    return {
      async put(key, value) {
        await unary(pick(), 'Put', { key, value });
      },
      async get(key, linearizable) {
        const r = await unary(pick(), 'Get', { key, linearizable });
        return r.found ? r.value : undefined;
      },
      async close() {
        close();
      },
    };
  },
};
