/**
 * The files workload against the node's file service (proto/file.proto, FileClient): each client,
 * bound to one node, uploads whole files in strong mode (the put returns once the commit is
 * durable) under /jepsen-files — mostly new files, sometimes a new version of one of its own —
 * recording each upload's size and SHA-256. After the faults heal, every file is read back
 * through every node (so through one other than its writer's) and hashed; checker/files.ts
 * decides durability and convergence.
 */
import { createHash, randomBytes } from 'node:crypto';
import { CairnError } from '../../../src/common/errors.js';
import { FileClient } from '../../../src/server/file-client.js';
import type { FilePut, FileRead, FileReadback } from '../checker/files.js';
import type { HistoryLine, HistoryRecorder, OpHandle } from '../recorder.js';
import { codeOf } from './common.js';
import type { NodeId } from '../proxy.js';
import type { WorkloadStats } from './register.js';

export const FILES_ROOT = '/jepsen-files';
const ERROR_BACKOFF_MS = 200;
/** Deadline of one strong upload (a commit waits out an election or a restart). */
const PUT_TIMEOUT_MS_DEFAULT = 15_000;
/** Most uploads are small; some span several chunks. */
const SMALL_BYTES_MAX = 32 * 1024;
const LARGE_BYTES_MAX = 1024 * 1024;
/** Share of acknowledged uploads read back at once through another node. */
const READBACK_SHARE = 0.25;
/** Process ids of those reads: client c uses READBACK_PROCESS_FIRST + c (one at a time). */
export const READBACK_PROCESS_FIRST = 600_000;
/** Files one client may overwrite (its most recent ones). */
const OWN_FILES_KEPT = 16;

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The daemon section for file runs: a fast controller, small chunks, no GC or scrub. */
export const FILES_DAEMON_CONFIG = {
  controllerIntervalMs: 200,
  file: { idleCommitDelayMs: 100, chunkSizeBytes: 256 * 1024 },
  gc: { enabled: false },
  scrub: { enabled: false },
};

/** Wait until every node's cluster view has a diskmap (uploads need placement). */
export async function setupFiles(endpoints: ReadonlyMap<NodeId, string>, boundMs = 60_000): Promise<void> {
  const started = Date.now();
  for (const [id, endpoint] of endpoints) {
    const c = new FileClient(endpoint, 5_000);
    try {
      for (;;) {
        const info = await c.cluster().catch(() => undefined);
        if (info !== undefined && info.diskmapEpoch >= 1) break;
        if (Date.now() - started > boundMs) throw new CairnError('ETIMEDOUT', `n${id} has no diskmap after ${boundMs} ms: the file service cannot place data`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      c.close();
    }
  }
}

export interface FilesWorkloadOptions {
  readonly recorder: HistoryRecorder;
  readonly endpoints: ReadonlyMap<NodeId, string>;
  readonly clients: number;
  readonly rand: () => number;
  readonly putTimeoutMs?: number;
  readonly thinkMs?: number;
}

export async function runFilesWorkload(o: FilesWorkloadOptions, signal: AbortSignal): Promise<WorkloadStats & { paths: string[] }> {
  const nodes = [...o.endpoints.keys()];
  const stats: WorkloadStats & { paths: string[] } = { ok: 0, fail: 0, info: 0, keysUsed: 0, paths: [] };
  const thinkMs = o.thinkMs ?? 20;
  const run = async (c: number): Promise<void> => {
    const node = nodes[c % nodes.length]!;
    const putTimeoutMs = o.putTimeoutMs ?? PUT_TIMEOUT_MS_DEFAULT;
    let files = new FileClient(o.endpoints.get(node)!, putTimeoutMs);
    const otherNode = nodes[(c + 1) % nodes.length]!;
    let other = new FileClient(o.endpoints.get(otherNode)!, putTimeoutMs);
    const own: string[] = [];
    let process_ = c;
    let n = 0;
    try {
      while (!signal.aborted) {
        let path: string;
        if (own.length > 0 && o.rand() < 0.3) path = own[Math.floor(o.rand() * own.length)]!;
        else {
          path = `${FILES_ROOT}/c${c}-${n++}`;
          own.push(path);
          stats.paths.push(path);
          if (own.length > OWN_FILES_KEPT) own.shift();
        }
        const size = o.rand() < 0.85 ? Math.floor(o.rand() * SMALL_BYTES_MAX) : Math.floor(o.rand() * LARGE_BYTES_MAX);
        const data = randomBytes(size);
        const hash = sha256(data);
        const h: OpHandle = o.recorder.invoke(process_, 'put', path, { size, sha256: hash });
        let erred = false;
        try {
          const r = await files.put(path, [data], { mode: 'strong', mkdirs: true, sizeHint: size });
          if (r.size !== size) throw new CairnError('EIO', `the service reports ${r.size} bytes stored of ${size}`);
          o.recorder.ok(h, { size, sha256: hash, version: r.version, state: r.state }, node);
          stats.ok++;
          if (o.rand() < READBACK_SHARE) {
            // Strong means committed: any other node must serve these bytes now.
            const rb = o.recorder.invoke(READBACK_PROCESS_FIRST + c, 'readback', path, { expected: hash });
            try {
              o.recorder.ok(rb, await readWhole(other, path), otherNode);
            } catch (err) {
              o.recorder.fail(rb, codeOf(err), otherNode);
              if (codeOf(err) === 'EUNAVAIL') {
                other.close();
                other = new FileClient(o.endpoints.get(otherNode)!, putTimeoutMs);
              }
            }
          }
        } catch (err) {
          o.recorder.info(h, codeOf(err), node, err instanceof Error ? err.message.slice(0, 300) : undefined);
          if (codeOf(err) === 'EUNAVAIL') {
            // A fresh channel: grpc-js backs off reconnecting for many seconds after a node restarts.
            files.close();
            files = new FileClient(o.endpoints.get(node)!, putTimeoutMs);
          }
          stats.info++;
          process_ += o.clients;
          erred = true;
        }
        // After an error the node may be down for seconds: back off longer than the metadata workloads do.
        const pauseMs = erred ? ERROR_BACKOFF_MS * (1 + Math.floor(o.rand() * 4)) : Math.floor(o.rand() * thinkMs * 2);
        if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
      }
    } finally {
      files.close();
      other.close();
    }
  };
  await Promise.all(Array.from({ length: o.clients }, (_, c) => run(c)));
  stats.keysUsed = stats.paths.length;
  return stats;
}

async function readWhole(c: FileClient, path: string): Promise<{ size: number; sha256: string }> {
  const { data } = await c.get(path);
  const h = createHash('sha256');
  let size = 0;
  for await (const piece of data) {
    h.update(piece);
    size += piece.length;
  }
  return { size, sha256: h.digest('hex') };
}

/**
 * After healing: read every path through every node (recorded as `read`), retrying unanswered
 * ones until all nodes answered or the bound passes. Returns the last answer of each (path, node).
 */
export async function finalFileReads(
  o: { recorder: HistoryRecorder; endpoints: ReadonlyMap<NodeId, string>; paths: readonly string[]; firstProcess: number },
  boundMs: number,
): Promise<{ converged: boolean; afterMs: number; disagreements: string[]; reads: FileRead[] }> {
  const started = Date.now();
  const clients = new Map([...o.endpoints].map(([id, e]) => [id, new FileClient(e, 30_000)]));
  const answers = new Map<string, FileRead>();
  let process_ = o.firstProcess;
  try {
    for (;;) {
      let missing = 0;
      for (const path of o.paths) {
        for (const [id, c] of clients) {
          const key = `${id} ${path}`;
          if (answers.get(key)?.outcome === 'ok' || answers.get(key)?.outcome === 'absent') continue;
          const h = o.recorder.invoke(process_++, 'read', path, null);
          try {
            const r = await readWhole(c, path);
            o.recorder.ok(h, r, id);
            answers.set(key, { path, node: id, outcome: 'ok', ...r });
          } catch (err) {
            const code = codeOf(err);
            o.recorder.fail(h, code, id);
            if (code === 'ENOENT') answers.set(key, { path, node: id, outcome: 'absent' });
            else {
              answers.set(key, { path, node: id, outcome: 'error', error: `${code}: ${(err as Error).message}` });
              missing++;
            }
          }
        }
      }
      const reads = [...answers.values()];
      const disagreements: string[] = [];
      for (const path of o.paths) {
        const rs = reads.filter((r) => r.path === path && r.outcome !== 'error');
        if (new Set(rs.map((r) => (r.outcome === 'ok' ? r.sha256 : 'absent'))).size > 1) {
          disagreements.push(`${path}: ${rs.map((r) => `n${r.node}=${r.outcome === 'ok' ? r.sha256!.slice(0, 12) : 'absent'}`).join(' ')}`);
        }
      }
      if (missing === 0 || Date.now() - started > boundMs) {
        for (const r of reads) if (r.outcome === 'error') disagreements.push(`${r.path}: n${r.node} did not answer (${r.error})`);
        return { converged: disagreements.length === 0, afterMs: Date.now() - started, disagreements, reads };
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } finally {
    for (const c of clients.values()) c.close();
  }
}

/** The uploads of a history (as written to history.jsonl). */
export function putsOfHistory(lines: readonly HistoryLine[]): FilePut[] {
  const pending = new Map<number, HistoryLine>();
  const puts: FilePut[] = [];
  const make = (inv: HistoryLine, outcome: FilePut['outcome'], completeNs?: bigint): FilePut => {
    const v = inv.value as { size: number; sha256: string };
    return { path: inv.key ?? '', process: inv.process, outcome, size: v.size, sha256: v.sha256, invokeNs: BigInt(inv.time_ns), ...(completeNs === undefined ? {} : { completeNs }) };
  };
  for (const l of lines) {
    if (l.f !== 'put') continue;
    if (l.type === 'invoke') pending.set(l.process, l);
    else {
      const inv = pending.get(l.process);
      if (inv === undefined) continue;
      pending.delete(l.process);
      const made = make(inv, l.type, l.type === 'ok' ? BigInt(l.time_ns) : undefined);
      const put = l.type !== 'ok' && l.error !== undefined ? { ...made, error: l.error } : made;
      const state = l.type === 'ok' ? (l.value as { state?: unknown } | undefined)?.state : undefined;
      puts.push(typeof state === 'string' ? { ...put, state } : put);
    }
  }
  for (const inv of pending.values()) puts.push(make(inv, 'info'));
  return puts;
}

/** The reads through another node right after an acknowledged upload (ENOENT kept; other failures are unavailability). */
export function readbacksOfHistory(lines: readonly HistoryLine[]): FileReadback[] {
  const pending = new Map<number, HistoryLine>();
  const out: FileReadback[] = [];
  for (const l of lines) {
    if (l.f !== 'readback') continue;
    if (l.type === 'invoke') {
      pending.set(l.process, l);
      continue;
    }
    const inv = pending.get(l.process);
    if (inv === undefined) continue;
    pending.delete(l.process);
    const base = { path: inv.key ?? '', node: l.node ?? 0, process: l.process, expected: (inv.value as { expected: string }).expected, invokeNs: BigInt(inv.time_ns) };
    if (l.type === 'ok') {
      const v = l.value as { size: number; sha256: string };
      out.push({ ...base, outcome: 'ok', size: v.size, sha256: v.sha256 });
    } else if (l.error === 'ENOENT') out.push({ ...base, outcome: 'absent' });
  }
  return out;
}
