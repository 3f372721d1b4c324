/**
 * One fault-injection run, start to finish: make the run folder (.jepsen-runs/<time>-<seed>/), start
 * the cluster behind fault proxies, run the chosen workload while the seeded nemesis schedule
 * plays, heal everything, check convergence (every node answers and agrees within a bound), check the
 * history (linearizability for register/path/dir; the feed checker for watch; durability by SHA-256
 * for files), and write history.jsonl, nemesis.json, summary.json, replay.txt and timeline.svg
 * (plus watch.json for watch). Used by `npm run jepsen` (run.ts) and by the short run in npm test.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../src/common/errors.js';
import { checkWithModel, formatResult, type CheckResult } from './checker/check.js';
import { pairEvents, parseHistory } from './checker/history.js';
import { Cluster } from './cluster.js';
import { describeAction, makeSchedule, parseSchedule, runSchedule, seededRandom, type AppliedAction, type NemesisKind, type Schedule } from './nemesis.js';
import { HistoryRecorder } from './recorder.js';
import { renderTimeline } from './timeline.js';
import { finalReads, runRegisterWorkload, type WorkloadStats } from './workloads/register.js';
import { finalPathReads, runPathWorkload, setupPaths } from './workloads/path.js';
import { finalDirReads, runDirWorkload, setupDirs } from './workloads/dir.js';
import { WATCHER_PROCESS_FIRST, saveWatchData, setupWatch, startWatchWorkload, writesOfHistory, type WatchWorkload } from './workloads/watch.js';
import { checkWatch, formatWatchResult, type WatchCheckInput } from './checker/watch.js';
import { FILES_DAEMON_CONFIG, READBACK_PROCESS_FIRST, finalFileReads, putsOfHistory, readbacksOfHistory, runFilesWorkload, setupFiles } from './workloads/files.js';
import { checkFiles, formatFilesResult, type FileRead } from './checker/files.js';
import type { HistoryLine } from './recorder.js';
import type { ModelName } from './checker/models.js';

export interface RunOptions {
  readonly seed: number;
  readonly timeMs: number;
  readonly kinds: readonly NemesisKind[];
  readonly nodes: number;
  readonly clients: number;
  /** Parent of run folders (default <repo>/.jepsen-runs). */
  readonly baseDir: string;
  /** Replay this saved schedule instead of making one from the seed. */
  readonly schedule?: Schedule;
  /** Fault and quiet lengths for generated schedules. */
  readonly faultMs?: readonly [number, number];
  readonly quietMs?: readonly [number, number];
  /** Keep the nodes' data dirs in the run folder (default: removed when the run is valid). */
  readonly keepData?: boolean;
  /** Workload time after the last fault was undone (default QUIET_TAIL_MS). */
  readonly quietTailMs?: number;
  /** How long the cluster may take to agree after healing. */
  readonly convergeBoundMs?: number;
  /** Check-history search budget. */
  readonly checkDeadlineMs?: number;
  readonly log?: (line: string) => void;
  /** Read mode of the workload (serializable = a known-weak mode to see the checker catch stale reads). */
  readonly reads?: 'linearizable' | 'serializable';
  /**
   * register: the KV Raft group (`cairn kv serve`); path: versioned paths, dir: directory entries,
   * both on the metadata service (`cairn start`).
   */
  readonly workload?: WorkloadName;
}

export type WorkloadName = 'register' | 'path' | 'dir' | 'watch' | 'files';
export const WORKLOAD_NAMES: readonly WorkloadName[] = ['register', 'path', 'dir', 'watch', 'files'];

/** The checker model of each workload (watch and files have their own checkers, checker/watch.ts and checker/files.ts). */
const MODEL_OF: Record<Exclude<WorkloadName, 'watch' | 'files'>, ModelName> = { register: 'register', path: 'path', dir: 'dir' };

export interface RunSummary {
  readonly valid: boolean;
  readonly runDir: string;
  readonly workloadName: WorkloadName;
  readonly seed: number;
  readonly nodes: number;
  readonly clients: number;
  readonly nemeses: readonly NemesisKind[];
  readonly durationMs: number;
  readonly workload: WorkloadStats;
  readonly faultsApplied: number;
  readonly faultErrors: readonly string[];
  readonly unexpectedExits: readonly string[];
  readonly convergence: { readonly converged: boolean; readonly afterMs: number; readonly disagreements: readonly string[] };
  /** For workloads checked by another checker (watch): verdict 'not checked', the report says why. */
  readonly linearizability: { readonly verdict: CheckResult['verdict'] | 'not checked'; readonly operations: number; readonly checkMs: number; readonly report: string };
  /** The workload's own checks beyond linearizability (watch: the feed checker). */
  readonly checks?: { readonly name: string; readonly valid: boolean; readonly report: string; readonly warnings?: readonly string[] };
  readonly replay: string;
}

/** Process ids of the final reads, above any client's. */
const FINAL_READ_PROCESS_FIRST = 1_000_000;
/** Workload time after the last fault was undone. */
const QUIET_TAIL_MS = 2_000;
/** Beyond twice the planned time, the schedule is cut short. */
const HARD_CAP_EXTRA_MS = 60_000;

function stamp(d = new Date()): string {
  return d.toISOString().replace(/[:.]/g, '-');
}

/** The command that replays this run's fault schedule. */
export function replayCommand(
  o: { timeMs: number; kinds: readonly string[]; seed: number; nodes: number; clients: number; reads?: string; workload?: string },
  scheduleFile: string,
): string {
  return (
    `npm run jepsen -- --workload ${o.workload ?? 'register'} --time ${Math.round(o.timeMs / 1000)} --nemesis ${o.kinds.length === 0 ? 'none' : o.kinds.join(',')} ` +
    `--seed ${o.seed} --nodes ${o.nodes} --clients ${o.clients}${o.reads === 'serializable' ? ' --reads serializable' : ''} --schedule ${scheduleFile}`
  );
}

export async function runJepsen(o: RunOptions): Promise<RunSummary> {
  const log = o.log ?? (() => undefined);
  const runDir = join(o.baseDir, `${stamp()}-${o.seed}`);
  await mkdir(runDir, { recursive: true });
  const schedule =
    o.schedule ??
    makeSchedule({
      seed: o.seed,
      durationMs: o.timeMs,
      nodes: Array.from({ length: o.nodes }, (_, i) => i + 1),
      kinds: o.kinds,
      faultMs: o.faultMs,
      quietMs: o.quietMs,
    });
  if (schedule.nodes.length !== o.nodes) throw new CairnError('EINVAL', `the schedule is for ${schedule.nodes.length} nodes, the run has ${o.nodes}`);
  const scheduleFile = join(runDir, 'nemesis.json');
  await writeFile(scheduleFile, `${JSON.stringify(schedule, null, 2)}\n`);
  const replay = replayCommand({ ...o, timeMs: schedule.durationMs }, scheduleFile);
  await writeFile(join(runDir, 'replay.txt'), `${replay}\n`);
  log(`run folder ${runDir}`);
  log(`replay with: ${replay}`);

  const recorder = new HistoryRecorder(join(runDir, 'history.jsonl'));
  const workloadName = o.workload ?? 'register';
  const cluster = await Cluster.start({
    daemon: workloadName === 'register' ? 'kv' : 'meta',
    nodes: o.nodes,
    dir: join(runDir, 'cluster'),
    ...(workloadName === 'files' ? { disksPerNode: 1, diskBytes: 512 * 1024 * 1024, daemonConfig: FILES_DAEMON_CONFIG } : {}),
  });
  const unexpectedExits: string[] = [];
  for (const id of cluster.ids) {
    cluster.proc(id).onUnexpectedExit = (r) => {
      unexpectedExits.push(`n${id} exited by itself (code ${r.code}, signal ${r.signal})`);
      log(`n${id} exited unexpectedly (code ${r.code}, signal ${r.signal})`);
    };
  }
  let applied: AppliedAction[] = [];
  let stats: WorkloadStats = { ok: 0, fail: 0, info: 0, keysUsed: 0 };
  let convergence: RunSummary['convergence'] = { converged: false, afterMs: 0, disagreements: ['not reached'] };
  let watchWorkload: WatchWorkload | undefined;
  let watchInput: Omit<WatchCheckInput, 'writes'> | undefined;
  let filePaths: string[] = [];
  let fileReads: FileRead[] | undefined;
  const started = Date.now();
  const startedNs = process.hrtime.bigint();
  const stop = new AbortController();
  const endpoints = new Map(cluster.ids.map((id) => [id, cluster.endpoint(id)]));
  try {
    if (workloadName === 'path') await setupPaths(endpoints);
    if (workloadName === 'dir') await setupDirs(endpoints);
    const watchFrom = workloadName === 'watch' ? await setupWatch(endpoints) : 0;
    if (workloadName === 'files') await setupFiles(endpoints);
    const rand = seededRandom(o.seed ^ 0x9e3779b9);
    watchWorkload = workloadName === 'watch' ? startWatchWorkload({ recorder, endpoints, clients: o.clients, rand, fromRevision: watchFrom }) : undefined;
    const workload =
      watchWorkload !== undefined
        ? watchWorkload.stopWriters.bind(watchWorkload)
        : workloadName === 'files'
        ? runFilesWorkload({ recorder, endpoints, clients: o.clients, rand }, stop.signal).then((r) => {
          filePaths = r.paths;
          return { ok: r.ok, fail: r.fail, info: r.info, keysUsed: r.keysUsed };
        })
        : workloadName === 'path'
        ? runPathWorkload({ recorder, endpoints, clients: o.clients, rand }, stop.signal)
        : workloadName === 'dir'
          ? runDirWorkload({ recorder, endpoints, clients: o.clients, rand }, stop.signal)
          : runRegisterWorkload({ recorder, endpoints, clients: o.clients, rand, reads: o.reads }, stop.signal);
    if (typeof workload !== 'function') workload.catch(() => undefined); // awaited below; this only keeps an early failure from being 'unhandled'
    // The schedule plays to its end even when slow actions (restarts) delay it, within a hard cap;
    // the workload runs until the planned time has passed and the last fault has been undone for a while.
    const hardStop = new AbortController();
    const hardTimer = setTimeout(() => hardStop.abort(), schedule.durationMs * 2 + HARD_CAP_EXTRA_MS);
    applied = await runSchedule(schedule, cluster, {
      startMs: started,
      signal: hardStop.signal,
      onApplied: (a) => log(`${(a.atMs / 1000).toFixed(1)}s ${a.resolved ?? describeAction(a.action)}${a.error ? ` FAILED: ${a.error}` : ''}`),
    });
    clearTimeout(hardTimer);
    const endMs = Math.max(schedule.durationMs, Date.now() - started + (o.quietTailMs ?? QUIET_TAIL_MS));
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + endMs - Date.now())));
    stop.abort();
    stats = typeof workload === 'function' ? await workload() : await workload;
    log(`workload done: ${stats.ok} ok, ${stats.fail} fail, ${stats.info} unknown`);
    await cluster.healAll();
    const boundMs = o.convergeBoundMs ?? 30_000;
    if (watchWorkload !== undefined) {
      const f = await watchWorkload.finish(boundMs);
      watchInput = f.input;
      await saveWatchData(join(runDir, 'watch.json'), f.input);
      convergence = { converged: f.converged, afterMs: f.afterMs, disagreements: f.disagreements };
    } else if (workloadName === 'files') {
      const f = await finalFileReads({ recorder, endpoints, paths: filePaths, firstProcess: FINAL_READ_PROCESS_FIRST }, Math.max(boundMs, 60_000));
      fileReads = f.reads;
      convergence = { converged: f.converged, afterMs: f.afterMs, disagreements: f.disagreements.slice(0, 50) };
    } else convergence =
      workloadName === 'path'
        ? await finalPathReads({ recorder, endpoints, files: stats.keysUsed, firstProcess: FINAL_READ_PROCESS_FIRST }, boundMs)
        : workloadName === 'dir'
          ? await finalDirReads({ recorder, endpoints, dirs: stats.keysUsed, firstProcess: FINAL_READ_PROCESS_FIRST }, boundMs)
          : await finalReads(
            { recorder, endpoints, keys: Array.from({ length: stats.keysUsed }, (_, k) => `r${k}`), firstProcess: FINAL_READ_PROCESS_FIRST },
            boundMs,
          );
    log(`convergence: ${convergence.converged ? `all nodes agree after ${convergence.afterMs} ms` : `NOT converged: ${convergence.disagreements.join('; ')}`}`);
  } finally {
    stop.abort();
    await cluster.stop();
    await recorder.close();
  }

  // Check the history as written to disk (exactly what check-history would read).
  const checkStarted = Date.now();
  const historyFile = join(runDir, 'history.jsonl');
  const historyText = await readFile(historyFile, 'utf8');
  let linearizability: RunSummary['linearizability'];
  let checks: RunSummary['checks'];
  if (workloadName === 'files') {
    // Durability: every acknowledged upload reads back byte for byte (by SHA-256) through every node.
    const lines = historyText.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as HistoryLine);
    const r = checkFiles(putsOfHistory(lines), fileReads ?? [], cluster.ids, readbacksOfHistory(lines));
    checks = { name: 'files', valid: r.valid && fileReads !== undefined, report: formatFilesResult(r), warnings: r.warnings };
    linearizability = { verdict: 'not checked', operations: lines.length, checkMs: Date.now() - checkStarted, report: checks.report };
  } else if (workloadName === 'watch') {
    // The watch feed has no register-like model: its own checker reads history.jsonl and watch.json.
    const lines = historyText.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as HistoryLine);
    const input = watchInput ?? { root: '', fromRevision: 1, targetRevision: 0, watchers: [], references: [], maxEvents: 1 };
    const r = checkWatch({ ...input, writes: writesOfHistory(lines) });
    checks = { name: 'watch feed', valid: r.valid && watchInput !== undefined, report: formatWatchResult(r) };
    linearizability = { verdict: 'not checked', operations: lines.length, checkMs: Date.now() - checkStarted, report: checks.report };
  } else {
    const { events } = parseHistory(historyText, historyFile, 'cairn');
    const result = checkWithModel(MODEL_OF[workloadName], pairEvents(events), { deadlineMs: o.checkDeadlineMs ?? 300_000 });
    linearizability = { verdict: result.verdict, operations: result.operations.total, checkMs: Date.now() - checkStarted, report: formatResult(result) };
  }
  log(linearizability.report);

  await writeFile(
    join(runDir, 'timeline.svg'),
    renderTimeline(
      recorder.history,
      applied,
      startedNs,
      `${workloadName} seed ${o.seed}: ${checks !== undefined ? (checks.valid ? 'valid' : 'INVALID') : linearizability.verdict}`,
      (p) => (p >= FINAL_READ_PROCESS_FIRST ? 'final reads' : p >= READBACK_PROCESS_FIRST ? `readback ${p - READBACK_PROCESS_FIRST}` : p >= WATCHER_PROCESS_FIRST ? `watcher ${p - WATCHER_PROCESS_FIRST}` : `client ${p % o.clients}`),
    ),
  );
  const faultErrors = applied.filter((a) => a.error !== undefined).map((a) => `${a.action.op}: ${a.error}`);
  const summary: RunSummary = {
    valid: (checks !== undefined ? checks.valid : linearizability.verdict === 'linearizable') && convergence.converged,
    runDir,
    workloadName,
    seed: o.seed,
    nodes: o.nodes,
    clients: o.clients,
    nemeses: schedule.kinds,
    durationMs: Date.now() - started,
    workload: stats,
    faultsApplied: applied.length,
    faultErrors,
    unexpectedExits,
    convergence,
    linearizability,
    ...(checks === undefined ? {} : { checks }),
    replay,
  };
  await writeFile(join(runDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  if (summary.valid && o.keepData !== true) await rm(join(runDir, 'cluster'), { recursive: true, force: true });
  return summary;
}

/** Read a saved nemesis.json for --schedule. */
export async function loadSchedule(file: string): Promise<Schedule> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CairnError('ENOENT', `cannot read schedule ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CairnError('EINVAL', `${file}: not JSON (${(err as Error).message})`);
  }
  return parseSchedule(json, file);
}
