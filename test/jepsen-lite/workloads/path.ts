/**
 * The path-register workload against the metadata service (`cairn start` nodes): each file
 * /jepsen/pN is a versioned register — its value is the file size, its version the layout version
 * (0 = never written, value nil). Each client is bound to one node and runs
 *  - read: a linearizable Getattr → {value, version};
 *  - cas: Truncate(size = new value, expected_version) → ok with the new version, or ECONFLICT.
 * The CAS usually expects the version the client last saw of that file (read-then-CAS), sometimes a
 * random nearby one. Checked with the `path` model. Outcomes as in the register workload: failed reads
 * are dropped, CAS errors other than ECONFLICT are unknown (`info`, the process retires), ECONFLICT is
 * the observation "not at that version".
 */
import { MetaClient } from '../../../src/meta/client.js';
import { CairnError } from '../../../src/common/errors.js';
import type { HistoryRecorder } from '../recorder.js';
import { KeyRotation, codeOf, isEnoent, pauseBetweenOps, readUntilAgreed, type ConvergeResult } from './common.js';
import type { NodeId } from '../proxy.js';
import type { WorkloadStats } from './register.js';

export const PATH_DIR = '/jepsen';

export interface PathWorkloadOptions {
  readonly recorder: HistoryRecorder;
  readonly endpoints: ReadonlyMap<NodeId, string>;
  readonly clients: number;
  readonly rand: () => number;
  readonly requestTimeoutMs?: number;
  readonly filesAtOnce?: number;
  readonly opsPerFile?: number;
  readonly thinkMs?: number;
  readonly values?: number;
  /** A file retires after this many unknown outcomes (keeps its history checkable). */
  readonly unknownPerFile?: number;
  readonly inFlightPerFile?: number;
}


export function pathOf(k: number): string {
  return `${PATH_DIR}/p${k}`;
}

function client(endpoint: string, timeoutMs: number): MetaClient {
  // One node per client, and a short retry budget: the workload records what it saw, it does not hide it.
  return new MetaClient({ endpoints: [endpoint], timeoutMs, retryBudgetMs: timeoutMs });
}

/** Make the directory the files live in (retrying while the cluster elects a leader). */
export async function setupPaths(endpoints: ReadonlyMap<NodeId, string>, boundMs = 30_000): Promise<void> {
  const c = new MetaClient({ endpoints: [...endpoints.values()], timeoutMs: 2_000, retryBudgetMs: boundMs });
  try {
    await c.mkdir(PATH_DIR).catch((err: unknown) => {
      if (!(err instanceof CairnError && err.code === 'EEXIST')) throw err;
    });
  } finally {
    c.close();
  }
}

export async function runPathWorkload(o: PathWorkloadOptions, signal: AbortSignal): Promise<WorkloadStats> {
  const timeoutMs = o.requestTimeoutMs ?? 1_000;
  const filesAtOnce = o.filesAtOnce ?? 3;
  const opsPerFile = o.opsPerFile ?? 200;
  const thinkMs = o.thinkMs ?? 10;
  const values = o.values ?? 5;
  const nodes = [...o.endpoints.keys()];
  const stats: WorkloadStats = { ok: 0, fail: 0, info: 0, keysUsed: 0 };
  const files = new KeyRotation({ atOnce: filesAtOnce, maxOps: opsPerFile, maxUnknown: o.unknownPerFile ?? 8, maxInFlight: o.inFlightPerFile ?? 3, rand: o.rand });

  const run = async (c: number): Promise<void> => {
    const node = nodes[c % nodes.length]!;
    const meta = client(o.endpoints.get(node)!, timeoutMs);
    const ensured = new Set<number>();
    const lastVersion = new Map<number, number>();
    let process_ = c;
    try {
      for (;;) {
        const k = await files.next(signal);
        if (k === undefined) break;
        stats.keysUsed = files.keysUsed;
        const path = pathOf(k);
        let erred = false;
        let unknownOutcome = false;
        if (!ensured.has(k)) {
          // Open-or-create (not part of the history: a fresh file is the model's initial state).
          try {
            await meta.create(path, { exclusive: false });
            ensured.add(k);
          } catch {
            erred = true;
          }
        } else if (o.rand() < 0.5) {
          const h = o.recorder.invoke(process_, 'read', path, null);
          try {
            const a = await meta.stat(path);
            o.recorder.ok(h, { value: a.version === 0 ? null : a.size, version: a.version }, node);
            lastVersion.set(k, a.version);
            stats.ok++;
          } catch (err) {
            o.recorder.fail(h, codeOf(err), node);
            stats.fail++;
            erred = true;
          }
        } else {
          const seen = lastVersion.get(k) ?? 0;
          const expectedVersion = o.rand() < 0.8 ? seen : Math.max(0, seen + Math.floor(o.rand() * 3) - 1);
          const value = Math.floor(o.rand() * values);
          const h = o.recorder.invoke(process_, 'cas', path, [expectedVersion, value]);
          try {
            const r = await meta.truncate(path, value, expectedVersion);
            o.recorder.ok(h, { version: r.record.version }, node);
            lastVersion.set(k, r.record.version);
            stats.ok++;
          } catch (err) {
            if (err instanceof CairnError && err.code === 'ECONFLICT') {
              o.recorder.fail(h, 'ECONFLICT', node);
              stats.fail++;
              const current = err.details?.currentVersion;
              if (typeof current === 'number') lastVersion.set(k, current);
            } else {
              o.recorder.info(h, codeOf(err), node);
              stats.info++;
              process_ += o.clients;
              erred = true;
              unknownOutcome = true;
            }
          }
        }
        files.release(k, unknownOutcome);
        await pauseBetweenOps(o.rand, thinkMs, erred);
      }
    } finally {
      meta.close();
    }
  };
  await Promise.all(Array.from({ length: o.clients }, (_, c) => run(c)));
  return stats;
}

/** After healing: stat every file through every node (recorded) until all answer and agree. */
export function finalPathReads(
  o: { recorder: HistoryRecorder; endpoints: ReadonlyMap<NodeId, string>; files: number; firstProcess: number },
  boundMs: number,
): Promise<ConvergeResult> {
  return readUntilAgreed(
    {
      recorder: o.recorder,
      clients: new Map([...o.endpoints].map(([id, e]) => [id, client(e, 2_000)])),
      keys: Array.from({ length: o.files }, (_, k) => pathOf(k)),
      firstProcess: o.firstProcess,
      op: 'read',
      read: async (meta, path) => {
        const a = await meta.stat(path);
        return { value: { value: a.version === 0 ? null : a.size, version: a.version }, fingerprint: `${a.size}@v${a.version}` };
      },
      // A file no client managed to create is absent everywhere: that is agreement.
      absent: isEnoent,
    },
    boundMs,
  );
}
