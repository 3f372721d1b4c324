/**
 * Nemeses: the faults a run injects, as a seeded schedule decided before the run starts (so the same
 * seed, or the saved nemesis.json, replays the same faults at the same offsets), and the executor that
 * applies it to a cluster through the NemesisTarget interface. Faults alternate with quiet periods
 * and each fault is undone (restart, resume, heal, restore) before the next one; the schedule ends
 * healed so that convergence can be checked.
 */
import { rename, rm, writeFile, stat } from 'node:fs/promises';
import { z } from 'zod';
import { CairnError } from '../../src/common/errors.js';
import { partitions, type Components, type NodeId } from './proxy.js';

export const NEMESIS_KINDS = ['kill', 'pause', 'partition', 'disk', 'down'] as const;
export type NemesisKind = (typeof NEMESIS_KINDS)[number];

const nodeId = z.number().int().positive();
export const actionSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('kill'), node: nodeId }),
  z.object({ op: z.literal('restart'), node: nodeId }),
  /** kill -9 whichever node leads when the action runs; undone by restart-dead. */
  z.object({ op: z.literal('kill-leader') }),
  /** Start every node that is not running. */
  z.object({ op: z.literal('restart-dead') }),
  z.object({ op: z.literal('pause'), node: nodeId }),
  z.object({ op: z.literal('resume'), node: nodeId }),
  z.object({ op: z.literal('partition'), shape: z.enum(['majority-minority', 'isolate', 'bridge']), components: z.array(z.array(nodeId)) }),
  /** Cut off whichever node leads when the action runs. */
  z.object({ op: z.literal('isolate-leader') }),
  z.object({ op: z.literal('heal') }),
  z.object({ op: z.literal('lose-disk'), node: nodeId }),
  z.object({ op: z.literal('restore-disk'), node: nodeId }),
]);
export type NemesisAction = z.infer<typeof actionSchema>;

export const scheduleSchema = z.object({
  seed: z.number().int(),
  durationMs: z.number().int().positive(),
  nodes: z.array(nodeId).min(1),
  kinds: z.array(z.enum(NEMESIS_KINDS)),
  events: z.array(z.object({ atMs: z.number().nonnegative(), action: actionSchema })),
});
export type Schedule = z.infer<typeof scheduleSchema>;

/** mulberry32: a small seeded PRNG; the same seed gives the same schedule everywhere. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface ScheduleOptions {
  readonly seed: number;
  readonly durationMs: number;
  readonly nodes: readonly NodeId[];
  readonly kinds: readonly NemesisKind[];
  /** How long a fault lasts (uniform in [min, max]). */
  readonly faultMs?: readonly [number, number];
  /** Quiet time between faults. */
  readonly quietMs?: readonly [number, number];
  /** Quiet time at the end (everything healed) before the run stops. */
  readonly tailMs?: number;
  /** How long a 'down' fault keeps its node down (a long stretch: writes go on, then catch-up). */
  readonly downMs?: readonly [number, number];
}

/** Decide the whole fault schedule from the seed. */
export function makeSchedule(o: ScheduleOptions): Schedule {
  const rand = seededRandom(o.seed);
  const [fMin, fMax] = o.faultMs ?? [2_000, 6_000];
  const [qMin, qMax] = o.quietMs ?? [1_000, 3_000];
  const tail = o.tailMs ?? Math.min(5_000, o.durationMs / 4);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const between = (a: number, b: number): number => Math.round(a + rand() * (b - a));
  const events: Schedule['events'] = [];
  let t = between(qMin, qMax);
  const [dMin, dMax] = o.downMs ?? [Math.max(fMax, 20_000), Math.max(fMax, 60_000)];
  while (o.kinds.length > 0) {
    // The order of draws is that of the schedules before 'down' existed (same seed, same faults).
    let len = between(fMin, fMax);
    if (t + len > o.durationMs - tail) break;
    const kind = pick(o.kinds);
    const node = pick(o.nodes);
    // A long stretch, cut to the room left (at least the fault length already drawn, which fits).
    if (kind === 'down') len = Math.max(len, Math.min(between(dMin, dMax), o.durationMs - tail - t));
    switch (kind) {
      case 'kill':
        if (rand() < 0.5) events.push({ atMs: t, action: { op: 'kill', node } }, { atMs: t + len, action: { op: 'restart', node } });
        else events.push({ atMs: t, action: { op: 'kill-leader' } }, { atMs: t + len, action: { op: 'restart-dead' } });
        break;
      case 'pause':
        events.push({ atMs: t, action: { op: 'pause', node } }, { atMs: t + len, action: { op: 'resume', node } });
        break;
      case 'partition': {
        const shape = pick(o.nodes.length >= 3 ? (['majority-minority', 'isolate', 'bridge', 'isolate-leader'] as const) : (['isolate', 'isolate-leader'] as const));
        if (shape === 'isolate-leader') {
          events.push({ atMs: t, action: { op: 'isolate-leader' } }, { atMs: t + len, action: { op: 'heal' } });
          break;
        }
        const components: Components =
          shape === 'majority-minority'
            ? partitions.majorityMinority(o.nodes, rand)
            : shape === 'bridge'
              ? partitions.bridge(o.nodes, rand)
              : partitions.isolate(o.nodes, node);
        events.push(
          { atMs: t, action: { op: 'partition', shape, components: components.map((c) => [...c]) } },
          { atMs: t + len, action: { op: 'heal' } },
        );
        break;
      }
      case 'down':
        // One node down for a long stretch (kill -9, restarted at the end): handoff, then catch-up.
        events.push({ atMs: t, action: { op: 'kill', node } }, { atMs: t + len, action: { op: 'restart', node } });
        break;
      case 'disk':
        // The disk goes away under the running node; it comes back and the node is restarted.
        events.push(
          { atMs: t, action: { op: 'lose-disk', node } },
          { atMs: t + len, action: { op: 'restore-disk', node } },
          { atMs: t + len, action: { op: 'restart', node } },
        );
        break;
    }
    t += len + between(qMin, qMax);
  }
  return { seed: o.seed, durationMs: o.durationMs, nodes: [...o.nodes], kinds: [...o.kinds], events };
}

/** What a cluster must offer to be the target of a schedule. */
export interface NemesisTarget {
  kill(node: NodeId): Promise<void>;
  restart(node: NodeId): Promise<void>;
  /** Start every node that is not running. */
  restartDead(): Promise<void>;
  pause(node: NodeId): Promise<void>;
  resume(node: NodeId): Promise<void>;
  partition(components: Components): Promise<void>;
  heal(): Promise<void>;
  /** The node that leads now, if any (for leader-aimed faults). */
  leader(): Promise<NodeId | undefined>;
  loseDisk(node: NodeId): Promise<void>;
  restoreDisk(node: NodeId): Promise<void>;
}

/** One action as it was applied: when (ms since the run start), and whether it worked. */
export interface AppliedAction {
  readonly atMs: number;
  readonly plannedAtMs: number;
  readonly action: NemesisAction;
  readonly error?: string;
  /** What a leader-aimed action resolved to. */
  readonly resolved?: string;
}

/** How long a leader-aimed action waits for an election in progress to end. */
const LEADER_WAIT_MS = 5_000;

async function findLeader(target: NemesisTarget): Promise<NodeId | undefined> {
  const deadline = Date.now() + LEADER_WAIT_MS;
  for (;;) {
    const leader = await target.leader();
    if (leader !== undefined || Date.now() > deadline) return leader;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Apply one action to the target; returns what a leader-aimed action resolved to. */
export async function applyAction(target: NemesisTarget, a: NemesisAction, nodes: readonly NodeId[] = []): Promise<string | void> {
  switch (a.op) {
    case 'kill-leader': {
      const leader = await findLeader(target);
      if (leader === undefined) throw new CairnError('EUNAVAIL', 'no leader to kill');
      await target.kill(leader);
      return `killed leader n${leader}`;
    }
    case 'restart-dead':
      return target.restartDead();
    case 'isolate-leader': {
      const leader = await findLeader(target);
      if (leader === undefined) throw new CairnError('EUNAVAIL', 'no leader to isolate');
      await target.partition(partitions.isolate(nodes, leader));
      return `isolated leader n${leader}`;
    }
    case 'kill':
      return target.kill(a.node);
    case 'restart':
      return target.restart(a.node);
    case 'pause':
      return target.pause(a.node);
    case 'resume':
      return target.resume(a.node);
    case 'partition':
      return target.partition(a.components);
    case 'heal':
      return target.heal();
    case 'lose-disk':
      return target.loseDisk(a.node);
    case 'restore-disk':
      return target.restoreDisk(a.node);
  }
}

/**
 * Run the schedule in real time from `startMs` (a Date.now() value). Actions are applied in order;
 * a failing action is recorded and the run goes on. When an action is slow (a restart waits for the
 * node to be ready), every later action shifts by the delay, so each fault still lasts as long as
 * planned. Stops early when `signal` aborts.
 */
export async function runSchedule(
  schedule: Schedule,
  target: NemesisTarget,
  opts: { startMs: number; signal?: AbortSignal; onApplied?: (a: AppliedAction) => void },
): Promise<AppliedAction[]> {
  const applied: AppliedAction[] = [];
  let lagMs = 0;
  for (const ev of schedule.events) {
    const wait = opts.startMs + ev.atMs + lagMs - Date.now();
    if (wait > 0) await sleepUnlessAborted(wait, opts.signal);
    if (opts.signal?.aborted === true) break;
    const atMs = Date.now() - opts.startMs;
    lagMs = Math.max(lagMs, atMs - ev.atMs);
    let error: string | undefined;
    let resolved: string | void = undefined;
    try {
      resolved = await applyAction(target, ev.action, schedule.nodes);
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    }
    lagMs = Math.max(lagMs, Date.now() - opts.startMs - ev.atMs);
    const rec: AppliedAction = {
      atMs,
      plannedAtMs: ev.atMs,
      action: ev.action,
      ...(error === undefined ? {} : { error }),
      ...(typeof resolved === 'string' ? { resolved } : {}),
    };
    applied.push(rec);
    opts.onApplied?.(rec);
  }
  return applied;
}

function sleepUnlessAborted(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A short text for a timeline label or a log line. */
export function describeAction(a: NemesisAction): string {
  switch (a.op) {
    case 'partition':
      return `partition ${a.shape} ${a.components.map((c) => `{${c.join(',')}}`).join(' ')}`;
    case 'heal':
      return 'heal';
    case 'isolate-leader':
      return 'isolate leader';
    case 'kill-leader':
      return 'kill leader';
    case 'restart-dead':
      return 'restart dead nodes';
    default:
      return `${a.op} n${a.node}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Disk loss: the directory disappears under a running process and a regular file takes its place,
// so every access fails (ENOTDIR/ENOENT) even for root, for whom chmod 000 changes nothing.

const LOST_SUFFIX = '.jepsen-lost';

export async function loseDirectory(dir: string): Promise<void> {
  const s = await stat(dir).catch(() => undefined);
  if (s === undefined || !s.isDirectory()) throw new CairnError('ENOENT', `cannot lose ${dir}: not a directory`);
  await rename(dir, dir + LOST_SUFFIX);
  await writeFile(dir, 'this disk was removed by the jepsen-lite nemesis\n');
}

export async function restoreDirectory(dir: string): Promise<void> {
  const kept = await stat(dir + LOST_SUFFIX).catch(() => undefined);
  if (kept === undefined) return; // nothing was lost
  await rm(dir, { force: true, recursive: true });
  await rename(dir + LOST_SUFFIX, dir);
}

/** Parse a saved schedule (nemesis.json) for a replay. */
export function parseSchedule(json: unknown, source: string): Schedule {
  const r = scheduleSchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new CairnError('EINVAL', `${source}: ${i?.path.join('.') || '(root)'}: ${i?.message ?? 'invalid schedule'}`);
  }
  return r.data;
}
