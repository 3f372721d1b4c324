/**
 * The harness parts on their own: the supervisor really kills (-9), restarts, pauses and resumes a
 * real process; schedules are seeded and always end healed; disk loss really takes a directory away
 * and gives it back; the recorder writes Cairn history lines the checker reads; the timeline renders.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile, writeFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually, tempDir } from '../helpers/env.js';
import { checkWithModel } from './checker/check.js';
import { pairEvents, parseHistory } from './checker/history.js';
import { applyAction, loseDirectory, makeSchedule, parseSchedule, restoreDirectory, runSchedule, type NemesisTarget } from './nemesis.js';
import { HistoryRecorder } from './recorder.js';
import { SupervisedProcess } from './supervisor.js';
import { faultWindows, renderTimeline } from './timeline.js';

let dir: { path: string; remove: () => Promise<void> };
const procs: SupervisedProcess[] = [];
beforeEach(async () => {
  dir = await tempDir('cairn-jepsen-harness-');
});
afterEach(async () => {
  for (const p of procs.splice(0)) await p.stop(1_000);
  await dir.remove();
});

/** A tiny node program: prints "ready", then appends a tick to a file every 20 ms. */
function tickerSpec(name: string, tickFile: string): SupervisedProcess {
  const script = join(dir.path, `${name}.mjs`);
  writeFileSync(
    script,
    `import { appendFileSync } from 'node:fs';
let n = 0;
console.log('ready ' + process.pid);
setInterval(() => appendFileSync(${JSON.stringify(tickFile)}, (n++) + '\\n'), 20);
process.on('SIGTERM', () => { console.log('bye'); process.exit(0); });
`,
  );
  const p = new SupervisedProcess({ name, command: process.execPath, args: [script], ready: (l) => l.startsWith('ready'), logFile: join(dir.path, `${name}.log`) });
  procs.push(p);
  return p;
}

const ticks = (file: string): number => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0);
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('SupervisedProcess', () => {
  it('kill -9, restart, SIGSTOP/SIGCONT and stop act on the real process', async () => {
    const file = join(dir.path, 'ticks');
    const p = tickerSpec('t1', file);
    await p.start();
    expect(p.state).toBe('running');
    const pid1 = p.pid!;
    await eventually(() => ticks(file) > 3);

    await p.kill9();
    expect(alive(pid1)).toBe(false);
    expect(p.exits.at(-1)).toMatchObject({ signal: 'SIGKILL', expected: true });
    const afterKill = ticks(file);
    await sleep(150);
    expect(ticks(file)).toBe(afterKill); // nothing runs any more

    await p.restart();
    expect(p.pid).not.toBe(pid1);
    await eventually(() => ticks(file) > afterKill + 3);

    p.pause();
    expect(p.state).toBe('paused');
    await sleep(100); // let a tick already in flight land
    const paused = ticks(file);
    await sleep(300);
    expect(ticks(file)).toBe(paused); // stopped: no ticks
    expect(alive(p.pid!)).toBe(true); // but alive
    p.resume();
    await eventually(() => ticks(file) > paused);

    await p.stop();
    expect(p.state).toBe('stopped');
    expect(p.exits.at(-1)).toMatchObject({ code: 0, expected: true });
    const log = await readFile(join(dir.path, 't1.log'), 'utf8');
    expect(log).toContain('bye');
  });

  it('reports a crash as an unexpected exit, and a start that never becomes ready as an error', async () => {
    const file = join(dir.path, 'ticks2');
    const p = tickerSpec('t2', file);
    const crashes: string[] = [];
    p.onUnexpectedExit = (r) => crashes.push(String(r.signal));
    await p.start();
    process.kill(p.pid!, 'SIGKILL'); // killed behind the supervisor's back
    await eventually(() => crashes.length === 1);
    expect(p.state).toBe('exited');

    const silent = join(dir.path, 'silent.mjs');
    await writeFile(silent, 'setTimeout(() => process.exit(3), 50);\n');
    const q = new SupervisedProcess({ name: 'silent', command: process.execPath, args: [silent], ready: (l) => l === 'ready' });
    procs.push(q);
    await expect(q.start(5_000)).rejects.toThrow(/exited before it was ready/);
  });
});

describe('nemesis schedules', () => {
  it('are decided by the seed, undo every fault, and end healed', () => {
    const o = { seed: 11, durationMs: 60_000, nodes: [1, 2, 3], kinds: ['kill', 'pause', 'partition', 'disk'] as const };
    const a = makeSchedule(o);
    expect(makeSchedule(o)).toEqual(a);
    expect(makeSchedule({ ...o, seed: 12 })).not.toEqual(a);
    expect(a.events.length).toBeGreaterThan(4);
    // Replay through the saved JSON gives the same schedule.
    expect(parseSchedule(JSON.parse(JSON.stringify(a)), 'nemesis.json')).toEqual(a);
    expect(() => parseSchedule({ ...a, events: [{ atMs: 1, action: { op: 'explode' } }] }, 'bad.json')).toThrow(/bad\.json: events/);

    const open = new Set<string>();
    let last = -1;
    for (const { atMs, action } of a.events) {
      expect(atMs).toBeGreaterThanOrEqual(last);
      last = atMs;
      const n = 'node' in action ? action.node : 0;
      if (action.op === 'kill' || action.op === 'pause' || action.op === 'lose-disk') open.add(`${action.op}${n}`);
      if (action.op === 'kill-leader') open.add('kill-leader');
      if (action.op === 'restart-dead') open.delete('kill-leader');
      if (action.op === 'partition' || action.op === 'isolate-leader') open.add('partition');
      if (action.op === 'restart') open.delete(`kill${n}`);
      if (action.op === 'resume') open.delete(`pause${n}`);
      if (action.op === 'restore-disk') open.delete(`lose-disk${n}`);
      if (action.op === 'heal') open.delete('partition');
      expect(open.size).toBeLessThanOrEqual(1); // one fault at a time
    }
    expect([...open]).toEqual([]);
    expect(last).toBeLessThan(o.durationMs);
    expect(makeSchedule({ ...o, kinds: [] }).events).toEqual([]);
  });

  it('run in order against a target, recording failures without stopping', async () => {
    const calls: string[] = [];
    const target: NemesisTarget = {
      kill: async (n) => void calls.push(`kill${n}`),
      restart: async (n) => void calls.push(`restart${n}`),
      restartDead: async () => void calls.push('restart-dead'),
      pause: async () => {
        throw new Error('cannot pause');
      },
      resume: async (n) => void calls.push(`resume${n}`),
      partition: async (c) => void calls.push(`partition${JSON.stringify(c)}`),
      heal: async () => void calls.push('heal'),
      leader: async () => 2,
      loseDisk: async (n) => void calls.push(`lose${n}`),
      restoreDisk: async (n) => void calls.push(`restore${n}`),
    };
    const schedule = {
      seed: 1,
      durationMs: 1_000,
      nodes: [1, 2],
      kinds: ['kill' as const],
      events: [
        { atMs: 0, action: { op: 'kill' as const, node: 2 } },
        { atMs: 10, action: { op: 'pause' as const, node: 1 } },
        { atMs: 20, action: { op: 'restart' as const, node: 2 } },
        { atMs: 30, action: { op: 'partition' as const, shape: 'isolate' as const, components: [[1], [2]] } },
        { atMs: 40, action: { op: 'heal' as const } },
        { atMs: 45, action: { op: 'isolate-leader' as const } },
        { atMs: 50, action: { op: 'heal' as const } },
        { atMs: 55, action: { op: 'kill-leader' as const } },
        { atMs: 60, action: { op: 'restart-dead' as const } },
      ],
    };
    const applied = await runSchedule(schedule, target, { startMs: Date.now() });
    expect(calls).toEqual(['kill2', 'restart2', 'partition[[1],[2]]', 'heal', 'partition[[2],[1]]', 'heal', 'kill2', 'restart-dead']);
    expect(applied.map((a) => a.error)).toEqual([undefined, 'cannot pause', undefined, undefined, undefined, undefined, undefined, undefined, undefined]);
    expect(applied[7]!.resolved).toBe('killed leader n2');
    expect(applied[5]!.resolved).toBe('isolated leader n2');
    await applyAction(target, { op: 'lose-disk', node: 1 });
    expect(calls.at(-1)).toBe('lose1');
    const windows = faultWindows(applied, 100);
    expect(windows.map((w) => w.label)).toEqual(['kill n2', 'partition isolate {1} {2}', 'isolated leader n2', 'killed leader n2', 'pause n1']);
  });
});

describe('disk loss', () => {
  it('takes a directory away under its users (even root cannot use it) and gives it back intact', async () => {
    const d = join(dir.path, 'disk');
    await mkdir(d);
    await writeFile(join(d, 'shard'), 'data');
    await loseDirectory(d);
    await expect(readFile(join(d, 'shard'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(writeFile(join(d, 'new'), 'x')).rejects.toMatchObject({ code: 'ENOTDIR' });
    await restoreDirectory(d);
    expect(await readFile(join(d, 'shard'), 'utf8')).toBe('data');
    expect(await readdir(d)).toEqual(['shard']);
    await restoreDirectory(d); // nothing lost: no-op
    await expect(loseDirectory(join(dir.path, 'nope'))).rejects.toThrow(/not a directory/);
  });
});

describe('history recorder and timeline', () => {
  it('writes Cairn history lines that the checker reads back, with monotonic times', async () => {
    const file = join(dir.path, 'history.jsonl');
    const r = new HistoryRecorder(file);
    const w = r.invoke(0, 'write', 'k', 1);
    const rd = r.invoke(1, 'read', 'k', null);
    r.ok(w);
    r.ok(rd, 1, 2);
    const c = r.invoke(0, 'cas', 'k', [1, 2]);
    expect(() => r.invoke(0, 'read', 'k')).toThrow(/pending cas/);
    r.info(c, 'ETIMEDOUT');
    expect(() => r.ok(c)).toThrow(/completed twice/);
    const stale = r.invoke(2, 'read', 'k', null);
    r.ok(stale, 1);
    await r.close();

    const text = await readFile(file, 'utf8');
    const lines = text.trim().split('\n').map((l) => JSON.parse(l) as { time_ns: string; node?: number });
    expect(lines).toHaveLength(8);
    const times = lines.map((l) => BigInt(l.time_ns));
    for (let i = 1; i < times.length; i++) expect(times[i]! >= times[i - 1]!).toBe(true);
    expect(lines[3]!.node).toBe(2);

    const { format, events } = parseHistory(text, file);
    expect(format).toBe('cairn');
    // The cas may have taken effect (unknown outcome), so a later read of 1 is still fine.
    expect(checkWithModel('register', pairEvents(events)).verdict).toBe('linearizable');

    const svg = renderTimeline(r.history, [{ atMs: 0, plannedAtMs: 0, action: { op: 'kill', node: 1 } }], r.startNs, 'test <run>');
    expect(svg).toContain('<svg');
    expect(svg).toContain('test &lt;run&gt;');
    expect((svg.match(/<rect /g) ?? []).length).toBe(4 + 1); // four operations, one fault window
    expect(svg).toContain('kill n1');
  });
});
