/**
 * The fault proxy really cuts TCP: bytes pass, are held by a blackhole and delivered in order after
 * healing, connections are reset and refused, and LinkNetwork partitions cut exactly the links
 * between components (including one-way cuts).
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/env.js';
import { FaultProxy, LinkNetwork, partitions, shuffle } from './proxy.js';
import { seededRandom } from './nemesis.js';

/** A TCP server that answers every chunk with `<name>:<chunk>`; returns its address. */
async function echoServer(name: string): Promise<{ server: Server; address: string; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.on('data', (d) => s.write(`${name}:${d.toString()}`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('no address');
  return { server, address: `127.0.0.1:${a.port}`, sockets };
}

/** A client connection that collects everything it receives. */
async function client(address: string): Promise<{ sock: Socket; received: () => string; closed: () => boolean }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const sock = connect({ host, port });
  let got = '';
  let closed = false;
  sock.on('data', (d) => (got += d.toString()));
  sock.on('close', () => (closed = true));
  sock.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  return { sock, received: () => got, closed: () => closed };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('FaultProxy', () => {
  it('passes bytes both ways, holds them in a blackhole, and delivers them in order after healing', async () => {
    const echo = await echoServer('s');
    cleanups.push(() => new Promise<void>((r) => echo.server.close(() => r())));
    const proxy = await FaultProxy.start(echo.address);
    cleanups.push(() => proxy.close());
    const c = await client(proxy.address);
    cleanups.push(() => void c.sock.destroy());

    c.sock.write('a');
    await eventually(() => c.received() === 's:a');

    proxy.setFault('forward', { kind: 'blackhole' });
    c.sock.write('b');
    c.sock.write('c');
    await sleep(300);
    expect(c.received()).toBe('s:a'); // nothing crossed
    expect(c.closed()).toBe(false); // but the connection is still up, as behind a dropping firewall

    proxy.heal();
    await eventually(() => c.received().replace(/s:/g, '') === 'abc');
  });

  it('a blackhole on the way back holds the replies while requests still arrive', async () => {
    const echo = await echoServer('s');
    cleanups.push(() => new Promise<void>((r) => echo.server.close(() => r())));
    const proxy = await FaultProxy.start(echo.address);
    cleanups.push(() => proxy.close());
    const c = await client(proxy.address);
    cleanups.push(() => void c.sock.destroy());
    c.sock.write('x');
    await eventually(() => c.received() === 's:x');
    proxy.setFault('backward', { kind: 'blackhole' });
    c.sock.write('y');
    await eventually(() => echo.sockets.size === 1);
    await sleep(300);
    expect(c.received()).toBe('s:x');
    proxy.heal();
    await eventually(() => c.received() === 's:xs:y');
  });

  it('reset drops open connections and refuses new ones until healed; delay keeps the bytes and their order', async () => {
    const echo = await echoServer('s');
    cleanups.push(() => new Promise<void>((r) => echo.server.close(() => r())));
    const proxy = await FaultProxy.start(echo.address);
    cleanups.push(() => proxy.close());
    const c = await client(proxy.address);
    cleanups.push(() => void c.sock.destroy());
    c.sock.write('1');
    await eventually(() => c.received() === 's:1');

    proxy.setFault('both', { kind: 'reset' });
    await eventually(() => c.closed());
    const refused = connect({ host: '127.0.0.1', port: Number(proxy.address.split(':')[1]) });
    refused.on('error', () => undefined);
    cleanups.push(() => void refused.destroy());
    await new Promise<void>((resolve) => refused.once('close', () => resolve()));
    expect(proxy.statistics.connectionsRefused).toBeGreaterThan(0);

    proxy.setFault('both', { kind: 'delay', delayMs: 50 });
    const d = await client(proxy.address);
    cleanups.push(() => void d.sock.destroy());
    for (const ch of 'hello') d.sock.write(ch);
    await eventually(() => d.received().replace(/s:/g, '') === 'hello');
  });
});

describe('LinkNetwork', () => {
  it('partitions cut exactly the links between components, one-way cuts cut one way, heal restores all', async () => {
    const servers = new Map<number, Awaited<ReturnType<typeof echoServer>>>();
    for (const id of [1, 2, 3]) {
      const s = await echoServer(`n${id}`);
      servers.set(id, s);
      cleanups.push(() => new Promise<void>((r) => s.server.close(() => r())));
    }
    const net = await LinkNetwork.create([1, 2, 3], (id) => servers.get(id)!.address);
    cleanups.push(() => net.close());

    // A message from i to j over i's own connection through the proxy i→j; true if the reply came back.
    const talks = async (i: number, j: number): Promise<boolean> => {
      const c = await client(net.peerAddress(i, j));
      try {
        c.sock.write(`from${i}`);
        const deadline = Date.now() + 400;
        while (Date.now() < deadline) {
          if (c.received() === `n${j}:from${i}`) return true;
          await sleep(20);
        }
        return false;
      } finally {
        c.sock.destroy();
      }
    };

    expect(await talks(1, 3)).toBe(true);
    net.partition([[1, 2], [3]]);
    expect(await talks(1, 2)).toBe(true);
    expect(await talks(2, 1)).toBe(true);
    expect(await talks(1, 3)).toBe(false);
    expect(await talks(3, 2)).toBe(false);
    net.heal();
    expect(await talks(3, 2)).toBe(true);

    net.deafen(3); // 3 hears nobody: its requests arrive but the replies do not come back
    expect(await talks(3, 1)).toBe(false);
    expect(net.link(3, 1).fault.forward.kind).toBe('pass'); // what 3 says still reaches 1
    expect(net.link(3, 1).fault.backward.kind).toBe('blackhole'); // 1's reply to 3 is lost
    expect(net.link(1, 3).fault.forward.kind).toBe('blackhole'); // and so is what 1 sends to 3
    expect(net.link(1, 2).fault.forward.kind).toBe('pass');
    net.heal();
    expect(await talks(1, 3)).toBe(true);
  });

  it('partition shapes: a minority and a majority; a bridge node in both halves; seeded', () => {
    const nodes = [1, 2, 3, 4, 5];
    const mm = partitions.majorityMinority(nodes, seededRandom(1));
    expect(mm.map((c) => c.length).sort()).toEqual([2, 3]);
    expect([...mm[0]!, ...mm[1]!].sort()).toEqual(nodes);
    const br = partitions.bridge(nodes, seededRandom(2));
    const shared = br[0]!.filter((n) => br[1]!.includes(n));
    expect(shared).toHaveLength(1);
    expect(new Set([...br[0]!, ...br[1]!]).size).toBe(5);
    expect(shuffle(nodes, seededRandom(3))).toEqual(shuffle(nodes, seededRandom(3)));
  });
});
