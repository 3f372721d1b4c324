/**
 * The CPU cost of mutual TLS on the lane (src/rpc/security.ts): the same echo service on one
 * port, client and server in this process, plain TCP against TLS 1.3 from the cluster's CA.
 * Small calls (200 B) at 1 and 64 in flight, and 1 MiB calls at 8 in flight; CPU is the process's
 * user + system time per call (both ends of each call are in it).
 */
import { z } from 'zod';
import { call, grpc, makeClient, startServer, unary } from '../src/rpc/grpc.js';
import { closeAllLanes } from '../src/rpc/lane.js';
import { createCa, issueCert } from '../src/rpc/pki.js';
import { makeIdentity, setTlsIdentity } from '../src/rpc/security.js';
import type { BenchSuite, BenchTable } from './table.js';

const raw = { serialize: (v: unknown): Buffer => v as Buffer, deserialize: (b: Buffer): unknown => Buffer.from(b) };
const def = {
  Echo: { path: '/bench.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
} as unknown as grpc.ServiceDefinition;
const Client = grpc.makeGenericClientConstructor(def, 'Echo');
const echo = unary(z.instanceof(Buffer), async (b) => b);

async function measure(n: number, inFlight: number, bytes: number): Promise<{ callsPerSec: number; cpuUsPerCall: number; mbPerSec: number }> {
  const server = await startServer('127.0.0.1:0', [{ service: def, impl: { Echo: echo } }]);
  const client = makeClient(Client, server.address);
  const body = Buffer.alloc(bytes, 7);
  try {
    for (let i = 0; i < 200; i++) await call(client, 'Echo', body, 10_000); // warm up (and connect)
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next++ < n) await call(client, 'Echo', body, 30_000);
      }),
    );
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    return { callsPerSec: n / secs, cpuUsPerCall: (cpu.user + cpu.system) / n, mbPerSec: (2 * n * bytes) / secs / 1e6 };
  } finally {
    client.close();
    closeAllLanes();
    await server.stop(100);
  }
}

export const rpcTlsSuite: BenchSuite = {
  name: 'rpc-tls',
  async run({ quick }) {
    const ca = createCa('bench');
    const node = issueCert(ca, { kind: 'node', name: 'node-1', ips: ['127.0.0.1'] });
    const id = makeIdentity(ca.certPem, node.certPem, node.keyPem, 'bench');
    const cases = [
      { label: '200 B, 1 in flight', n: quick ? 2_000 : 10_000, inFlight: 1, bytes: 200 },
      { label: '200 B, 64 in flight', n: quick ? 10_000 : 50_000, inFlight: 64, bytes: 200 },
      { label: '1 MiB, 8 in flight', n: quick ? 200 : 1_000, inFlight: 8, bytes: 1 << 20 },
    ];
    const rows: BenchTable['rows'] = [];
    for (const c of cases) {
      setTlsIdentity(undefined);
      const plain = await measure(c.n, c.inFlight, c.bytes);
      setTlsIdentity(id);
      const tls = await measure(c.n, c.inFlight, c.bytes);
      setTlsIdentity(undefined);
      rows.push([
        c.label,
        Math.round(plain.callsPerSec), Math.round(tls.callsPerSec),
        plain.cpuUsPerCall.toFixed(1), tls.cpuUsPerCall.toFixed(1),
        `${((tls.cpuUsPerCall / plain.cpuUsPerCall - 1) * 100).toFixed(0)}%`,
        c.bytes >= 1 << 20 ? `${plain.mbPerSec.toFixed(0)} / ${tls.mbPerSec.toFixed(0)}` : '-',
      ]);
    }
    return [
      {
        title: 'Lane echo: plain TCP vs mutual TLS 1.3 (client and server in one process)',
        headers: ['calls', 'plain calls/s', 'TLS calls/s', 'plain CPU µs/call', 'TLS CPU µs/call', 'TLS CPU extra', 'MB/s both ways (plain / TLS)'],
        rows,
        notes: ['CPU: user + system time of the process per call, both ends included; ECDSA P-256 certificates, AES-GCM from OpenSSL'],
      },
    ];
  },
};
