/**
 * The history recorder: clients record every invocation and every completion, stamped with the
 * monotonic clock (process.hrtime.bigint()), as Cairn history lines (docs/jepsen-lite.md):
 *   {"process":3,"type":"invoke","f":"cas","key":"k1","value":[1,4],"time_ns":"123456789"}
 *   {"process":3,"type":"ok","f":"cas","key":"k1","value":[1,4],"time_ns":"123999999","node":2}
 * Lines are appended to history.jsonl as they happen (a crash of the harness keeps what was
 * recorded) and kept in memory, up to a bound, for the checker.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { CairnError } from '../../src/common/errors.js';

export type HistoryType = 'invoke' | 'ok' | 'fail' | 'info';

export interface HistoryLine {
  readonly process: number;
  readonly type: HistoryType;
  readonly f: string;
  readonly key?: string;
  readonly value?: unknown;
  readonly error?: string;
  /** Monotonic nanoseconds, as a decimal string (exact beyond 2^53). */
  readonly time_ns: string;
  /** The node that served the request, when known. */
  readonly node?: number;
  /** The error's sentence, when a workload keeps it (the checker ignores it). */
  readonly message?: string;
}

/** A pending operation, returned by invoke() and passed to exactly one completion. */
export interface OpHandle {
  readonly process: number;
  readonly f: string;
  readonly key: string | undefined;
  readonly value: unknown;
  done: boolean;
}

/** Events kept in memory by default (about 100 bytes each). */
const EVENTS_MAX_DEFAULT = 2_000_000;

export class HistoryRecorder {
  private readonly lines: HistoryLine[] = [];
  private readonly pendingByProcess = new Map<number, OpHandle>();
  private readonly out: WriteStream | undefined;
  readonly startNs = process.hrtime.bigint();

  /** `file` undefined: memory only. */
  constructor(
    file?: string,
    private readonly eventsMax = EVENTS_MAX_DEFAULT,
  ) {
    this.out = file === undefined ? undefined : createWriteStream(file, { flags: 'a' });
  }

  private closed = false;

  private push(line: HistoryLine): void {
    if (this.closed) throw new CairnError('ECANCELED', 'the history recorder is closed');
    if (this.lines.length >= this.eventsMax) throw new CairnError('ENOSPC', `history is full (${this.eventsMax} events); shorten the run`);
    this.lines.push(line);
    this.out?.write(`${JSON.stringify(line)}\n`);
  }

  invoke(process_: number, f: string, key?: string, value?: unknown): OpHandle {
    const p = this.pendingByProcess.get(process_);
    if (p !== undefined) throw new CairnError('EBUSY', `process ${process_} already has a pending ${p.f}`);
    const h: OpHandle = { process: process_, f, key, value, done: false };
    this.pendingByProcess.set(process_, h);
    this.push({ process: process_, type: 'invoke', f, ...(key === undefined ? {} : { key }), ...(value === undefined ? {} : { value }), time_ns: process.hrtime.bigint().toString() });
    return h;
  }

  private complete(h: OpHandle, type: Exclude<HistoryType, 'invoke'>, value: unknown, error: string | undefined, node: number | undefined, message?: string): void {
    if (h.done) throw new CairnError('EINVAL', `process ${h.process}: ${h.f} completed twice`);
    h.done = true;
    this.pendingByProcess.delete(h.process);
    this.push({
      process: h.process,
      type,
      f: h.f,
      ...(h.key === undefined ? {} : { key: h.key }),
      ...(value === undefined ? {} : { value }),
      ...(error === undefined ? {} : { error }),
      time_ns: process.hrtime.bigint().toString(),
      ...(node === undefined ? {} : { node }),
      ...(message === undefined ? {} : { message }),
    });
  }

  /** It happened, and returned `value` (for a write, the value written is repeated by default). */
  ok(h: OpHandle, value: unknown = h.value, node?: number): void {
    this.complete(h, 'ok', value, undefined, node);
  }

  /** It certainly did not happen (for a cas without `error`: the compare did not match). */
  fail(h: OpHandle, error?: string, node?: number): void {
    this.complete(h, 'fail', h.value, error, node);
  }

  /** Unknown outcome (timeout, crash): it may happen later or never. The process must retire. */
  info(h: OpHandle, error?: string, node?: number, message?: string): void {
    this.complete(h, 'info', h.value, error, node, message);
  }

  get history(): readonly HistoryLine[] {
    return this.lines;
  }

  /** Seconds since the recorder started, for a monotonic time stamp. */
  elapsedMs(ns: bigint = process.hrtime.bigint()): number {
    return Number(ns - this.startNs) / 1e6;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const out = this.out;
    if (out !== undefined) await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
}
