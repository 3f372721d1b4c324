/**
 * The watch-feed workload against the metadata service: writers make changes under
 * /jepsen-watch/pK (exclusive creates of fresh names, truncates at the version they know,
 * renames to fresh names, often into another prefix, unlinks), each change with an identity its watch event must carry; watchers follow one prefix
 * each (or the whole root) with MetaClient.watch(), drop their stream every second or so and
 * resume from the last revision they were given on a different node. After healing, the
 * watchers must catch up to the leader's revision, and every node serves the root's event log
 * once more as the reference. checker/watch.ts judges the lot.
 */
import { writeFile } from 'node:fs/promises';
import { MetaClient, type WatchEvent } from '../../../src/meta/client.js';
import { CairnError } from '../../../src/common/errors.js';
import type { FeedEvent, FeedWrite, ReferenceLog, WatchCheckInput, WatcherLog } from '../checker/watch.js';
import type { HistoryLine, HistoryRecorder, OpHandle } from '../recorder.js';
import { codeOf, ERROR_BACKOFF_MS, pauseBetweenOps } from './common.js';
import type { NodeId } from '../proxy.js';
import type { WorkloadStats } from './register.js';

export const WATCH_ROOT = '/jepsen-watch';
export const WATCH_PREFIXES = 3;
/** The meta state machine's default watch log length (src/meta/state-machine.ts). */
export const WATCH_LOG_EVENTS = 100_000;
/** Process ids of watchers (their sessions are recorded as `watch` operations). */
export const WATCHER_PROCESS_FIRST = 500_000;
/** Files a writer keeps alive per prefix; beyond it, it unlinks rather than creates. */
const LIVE_FILES_MAX = 8;
/** Events one watcher keeps (the run stops growing it beyond; a full log is a harness error). */
const WATCHER_EVENTS_MAX = 1_000_000;

export function prefixOf(k: number): string {
  return `${WATCH_ROOT}/p${k}`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function lite(e: WatchEvent): FeedEvent {
  return { revision: e.revision, kind: e.kind, path: e.path, ...(e.newPath === undefined ? {} : { newPath: e.newPath }), ino: e.ino, version: e.version };
}

/** Make the root and the prefixes; returns the revision to watch from (nothing before it is ours). */
export async function setupWatch(endpoints: ReadonlyMap<NodeId, string>, boundMs = 30_000): Promise<number> {
  const c = new MetaClient({ endpoints: [...endpoints.values()], timeoutMs: 2_000, retryBudgetMs: boundMs });
  const exists = (err: unknown): void => {
    if (!(err instanceof CairnError && err.code === 'EEXIST')) throw err;
  };
  try {
    await c.mkdir(WATCH_ROOT).catch(exists);
    for (let k = 0; k < WATCH_PREFIXES; k++) await c.mkdir(prefixOf(k)).catch(exists);
    // A linearizable listing reports the revision of its snapshot: everything after it is the run's.
    return (await c.readdir(WATCH_ROOT, { limit: 1 })).revision + 1;
  } finally {
    c.close();
  }
}

export interface WatchWorkloadOptions {
  readonly recorder: HistoryRecorder;
  readonly endpoints: ReadonlyMap<NodeId, string>;
  /** Writers. */
  readonly clients: number;
  readonly watchers?: number;
  readonly rand: () => number;
  readonly fromRevision: number;
  readonly requestTimeoutMs?: number;
  /** How long a watcher keeps one stream before it moves to another node. */
  readonly sessionMs?: readonly [number, number];
  readonly thinkMs?: number;
}

interface LiveFile {
  path: string;
  version: number;
}

/** A running watch workload: writers stop first, watchers catch up after healing. */
export interface WatchWorkload {
  /** Stop the writers (watchers keep following). */
  stopWriters(): Promise<WorkloadStats>;
  /**
   * After healing: learn the leader's revision, let every watcher catch up to it and read every
   * node's log of the root; `converged` when all nodes answered within the bound.
   */
  finish(boundMs: number): Promise<{ converged: boolean; afterMs: number; disagreements: string[]; input: Omit<WatchCheckInput, 'writes'> }>;
}

export function startWatchWorkload(o: WatchWorkloadOptions): WatchWorkload {
  const timeoutMs = o.requestTimeoutMs ?? 1_000;
  const [sessionMinMs, sessionMaxMs] = o.sessionMs ?? [300, 2_000];
  const thinkMs = o.thinkMs ?? 10;
  const nodes = [...o.endpoints.keys()];
  const watcherCount = o.watchers ?? WATCH_PREFIXES + 1;
  const stats: WorkloadStats = { ok: 0, fail: 0, info: 0, keysUsed: WATCH_PREFIXES };
  const stopWriters = new AbortController();
  const stopWatchers = new AbortController();
  let nextName = 0;

  const writer = async (c: number): Promise<void> => {
    const node = nodes[c % nodes.length]!;
    const meta = new MetaClient({ endpoints: [o.endpoints.get(node)!], timeoutMs, retryBudgetMs: timeoutMs });
    const live: LiveFile[][] = Array.from({ length: WATCH_PREFIXES }, () => []);
    let process_ = c;
    const unknown = (h: OpHandle, err: unknown): void => {
      o.recorder.info(h, codeOf(err), node);
      stats.info++;
      process_ += o.clients;
    };
    try {
      while (!stopWriters.signal.aborted) {
        const k = Math.floor(o.rand() * WATCH_PREFIXES);
        const files = live[k]!;
        const r = o.rand();
        let erred = false;
        if (files.length === 0 || (r < 0.4 && files.length < LIVE_FILES_MAX)) {
          const path = `${prefixOf(k)}/c${c}-${nextName++}`;
          const h = o.recorder.invoke(process_, 'create', path, `create ${path}`);
          try {
            const { attr } = await meta.create(path, { exclusive: true });
            o.recorder.ok(h, `create ${path}`, node);
            stats.ok++;
            files.push({ path, version: attr.version });
          } catch (err) {
            // The name is fresh: EEXIST means an earlier attempt of this very create was applied.
            if (codeOf(err) === 'EEXIST') {
              o.recorder.ok(h, `create ${path}`, node);
              stats.ok++;
            } else unknown(h, err);
            erred = true;
          }
        } else if (r < 0.6) {
          const i = Math.floor(o.rand() * files.length);
          const f = files[i]!;
          const id = `truncate ${f.path}@${f.version + 1}`;
          const h = o.recorder.invoke(process_, 'truncate', f.path, id);
          try {
            const { attr } = await meta.truncate(f.path, Math.floor(o.rand() * 1000), f.version);
            // The ok value names the version the node reported (the path workload checks versions; here it must match its event).
            o.recorder.ok(h, `truncate ${f.path}@${attr.version}`, node);
            stats.ok++;
            f.version = attr.version;
          } catch (err) {
            // Even ECONFLICT is ambiguous: a retried attempt conflicts with its own first attempt.
            unknown(h, err);
            files.splice(i, 1); // its version is unknown now: leave the file alone
            erred = true;
          }
        } else if (r < 0.8) {
          // Rename to a fresh name, usually into another prefix: both prefixes' watchers must see it.
          const i = Math.floor(o.rand() * files.length);
          const f = files.splice(i, 1)[0]!;
          const j = Math.floor(o.rand() * WATCH_PREFIXES);
          const to = `${prefixOf(j)}/c${c}-${nextName++}`;
          const id = `rename ${f.path} -> ${to}`;
          const h = o.recorder.invoke(process_, 'rename', f.path, id);
          try {
            await meta.rename(f.path, to, { noReplace: true });
            o.recorder.ok(h, id, node);
            stats.ok++;
            live[j]!.push({ path: to, version: f.version });
          } catch (err) {
            unknown(h, err); // ENOENT/EEXIST too: a retry after the first attempt was applied
            erred = true;
          }
        } else {
          const i = Math.floor(o.rand() * files.length);
          const f = files.splice(i, 1)[0]!;
          const id = `unlink ${f.path}`;
          const h = o.recorder.invoke(process_, 'unlink', f.path, id);
          try {
            await meta.unlink(f.path);
            o.recorder.ok(h, id, node);
            stats.ok++;
          } catch (err) {
            unknown(h, err); // ENOENT too: a retry after the first attempt was applied
            erred = true;
          }
        }
        await pauseBetweenOps(o.rand, thinkMs, erred);
      }
    } finally {
      meta.close();
    }
  };

  interface WatcherState {
    log: { -readonly [K in keyof WatcherLog]: WatcherLog[K] } & { events: WatcherLog['events'][number][]; compacted: { asked: number; firstRevision: number }[] };
    /** Resume point: everything before it was delivered. */
    next: number;
    /** Set by finish(): stop once `next` passes it. */
    target?: number;
    caughtUp?: () => void;
  }
  const watcherStates: WatcherState[] = [];

  const watcher = async (w: number): Promise<void> => {
    const slot = w % (WATCH_PREFIXES + 1);
    const prefix = slot === WATCH_PREFIXES ? WATCH_ROOT : prefixOf(slot);
    const st: WatcherState = {
      log: { watcher: w, prefix, fromRevision: o.fromRevision, events: [], progress: o.fromRevision - 1, sessions: 0, compacted: [] },
      next: o.fromRevision,
    };
    watcherStates.push(st);
    let lastNode = -1;
    const process_ = WATCHER_PROCESS_FIRST + w;
    while (!stopWatchers.signal.aborted) {
      // A different node each session, the others behind it for the client's own failover.
      const choices = nodes.filter((n) => n !== lastNode);
      const node = choices[Math.floor(o.rand() * choices.length)]!;
      lastNode = node;
      const order = [node, ...nodes.filter((n) => n !== node)];
      const meta = new MetaClient({ endpoints: order.map((n) => o.endpoints.get(n)!), timeoutMs, retryBudgetMs: timeoutMs });
      const session = ++st.log.sessions;
      const ac = new AbortController();
      const onStop = (): void => ac.abort();
      stopWatchers.signal.addEventListener('abort', onStop, { once: true });
      const sessionMs = sessionMinMs + Math.floor(o.rand() * (sessionMaxMs - sessionMinMs));
      const timer = setTimeout(() => ac.abort(), sessionMs);
      const from = st.next;
      const h = o.recorder.invoke(process_, 'watch', prefix, { fromRevision: from, firstNode: node });
      let received = 0;
      const progressed = (rev: number): void => {
        if (rev + 1 > st.next) st.next = rev + 1;
        st.log.progress = Math.max(st.log.progress, rev);
        if (st.target !== undefined && st.next > st.target) st.caughtUp?.();
      };
      try {
        for await (const ev of meta.watch(prefix, { fromRevision: from, signal: ac.signal, onProgress: progressed })) {
          if (st.log.events.length >= WATCHER_EVENTS_MAX) throw new CairnError('ENOSPC', `watcher ${w} holds ${WATCHER_EVENTS_MAX} events; shorten the run`);
          // The node the event came from is the client's current one; record the first choice (the client may have failed over).
          st.log.events.push({ ...lite(ev), session, node });
          received++;
          progressed(ev.revision);
        }
        o.recorder.ok(h, { fromRevision: from, events: received, upTo: st.next - 1 }, node);
      } catch (err) {
        const code = codeOf(err);
        if (code === 'ECOMPACTED') {
          const details = (err as CairnError & { details?: { firstRevision?: number } }).details;
          const firstRevision = Number(details?.firstRevision ?? from);
          st.log.compacted.push({ asked: from, firstRevision });
          st.next = Math.max(st.next, firstRevision);
        }
        o.recorder.ok(h, { fromRevision: from, events: received, upTo: st.next - 1, error: code }, node);
        await sleep(ERROR_BACKOFF_MS, stopWatchers.signal);
      } finally {
        clearTimeout(timer);
        stopWatchers.signal.removeEventListener('abort', onStop);
        meta.close();
      }
    }
  };

  const writersDone = Promise.all(Array.from({ length: o.clients }, (_, c) => writer(c)));
  const watchersDone = Promise.all(Array.from({ length: watcherCount }, (_, w) => watcher(w)));
  writersDone.catch(() => undefined);
  watchersDone.catch(() => undefined);

  return {
    async stopWriters() {
      stopWriters.abort();
      await writersDone;
      return stats;
    },
    async finish(boundMs) {
      const started = Date.now();
      const disagreements: string[] = [];
      const all = new MetaClient({ endpoints: [...o.endpoints.values()], timeoutMs: 2_000, retryBudgetMs: boundMs });
      let target = o.fromRevision - 1;
      try {
        // The leader's revision, read linearizably (a listing reports its snapshot's revision).
        target = (await all.readdir(WATCH_ROOT, { limit: 1 })).revision;
      } catch (err) {
        disagreements.push(`could not read the revision after healing: ${codeOf(err)}`);
      } finally {
        all.close();
      }
      // Watchers catch up to it (they keep moving between nodes meanwhile).
      const left = (): number => Math.max(0, boundMs - (Date.now() - started));
      await Promise.all(
        watcherStates.map(async (st) => {
          if (st.next > target) return;
          await new Promise<void>((resolve) => {
            st.target = target;
            st.caughtUp = resolve;
            setTimeout(resolve, left());
          });
          if (st.next <= target) disagreements.push(`watcher ${st.log.watcher} (${st.log.prefix}) reached r${st.next - 1} of r${target}`);
        }),
      );
      stopWatchers.abort();
      await watchersDone;
      // Every node's own log of the root, from the first revision of the run to the target.
      const references: ReferenceLog[] = [];
      for (const [id, endpoint] of o.endpoints) {
        const meta = new MetaClient({ endpoints: [endpoint], timeoutMs: 2_000, retryBudgetMs: 0 });
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(), Math.max(2_000, left()));
        const events: FeedEvent[] = [];
        let upTo = o.fromRevision - 1;
        const seen = (rev: number): void => {
          upTo = Math.max(upTo, rev);
          if (upTo >= target) ac.abort();
        };
        try {
          if (target >= o.fromRevision) {
            for await (const ev of meta.watch(WATCH_ROOT, { fromRevision: o.fromRevision, signal: ac.signal, onProgress: seen })) {
              if (ev.revision > target) break;
              events.push(lite(ev));
              seen(ev.revision);
            }
          }
        } catch (err) {
          disagreements.push(`n${id} could not serve its log: ${codeOf(err)}`);
        } finally {
          clearTimeout(timer);
          meta.close();
        }
        if (upTo < target) disagreements.push(`n${id} served its log up to r${upTo} of r${target}`);
        references.push({ node: id, events, upTo });
      }
      return {
        converged: disagreements.length === 0,
        afterMs: Date.now() - started,
        disagreements,
        input: {
          root: WATCH_ROOT,
          fromRevision: o.fromRevision,
          targetRevision: target,
          watchers: watcherStates.map((s) => s.log),
          references,
          maxEvents: WATCH_LOG_EVENTS,
        },
      };
    },
  };
}

/** The writes of a history (as written to history.jsonl), with the identity of the event each must cause. */
export function writesOfHistory(lines: readonly HistoryLine[]): FeedWrite[] {
  const pending = new Map<number, HistoryLine>();
  const writes: FeedWrite[] = [];
  for (const l of lines) {
    if (l.f !== 'create' && l.f !== 'truncate' && l.f !== 'unlink' && l.f !== 'rename') continue;
    if (l.type === 'invoke') {
      pending.set(l.process, l);
      continue;
    }
    const inv = pending.get(l.process);
    if (inv === undefined) continue;
    pending.delete(l.process);
    writes.push({
      id: String(l.type === 'ok' ? l.value : inv.value),
      outcome: l.type,
      invokeNs: BigInt(inv.time_ns),
      ...(l.type === 'ok' ? { completeNs: BigInt(l.time_ns) } : {}),
      process: l.process,
    });
  }
  for (const inv of pending.values()) writes.push({ id: String(inv.value), outcome: 'info', invokeNs: BigInt(inv.time_ns), process: inv.process });
  return writes;
}

/** Save what the checker needs besides history.jsonl (watchers' deliveries and the nodes' logs). */
export async function saveWatchData(file: string, input: Omit<WatchCheckInput, 'writes'>): Promise<void> {
  await writeFile(file, `${JSON.stringify(input)}\n`);
}
