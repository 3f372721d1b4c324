/**
 * The path-hash space (the design note's second addressing): every path has a slot of at most
 * one chunk (MAX_SLOT_BYTES), stored on the buckets of the placement group its path hash maps to,
 * versioned, and read and written through a majority quorum with no metadata service involved.
 *
 * Each slot is a CASPaxos register (a Paxos round per operation, leaderless): a proposer picks a
 * ballot, collects promises from a majority (which return their accepted values), takes the value
 * with the highest accepted ballot, applies its change (write, compare-and-set on the version, or
 * nothing for a read) and has a majority accept the result. Reads therefore write back what they
 * saw when it was not yet on a majority (ABD's write-back), and every read sees the latest
 * completed write: the slots are linearizable, and survive any minority of replicas being down.
 * Competing proposers retry with higher ballots after a random backoff.
 */
import { createHash, randomBytes } from 'node:crypto';
import { CairnError, fail } from '../common/errors.js';
import { counter } from '../common/metrics.js';
import type { ChunkClients } from './client.js';
import { compareBallots, type Ballot, type SlotValue } from './format.js';
import { MAX_SLOT_BYTES, formatBucketId, type ShardTarget } from './types.js';

const metrics = {
  ops: counter('cairn_chunk_slot_ops_total', 'Path-slot operations, by kind and result', ['op', 'result']),
  rounds: counter('cairn_chunk_slot_rounds_total', 'Paxos rounds run for path slots (retries included)'),
};

/** The slot key of a path: SHA-256 of its UTF-8 bytes, hex (the same hash the diskmap maps to a group). */
export function pathHash(path: string): string {
  return createHash('sha256').update(path, 'utf8').digest('hex');
}

export interface SlotReadResult {
  /** 0 if the slot was never written. */
  version: number;
  /** null if never written or deleted. */
  data: Buffer | null;
}

export interface PathSlotsOptions {
  /** Identifies this proposer in ballots (default: random). */
  proposerId?: string;
  timeoutMs?: number;
  /** Rounds tried before giving up with EAGAIN (contention or no majority). */
  maxAttempts?: number;
}

export class PathSlots {
  private readonly clients: ChunkClients;
  private readonly proposer: string;
  private readonly timeoutMs: number;
  private readonly maxAttempts: number;
  private counter = 0;

  constructor(clients: ChunkClients, opts: PathSlotsOptions = {}) {
    this.clients = clients;
    this.proposer = opts.proposerId ?? randomBytes(8).toString('hex');
    if (!/^[0-9a-zA-Z_-]{1,64}$/.test(this.proposer)) fail('EINVAL', 'proposerId must be 1..64 letters, digits, "-" or "_"');
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.maxAttempts = opts.maxAttempts ?? 30;
  }

  /** Linearizable read of a path's slot. */
  async read(path: string, replicas: readonly ShardTarget[]): Promise<SlotReadResult> {
    const v = await this.round('read', path, replicas, (cur) => cur);
    return { version: v.version, data: v.data };
  }

  /**
   * Write a path's slot (data null deletes it). With expectedVersion, the write happens only if
   * the slot is at that version (0: never written), else ECONFLICT. Returns the new version.
   */
  async write(path: string, replicas: readonly ShardTarget[], data: Buffer | null, opts: { expectedVersion?: number } = {}): Promise<{ version: number }> {
    if (data !== null && data.length > MAX_SLOT_BYTES) fail('EFBIG', `a path slot holds at most ${MAX_SLOT_BYTES} bytes, got ${data.length}`);
    const v = await this.round('write', path, replicas, (cur) => {
      if (opts.expectedVersion !== undefined && cur.version !== opts.expectedVersion) {
        throw new CairnError('ECONFLICT', `path slot for ${path} is at version ${cur.version}, not ${opts.expectedVersion}`, { version: cur.version });
      }
      return { version: cur.version + 1, data };
    });
    return { version: v.version };
  }

  private async round(op: string, path: string, replicas: readonly ShardTarget[], change: (cur: SlotValue) => SlotValue): Promise<SlotValue> {
    if (replicas.length === 0) fail('EINVAL', 'a path slot needs at least one replica');
    const slot = pathHash(path);
    const majority = Math.floor(replicas.length / 2) + 1;
    let lastErr: CairnError | undefined;
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * Math.min(200, 5 * 2 ** attempt)));
      metrics.rounds.inc();
      const ballot: Ballot = { counter: ++this.counter, proposer: this.proposer };
      // Phase 1: promises from a majority, with what each has accepted.
      const promises = await this.quorum(replicas, majority, (t, bucket) => this.clients.get(t.address).slotPrepare(bucket, slot, ballot, { timeoutMs: this.timeoutMs }));
      let highest = 0;
      for (const p of promises.all) highest = Math.max(highest, p.promised.counter, p.accepted.counter);
      this.counter = Math.max(this.counter, highest);
      const oks = promises.all.filter((p) => p.ok);
      if (oks.length < majority) {
        lastErr = promises.errors[0] ?? new CairnError('EAGAIN', `path slot ${path}: another proposer is active`);
        continue;
      }
      let cur: SlotValue = { version: 0, data: null };
      let curBallot: Ballot = { counter: 0, proposer: '' };
      for (const p of oks) {
        if (compareBallots(p.accepted, curBallot) > 0) {
          curBallot = p.accepted;
          cur = p.value;
        }
      }
      // Every promise of the majority holds the same accepted ballot: the value is chosen already.
      const agreed = oks.every((p) => compareBallots(p.accepted, curBallot) === 0);
      let next: SlotValue;
      try {
        next = change(cur);
      } catch (err) {
        if (!(err instanceof CairnError) || err.code !== 'ECONFLICT') throw err;
        // The conflict must be against a value that is settled on a majority: write it back first.
        if (!agreed && !(await this.accept(replicas, majority, slot, ballot, cur))) continue;
        metrics.ops.inc({ op, result: 'ECONFLICT' });
        throw err;
      }
      // A read whose value every promise already agrees on needs no write-back.
      if (next === cur && agreed) {
        metrics.ops.inc({ op, result: 'ok' });
        return cur;
      }
      if (await this.accept(replicas, majority, slot, ballot, next)) {
        metrics.ops.inc({ op, result: 'ok' });
        return next;
      }
      lastErr = new CairnError('EAGAIN', `path slot ${path}: accept did not reach a majority`);
    }
    metrics.ops.inc({ op, result: lastErr?.code ?? 'EAGAIN' });
    throw new CairnError(lastErr?.code === 'EUNAVAIL' ? 'EUNAVAIL' : 'EAGAIN', `path slot ${path}: no majority after ${this.maxAttempts} rounds (${lastErr?.message ?? 'contention'})`);
  }

  private async accept(replicas: readonly ShardTarget[], majority: number, slot: string, ballot: Ballot, value: SlotValue): Promise<boolean> {
    const r = await this.quorum(replicas, majority, (t, bucket) => this.clients.get(t.address).slotAccept(bucket, slot, ballot, value, { timeoutMs: this.timeoutMs }));
    for (const a of r.all) this.counter = Math.max(this.counter, a.promised.counter);
    return r.all.filter((a) => a.ok).length >= majority;
  }

  /**
   * Send to every replica; resolve once a majority answered ok, or once no majority can. Late
   * answers are ignored.
   */
  private quorum<T extends { ok: boolean }>(
    replicas: readonly ShardTarget[],
    majority: number,
    send: (t: ShardTarget, bucket: string) => Promise<T>,
  ): Promise<{ all: T[]; errors: CairnError[] }> {
    return new Promise((resolve) => {
      const all: T[] = [];
      const errors: CairnError[] = [];
      let oks = 0;
      let settled = false;
      const check = (): void => {
        if (settled) return;
        const pending = replicas.length - all.length - errors.length;
        if (oks >= majority || oks + pending < majority) {
          settled = true;
          resolve({ all: [...all], errors: [...errors] });
        }
      };
      for (const t of replicas) {
        send(t, formatBucketId(t.bucketId)).then(
          (r) => {
            all.push(r);
            if (r.ok) oks++;
            check();
          },
          (err: unknown) => {
            errors.push(err instanceof CairnError ? err : new CairnError('EIO', String(err)));
            check();
          },
        );
      }
    });
  }
}
