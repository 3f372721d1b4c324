/**
 * The lane (src/rpc/lane.ts) against grpc-js on one real port on 127.0.0.1: the same handlers
 * answer both, errors keep their codes, streams keep their order and their bounds, and bad
 * bytes or a vanished server give clear errors, never a hang or a crash.
 */
import net from 'node:net';
import { once } from 'node:events';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CairnError } from '../../src/common/errors.js';
import {
  call,
  fromServiceError,
  grpc,
  makeClient,
  openClientStream,
  openServerStream,
  startServer,
  toServiceError,
  unary,
  type StartedServer,
} from '../../src/rpc/grpc.js';
import { LANE_MAGIC, closeAllLanes, setLaneKeepalive } from '../../src/rpc/lane.js';
import { registry } from '../../src/common/metrics.js';

const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer): unknown => JSON.parse(b.toString('utf8')),
};
const raw = { serialize: (v: unknown): Buffer => v as Buffer, deserialize: (b: Buffer): unknown => Buffer.from(b) };

function method(name: string, requestStream: boolean, responseStream: boolean, codec = json, replyCodec = json) {
  return {
    path: `/test.Lane/${name}`,
    requestStream,
    responseStream,
    requestSerialize: codec.serialize,
    requestDeserialize: codec.deserialize,
    responseSerialize: replyCodec.serialize,
    responseDeserialize: replyCodec.deserialize,
  };
}

const definition = {
  Echo: method('Echo', false, false),
  Sum: method('Sum', true, false, raw, json),
  Count: method('Count', false, true, json, raw),
  Bye: method('Bye', false, false),
} as unknown as grpc.ServiceDefinition;

const Client = grpc.makeGenericClientConstructor(definition as grpc.ServiceDefinition, 'Lane');

let cancelledStreams = 0;
let echosStarted = 0;
let liveCounters = 0;

const impl: grpc.UntypedServiceImplementation = {
  Echo: unary(z.object({ text: z.string().max(100_000), fail: z.string().optional(), delayMs: z.number().optional() }), async (r) => {
    echosStarted++;
    if (r.delayMs !== undefined) await new Promise((res) => setTimeout(res, r.delayMs));
    if (r.fail !== undefined) throw new CairnError('ENOENT', `no such thing: ${r.fail}`, { what: r.fail });
    return { text: r.text.toUpperCase() };
  }),
  Sum: (call: grpc.ServerReadableStream<Buffer, unknown>, cb: grpc.sendUnaryData<unknown>) => {
    void (async () => {
      let bytes = 0;
      let sum = 0;
      for await (const b of call as AsyncIterable<Buffer>) {
        bytes += b.length;
        for (let i = 0; i < b.length; i += 4096) sum = (sum + b[i]!) % 1_000_003;
        // A slow consumer: the sender must be held back, not buffered without bound.
        await new Promise((r) => setImmediate(r));
      }
      cb(null, { bytes, sum });
    })().catch((err: unknown) => cb(toServiceError(err) as grpc.ServiceError));
  },
  // Answers, then stops the server in the same turn of the event loop: the reply is still corked.
  Bye: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
    cb(null, { text: 'BYE' });
    void server.stop(5_000);
  },
  Count: (call: grpc.ServerWritableStream<{ n: number; size: number }, Buffer>) => {
    liveCounters++;
    const { n, size } = call.request;
    let stopped = false;
    call.on('cancelled', () => {
      stopped = true;
      cancelledStreams++;
    });
    void (async () => {
      try {
        for (let i = 0; i < n && !stopped; i++) {
          const b = Buffer.alloc(size, i % 251);
          // As the real handlers do: wait for room, or for the call to be over.
          if (!call.write(b)) await Promise.race([once(call, 'drain'), once(call, 'close')]);
        }
        if (n < 0) call.emit('error', toServiceError(new CairnError('EINVAL', 'n must not be negative')));
        else if (!stopped) call.end();
      } finally {
        liveCounters--;
      }
    })().catch(() => undefined);
  },
};

let server: StartedServer;
let client: grpc.Client;

beforeEach(async () => {
  server = await startServer('127.0.0.1:0', [{ service: definition, impl }]);
  client = makeClient(Client as unknown as grpc.ServiceClientConstructor, server.address);
});

afterEach(async () => {
  delete process.env.CAIRN_RPC;
  client.close();
  closeAllLanes();
  await server.stop(100);
});

function sumOf(pieces: Buffer[]): number {
  let sum = 0;
  for (const b of pieces) for (let i = 0; i < b.length; i += 4096) sum = (sum + b[i]!) % 1_000_003;
  return sum;
}

async function sum(pieces: Buffer[]): Promise<{ bytes: number; sum: number }> {
  return new Promise((resolve, reject) => {
    const s = openClientStream(client, 'Sum', {}, (err, v) => (err ? reject(fromServiceError(err)) : resolve(v as { bytes: number; sum: number })));
    void (async () => {
      for (const p of pieces) if (!s.write(p)) await once(s, 'drain');
      s.end();
    })();
  });
}

async function count(n: number, size: number): Promise<Buffer[]> {
  const s = openServerStream(client, 'Count', { n, size });
  const out: Buffer[] = [];
  return new Promise((resolve, reject) => {
    s.on('data', (b: Buffer) => out.push(b));
    s.on('end', () => resolve(out));
    s.on('error', (e: grpc.ServiceError) => reject(fromServiceError(e)));
  });
}

describe.each([['lane'], ['grpc']])('one port, two protocols: %s', (mode) => {
  beforeEach(() => {
    if (mode === 'grpc') process.env.CAIRN_RPC = 'grpc';
  });

  it('answers unary calls with the same handler and keeps error codes and details', async () => {
    await expect(call(client, 'Echo', { text: 'abc' })).resolves.toEqual({ text: 'ABC' });
    const err = await call(client, 'Echo', { text: 'x', fail: 'door' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ENOENT');
    expect((err as CairnError).message).toContain('no such thing: door');
    expect((err as CairnError).details).toEqual({ what: 'door' });
    // zod validation runs for both protocols.
    const bad = await call(client, 'Echo', { text: 42 }).catch((e: unknown) => e);
    expect((bad as CairnError).code).toBe('EINVAL');
  });

  it('runs many calls at once and matches each reply to its request', async () => {
    const texts = Array.from({ length: 300 }, (_, i) => `t${i}-${'x'.repeat(i * 13)}`);
    const replies = await Promise.all(texts.map((t, i) => call<unknown, { text: string }>(client, 'Echo', { text: t, delayMs: i % 7 })));
    expect(replies.map((r) => r.text)).toEqual(texts.map((t) => t.toUpperCase()));
  });

  it('streams 24 MiB to a slow reader in 1 MiB pieces and back', async () => {
    const pieces = Array.from({ length: 24 }, (_, i) => Buffer.alloc(1024 * 1024, (i * 7) % 256));
    await expect(sum(pieces)).resolves.toEqual({ bytes: 24 * 1024 * 1024, sum: sumOf(pieces) });
    const got = await count(24, 1024 * 1024);
    expect(got.length).toBe(24);
    expect(got.map((b) => b[0])).toEqual(Array.from({ length: 24 }, (_, i) => i % 251));
    expect(got.every((b) => b.length === 1024 * 1024)).toBe(true);
  });

  it('ends a server stream with the handler error', async () => {
    const err = await count(-1, 10).catch((e: unknown) => e);
    expect((err as CairnError).code).toBe('EINVAL');
  });

  it('times out a call that gets no reply', async () => {
    const err = await call(client, 'Echo', { text: 'slow', delayMs: 1000 }, 100).catch((e: unknown) => e);
    expect((err as CairnError).code).toBe('ETIMEDOUT');
  });
});

describe('the lane alone', () => {
  it('counts calls by method and result, and protocol errors', async () => {
    const value = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
      const metric = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
      const v = metric?.values.find((x) => Object.entries(labels).every(([k, want]) => x.labels[k] === want));
      return Number(v?.value ?? 0);
    };
    const ok0 = await value('cairn_rpc_lane_calls_total', { method: 'Lane/Echo', result: 'OK' });
    const enoent0 = await value('cairn_rpc_lane_calls_total', { method: 'Lane/Echo', result: 'ENOENT' });
    const proto0 = await value('cairn_rpc_lane_protocol_errors_total');
    await call(client, 'Echo', { text: 'a' });
    await call(client, 'Echo', { text: 'b' });
    await call(client, 'Echo', { text: 'c', fail: 'x' }).catch(() => undefined);
    const s = net.connect(server.port, '127.0.0.1');
    s.on('error', () => undefined);
    s.resume();
    await once(s, 'connect');
    s.write(Buffer.concat([LANE_MAGIC, Buffer.from([0xff, 0xff, 0xff, 0xff, 0])]));
    await once(s, 'close');
    expect(await value('cairn_rpc_lane_calls_total', { method: 'Lane/Echo', result: 'OK' })).toBe(ok0 + 2);
    expect(await value('cairn_rpc_lane_calls_total', { method: 'Lane/Echo', result: 'ENOENT' })).toBe(enoent0 + 1);
    expect(await value('cairn_rpc_lane_protocol_errors_total')).toBe(proto0 + 1);
  });

  it('cancels a server stream on the server when the client cancels', async () => {
    const before = cancelledStreams;
    const s = openServerStream(client, 'Count', { n: 1_000_000, size: 64 * 1024 });
    s.on('error', () => undefined);
    await once(s, 'data');
    s.cancel();
    const t0 = Date.now();
    while (cancelledStreams === before && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
    expect(cancelledStreams).toBe(before + 1);
    // The connection is reusable afterwards.
    await expect(call(client, 'Echo', { text: 'after' })).resolves.toEqual({ text: 'AFTER' });
  });

  it('refuses an unknown method and a stream with no messages by name', async () => {
    const ghost = { ...definition, Ghost: method('Ghost', false, false) } as unknown as grpc.ServiceDefinition;
    const G = grpc.makeGenericClientConstructor(ghost, 'Lane');
    const g = makeClient(G as unknown as grpc.ServiceClientConstructor, server.address);
    const err = await call(g, 'Ghost', {}).catch((e: unknown) => e);
    expect((err as CairnError).code).toBe('EINVAL');
    expect((err as CairnError).message).toContain('/test.Lane/Ghost');
    g.close();
  });

  it('closes a connection that sends garbage and goes on serving others', async () => {
    for (const junk of [
      Buffer.concat([LANE_MAGIC, Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])]), // frame length out of range
      Buffer.concat([LANE_MAGIC, Buffer.from([0, 0, 0, 5, 1, 0, 0, 0, 1])]), // a CALL with no path
      Buffer.from('CAIRNXXX-not-the-magic'),
    ]) {
      const s = net.connect(server.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.resume();
      await once(s, 'connect');
      s.write(junk);
      await once(s, 'close');
    }
    await expect(call(client, 'Echo', { text: 'still here' })).resolves.toEqual({ text: 'STILL HERE' });
  });

  it('reconnects after the server restarts on the same port, and fails fast while it is down', async () => {
    await expect(call(client, 'Echo', { text: 'one' })).resolves.toEqual({ text: 'ONE' });
    const port = server.port;
    const inflight = call(client, 'Echo', { text: 'lost', delayMs: 2000 }, 5000).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    await server.stop(0);
    // The request was sent: its outcome is unknown, which is ETIMEDOUT, not a retriable EUNAVAIL.
    expect(((await inflight) as CairnError).code).toBe('ETIMEDOUT');
    const down = await call(client, 'Echo', { text: 'down' }).catch((e: unknown) => e);
    expect((down as CairnError).code).toBe('EUNAVAIL');
    server = await startServer(`127.0.0.1:${port}`, [{ service: definition, impl }]);
    await expect(call(client, 'Echo', { text: 'two' })).resolves.toEqual({ text: 'TWO' });
  });

  it('closes a connection whose peer falls silent, and keeps one that answers its pings', async () => {
    // Short, but with room for a loaded machine's event-loop stalls.
    setLaneKeepalive({ intervalMs: 100, timeoutMs: 1500 });
    try {
      // A healthy server stays connected through many keepalive periods.
      await expect(call(client, 'Echo', { text: 'a' })).resolves.toEqual({ text: 'A' });
      await new Promise((r) => setTimeout(r, 2000));
      await expect(call(client, 'Echo', { text: 'slow', delayMs: 2000 }, 10_000)).resolves.toEqual({ text: 'SLOW' });
      // A peer that completes the handshake and then says nothing (a cut network).
      const mute = net.createServer((s) => {
        s.on('error', () => undefined);
        s.once('data', () => s.write(LANE_MAGIC));
      });
      await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
      const port = (mute.address() as net.AddressInfo).port;
      const m = makeClient(Client as unknown as grpc.ServiceClientConstructor, `127.0.0.1:${port}`);
      const err = await call(m, 'Echo', { text: 'void' }, 30_000).catch((e: unknown) => e);
      expect((err as CairnError).code).toBe('ETIMEDOUT');
      expect((err as CairnError).message).toContain('silent');
      m.close();
      await new Promise<void>((r) => mute.close(() => r()));
    } finally {
      setLaneKeepalive({ intervalMs: 5_000, timeoutMs: 20_000 });
    }
  });

  it('lets a call in flight finish when the server stops with a grace period', async () => {
    await expect(call(client, 'Echo', { text: 'warm' })).resolves.toEqual({ text: 'WARM' });
    const before = echosStarted;
    const inflight = call(client, 'Echo', { text: 'last words', delayMs: 300 }, 10_000);
    // Stop once the server is running the call (a request still on the wire may be cut: ETIMEDOUT).
    while (echosStarted === before) await new Promise((r) => setTimeout(r, 5));
    await server.stop(5_000);
    await expect(inflight).resolves.toEqual({ text: 'LAST WORDS' });
  });

  it('delivers a reply written just before a graceful stop', async () => {
    await expect(call(client, 'Bye', {})).resolves.toEqual({ text: 'BYE' });
  });

  it('leaves no stream handler running after the test streams', () => {
    expect(liveCounters).toBe(0);
  });
});
