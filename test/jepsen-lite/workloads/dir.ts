/**
 * The directory workload against the metadata service: directories /jepsen-dirs/dN (a few at a time)
 * whose entries come from a small pool of names; each client is bound to one node and runs exclusive
 * creates, unlinks, renames without replace, and linearizable readdirs. EEXIST/ENOENT are recorded as
 * failures with that error (observations for the `dir` model); other errors on a mutation are unknown
 * outcomes (`info`, the process retires); failed readdirs are dropped.
 */
import { MetaClient } from '../../../src/meta/client.js';
import { CairnError } from '../../../src/common/errors.js';
import type { HistoryRecorder, OpHandle } from '../recorder.js';
import { KeyRotation, codeOf, isEnoent, pauseBetweenOps, readUntilAgreed, type ConvergeResult } from './common.js';
import type { NodeId } from '../proxy.js';
import type { WorkloadStats } from './register.js';

export const DIRS_ROOT = '/jepsen-dirs';
const NAMES = ['a', 'b', 'c', 'd'] as const;
/** Entries read per readdir; the directories hold at most NAMES.length. */
const READDIR_LIMIT = 100;

export interface DirWorkloadOptions {
  readonly recorder: HistoryRecorder;
  readonly endpoints: ReadonlyMap<NodeId, string>;
  readonly clients: number;
  readonly rand: () => number;
  readonly requestTimeoutMs?: number;
  readonly dirsAtOnce?: number;
  readonly opsPerDir?: number;
  /** A directory retires after this many unknown outcomes (keeps its history checkable). */
  readonly unknownPerDir?: number;
  readonly inFlightPerDir?: number;
  readonly thinkMs?: number;
}

export function dirOf(k: number): string {
  return `${DIRS_ROOT}/d${k}`;
}

function client(endpoint: string, timeoutMs: number): MetaClient {
  return new MetaClient({ endpoints: [endpoint], timeoutMs, retryBudgetMs: timeoutMs });
}

async function listNames(meta: MetaClient, dir: string): Promise<string[]> {
  const r = await meta.readdir(dir, { limit: READDIR_LIMIT });
  return r.entries.map((e) => e.name).sort();
}

export async function setupDirs(endpoints: ReadonlyMap<NodeId, string>, boundMs = 30_000): Promise<void> {
  const c = new MetaClient({ endpoints: [...endpoints.values()], timeoutMs: 2_000, retryBudgetMs: boundMs });
  try {
    await c.mkdir(DIRS_ROOT).catch((err: unknown) => {
      if (!(err instanceof CairnError && err.code === 'EEXIST')) throw err;
    });
  } finally {
    c.close();
  }
}

export async function runDirWorkload(o: DirWorkloadOptions, signal: AbortSignal): Promise<WorkloadStats> {
  const timeoutMs = o.requestTimeoutMs ?? 1_000;
  const dirsAtOnce = o.dirsAtOnce ?? 3;
  const opsPerDir = o.opsPerDir ?? 150;
  const thinkMs = o.thinkMs ?? 10;
  const nodes = [...o.endpoints.keys()];
  const stats: WorkloadStats = { ok: 0, fail: 0, info: 0, keysUsed: 0 };
  const dirs = new KeyRotation({ atOnce: dirsAtOnce, maxOps: opsPerDir, maxUnknown: o.unknownPerDir ?? 8, maxInFlight: o.inFlightPerDir ?? 3, rand: o.rand });
  const name = (): string => NAMES[Math.floor(o.rand() * NAMES.length)]!;

  const run = async (c: number): Promise<void> => {
    const node = nodes[c % nodes.length]!;
    const meta = client(o.endpoints.get(node)!, timeoutMs);
    const ensured = new Set<number>();
    let process_ = c;
    /** Record a mutation's outcome: EEXIST/ENOENT observed, anything else unknown. */
    let unknownOutcome = false;
    const mutationFailed = (h: OpHandle, err: unknown): boolean => {
      const code = codeOf(err);
      if (code === 'EEXIST' || code === 'ENOENT') {
        o.recorder.fail(h, code, node);
        stats.fail++;
        return false;
      }
      o.recorder.info(h, code, node);
      stats.info++;
      process_ += o.clients;
      unknownOutcome = true;
      return true;
    };
    try {
      for (;;) {
        const k = await dirs.next(signal);
        if (k === undefined) break;
        stats.keysUsed = dirs.keysUsed;
        const dir = dirOf(k);
        let erred = false;
        unknownOutcome = false;
        const r = o.rand();
        if (!ensured.has(k)) {
          // The directory itself (not in the history: an empty directory is the model's initial state).
          try {
            await meta.mkdir(dir).catch((err: unknown) => {
              if (!(err instanceof CairnError && err.code === 'EEXIST')) throw err;
            });
            ensured.add(k);
          } catch {
            erred = true;
          }
        } else if (r < 0.25) {
          const h = o.recorder.invoke(process_, 'readdir', dir, null);
          try {
            o.recorder.ok(h, await listNames(meta, dir), node);
            stats.ok++;
          } catch (err) {
            o.recorder.fail(h, codeOf(err), node);
            stats.fail++;
            erred = true;
          }
        } else if (r < 0.55) {
          const n = name();
          const h = o.recorder.invoke(process_, 'create', dir, n);
          try {
            await meta.create(`${dir}/${n}`, { exclusive: true });
            o.recorder.ok(h, n, node);
            stats.ok++;
          } catch (err) {
            erred = mutationFailed(h, err);
          }
        } else if (r < 0.8) {
          const n = name();
          const h = o.recorder.invoke(process_, 'unlink', dir, n);
          try {
            await meta.unlink(`${dir}/${n}`);
            o.recorder.ok(h, n, node);
            stats.ok++;
          } catch (err) {
            erred = mutationFailed(h, err);
          }
        } else {
          const from = name();
          let to = name();
          while (to === from) to = name();
          const h = o.recorder.invoke(process_, 'rename', dir, [from, to]);
          try {
            await meta.rename(`${dir}/${from}`, `${dir}/${to}`, { noReplace: true });
            o.recorder.ok(h, [from, to], node);
            stats.ok++;
          } catch (err) {
            erred = mutationFailed(h, err);
          }
        }
        dirs.release(k, unknownOutcome);
        await pauseBetweenOps(o.rand, thinkMs, erred);
      }
    } finally {
      meta.close();
    }
  };
  await Promise.all(Array.from({ length: o.clients }, (_, c) => run(c)));
  return stats;
}

/** After healing: list every directory through every node (recorded) until all answer and agree. */
export function finalDirReads(
  o: { recorder: HistoryRecorder; endpoints: ReadonlyMap<NodeId, string>; dirs: number; firstProcess: number },
  boundMs: number,
): Promise<ConvergeResult> {
  return readUntilAgreed(
    {
      recorder: o.recorder,
      clients: new Map([...o.endpoints].map(([id, e]) => [id, client(e, 2_000)])),
      keys: Array.from({ length: o.dirs }, (_, k) => dirOf(k)),
      firstProcess: o.firstProcess,
      op: 'readdir',
      read: async (meta, dir) => {
        const names = await listNames(meta, dir);
        return { value: names, fingerprint: `[${names.join(',')}]` };
      },
      absent: isEnoent,
    },
    boundMs,
  );
}
