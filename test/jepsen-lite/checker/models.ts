/**
 * Sequential specifications the checker tests histories against, and how each one reads the
 * operations of a recorded history:
 *  - register: one value (JSON scalar, starts null) with read, write and cas [expected new];
 *  - kv: one string per key (starts ""), with get, put and append (Knossos/Porcupine kv);
 *  - path: a Cairn path as a versioned register — read returns {value, version}, write sets the
 *    value and bumps the version, cas {expectedVersion, value} does so only at that version;
 *  - dir: the names in one directory, with create (exclusive), unlink, rename (no replace) and readdir.
 * Operations on different keys are independent; the caller checks each key on its own.
 */
import { CairnError } from '../../../src/common/errors.js';
import type { Model } from './wgl.js';

/** What a history line says about one completed (or abandoned) operation. */
export interface RawOp {
  readonly f: string;
  readonly invokeValue: unknown;
  /** The value on the completion line (ok/fail/info), undefined when there was none. */
  readonly completionValue: unknown;
  /** An error code recorded with a failure (Cairn format), if any. */
  readonly error?: string | undefined;
  /** Where the operation was invoked, for error messages. */
  readonly where: string;
}

/** How a model turns a history operation into (input, output) — or drops it. */
export type Interpreted<I, O> = { readonly drop: true } | { readonly drop: false; readonly input: I; readonly output: O | undefined };

export interface HistoryModel<S, I, O> extends Model<S, I, O> {
  /** Operations whose outcome is 'ok'. */
  ok(op: RawOp): Interpreted<I, O>;
  /** Operations that failed: a definite no-effect (drop), or an observation such as "the compare did not match". */
  failed(op: RawOp): Interpreted<I, O>;
  /** Operations with an unknown outcome; read-only ones are dropped, others may take effect late or never. */
  unknown(op: RawOp): Interpreted<I, O>;
}

const DROP = { drop: true } as const;

function bad(op: RawOp, message: string): CairnError {
  return new CairnError('EINVAL', `${op.where}: ${op.f}: ${message}`);
}

/** Text form of a value: EDN-ish for readability in reports. */
export function showValue(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(showValue).join(' ')}]`;
  if (typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${k} ${showValue(x)}`)
      .join(', ')}}`;
  }
  return String(v);
}

// ---------------------------------------------------------------------------------------------
// register

export type Scalar = number | string | boolean | null;
export type RegisterInput =
  | { readonly f: 'read' }
  | { readonly f: 'write'; readonly value: Scalar }
  | { readonly f: 'cas'; readonly expected: Scalar; readonly value: Scalar };
/** read: the value read; write: nothing; cas: true (swapped) or false (compare did not match). */
export type RegisterOutput = Scalar;

function isScalar(v: unknown): v is Scalar {
  return v === null || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean';
}

function scalar(op: RawOp, v: unknown, what: string): Scalar {
  if (v === undefined) return null;
  if (!isScalar(v)) throw bad(op, `${what} must be a number, string, boolean or nil, got ${showValue(v)}`);
  return v;
}

function registerInput(op: RawOp): RegisterInput {
  switch (op.f) {
    case 'read':
      return { f: 'read' };
    case 'write':
      return { f: 'write', value: scalar(op, op.invokeValue, 'the written value') };
    case 'cas': {
      const v = op.invokeValue;
      if (!Array.isArray(v) || v.length !== 2) throw bad(op, `cas needs [expected new], got ${showValue(v)}`);
      return { f: 'cas', expected: scalar(op, v[0], 'expected'), value: scalar(op, v[1], 'new') };
    }
    default:
      throw bad(op, 'the register model knows read, write and cas');
  }
}

export const registerModel: HistoryModel<Scalar, RegisterInput, RegisterOutput> = {
  name: 'register',
  init: () => null,
  step(state, input, output) {
    switch (input.f) {
      case 'read':
        return output === undefined || output === state ? state : undefined;
      case 'write':
        return input.value;
      case 'cas':
        if (state === input.expected) return output === false ? undefined : input.value;
        return output === true ? undefined : state;
    }
  },
  key: (s) => JSON.stringify(s),
  describe(input, output) {
    const out = output === undefined ? '?' : input.f === 'cas' ? (output ? 'ok' : 'fail') : input.f === 'read' ? showValue(output) : 'ok';
    switch (input.f) {
      case 'read':
        return `read -> ${out}`;
      case 'write':
        return `write ${showValue(input.value)} -> ${out}`;
      case 'cas':
        return `cas [${showValue(input.expected)} ${showValue(input.value)}] -> ${out}`;
    }
  },
  ok(op) {
    const input = registerInput(op);
    if (input.f === 'read') return { drop: false, input, output: scalar(op, op.completionValue, 'the value read') };
    if (input.f === 'cas') return { drop: false, input, output: true };
    return { drop: false, input, output: null };
  },
  failed(op) {
    const input = registerInput(op);
    // A failed cas is the observation "the compare did not match" (Jepsen's meaning) unless the
    // client recorded another reason, which makes it a plain no-effect.
    if (input.f === 'cas' && (op.error === undefined || op.error === 'ECONFLICT')) return { drop: false, input, output: false };
    return DROP;
  },
  unknown(op) {
    const input = registerInput(op);
    if (input.f === 'read') return DROP;
    return { drop: false, input, output: undefined };
  },
};

// ---------------------------------------------------------------------------------------------
// kv (one string per key)

export type KvInput = { readonly f: 'get' } | { readonly f: 'put' | 'append'; readonly value: string };

function kvString(op: RawOp, v: unknown, what: string): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  throw bad(op, `${what} must be a string, got ${showValue(v)}`);
}

function kvInput(op: RawOp): KvInput {
  switch (op.f) {
    case 'get':
      return { f: 'get' };
    case 'put':
    case 'append':
      return { f: op.f, value: kvString(op, op.invokeValue, 'the value') };
    default:
      throw bad(op, 'the kv model knows get, put and append');
  }
}

export const kvModel: HistoryModel<string, KvInput, string> = {
  name: 'kv',
  init: () => '',
  step(state, input, output) {
    switch (input.f) {
      case 'get':
        return output === undefined || output === state ? state : undefined;
      case 'put':
        return input.value;
      case 'append':
        return state + input.value;
    }
  },
  key: (s) => s,
  describe(input, output) {
    if (input.f === 'get') return `get -> ${output === undefined ? '?' : JSON.stringify(output)}`;
    return `${input.f} ${JSON.stringify(input.value)} -> ${output === undefined ? '?' : 'ok'}`;
  },
  ok(op) {
    const input = kvInput(op);
    return { drop: false, input, output: input.f === 'get' ? kvString(op, op.completionValue, 'the value read') : '' };
  },
  failed: () => DROP,
  unknown(op) {
    const input = kvInput(op);
    if (input.f === 'get') return DROP;
    return { drop: false, input, output: undefined };
  },
};

// ---------------------------------------------------------------------------------------------
// path: a Cairn path as a versioned register (version 0 = does not exist)

export interface PathState {
  readonly value: Scalar;
  readonly version: number;
}
export type PathInput =
  | { readonly f: 'read' }
  | { readonly f: 'write'; readonly value: Scalar }
  | { readonly f: 'cas'; readonly expectedVersion: number; readonly value: Scalar };
/** read: the state seen; write/cas: the new version if the client recorded it (else null); failed cas: 'conflict'. */
export type PathOutput = PathState | number | null | 'conflict';

function version(op: RawOp, v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw bad(op, `${what} must be a version (an integer >= 0), got ${showValue(v)}`);
  return v;
}

function pathInput(op: RawOp): PathInput {
  switch (op.f) {
    case 'read':
      return { f: 'read' };
    case 'write':
      return { f: 'write', value: scalar(op, op.invokeValue, 'the written value') };
    case 'cas': {
      const v = op.invokeValue;
      if (Array.isArray(v) && v.length === 2) return { f: 'cas', expectedVersion: version(op, v[0], 'expectedVersion'), value: scalar(op, v[1], 'value') };
      if (v !== null && typeof v === 'object' && 'expectedVersion' in v) {
        const o = v as { expectedVersion: unknown; value?: unknown };
        return { f: 'cas', expectedVersion: version(op, o.expectedVersion, 'expectedVersion'), value: scalar(op, o.value, 'value') };
      }
      throw bad(op, `cas needs {expectedVersion, value} or [expectedVersion value], got ${showValue(v)}`);
    }
    default:
      throw bad(op, 'the path model knows read, write and cas');
  }
}

/** The version a write/cas reported, if it reported one ({version: n} or n). */
function reportedVersion(op: RawOp): number | null {
  const v = op.completionValue;
  if (v === undefined || v === null) return null;
  if (typeof v === 'number') return version(op, v, 'the new version');
  if (typeof v === 'object' && !Array.isArray(v) && 'version' in v) return version(op, (v as { version: unknown }).version, 'the new version');
  return null;
}

export const pathModel: HistoryModel<PathState, PathInput, PathOutput> = {
  name: 'path',
  init: () => ({ value: null, version: 0 }),
  step(state, input, output) {
    switch (input.f) {
      case 'read': {
        if (output === undefined) return state;
        const o = output as PathState;
        return o.version === state.version && o.value === state.value ? state : undefined;
      }
      case 'write': {
        const next = { value: input.value, version: state.version + 1 };
        return typeof output === 'number' && output !== next.version ? undefined : next;
      }
      case 'cas': {
        if (state.version !== input.expectedVersion) return output === undefined || output === 'conflict' ? state : undefined;
        if (output === 'conflict') return undefined;
        const next = { value: input.value, version: state.version + 1 };
        return typeof output === 'number' && output !== next.version ? undefined : next;
      }
    }
  },
  key: (s) => `${s.version}:${JSON.stringify(s.value)}`,
  describe(input, output) {
    const out =
      output === undefined ? '?' : output === 'conflict' ? 'conflict' : typeof output === 'number' ? `ok v${output}` : output === null ? 'ok' : `${showValue(output.value)}@v${output.version}`;
    switch (input.f) {
      case 'read':
        return `read -> ${out}`;
      case 'write':
        return `write ${showValue(input.value)} -> ${out}`;
      case 'cas':
        return `cas v${input.expectedVersion} ${showValue(input.value)} -> ${out}`;
    }
  },
  ok(op) {
    const input = pathInput(op);
    if (input.f === 'read') {
      const v = op.completionValue;
      if (v === null || typeof v !== 'object' || Array.isArray(v) || !('version' in v)) {
        throw bad(op, `a read returns {value, version}, got ${showValue(v)}`);
      }
      const o = v as { value?: unknown; version: unknown };
      return { drop: false, input, output: { value: scalar(op, o.value, 'value'), version: version(op, o.version, 'version') } };
    }
    return { drop: false, input, output: reportedVersion(op) };
  },
  failed(op) {
    const input = pathInput(op);
    if (input.f === 'cas' && (op.error === undefined || op.error === 'ECONFLICT')) return { drop: false, input, output: 'conflict' };
    return DROP;
  },
  unknown(op) {
    const input = pathInput(op);
    if (input.f === 'read') return DROP;
    return { drop: false, input, output: undefined };
  },
};

// ---------------------------------------------------------------------------------------------
// dir: the set of names in one directory. Every operation's result is a function of the state:
// create → ok (added) | exists; unlink → ok (removed) | absent; rename from→to (no replace) →
// absent (no source; checked first, as the metadata service does) | exists (target taken) | ok (moved).

export type DirState = readonly string[];
export type DirInput =
  | { readonly f: 'create' | 'unlink'; readonly name: string }
  | { readonly f: 'rename'; readonly from: string; readonly to: string }
  | { readonly f: 'readdir' };
export type DirOutput = 'ok' | 'exists' | 'absent' | readonly string[];

const DIR_ERRORS: Readonly<Record<string, DirOutput>> = { EEXIST: 'exists', ENOENT: 'absent' };

function dirName(op: RawOp, v: unknown, what: string): string {
  if (typeof v !== 'string' || v === '' || v.includes('/') || v.includes('\n')) throw bad(op, `${what} must be a file name, got ${showValue(v)}`);
  return v;
}

function dirInput(op: RawOp): DirInput {
  switch (op.f) {
    case 'create':
    case 'unlink':
      return { f: op.f, name: dirName(op, op.invokeValue, 'the name') };
    case 'rename': {
      const v = op.invokeValue;
      if (!Array.isArray(v) || v.length !== 2) throw bad(op, `rename needs [from to], got ${showValue(v)}`);
      return { f: 'rename', from: dirName(op, v[0], 'from'), to: dirName(op, v[1], 'to') };
    }
    case 'readdir':
      return { f: 'readdir' };
    default:
      throw bad(op, 'the dir model knows create, unlink, rename and readdir');
  }
}

function dirApply(state: DirState, input: Exclude<DirInput, { f: 'readdir' }>): { result: DirOutput; next: DirState } {
  const has = (n: string): boolean => state.includes(n);
  switch (input.f) {
    case 'create':
      return has(input.name) ? { result: 'exists', next: state } : { result: 'ok', next: [...state, input.name].sort() };
    case 'unlink':
      return has(input.name) ? { result: 'ok', next: state.filter((n) => n !== input.name) } : { result: 'absent', next: state };
    case 'rename':
      if (!has(input.from)) return { result: 'absent', next: state };
      if (input.from === input.to) return { result: 'ok', next: state };
      if (has(input.to)) return { result: 'exists', next: state };
      return { result: 'ok', next: [...state.filter((n) => n !== input.from), input.to].sort() };
  }
}

export const dirModel: HistoryModel<DirState, DirInput, DirOutput> = {
  name: 'dir',
  init: () => [],
  step(state, input, output) {
    if (input.f === 'readdir') {
      if (output === undefined) return state;
      return Array.isArray(output) && output.length === state.length && output.every((n, i) => n === state[i]) ? state : undefined;
    }
    const { result, next } = dirApply(state, input);
    return output === undefined || output === result ? next : undefined;
  },
  key: (s) => s.join('\n'),
  describe(input, output) {
    const out = output === undefined ? '?' : Array.isArray(output) ? `[${output.join(' ')}]` : String(output);
    switch (input.f) {
      case 'readdir':
        return `readdir -> ${out}`;
      case 'rename':
        return `rename ${input.from} ${input.to} -> ${out}`;
      default:
        return `${input.f} ${input.name} -> ${out}`;
    }
  },
  ok(op) {
    const input = dirInput(op);
    if (input.f !== 'readdir') return { drop: false, input, output: 'ok' };
    const v = op.completionValue;
    if (!Array.isArray(v)) throw bad(op, `readdir returns a list of names, got ${showValue(v)}`);
    return { drop: false, input, output: v.map((n) => dirName(op, n, 'a listed name')).sort() };
  },
  failed(op) {
    const input = dirInput(op);
    const observed = op.error === undefined ? undefined : DIR_ERRORS[op.error];
    // EEXIST/ENOENT say what the directory held; any other failure is a plain no-effect.
    if (input.f !== 'readdir' && observed !== undefined) return { drop: false, input, output: observed };
    return DROP;
  },
  unknown(op) {
    const input = dirInput(op);
    if (input.f === 'readdir') return DROP;
    return { drop: false, input, output: undefined };
  },
};

export const MODELS = { register: registerModel, kv: kvModel, path: pathModel, dir: dirModel } as const;
export type ModelName = keyof typeof MODELS;
