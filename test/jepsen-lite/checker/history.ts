/**
 * Reading histories: three line formats into one list of events, and events into operations.
 *  - jepsen-kv:   `{:process 0, :type :invoke, :f :get, :key "3", :value nil}` (Knossos/Porcupine EDN maps);
 *  - jepsen-etcd: `INFO  jepsen.util - 3	:invoke	:cas	[1 4]` (Jepsen's etcd log; other lines are noise);
 *  - cairn:       JSON lines `{"process":…, "type":"invoke|ok|fail|info", "f":…, "key"?:…, "value"?:…,
 *                 "error"?:…, "time_ns":…}` written by the harness (docs/jepsen-lite.md).
 * Every line is validated; a malformed one is an EINVAL error naming the file and line.
 */
import { basename } from 'node:path';
import { z } from 'zod';
import { CairnError } from '../../../src/common/errors.js';

export type EventType = 'invoke' | 'ok' | 'fail' | 'info';

export interface HistoryEvent {
  readonly process: string;
  readonly type: EventType;
  readonly f: string;
  readonly key: string | undefined;
  readonly value: unknown;
  readonly error: string | undefined;
  /** Ordering time: nanoseconds for the Cairn format, the line number for text formats. */
  readonly time: bigint;
  /** "file:line" for messages and reports. */
  readonly where: string;
}

/** How far detectFormat looks for a first operation. */
const DETECT_LINES_MAX = 1000;

export const FORMATS = ['jepsen-kv', 'jepsen-etcd', 'cairn'] as const;
export type Format = (typeof FORMATS)[number];

// ---------------------------------------------------------------------------------------------
// A small EDN reader: enough for Jepsen op maps (keywords, strings, integers, nil, booleans, vectors, maps).

class EdnReader {
  pos = 0;
  constructor(
    private readonly text: string,
    private readonly where: string,
  ) {}

  private err(message: string): CairnError {
    return new CairnError('EINVAL', `${this.where}: ${message} at column ${this.pos + 1}`);
  }

  private skip(): void {
    while (this.pos < this.text.length) {
      const c = this.text[this.pos]!;
      if (c === ' ' || c === ',' || c === '\t' || c === '\r' || c === '\n') this.pos++;
      else break;
    }
  }

  atEnd(): boolean {
    this.skip();
    return this.pos >= this.text.length;
  }

  /** Keywords are returned as strings without the colon, marked through the `keyword` flag. */
  value(): unknown {
    this.skip();
    const c = this.text[this.pos];
    if (c === undefined) throw this.err('unexpected end of line');
    if (c === '{') {
      this.pos++;
      const out: Record<string, unknown> = {};
      for (;;) {
        this.skip();
        if (this.text[this.pos] === '}') {
          this.pos++;
          return out;
        }
        const k = this.value();
        if (typeof k !== 'object' || k === null || !('keyword' in k)) throw this.err('map keys must be keywords');
        out[(k as { keyword: string }).keyword] = this.value();
      }
    }
    if (c === '[' || c === '(') {
      const close = c === '[' ? ']' : ')';
      this.pos++;
      const out: unknown[] = [];
      for (;;) {
        this.skip();
        if (this.text[this.pos] === close) {
          this.pos++;
          return out;
        }
        if (this.pos >= this.text.length) throw this.err(`missing ${close}`);
        out.push(this.value());
      }
    }
    if (c === '"') {
      let s = '';
      this.pos++;
      for (;;) {
        const d = this.text[this.pos++];
        if (d === undefined) throw this.err('unterminated string');
        if (d === '"') return s;
        if (d === '\\') {
          const e = this.text[this.pos++];
          if (e === 'n') s += '\n';
          else if (e === 't') s += '\t';
          else if (e === 'r') s += '\r';
          else if (e === undefined) throw this.err('unterminated string');
          else s += e;
        } else s += d;
      }
    }
    const m = /^[^\s,{}[\]()"]+/.exec(this.text.slice(this.pos));
    if (m === null) throw this.err(`unexpected ${JSON.stringify(c)}`);
    const tok = m[0];
    this.pos += tok.length;
    if (tok.startsWith(':')) return { keyword: tok.slice(1) };
    if (tok === 'nil') return null;
    if (tok === 'true') return true;
    if (tok === 'false') return false;
    if (/^-?\d+$/.test(tok)) {
      const n = Number(tok);
      if (!Number.isSafeInteger(n)) throw this.err(`integer ${tok} is too large`);
      return n;
    }
    if (/^-?\d+\.\d+$/.test(tok)) return Number(tok);
    throw this.err(`unknown token ${JSON.stringify(tok)}`);
  }
}

/** EDN values to plain values: keywords become their name (":read" → "read"). */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    if ('keyword' in v && Object.keys(v).length === 1) return (v as { keyword: string }).keyword;
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

function parseEdn(text: string, where: string): unknown {
  const r = new EdnReader(text, where);
  const v = r.value();
  if (!r.atEnd()) throw new CairnError('EINVAL', `${where}: unexpected text after the value`);
  return plain(v);
}

const EVENT_TYPES: readonly string[] = ['invoke', 'ok', 'fail', 'info'];

function eventType(v: unknown, where: string): EventType {
  if (typeof v !== 'string' || !EVENT_TYPES.includes(v)) {
    throw new CairnError('EINVAL', `${where}: type must be one of invoke, ok, fail, info (got ${JSON.stringify(v)})`);
  }
  return v as EventType;
}

// ---------------------------------------------------------------------------------------------
// The three formats.

function parseJepsenKv(lines: string[], file: string): HistoryEvent[] {
  const out: HistoryEvent[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '' || line.trim().startsWith(';')) return;
    const where = `${file}:${i + 1}`;
    const m = parseEdn(line, where);
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new CairnError('EINVAL', `${where}: expected an operation map {:process …, :type …, :f …}`);
    const o = m as Record<string, unknown>;
    if (typeof o.process !== 'number' && typeof o.process !== 'string') throw new CairnError('EINVAL', `${where}: :process must be a number`);
    if (typeof o.f !== 'string') throw new CairnError('EINVAL', `${where}: :f must be a keyword`);
    if (o.key !== undefined && o.key !== null && typeof o.key !== 'string' && typeof o.key !== 'number') {
      throw new CairnError('EINVAL', `${where}: :key must be a string or number`);
    }
    out.push({
      process: String(o.process),
      type: eventType(o.type, where),
      f: o.f,
      key: o.key === undefined || o.key === null ? undefined : String(o.key),
      value: o.value ?? null,
      error: typeof o.error === 'string' ? o.error : undefined,
      time: BigInt(i + 1),
      where,
    });
  });
  return out;
}

const ETCD_LINE = /^INFO\s+jepsen\.util\s+-\s+(\S+)\s+:(invoke|ok|fail|info)\s+:([\w-]+)\s*(.*?)\s*$/;

function parseJepsenEtcd(lines: string[], file: string): HistoryEvent[] {
  const out: HistoryEvent[] = [];
  lines.forEach((line, i) => {
    const m = ETCD_LINE.exec(line);
    if (m === null) return; // noise: Jepsen logs much else
    const where = `${file}:${i + 1}`;
    const value = m[4] === '' ? null : parseEdn(m[4]!, where);
    out.push({ process: m[1]!, type: m[2] as EventType, f: m[3]!, key: undefined, value, error: undefined, time: BigInt(i + 1), where });
  });
  return out;
}

const cairnLineSchema = z
  .object({
    process: z.union([z.number().int(), z.string().min(1)]),
    type: z.enum(['invoke', 'ok', 'fail', 'info']),
    f: z.string().min(1),
    key: z.string().optional(),
    value: z.unknown().optional(),
    error: z.string().optional(),
    time_ns: z.union([z.number().int().nonnegative(), z.string().regex(/^\d+$/, 'must be a decimal integer')]),
  })
  .loose();

function parseCairn(lines: string[], file: string): HistoryEvent[] {
  const out: HistoryEvent[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (err) {
      throw new CairnError('EINVAL', `${where}: not valid JSON (${(err as Error).message})`);
    }
    const r = cairnLineSchema.safeParse(json);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw new CairnError('EINVAL', `${where}: ${issue?.path.join('.') || 'line'}: ${issue?.message ?? 'invalid'}`);
    }
    const e = r.data;
    out.push({
      process: String(e.process),
      type: e.type,
      f: e.f,
      key: e.key,
      value: e.value ?? null,
      error: e.error,
      time: BigInt(e.time_ns),
      where,
    });
  });
  return out;
}

/** Guess the format from the first line that looks like an operation (Jepsen logs start with noise). */
export function detectFormat(text: string): Format | undefined {
  const lines = text.split('\n', DETECT_LINES_MAX);
  for (const line of lines) {
    const t = line.trim();
    if (t.startsWith('{"') || t.startsWith('{ "')) return 'cairn';
    if (t.startsWith('{:')) return 'jepsen-kv';
    if (ETCD_LINE.test(t)) return 'jepsen-etcd';
  }
  return undefined;
}

/** Parse a whole history text in the given format (or detect it). */
export function parseHistory(text: string, file: string, format: Format | 'auto' = 'auto'): { format: Format; events: HistoryEvent[] } {
  const fmt = format === 'auto' ? detectFormat(text) : format;
  if (fmt === undefined) {
    throw new CairnError('EINVAL', `${file}: cannot tell the history format; pass --format jepsen-kv, jepsen-etcd or cairn`);
  }
  const lines = text.split(/\r?\n/);
  const name = basename(file);
  const events = fmt === 'jepsen-kv' ? parseJepsenKv(lines, name) : fmt === 'jepsen-etcd' ? parseJepsenEtcd(lines, name) : parseCairn(lines, name);
  if (events.length === 0) throw new CairnError('EINVAL', `${file}: no operations found in ${fmt} format`);
  return { format: fmt, events };
}

// ---------------------------------------------------------------------------------------------
// Pairing invocations with completions.

/** One operation as recorded: its invocation and what (if anything) completed it. */
export interface PairedOp {
  readonly process: string;
  readonly f: string;
  readonly key: string | undefined;
  readonly invokeValue: unknown;
  /** 'unknown' when the completion was :info or never came. */
  readonly outcome: 'ok' | 'fail' | 'unknown';
  readonly completionValue: unknown;
  readonly error: string | undefined;
  readonly call: bigint;
  /** undefined when the outcome is unknown (the operation may take effect at any later time). */
  readonly ret: bigint | undefined;
  readonly callAt: string;
  readonly retAt: string;
}

/**
 * Match each completion to its process's pending invocation. A process has at most one pending
 * operation; an invocation without completion by the end has an unknown outcome.
 */
export function pairEvents(events: readonly HistoryEvent[]): PairedOp[] {
  const pending = new Map<string, HistoryEvent>();
  const out: PairedOp[] = [];
  for (const e of events) {
    if (e.type === 'invoke') {
      const p = pending.get(e.process);
      if (p !== undefined) {
        throw new CairnError('EINVAL', `${e.where}: process ${e.process} invokes ${e.f} while its ${p.f} from ${p.where} has not completed`);
      }
      pending.set(e.process, e);
      continue;
    }
    const inv = pending.get(e.process);
    if (inv === undefined) throw new CairnError('EINVAL', `${e.where}: process ${e.process} completes ${e.f} that it never invoked`);
    if (inv.f !== e.f) throw new CairnError('EINVAL', `${e.where}: process ${e.process} completes ${e.f} but invoked ${inv.f} at ${inv.where}`);
    if (e.time < inv.time) throw new CairnError('EINVAL', `${e.where}: completion is earlier than its invocation at ${inv.where}`);
    pending.delete(e.process);
    out.push({
      process: e.process,
      f: inv.f,
      key: inv.key ?? e.key,
      invokeValue: inv.value,
      outcome: e.type === 'ok' ? 'ok' : e.type === 'fail' ? 'fail' : 'unknown',
      completionValue: e.value,
      error: e.error,
      call: inv.time,
      ret: e.type === 'info' ? undefined : e.time,
      callAt: inv.where,
      retAt: e.where,
    });
  }
  for (const inv of pending.values()) {
    out.push({
      process: inv.process,
      f: inv.f,
      key: inv.key,
      invokeValue: inv.value,
      outcome: 'unknown',
      completionValue: undefined,
      error: undefined,
      call: inv.time,
      ret: undefined,
      callAt: inv.where,
      retAt: 'never completed',
    });
  }
  return out;
}
