'use strict';
/*
 * kvbench adapter for the Cairn KV service (proto/kv.proto) — the Raft group of `cairn kv serve`.
 * Like the etcd adapter, every request goes to a random endpoint (a follower proposes through
 * Raft, which forwards to the leader; linearizable gets use the serving node's ReadIndex).
 * Options (--opt k=v): mode=all (default) | mode=leader (only the first endpoint);
 * timeoutMs=N (default 10000).
 */
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'proto', 'kv.proto');

module.exports = {
  name: 'cairn-kv (grpc-js)',
  async create(opts) {
    const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, enums: String, bytes: Buffer, defaults: true });
    const Kv = grpc.loadPackageDefinition(def).cairn.kv.Kv;
    const endpoints = opts.mode === 'leader' ? opts.endpoints.slice(0, 1) : opts.endpoints;
    const timeoutMs = Number(opts.timeoutMs || 10000);
    const clients = endpoints.map((e) => new Kv(e, grpc.credentials.createInsecure()));
    const pick = () => clients[(Math.random() * clients.length) | 0];
    const unary = (c, method, req) =>
      new Promise((resolve, reject) => {
        c[method](req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
      });
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
        clients.forEach((c) => c.close());
      },
    };
  },
};
