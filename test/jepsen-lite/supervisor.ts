/**
 * Supervising real node processes for fault-injection runs: start a process and wait until it says
 * it is ready, kill -9 it, restart it with the same arguments (and data dir), pause it with SIGSTOP
 * and resume it with SIGCONT, and stop everything at the end. Output goes to a log file per process
 * (and the last lines are kept in memory for error messages).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { CairnError } from '../../src/common/errors.js';
import { REPO_ROOT } from '../helpers/env.js';

export interface ProcessSpec {
  /** A short name for logs and reports ("n1"). */
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** A stdout line that means the process is ready; without it, ready as soon as spawned. */
  readonly ready?: (line: string) => boolean;
  /** Where stdout and stderr are appended. */
  readonly logFile?: string;
}

export type ProcessState = 'stopped' | 'starting' | 'running' | 'paused' | 'exited';

export interface ExitRecord {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly expected: boolean;
  readonly atMs: number;
}

/** Lines of output kept in memory per process. */
const TAIL_LINES_MAX = 40;

/** The command line that runs the cairn CLI from source, as users' daemons do (through tsx). */
export function cairnCommand(args: readonly string[]): { command: string; args: string[] } {
  return { command: process.execPath, args: ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli', 'main.ts'), ...args] };
}

export class SupervisedProcess {
  private child: ChildProcess | undefined;
  private log: WriteStream | undefined;
  private exitWaiters: (() => void)[] = [];
  private expectingExit = false;
  private readonly tailLines: string[] = [];
  private status: ProcessState = 'stopped';
  readonly exits: ExitRecord[] = [];
  /** Called when the process exits without being told to (a crash). */
  onUnexpectedExit: ((rec: ExitRecord) => void) | undefined;

  constructor(readonly spec: ProcessSpec) {}

  get state(): ProcessState {
    return this.status;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The last lines the process printed (stdout and stderr). */
  get tail(): readonly string[] {
    return this.tailLines;
  }

  private remember(line: string): void {
    this.tailLines.push(line);
    if (this.tailLines.length > TAIL_LINES_MAX) this.tailLines.shift();
  }

  /** Spawn and wait for the ready line (rejects if it exits or times out first). */
  async start(readyTimeoutMs = 30_000): Promise<void> {
    if (this.status !== 'stopped' && this.status !== 'exited') throw new CairnError('EBUSY', `${this.spec.name} is already ${this.status}`);
    this.status = 'starting';
    this.expectingExit = false;
    if (this.spec.logFile !== undefined && this.log === undefined) this.log = createWriteStream(this.spec.logFile, { flags: 'a' });
    this.log?.write(`--- ${new Date().toISOString()} start ${this.spec.name}: ${this.spec.command} ${this.spec.args.join(' ')}\n`);
    const child = spawn(this.spec.command, [...this.spec.args], {
      cwd: this.spec.cwd ?? REPO_ROOT,
      env: { ...process.env, ...this.spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    let ready = this.spec.ready === undefined;
    let onReady: (() => void) | undefined;
    const readyPromise = new Promise<void>((resolve) => (onReady = resolve));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.log?.write(`${line}\n`);
      this.remember(line);
      if (!ready && this.spec.ready!(line)) {
        ready = true;
        onReady!();
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      this.log?.write(`${line}\n`);
      this.remember(line);
    });
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        const rec: ExitRecord = { code, signal, expected: this.expectingExit, atMs: Date.now() };
        this.exits.push(rec);
        this.log?.write(`--- exit code=${code} signal=${signal}${rec.expected ? '' : ' (unexpected)'}\n`);
        if (this.child === child) {
          this.child = undefined;
          this.status = 'exited';
        }
        for (const w of this.exitWaiters.splice(0)) w();
        if (!rec.expected) this.onUnexpectedExit?.(rec);
        resolve();
      });
    });
    if (ready) {
      this.status = 'running';
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      readyPromise.then(() => 'ready' as const),
      exited.then(() => 'exited' as const),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), readyTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (outcome === 'ready') {
      this.status = 'running';
      return;
    }
    if (outcome === 'timeout') await this.kill9();
    throw new CairnError(
      'EIO',
      `${this.spec.name} ${outcome === 'timeout' ? `was not ready within ${readyTimeoutMs} ms` : 'exited before it was ready'}; last output:\n${this.tailLines.slice(-10).join('\n')}`,
    );
  }

  private waitExit(): Promise<void> {
    if (this.child === undefined) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  /** SIGKILL and wait until it is gone. */
  async kill9(): Promise<void> {
    const c = this.child;
    if (c === undefined) return;
    this.expectingExit = true;
    const gone = this.waitExit();
    c.kill('SIGKILL');
    await gone;
  }

  /** SIGSTOP: the process stays alive but runs nothing (its sockets stay open). */
  pause(): void {
    if (this.child === undefined || this.status !== 'running') throw new CairnError('EINVAL', `${this.spec.name} is not running (${this.status})`);
    this.child.kill('SIGSTOP');
    this.status = 'paused';
  }

  resume(): void {
    if (this.child === undefined || this.status !== 'paused') return;
    this.child.kill('SIGCONT');
    this.status = 'running';
  }

  /** Start again with the same spec (same data dir); it must be stopped or exited. */
  async restart(readyTimeoutMs?: number): Promise<void> {
    if (this.child !== undefined) await this.kill9();
    await this.start(readyTimeoutMs);
  }

  /** SIGTERM (after SIGCONT if paused), then SIGKILL if it has not exited within graceMs. */
  async stop(graceMs = 5_000): Promise<void> {
    const c = this.child;
    if (c !== undefined) {
      this.expectingExit = true;
      const gone = this.waitExit();
      if (this.status === 'paused') c.kill('SIGCONT');
      c.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const t = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), graceMs)));
      if ((await Promise.race([gone.then(() => 'gone' as const), t])) === 'timeout') {
        c.kill('SIGKILL');
        await gone;
      }
      clearTimeout(timer);
    }
    this.status = 'stopped';
    const log = this.log;
    this.log = undefined;
    if (log !== undefined) await new Promise<void>((resolve) => log.end(() => resolve()));
  }
}

/** A set of supervised processes, stopped together. */
export class Supervisor {
  private readonly procs = new Map<string, SupervisedProcess>();

  add(spec: ProcessSpec): SupervisedProcess {
    if (this.procs.has(spec.name)) throw new CairnError('EEXIST', `process ${spec.name} already exists`);
    const p = new SupervisedProcess(spec);
    this.procs.set(spec.name, p);
    return p;
  }

  get(name: string): SupervisedProcess {
    const p = this.procs.get(name);
    if (p === undefined) throw new CairnError('ENOENT', `no process ${name}`);
    return p;
  }

  get all(): SupervisedProcess[] {
    return [...this.procs.values()];
  }

  async startAll(readyTimeoutMs?: number): Promise<void> {
    await Promise.all(this.all.map((p) => p.start(readyTimeoutMs)));
  }

  async stopAll(graceMs?: number): Promise<void> {
    await Promise.all(this.all.map((p) => p.stop(graceMs)));
  }
}
