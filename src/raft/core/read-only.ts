/**
 * ReadIndex bookkeeping on the leader: read requests waiting for a heartbeat round to
 * confirm that this node is still the leader. Requests are kept in arrival order; an
 * acknowledgement of request X's round confirms X and every request that arrived before it,
 * so many reads share one round. Bounded: at most `maxPending` requests wait.
 */
import type { Message, NodeId } from '../types.js';

export interface ReadIndexStatus {
  req: Message;
  index: number;
  acks: Set<NodeId>;
}

export function contextKey(ctx: Uint8Array): string {
  let s = '';
  for (const b of ctx) s += b.toString(16).padStart(2, '0');
  return s;
}

export class ReadOnly {
  private pending = new Map<string, ReadIndexStatus>();
  private queue: string[] = [];

  constructor(readonly maxPending: number) {}

  size(): number {
    return this.queue.length;
  }

  full(): boolean {
    return this.queue.length >= this.maxPending;
  }

  /** Add a request read at `index`; a duplicate context is ignored. Returns false if not added. */
  addRequest(index: number, m: Message): boolean {
    const key = contextKey(m.context);
    if (this.pending.has(key) || this.full()) return false;
    this.pending.set(key, { req: m, index, acks: new Set() });
    this.queue.push(key);
    return true;
  }

  /** Record that `id` acknowledged the round carrying ctx; the acks so far, or undefined. */
  recvAck(id: NodeId, ctx: Uint8Array): Set<NodeId> | undefined {
    const rs = this.pending.get(contextKey(ctx));
    if (!rs) return undefined;
    rs.acks.add(id);
    return rs.acks;
  }

  /** Release the request with ctx and every earlier one, oldest first. */
  advance(ctx: Uint8Array): ReadIndexStatus[] {
    const key = contextKey(ctx);
    const i = this.queue.indexOf(key);
    if (i < 0) return [];
    const keys = this.queue.slice(0, i + 1);
    this.queue = this.queue.slice(i + 1);
    const out: ReadIndexStatus[] = [];
    for (const k of keys) {
      const rs = this.pending.get(k);
      if (rs) out.push(rs);
      this.pending.delete(k);
    }
    return out;
  }

  lastPendingContext(): Uint8Array | undefined {
    const key = this.queue[this.queue.length - 1];
    return key === undefined ? undefined : this.pending.get(key)?.req.context;
  }
}
