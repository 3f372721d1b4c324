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
