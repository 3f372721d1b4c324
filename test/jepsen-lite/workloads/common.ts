/**
 * What every jepsen-lite workload does the same way: name an error for the history, pause
 * between operations (longer after an error, so a dead node's clients do not spin), and, once
 * the faults have healed, read every key through every node until all of them answer and agree.
 */
import { CairnError } from '../../../src/common/errors.js';
import type { HistoryRecorder } from '../recorder.js';
import type { NodeId } from '../proxy.js';

/** Base pause after a failed request. */
export const ERROR_BACKOFF_MS = 100;

/** An error's name as the history records it: the CairnError code, else the error's name. */
export function codeOf(err: unknown): string {
  if (err instanceof CairnError) return err.code;
  return err instanceof Error ? err.name : 'EIO';
}

/** Wait before a client's next operation: up to 2 × thinkMs, or a backoff after an error. */
export async function pauseBetweenOps(rand: () => number, thinkMs: number, erred: boolean, backoffMs = ERROR_BACKOFF_MS): Promise<void> {
  const pauseMs = erred ? backoffMs + Math.floor(rand() * backoffMs) : Math.floor(rand() * thinkMs * 2);
  if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
}

export interface ConvergeResult {
  converged: boolean;
  afterMs: number;
  disagreements: string[];
}

/**
 * After healing: read every key through every node's client, recording each read (operation
 * `op`, process ids from `firstProcess` on) so that the checker sees them, until every node
 * answers for every key and all agree, or `boundMs` passes. `read` returns what the history
 * records and a fingerprint to compare across nodes; an error for which `absent(err)` holds
 * counts as the answer "absent" (a key nobody managed to create is absent everywhere).
 */
export async function readUntilAgreed<C extends { close(): void }>(
  o: {
    recorder: HistoryRecorder;
    clients: ReadonlyMap<NodeId, C>;
    keys: readonly string[];
    firstProcess: number;
    op: string;
    read: (client: C, key: string) => Promise<{ value: unknown; fingerprint: string }>;
    absent?: (err: unknown) => boolean;
  },
  boundMs: number,
): Promise<ConvergeResult> {
  const started = Date.now();
  let process_ = o.firstProcess;
  let disagreements: string[] = [];
  try {
    for (;;) {
      disagreements = [];
      let allAnswered = true;
      for (const key of o.keys) {
        const seen = new Map<NodeId, string>();
        for (const [id, c] of o.clients) {
          const h = o.recorder.invoke(process_++, o.op, key, null);
          try {
            const r = await o.read(c, key);
            o.recorder.ok(h, r.value, id);
            seen.set(id, r.fingerprint);
          } catch (err) {
            o.recorder.fail(h, codeOf(err), id);
            if (o.absent?.(err) === true) seen.set(id, 'absent');
            else allAnswered = false;
          }
        }
        if (new Set(seen.values()).size > 1) disagreements.push(`${key}: ${[...seen].map(([id, v]) => `n${id}=${v}`).join(' ')}`);
      }
      if (allAnswered && disagreements.length === 0) return { converged: true, afterMs: Date.now() - started, disagreements };
      if (Date.now() - started > boundMs) return { converged: false, afterMs: Date.now() - started, disagreements };
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } finally {
    for (const c of o.clients.values()) c.close();
  }
}

/** ENOENT: the thing was never created (or is gone) — an answer, not a failure to answer. */
export function isEnoent(err: unknown): boolean {
  return err instanceof CairnError && err.code === 'ENOENT';
}

export interface KeyRotationOptions {
  /** Keys in use at once. */
  readonly atOnce: number;
  /** A key retires after this many operations were started on it. */
  readonly maxOps: number;
  /**
   * ... or as soon as this many of its operations ended with an unknown outcome: each one may take
   * effect at any later time, and the checker's search grows with those that overlap.
   */
  readonly maxUnknown: number;
  /** At most this many operations in flight on one key. */
  readonly maxInFlight: number;
  readonly rand: () => number;
}

/**
 * Which key a client works on next, so that every key's history stays small enough to check (as
 * Jepsen's independent keys do): keys are numbered 0, 1, 2, …; `atOnce` of them are live; a key
 * retires after `maxOps` operations or `maxUnknown` unknown outcomes and a fresh one takes its
 * place; no key has more than `maxInFlight` operations at once. Operations already running on a
 * retired key finish normally.
 */
export class KeyRotation {
  private readonly live: number[] = [];
  private readonly started = new Map<number, number>();
  private readonly unknown = new Map<number, number>();
  private readonly inFlight = new Map<number, number>();
  private nextKey = 0;

  constructor(private readonly o: KeyRotationOptions) {
    for (let i = 0; i < o.atOnce; i++) this.live.push(this.fresh());
  }

  /** Keys handed out so far are 0 … keysUsed - 1. */
  get keysUsed(): number {
    return this.nextKey;
  }

  private fresh(): number {
    const k = this.nextKey++;
    this.started.set(k, 0);
    this.unknown.set(k, 0);
    this.inFlight.set(k, 0);
    return k;
  }

  private retire(k: number): void {
    const i = this.live.indexOf(k);
    if (i !== -1) this.live[i] = this.fresh();
  }

  /** A key with room for one more operation (reserved until release), or undefined when none has. */
  acquire(): number | undefined {
    const open = this.live.filter((k) => this.inFlight.get(k)! < this.o.maxInFlight);
    if (open.length === 0) return undefined;
    const k = open[Math.floor(this.o.rand() * open.length)]!;
    this.inFlight.set(k, this.inFlight.get(k)! + 1);
    const n = this.started.get(k)! + 1;
    this.started.set(k, n);
    if (n >= this.o.maxOps) this.retire(k);
    return k;
  }

  /** The operation on `k` ended; `unknownOutcome` when it may or may not have taken effect. */
  release(k: number, unknownOutcome: boolean): void {
    this.inFlight.set(k, Math.max(0, this.inFlight.get(k)! - 1));
    if (!unknownOutcome) return;
    const u = this.unknown.get(k)! + 1;
    this.unknown.set(k, u);
    if (u >= this.o.maxUnknown) this.retire(k);
  }

  /** Wait for a key with room (a client's think time while every live key is busy). */
  async next(signal: AbortSignal, waitMs = 5): Promise<number | undefined> {
    for (;;) {
      if (signal.aborted) return undefined;
      const k = this.acquire();
      if (k !== undefined) return k;
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }
}
