/**
 * Tests of the linearizability checker: the third-party histories with known answers (every file in
 * test/jepsen-lite/testdata/linearizability, vendored, timed and logged), hand-built histories for each anomaly and
 * for the legal cases that a too-strict checker would reject, random histories cross-checked against
 * a brute-force checker, and the check-history command's answers and exit codes.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CairnError } from '../../src/common/errors.js';
import { spawn } from 'node:child_process';
import { REPO_ROOT, tempDir } from '../helpers/env.js';
import { checkWithModel, formatResult } from './checker/check.js';
import { pairEvents, parseHistory, type PairedOp } from './checker/history.js';
import { registerModel, type ModelName, type RegisterInput, type RegisterOutput } from './checker/models.js';
import type { Operation } from './checker/wgl.js';
import { searchLinearization } from './checker/wgl.js';

/** Vendored with their licence (test/jepsen-lite/testdata/linearizability/LICENSE-porcupine.md). */
const TESTDATA = join(REPO_ROOT, 'test', 'jepsen-lite', 'testdata', 'linearizability');

/** The answers from TESTDATA/README.md; every file in the folders must appear here. */
const EXPECTED: Record<string, { model: ModelName; linearizable: boolean }> = {
  'kv/c01-ok.txt': { model: 'kv', linearizable: true },
  'kv/c10-ok.txt': { model: 'kv', linearizable: true },
  'kv/c50-ok.txt': { model: 'kv', linearizable: true },
  'kv/c01-bad.txt': { model: 'kv', linearizable: false },
  'kv/c10-bad.txt': { model: 'kv', linearizable: false },
  'kv/c50-bad.txt': { model: 'kv', linearizable: false },
  ...Object.fromEntries(
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => [`jepsen-etcd/etcd_00${i}.log`, { model: 'register' as const, linearizable: [2, 5, 7].includes(i) }]),
  ),
};

describe('third-party histories with known answers', () => {
  it('the vendored test data folder holds every history with a known answer', () => {
    // Fail loudly rather than skip: these files are the checker's ground truth.
    expect(existsSync(TESTDATA), `missing ${TESTDATA}`).toBe(true);
    const present = ['kv', 'jepsen-etcd'].flatMap((d) => readdirSync(join(TESTDATA, d)).map((f) => `${d}/${f}`)).sort();
    expect(present).toEqual(Object.keys(EXPECTED).sort());
  });

  const timings: string[] = [];
  afterAll(() => {
    if (timings.length > 0) process.stderr.write(`checker times:\n${timings.join('\n')}\n`);
  });

  for (const [file, want] of Object.entries(EXPECTED)) {
    it(`${file} is ${want.linearizable ? '' : 'not '}linearizable`, () => {
      const path = join(TESTDATA, file);
      const started = performance.now();
      const { events } = parseHistory(readFileSync(path, 'utf8'), path);
      const result = checkWithModel(want.model, pairEvents(events));
      timings.push(`  ${file}: ${(performance.now() - started).toFixed(0)} ms, ${result.configurations} configurations`);
      expect(result.verdict).toBe(want.linearizable ? 'linearizable' : 'not linearizable');
      if (!want.linearizable) expect(result.violations[0]?.prefixOps).toBeGreaterThan(0);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Hand-built histories. h(...) takes [process, f, invokeValue, callTime, retTime|null, outcome, completionValue, key?].

type Row = [process: number, f: string, value: unknown, call: number, ret: number | null, outcome: 'ok' | 'fail' | 'unknown', out?: unknown, key?: string];

function h(rows: Row[]): PairedOp[] {
  return rows.map(([process, f, value, call, ret, outcome, out, key]) => ({
    process: String(process),
    f,
    key,
    invokeValue: value,
    outcome,
    completionValue: out,
    error: undefined,
    call: BigInt(call),
    ret: ret === null ? undefined : BigInt(ret),
    callAt: `t${call}`,
    retAt: ret === null ? 'never' : `t${ret}`,
  }));
}

const verdict = (model: ModelName, rows: Row[]): string => checkWithModel(model, h(rows)).verdict;

describe('register: anomalies are found', () => {
  it('a stale read: a read that begins after a write completed returns the old value', () => {
    const rows: Row[] = [
      [0, 'write', 1, 0, 1, 'ok'],
      [1, 'write', 2, 2, 3, 'ok'],
      [2, 'read', null, 4, 5, 'ok', 1],
    ];
    expect(verdict('register', rows)).toBe('not linearizable');
    const r = checkWithModel('register', h(rows));
    expect(r.violations[0]!.blocked.description).toBe('read -> 1');
    expect(r.violations[0]!.statesBefore).toEqual(['2']);
    expect(formatResult(r)).toContain('read -> 1');
  });

  it('a lost write: an acknowledged write is never seen, reads return the value before it', () => {
    expect(
      verdict('register', [
        [0, 'write', 1, 0, 1, 'ok'],
        [1, 'write', 2, 2, 3, 'ok'],
        [0, 'read', null, 4, 5, 'ok', 2],
        [2, 'write', 3, 6, 7, 'ok'],
        [1, 'read', null, 8, 9, 'ok', 2],
      ]),
    ).toBe('not linearizable');
  });

  it('a CAS that succeeds twice from the same value', () => {
    expect(
      verdict('register', [
        [0, 'write', 0, 0, 1, 'ok'],
        [1, 'cas', [0, 1], 2, 6, 'ok'],
        [2, 'cas', [0, 2], 3, 7, 'ok'],
      ]),
    ).toBe('not linearizable');
  });

  it('a failed CAS whose compare must have matched (nothing else could have changed the value)', () => {
    expect(
      verdict('register', [
        [0, 'write', 5, 0, 1, 'ok'],
        [1, 'cas', [5, 6], 2, 3, 'fail'],
      ]),
    ).toBe('not linearizable');
  });

  it('a read of a value nobody wrote', () => {
    expect(verdict('register', [[0, 'read', null, 0, 1, 'ok', 9]])).toBe('not linearizable');
  });
});

describe('register: legal histories are accepted', () => {
  it('concurrent overlapping writes and reads in an order different from their invocation', () => {
    expect(
      verdict('register', [
        [0, 'write', 1, 0, 10, 'ok'],
        [1, 'write', 2, 1, 11, 'ok'],
        [2, 'read', null, 2, 3, 'ok', 2],
        [3, 'read', null, 4, 5, 'ok', 1],
        [2, 'read', null, 12, 13, 'ok', 1],
      ]),
    ).toBe('linearizable');
  });

  it('both CASes succeed when they chain (0→1, then 1→2) even if invoked in the other order', () => {
    expect(
      verdict('register', [
        [0, 'write', 0, 0, 1, 'ok'],
        [1, 'cas', [1, 2], 2, 6, 'ok'],
        [2, 'cas', [0, 1], 3, 5, 'ok'],
        [0, 'read', null, 7, 8, 'ok', 2],
      ]),
    ).toBe('linearizable');
  });

  it('an unknown-outcome write may take effect long after its invocation (after later ops completed)', () => {
    expect(
      verdict('register', [
        [0, 'write', 1, 0, null, 'unknown'],
        [1, 'read', null, 5, 6, 'ok', null],
        [1, 'write', 2, 7, 8, 'ok'],
        [1, 'read', null, 9, 10, 'ok', 2],
        [2, 'read', null, 11, 12, 'ok', 1],
      ]),
    ).toBe('linearizable');
  });

  it('an unknown-outcome write may never take effect', () => {
    expect(
      verdict('register', [
        [0, 'write', 0, 0, 1, 'ok'],
        [1, 'write', 1, 2, null, 'unknown'],
        [2, 'read', null, 3, 4, 'ok', 0],
        [2, 'read', null, 100, 101, 'ok', 0],
      ]),
    ).toBe('linearizable');
  });

  it('but an unknown-outcome write cannot take effect before it was invoked', () => {
    expect(
      verdict('register', [
        [0, 'read', null, 0, 1, 'ok', 7],
        [1, 'write', 7, 2, null, 'unknown'],
      ]),
    ).toBe('not linearizable');
  });

  it('an unknown-outcome CAS may have succeeded, and a timed-out read is dropped', () => {
    const rows: Row[] = [
      [0, 'write', 0, 0, 1, 'ok'],
      [1, 'cas', [0, 3], 2, null, 'unknown'],
      [2, 'read', null, 4, null, 'unknown'],
      [2 + 1, 'read', null, 5, 6, 'ok', 3],
    ];
    expect(verdict('register', rows)).toBe('linearizable');
    const r = checkWithModel('register', h(rows));
    expect(r.operations.dropped).toBe(1);
    expect(r.operations.unknownOutcome).toBe(1);
  });

  it('a failed CAS is a no-effect: the value stays', () => {
    expect(
      verdict('register', [
        [0, 'write', 1, 0, 1, 'ok'],
        [1, 'cas', [0, 5], 2, 3, 'fail'],
        [1, 'read', null, 4, 5, 'ok', 1],
      ]),
    ).toBe('linearizable');
  });

  it('independent keys are checked on their own (a register per key)', () => {
    const rows: Row[] = [
      [0, 'write', 1, 0, 1, 'ok', undefined, 'a'],
      [1, 'write', 2, 0, 1, 'ok', undefined, 'b'],
      [0, 'read', null, 2, 3, 'ok', 1, 'a'],
      [1, 'read', null, 2, 3, 'ok', 1, 'b'],
    ];
    const r = checkWithModel('register', h(rows));
    expect(r.verdict).toBe('not linearizable');
    expect(r.keys).toBe(2);
    expect(r.violations.map((v) => v.key)).toEqual(['b']);
  });
});

describe('kv model', () => {
  it('append order must agree with what gets observe', () => {
    expect(
      verdict('kv', [
        [0, 'append', 'a', 0, 10, 'ok', undefined, 'k'],
        [1, 'append', 'b', 0, 10, 'ok', undefined, 'k'],
        [2, 'get', null, 11, 12, 'ok', 'ba', 'k'],
      ]),
    ).toBe('linearizable');
    expect(
      verdict('kv', [
        [0, 'append', 'a', 0, 10, 'ok', undefined, 'k'],
        [1, 'append', 'b', 0, 10, 'ok', undefined, 'k'],
        [2, 'get', null, 11, 12, 'ok', 'ba', 'k'],
        [2, 'get', null, 13, 14, 'ok', 'ab', 'k'],
      ]),
    ).toBe('not linearizable');
  });

  it('a put replaces; a lost append is found', () => {
    expect(
      verdict('kv', [
        [0, 'put', 'x', 0, 1, 'ok', undefined, 'k'],
        [0, 'append', 'y', 2, 3, 'ok', undefined, 'k'],
        [1, 'get', null, 4, 5, 'ok', 'x', 'k'],
      ]),
    ).toBe('not linearizable');
  });

  it('an unknown append may land later or never', () => {
    const base: Row[] = [
      [0, 'put', 'x', 0, 1, 'ok', undefined, 'k'],
      [1, 'append', 'y', 2, null, 'unknown', undefined, 'k'],
      [2, 'get', null, 3, 4, 'ok', 'x', 'k'],
    ];
    expect(verdict('kv', [...base, [2, 'get', null, 5, 6, 'ok', 'xy', 'k']])).toBe('linearizable');
    expect(verdict('kv', [...base, [2, 'get', null, 5, 6, 'ok', 'x', 'k']])).toBe('linearizable');
    expect(verdict('kv', [...base, [2, 'get', null, 5, 6, 'ok', 'xyy', 'k']])).toBe('not linearizable');
  });
});

describe('path model (a Cairn path as a versioned register)', () => {
  it('versions advance by one per write and a CAS needs the current version', () => {
    expect(
      verdict('path', [
        [0, 'write', 'a', 0, 1, 'ok', { version: 1 }, '/f'],
        [1, 'cas', { expectedVersion: 1, value: 'b' }, 2, 3, 'ok', { version: 2 }, '/f'],
        [2, 'read', null, 4, 5, 'ok', { value: 'b', version: 2 }, '/f'],
        [2, 'cas', [1, 'c'], 6, 7, 'fail', undefined, '/f'],
      ]),
    ).toBe('linearizable');
  });

  it('two CASes from the same version cannot both succeed', () => {
    expect(
      verdict('path', [
        [0, 'write', 'a', 0, 1, 'ok', undefined, '/f'],
        [1, 'cas', [1, 'b'], 2, 5, 'ok', undefined, '/f'],
        [2, 'cas', [1, 'c'], 2, 5, 'ok', undefined, '/f'],
      ]),
    ).toBe('not linearizable');
  });

  it('a read must see the version and value of the latest completed write', () => {
    expect(
      verdict('path', [
        [0, 'write', 'a', 0, 1, 'ok', undefined, '/f'],
        [0, 'write', 'b', 2, 3, 'ok', undefined, '/f'],
        [1, 'read', null, 4, 5, 'ok', { value: 'a', version: 1 }, '/f'],
      ]),
    ).toBe('not linearizable');
  });
});

describe('dir model (names in one directory)', () => {
  // For the dir model a failed operation carries its error code as the observation.
  const hd = (rows: [process: number, f: string, value: unknown, call: number, ret: number | null, outcome: 'ok' | 'fail' | 'unknown', out?: unknown, error?: string][]): PairedOp[] =>
    rows.map(([process, f, value, call, ret, outcome, out, error]) => ({
      process: String(process),
      f,
      key: '/d',
      invokeValue: value,
      outcome,
      completionValue: out,
      error,
      call: BigInt(call),
      ret: ret === null ? undefined : BigInt(ret),
      callAt: `t${call}`,
      retAt: ret === null ? 'never' : `t${ret}`,
    }));

  it('exclusive create, rename without replace and readdir agree with one order', () => {
    expect(
      checkWithModel(
        'dir',
        hd([
          [0, 'create', 'a', 0, 1, 'ok'],
          [1, 'create', 'a', 2, 3, 'fail', undefined, 'EEXIST'],
          [0, 'rename', ['a', 'b'], 4, 8, 'ok'],
          [1, 'readdir', null, 5, 6, 'ok', ['a']], // overlaps the rename: before it
          [2, 'unlink', 'a', 9, 10, 'fail', undefined, 'ENOENT'],
          [2, 'readdir', null, 11, 12, 'ok', ['b']],
        ]),
      ).verdict,
    ).toBe('linearizable');
  });

  it('two exclusive creates of one name cannot both succeed', () => {
    expect(
      checkWithModel(
        'dir',
        hd([
          [0, 'create', 'a', 0, 5, 'ok'],
          [1, 'create', 'a', 1, 6, 'ok'],
        ]),
      ).verdict,
    ).toBe('not linearizable');
  });

  it('a name that was renamed away is not listed afterwards, and ENOENT is an observation', () => {
    expect(
      checkWithModel(
        'dir',
        hd([
          [0, 'create', 'a', 0, 1, 'ok'],
          [0, 'rename', ['a', 'b'], 2, 3, 'ok'],
          [1, 'readdir', null, 4, 5, 'ok', ['a', 'b']],
        ]),
      ).verdict,
    ).toBe('not linearizable');
    expect(
      checkWithModel(
        'dir',
        hd([
          [0, 'create', 'a', 0, 1, 'ok'],
          [1, 'unlink', 'a', 2, 3, 'fail', undefined, 'ENOENT'],
        ]),
      ).verdict,
    ).toBe('not linearizable');
  });

  it('an unknown-outcome create may appear later; a failure for another reason is no effect', () => {
    expect(
      checkWithModel(
        'dir',
        hd([
          [0, 'create', 'a', 0, null, 'unknown'],
          [1, 'readdir', null, 1, 2, 'ok', []],
          [1, 'unlink', 'x', 3, 4, 'fail', undefined, 'EUNAVAIL'],
          [1, 'readdir', null, 5, 6, 'ok', ['a']],
        ]),
      ).verdict,
    ).toBe('linearizable');
  });
});

// ---------------------------------------------------------------------------------------------
// Random small histories: the search agrees with a brute force over all orders.

type RegOp = Operation<RegisterInput, RegisterOutput>;

function bruteForce(ops: RegOp[]): boolean {
  const n = ops.length;
  const used = new Array<boolean>(n).fill(false);
  const finite = ops.filter((o) => o.ret !== Infinity).length;
  const go = (state: RegisterOutput, doneFinite: number): boolean => {
    if (doneFinite === finite) return true;
    // An op may come next only if no unused op returned before it was called.
    for (let i = 0; i < n; i++) {
      if (used[i]) continue;
      const op = ops[i]!;
      if (ops.some((o, j) => !used[j] && j !== i && o.ret < op.call)) continue;
      const next = registerModel.step(state, op.input, op.output);
      if (next === undefined) continue;
      used[i] = true;
      const ok = go(next, doneFinite + (op.ret !== Infinity ? 1 : 0));
      used[i] = false;
      if (ok) return true;
    }
    return false;
  };
  return go(registerModel.init(), 0);
}

describe('search against brute force', () => {
  it('agrees on random register histories of up to 7 operations (with unknown outcomes)', () => {
    const value = fc.integer({ min: 0, max: 2 });
    const opArb = fc.record({
      kind: fc.constantFrom('read', 'write', 'cas', 'casfail'),
      a: value,
      b: value,
      call: fc.integer({ min: 0, max: 20 }),
      len: fc.integer({ min: 0, max: 8 }),
      unknown: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 7 }), (spec) => {
        const ops: RegOp[] = spec.map((s, id) => {
          const unknown = s.unknown && s.kind !== 'read';
          const input = s.kind === 'read' ? { f: 'read' as const } : s.kind === 'write' ? { f: 'write' as const, value: s.a } : { f: 'cas' as const, expected: s.a, value: s.b };
          const output = unknown ? undefined : s.kind === 'read' ? s.b : s.kind === 'cas' ? true : s.kind === 'casfail' ? false : null;
          return { id, process: String(id), call: s.call, ret: unknown ? Infinity : s.call + s.len, input, output, callAt: '', retAt: '' };
        });
        const r = searchLinearization(registerModel, ops);
        expect(r.kind === 'ok').toBe(bruteForce(ops));
      }),
      { numRuns: 400, seed: 7 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Parsing and the command.

describe('history files', () => {
  it('parses the three formats and rejects malformed lines with the file and line', () => {
    const kv = parseHistory('{:process 0, :type :invoke, :f :put, :key "k", :value "v"}\n', 'h.txt');
    expect(kv.format).toBe('jepsen-kv');
    expect(kv.events[0]).toMatchObject({ process: '0', type: 'invoke', f: 'put', key: 'k', value: 'v' });
    const etcd = parseHistory('noise\nINFO  jepsen.util - 3\t:invoke\t:cas\t[1 4]\nINFO  jepsen.util - 3\t:fail\t:cas\t[1 4]\n', 'e.log');
    expect(etcd.format).toBe('jepsen-etcd');
    expect(etcd.events.map((e) => [e.type, e.value])).toEqual([
      ['invoke', [1, 4]],
      ['fail', [1, 4]],
    ]);
    const cairn = parseHistory('{"process":1,"type":"invoke","f":"read","key":"/a","time_ns":"12"}\n', 'c.jsonl');
    expect(cairn.format).toBe('cairn');
    expect(cairn.events[0]!.time).toBe(12n);

    const bad = (text: string, format: 'auto' | 'cairn' | 'jepsen-kv' = 'auto'): CairnError => {
      try {
        parseHistory(text, 'bad.txt', format);
      } catch (err) {
        return err as CairnError;
      }
      throw new Error('expected an error');
    };
    expect(bad('{"process":1,"type":"begin","f":"read","time_ns":1}').message).toMatch(/bad\.txt:1: type/);
    expect(bad('{"process":1,"type":"ok","f":"read"}', 'cairn').message).toMatch(/time_ns/);
    expect(bad('{:process 0, :type :invoke, :f :put, :value "v}', 'jepsen-kv').message).toMatch(/unterminated string/);
    expect(bad('hello world').code).toBe('EINVAL');
    expect(() => pairEvents(parseHistory('{"process":1,"type":"ok","f":"read","time_ns":1}', 'x').events)).toThrow(/never invoked/);
  });

  it('rejects values a model cannot use', () => {
    expect(() => checkWithModel('register', h([[0, 'cas', 5, 0, 1, 'ok']]))).toThrow(/cas needs \[expected new\]/);
    expect(() => checkWithModel('kv', h([[0, 'delete', 'x', 0, 1, 'ok']]))).toThrow(/kv model knows get, put and append/);
  });
});

/** Run a TypeScript entry point of this repository as a real process. */
async function runScript(script: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, script), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

describe('check-history command', () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await tempDir('cairn-check-history-');
  });
  afterAll(async () => {
    await dir.remove();
  });

  const cairnLines = (rows: Row[]): string =>
    rows
      .flatMap(([process, f, value, call, ret, outcome, out, key]) => [
        { process, type: 'invoke', f, key, value, time_ns: call },
        ...(ret === null ? [] : [{ process, type: outcome, f, key, value: out ?? value, time_ns: ret }]),
      ])
      .sort((a, b) => a.time_ns - b.time_ns)
      .map((o) => JSON.stringify(o))
      .join('\n');

  it('exits 0 for linearizable, 1 with the failing window otherwise, 2 for usage errors and bad files', async () => {
    const good = join(dir.path, 'good.jsonl');
    const stale = join(dir.path, 'stale.jsonl');
    const broken = join(dir.path, 'broken.jsonl');
    writeFileSync(good, cairnLines([[0, 'write', 1, 0, 2, 'ok'], [1, 'read', null, 1, 3, 'ok', 1]]));
    writeFileSync(stale, cairnLines([[0, 'write', 1, 0, 1, 'ok'], [1, 'read', null, 2, 3, 'ok', null]]));
    writeFileSync(broken, '{"process":1,"type":"invoke"}\n');
    const ok = await runScript('test/jepsen-lite/check-history.ts', ['--model', 'register', good]);
    expect(ok.stdout.split('\n')[0]).toBe('linearizable');
    expect(ok.code).toBe(0);
    const bad = await runScript('test/jepsen-lite/check-history.ts', ['--model', 'register', '--format', 'cairn', stale]);
    expect(bad.stdout.split('\n')[0]).toBe('not linearizable');
    expect(bad.stdout).toContain('read -> nil');
    expect(bad.code).toBe(1);
    const usage = await runScript('test/jepsen-lite/check-history.ts', ['--model', 'graph', good]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('unknown model');
    const malformed = await runScript('test/jepsen-lite/check-history.ts', ['--model', 'register', broken]);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/broken\.jsonl:1: f/);
    const missing = await runScript('test/jepsen-lite/check-history.ts', ['--model', 'kv', join(dir.path, 'nope.txt')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('ENOENT');
  });
});
