/**
 * Mutual TLS from the cluster's own CA (src/rpc/pki.ts, security.ts) on one real port, over both
 * transports (the lane and grpc-js): a client of the cluster is served; a client without
 * credentials, and a node whose certificate is from another cluster, are refused (and counted);
 * a client certificate cannot call Raft; nothing is served before a certificate is checked.
 */
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CairnError } from '../../src/common/errors.js';
import { registry } from '../../src/common/metrics.js';
import { call, grpc, makeClient, startServer, unary, type StartedServer } from '../../src/rpc/grpc.js';
import { closeAllLanes } from '../../src/rpc/lane.js';
import { createCa, issueCert, subjectOf, type KeyAndCert } from '../../src/rpc/pki.js';
import { makeIdentity, setTlsIdentity, type TlsIdentity } from '../../src/rpc/security.js';

const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer): unknown => JSON.parse(b.toString('utf8')),
};
function method(path: string) {
  return { path, requestStream: false, responseStream: false, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize };
}
// A stand-in for a client service and for the Raft service (the node-only prefix /cairn.raft.).
const echoDef = { Echo: method('/test.Echo/Echo') } as unknown as grpc.ServiceDefinition;
const raftDef = { Ping: method('/cairn.raft.Raft/Ping') } as unknown as grpc.ServiceDefinition;
const EchoClient = grpc.makeGenericClientConstructor(echoDef, 'Echo');
const RaftClient = grpc.makeGenericClientConstructor(raftDef, 'Raft');
let served = 0;
const echo = unary(z.object({ text: z.string() }), async (r) => {
  served++;
  return { text: r.text.toUpperCase() };
});
const ping = unary(z.object({}).loose(), async () => {
  served++;
  return { ok: true };
});

const identity = (ca: KeyAndCert, kind: 'node' | 'client', name: string): TlsIdentity => {
  const c = issueCert(ca, { kind, name, ips: ['127.0.0.1'] });
  return makeIdentity(ca.certPem, c.certPem, c.keyPem, name);
};

let server: StartedServer;
let ours: { node: TlsIdentity; client: TlsIdentity };
let theirs: TlsIdentity;

beforeAll(async () => {
  const ca = createCa('ours');
  ours = { node: identity(ca, 'node', 'node-1'), client: identity(ca, 'client', 'client-admin') };
  theirs = identity(createCa('theirs'), 'node', 'node-1');
  setTlsIdentity(ours.node);
  server = await startServer('127.0.0.1:0', [
    { service: echoDef, impl: { Echo: echo } },
    { service: raftDef, impl: { Ping: ping } },
  ]);
});

afterAll(async () => {
  setTlsIdentity(undefined);
  closeAllLanes();
  await server.stop(100);
});

afterEach(() => closeAllLanes());

async function as<T>(id: TlsIdentity | undefined, rpc: 'lane' | 'grpc', fn: () => Promise<T>): Promise<T> {
  const before = process.env.CAIRN_RPC;
  if (rpc === 'grpc') process.env.CAIRN_RPC = 'grpc';
  else delete process.env.CAIRN_RPC;
  setTlsIdentity(id);
  closeAllLanes();
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.CAIRN_RPC;
    else process.env.CAIRN_RPC = before;
    setTlsIdentity(ours.node);
  }
}

async function echoAs(id: TlsIdentity | undefined, rpc: 'lane' | 'grpc'): Promise<unknown> {
  return as(id, rpc, async () => {
    const c = makeClient(EchoClient, server.address);
    try {
      return await call(c, 'Echo', { text: 'hi' }, 3_000);
    } finally {
      c.close();
    }
  });
}

async function refusedCount(reason: string): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === 'cairn_rpc_refused_connections_total');
  return (m?.values ?? []).filter((v) => v.labels.reason === reason).reduce((s, v) => s + Number(v.value), 0);
}

describe('certificates from the cluster CA', () => {
  it('carry the cluster, kind and name, signed by the CA', () => {
    const ca = createCa('c9');
    const n = issueCert(ca, { kind: 'node', name: 'node-7', ips: ['127.0.0.1', '::1'], dns: ['box7'] });
    const x = new X509Certificate(n.certPem);
    expect(x.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(subjectOf(x)).toEqual({ clusterId: 'c9', kind: 'node', name: 'node-7' });
    expect(x.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(x.subjectAltName).toContain('DNS:box7');
    expect(() => makeIdentity(createCa('c8').certPem, n.certPem, n.keyPem, 'x')).toThrow(/not signed by the CA/);
  });
});

describe.each(['lane', 'grpc'] as const)('mutual TLS over %s', (rpc) => {
  it('serves a client and a node of the cluster', async () => {
    expect(server.secure).toBe(true);
    expect(await echoAs(ours.client, rpc)).toEqual({ text: 'HI' });
    expect(await echoAs(ours.node, rpc)).toEqual({ text: 'HI' });
  });

  it('refuses a client without credentials, and serves it nothing', async () => {
    const n = served;
    const refused = await refusedCount(rpc === 'lane' ? 'lane' : 'unknown');
    const err = await echoAs(undefined, rpc).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    // The lane tells the client why; grpc-js only sees the connection cut.
    if (rpc === 'lane') {
      expect((err as CairnError).code).toBe('EACCES');
      expect((err as CairnError).message).toMatch(/requires TLS/);
    } else expect(['EUNAVAIL', 'ETIMEDOUT']).toContain((err as CairnError).code);
    expect(served).toBe(n);
    if (rpc === 'lane') expect(await refusedCount('lane')).toBeGreaterThan(refused);
  });

  it('refuses a node whose certificate is from another cluster', async () => {
    const n = served;
    // A node of another cluster does not trust this one's nodes either: no connection at all.
    const err = await echoAs(theirs, rpc).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect(['EACCES', 'EUNAVAIL', 'ETIMEDOUT']).toContain((err as CairnError).code);
    // One that trusts this cluster's CA (its certificate is public) but holds a certificate of
    // another CA is refused by the server, which says why (lane) and counts it.
    const before = await refusedCount('certificate');
    const impostor: TlsIdentity = { ...theirs, caPem: ours.node.caPem, ca: ours.node.ca, subject: ours.node.subject };
    const err2 = await echoAs(impostor, rpc).then(() => undefined, (e: unknown) => e);
    expect(err2).toBeInstanceOf(CairnError);
    if (rpc === 'lane') {
      expect((err2 as CairnError).code).toBe('EACCES');
      expect((err2 as CairnError).message).toMatch(/not from this cluster's CA/);
    }
    expect(served).toBe(n);
    expect(await refusedCount('certificate')).toBeGreaterThan(before);
  });

  it('lets only nodes call Raft', async () => {
    const pingAs = (id: TlsIdentity): Promise<unknown> =>
      as(id, rpc, async () => {
        const c = makeClient(RaftClient, server.address);
        try {
          return await call(c, 'Ping', {}, 3_000);
        } finally {
          c.close();
        }
      });
    expect(await pingAs(ours.node)).toEqual({ ok: true });
    const n = served;
    const err = await pingAs(ours.client).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect(served).toBe(n);
    if (rpc === 'lane') expect((err as CairnError).code).toBe('EACCES');
  });
});

describe('the listener', () => {
  it('answers an HTTP/1.1 request with a clear refusal, not HTTP/2 frames', async () => {
    const [host, port] = [server.address.slice(0, server.address.lastIndexOf(':')), Number(server.address.slice(server.address.lastIndexOf(':') + 1))];
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ host, port }, () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      let got = '';
      s.setEncoding('latin1');
      s.on('data', (d: string) => (got += d));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 505 /);
    expect(reply).toContain('not HTTP/1.1');
  });
});
