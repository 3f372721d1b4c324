/**
 * The fault-injecting network between nodes: one TCP proxy per ordered link (i → j) on 127.0.0.1.
 * Node i's peer address for j is the proxy of link i→j, so every byte i sends to j (and every reply
 * on that connection) crosses it. Each proxy can, per direction:
 *  - pass bytes through;
 *  - delay them (order kept);
 *  - blackhole them: stop reading, so the sender's TCP buffers fill and nothing arrives — like a
 *    firewall that drops packets; on heal the held bytes flow again in order, as after retransmission;
 *  - reset: drop every connection and refuse new ones (like an ICMP reject).
 * `LinkNetwork` builds the proxies for a set of nodes and turns partitions (components of nodes that
 * can talk) into per-link faults: majority/minority, isolate a node, bridge, one-way.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { CairnError } from '../../src/common/errors.js';

export type Direction = 'forward' | 'backward';
/** forward: client → target (i's bytes to j); backward: target → client (j's replies to i). */
export type Fault = { readonly kind: 'pass' } | { readonly kind: 'blackhole' } | { readonly kind: 'reset' } | { readonly kind: 'delay'; readonly delayMs: number };

export const PASS: Fault = { kind: 'pass' };

/** Connections a proxy carries at once; more are refused (every resource has a bound). */
const MAX_CONNECTIONS = 256;
/** Bytes a delaying direction may hold before it stops reading from the sender. */
const DELAY_BUFFER_MAX_BYTES = 8 << 20;

/** One direction of one proxied connection: reads `from`, writes `to`, obeys the current fault. */
class Pipe {
  private heldBytes = 0;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private fault: () => Fault,
  ) {
    from.on('data', (chunk: Buffer) => this.onData(chunk));
    from.on('end', () => {
      // Keep order with delayed data: end the other side only when nothing is held.
      const tryEnd = (): void => {
        if (this.heldBytes === 0) to.end();
        else setTimeout(tryEnd, 5).unref();
      };
      tryEnd();
    });
  }

  private onData(chunk: Buffer): void {
    const f = this.fault();
    if (f.kind === 'blackhole') {
      // Arrived just as the hole opened: put it back unread.
      this.from.pause();
      this.from.unshift(chunk);
      return;
    }
    if (f.kind === 'delay') {
      this.heldBytes += chunk.length;
      if (this.heldBytes > DELAY_BUFFER_MAX_BYTES) this.from.pause();
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.heldBytes -= chunk.length;
        if (!this.to.destroyed) this.to.write(chunk);
        if (this.heldBytes <= DELAY_BUFFER_MAX_BYTES && this.fault().kind !== 'blackhole') this.from.resume();
      }, f.delayMs);
      this.timers.add(t);
      return;
    }
    if (!this.to.write(chunk)) {
      this.from.pause();
      this.to.once('drain', () => {
        if (this.fault().kind !== 'blackhole') this.from.resume();
      });
    }
  }

  /** Re-read the fault: pause for a blackhole, resume otherwise. */
  apply(): void {
    if (this.fault().kind === 'blackhole') this.from.pause();
    else if (this.heldBytes <= DELAY_BUFFER_MAX_BYTES && this.to.writableLength === 0) this.from.resume();
    else if (this.heldBytes <= DELAY_BUFFER_MAX_BYTES) this.to.once('drain', () => this.apply());
  }

  destroy(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

interface Conn {
  client: Socket;
  upstream: Socket;
  pipes: Pipe[];
}

export interface ProxyStats {
  connectionsAccepted: number;
  connectionsRefused: number;
  open: number;
}

/** A TCP proxy from a loopback port to one target address, with a fault per direction. */
export class FaultProxy {
  private readonly conns = new Set<Conn>();
  private faults: Record<Direction, Fault> = { forward: PASS, backward: PASS };
  private readonly stats: ProxyStats = { connectionsAccepted: 0, connectionsRefused: 0, open: 0 };

  private constructor(
    private readonly server: Server,
    readonly address: string,
    readonly target: { host: string; port: number },
  ) {}

  /** Listen on 127.0.0.1:port (0 = any free port) and forward to `target` ("host:port"). */
  static async start(target: string, port = 0): Promise<FaultProxy> {
    const i = target.lastIndexOf(':');
    const host = target.slice(0, i);
    const targetPort = Number(target.slice(i + 1));
    if (i <= 0 || !Number.isInteger(targetPort) || targetPort <= 0 || targetPort > 65535) {
      throw new CairnError('EINVAL', `proxy target must be host:port, got ${JSON.stringify(target)}`);
    }
    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new CairnError('EIO', 'proxy: no listening address');
    const proxy = new FaultProxy(server, `127.0.0.1:${addr.port}`, { host, port: targetPort });
    server.on('connection', (s) => proxy.accept(s));
    return proxy;
  }

  get fault(): Readonly<Record<Direction, Fault>> {
    return this.faults;
  }

  get statistics(): Readonly<ProxyStats> {
    return { ...this.stats, open: this.conns.size };
  }

  /** Set the fault of one or both directions; takes effect on open connections at once. */
  setFault(direction: Direction | 'both', fault: Fault): void {
    if (fault.kind === 'delay' && !(Number.isFinite(fault.delayMs) && fault.delayMs >= 0)) throw new CairnError('EINVAL', 'delayMs must be >= 0');
    if (direction === 'both' || direction === 'forward') this.faults = { ...this.faults, forward: fault };
    if (direction === 'both' || direction === 'backward') this.faults = { ...this.faults, backward: fault };
    if (this.faults.forward.kind === 'reset' || this.faults.backward.kind === 'reset') {
      for (const c of [...this.conns]) this.drop(c);
      return;
    }
    for (const c of this.conns) for (const p of c.pipes) p.apply();
  }

  heal(): void {
    this.setFault('both', PASS);
  }

  private accept(client: Socket): void {
    if (this.faults.forward.kind === 'reset' || this.faults.backward.kind === 'reset' || this.conns.size >= MAX_CONNECTIONS) {
      this.stats.connectionsRefused++;
      client.resetAndDestroy();
      return;
    }
    this.stats.connectionsAccepted++;
    client.setNoDelay(true);
    const upstream = connect({ host: this.target.host, port: this.target.port, noDelay: true });
    upstream.pause();
    const conn: Conn = { client, upstream, pipes: [] };
    this.conns.add(conn);
    const close = (): void => this.drop(conn);
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    upstream.once('connect', () => {
      conn.pipes.push(new Pipe(client, upstream, () => this.faults.forward));
      conn.pipes.push(new Pipe(upstream, client, () => this.faults.backward));
      for (const p of conn.pipes) p.apply();
    });
  }

  private drop(c: Conn): void {
    if (!this.conns.delete(c)) return;
    for (const p of c.pipes) p.destroy();
    if (!c.client.destroyed) c.client.resetAndDestroy();
    if (!c.upstream.destroyed) c.upstream.resetAndDestroy();
  }

  async close(): Promise<void> {
    for (const c of [...this.conns]) this.drop(c);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------

export type NodeId = number;

/** A partition: groups of nodes that can talk among themselves; links across groups are cut. */
export type Components = readonly (readonly NodeId[])[];

/** The proxies for every ordered pair of nodes, and partitions expressed over them. */
export class LinkNetwork {
  private constructor(
    readonly nodes: readonly NodeId[],
    private readonly links: Map<string, FaultProxy>,
  ) {}

  /** One proxy per ordered pair (i → j), forwarding to `addressOf(j)` (the node's real listen address). */
  static async create(nodes: readonly NodeId[], addressOf: (id: NodeId) => string): Promise<LinkNetwork> {
    const links = new Map<string, FaultProxy>();
    try {
      for (const i of nodes) for (const j of nodes) if (i !== j) links.set(`${i}>${j}`, await FaultProxy.start(addressOf(j)));
    } catch (err) {
      for (const p of links.values()) await p.close();
      throw err;
    }
    return new LinkNetwork(nodes, links);
  }

  link(from: NodeId, to: NodeId): FaultProxy {
    const p = this.links.get(`${from}>${to}`);
    if (p === undefined) throw new CairnError('EINVAL', `no link ${from} -> ${to}`);
    return p;
  }

  /** The address node `from` must use to reach `to` (put it in from's peer list). */
  peerAddress(from: NodeId, to: NodeId): string {
    return this.link(from, to).address;
  }

  /**
   * Cut node `from` off from hearing `to`: everything `to` sends to `from` is lost (one-way).
   * Bytes from→to on the from-initiated connection are the forward direction of link from→to;
   * bytes to→from travel backward on it and forward on link to→from.
   */
  private setHearing(from: NodeId, to: NodeId, fault: Fault): void {
    this.link(from, to).setFault('backward', fault);
    this.link(to, from).setFault('forward', fault);
  }

  /** Apply a partition: nodes talk only when some component holds both. `fault` is how cut links fail. */
  partition(components: Components, fault: Fault = { kind: 'blackhole' }): void {
    for (const c of components) for (const n of c) if (!this.nodes.includes(n)) throw new CairnError('EINVAL', `unknown node ${n} in partition`);
    const together = (a: NodeId, b: NodeId): boolean => components.some((c) => c.includes(a) && c.includes(b));
    for (const i of this.nodes) {
      for (const j of this.nodes) {
        if (i === j) continue;
        this.setHearing(i, j, together(i, j) ? PASS : fault);
      }
    }
  }

  /** `node` can no longer talk to anyone (nor anyone to it). */
  isolate(node: NodeId, fault: Fault = { kind: 'blackhole' }): void {
    this.partition([[node], this.nodes.filter((n) => n !== node)], fault);
  }

  /** `deaf` hears nobody but is still heard by all (an asymmetric partition). */
  deafen(deaf: NodeId, fault: Fault = { kind: 'blackhole' }): void {
    for (const j of this.nodes) if (j !== deaf) this.setHearing(deaf, j, fault);
  }

  /** Delay every link (both directions) by delayMs. */
  delayAll(delayMs: number): void {
    for (const p of this.links.values()) p.setFault('both', { kind: 'delay', delayMs });
  }

  heal(): void {
    for (const p of this.links.values()) p.heal();
  }

  async close(): Promise<void> {
    for (const p of this.links.values()) await p.close();
    this.links.clear();
  }
}

/** Fisher–Yates with the caller's random source. */
export function shuffle<T>(items: readonly T[], rand: () => number): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** Partition shapes over a node list, chosen with a random source (seeded by the caller). */
export const partitions = {
  /** A random minority against the majority. */
  majorityMinority(nodes: readonly NodeId[], rand: () => number): Components {
    const shuffled = shuffle(nodes, rand);
    const minority = Math.floor((nodes.length - 1) / 2) || 1;
    return [shuffled.slice(0, minority), shuffled.slice(minority)];
  },
  isolate(nodes: readonly NodeId[], node: NodeId): Components {
    return [[node], nodes.filter((n) => n !== node)];
  },
  /** Two halves that overlap in one bridge node, which talks to both (needs 3+ nodes). */
  bridge(nodes: readonly NodeId[], rand: () => number): Components {
    const shuffled = shuffle(nodes, rand);
    const mid = Math.floor(shuffled.length / 2);
    return [shuffled.slice(0, mid + 1), shuffled.slice(mid)];
  },
};
