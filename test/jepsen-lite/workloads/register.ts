/**
 * The register workload against the KV Raft group: each client is bound to one node and runs
 * linearizable reads, writes and compare-and-set on a small rolling set of keys (a register per key),
 * recording every invocation and completion. Outcomes:
 *  - a read that errs is a `fail` (a read has no effect; the checker drops it);
 *  - a write or cas that errs or times out is `info` (it may still happen): the client's process id
 *    retires and the client goes on as a new process, as Jepsen does;
 *  - a cas whose compare did not match is a `fail` without error: an observation for the checker.
 * Values are small integers stored as decimal strings.
 */
import { KvClient } from '../../../src/raft/kv/client.js';
import type { HistoryRecorder } from '../recorder.js';
import { KeyRotation, codeOf, pauseBetweenOps, readUntilAgreed, type ConvergeResult } from './common.js';
import type { NodeId } from '../proxy.js';

export interface RegisterWorkloadOptions {
  readonly recorder: HistoryRecorder;
  /** node id → client endpoint. */
  readonly endpoints: ReadonlyMap<NodeId, string>;
  readonly clients: number;
  readonly rand: () => number;
  /** Deadline of one request. */
  readonly requestTimeoutMs?: number;
  /** Keys in use at once; a key is retired after opsPerKey operations or unknownPerKey unknown outcomes (keeps each key's history checkable). */
  readonly keysAtOnce?: number;
  readonly opsPerKey?: number;
  readonly unknownPerKey?: number;
  /** Operations in flight on one key at most. */
  readonly inFlightPerKey?: number;
  /** Pause between a client's operations. */
  readonly thinkMs?: number;
  readonly values?: number;
  /**
   * 'linearizable' (default) reads through ReadIndex. 'serializable' reads the serving node's local
   * state: a deliberately weak mode that shows the harness catching stale reads under partitions.
   */
  readonly reads?: 'linearizable' | 'serializable';
}

export interface WorkloadStats {
  ok: number;
  fail: number;
  info: number;
  keysUsed: number;
}


function parseValue(v: Buffer | undefined): number | null {
  if (v === undefined) return null;
  const n = Number(v.toString('utf8'));
  return Number.isInteger(n) ? n : null;
}

/** Run clients until `signal` aborts; resolves when every client has finished its last operation. */
export async function runRegisterWorkload(o: RegisterWorkloadOptions, signal: AbortSignal): Promise<WorkloadStats> {
  const timeoutMs = o.requestTimeoutMs ?? 1_000;
  const keysAtOnce = o.keysAtOnce ?? 3;
  const opsPerKey = o.opsPerKey ?? 200;
  const thinkMs = o.thinkMs ?? 10;
  const values = o.values ?? 5;
  const nodes = [...o.endpoints.keys()];
  const stats: WorkloadStats = { ok: 0, fail: 0, info: 0, keysUsed: 0 };
  const keys = new KeyRotation({ atOnce: keysAtOnce, maxOps: opsPerKey, maxUnknown: o.unknownPerKey ?? 8, maxInFlight: o.inFlightPerKey ?? 3, rand: o.rand });
  const value = (): number => Math.floor(o.rand() * values);

  const client = async (c: number): Promise<void> => {
    const node = nodes[c % nodes.length]!;
    const kv = new KvClient([o.endpoints.get(node)!], timeoutMs);
    let process_ = c;
    let erred = false;
    try {
      for (;;) {
        const k = await keys.next(signal);
        if (k === undefined) break;
        stats.keysUsed = keys.keysUsed;
        const key = `r${k}`;
        let unknownOutcome = false;
        const r = o.rand();
        if (r < 0.5) {
          const h = o.recorder.invoke(process_, 'read', key, null);
          try {
            const v = await kv.get(key, o.reads !== 'serializable');
            o.recorder.ok(h, parseValue(v), node);
            stats.ok++;
          } catch (err) {
            o.recorder.fail(h, codeOf(err), node);
            stats.fail++;
            erred = true;
          }
        } else if (r < 0.75) {
          const v = value();
          const h = o.recorder.invoke(process_, 'write', key, v);
          try {
            await kv.put(key, Buffer.from(String(v)));
            o.recorder.ok(h, v, node);
            stats.ok++;
          } catch (err) {
            o.recorder.info(h, codeOf(err), node);
            stats.info++;
            process_ += o.clients;
            erred = true;
            unknownOutcome = true;
          }
        } else {
          const expected = value();
          const next = value();
          const h = o.recorder.invoke(process_, 'cas', key, [expected, next]);
          try {
            const res = await kv.cas(key, Buffer.from(String(expected)), Buffer.from(String(next)));
            if (res.ok) {
              o.recorder.ok(h, [expected, next], node);
              stats.ok++;
            } else {
              o.recorder.fail(h, undefined, node);
              stats.fail++;
            }
          } catch (err) {
            o.recorder.info(h, codeOf(err), node);
            stats.info++;
            process_ += o.clients;
            erred = true;
            unknownOutcome = true;
          }
        }
        keys.release(k, unknownOutcome);
        // After an error, back off so that a dead node's clients do not spin.
        await pauseBetweenOps(o.rand, thinkMs, erred);
        erred = false;
      }
    } finally {
      kv.close();
    }
  };
  await Promise.all(Array.from({ length: o.clients }, (_, c) => client(c)));
  return stats;
}

/**
 * After the faults healed: read every key through every node (linearizable reads, recorded in the
 * history so the checker sees them) until all nodes answer and agree, or the bound passes.
 */
export function finalReads(
  o: { recorder: HistoryRecorder; endpoints: ReadonlyMap<NodeId, string>; keys: readonly string[]; firstProcess: number },
  boundMs: number,
): Promise<ConvergeResult> {
  return readUntilAgreed(
    {
      recorder: o.recorder,
      clients: new Map([...o.endpoints].map(([id, e]) => [id, new KvClient([e], 2_000)])),
      keys: o.keys,
      firstProcess: o.firstProcess,
      op: 'read',
      read: async (kv, key) => {
        const v = parseValue(await kv.get(key, true));
        return { value: v, fingerprint: String(v) };
      },
    },
    boundMs,
  );
}
