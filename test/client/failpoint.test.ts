/** The failpoint mechanism: spec parsing, arming in-process, error/delay/nth-hit, and a real crash. */
import { describe, it, expect, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import {
  parseFailpointSpec,
  armFailpoint,
  disarmAllFailpoints,
  failpoint,
  failpointHits,
} from '../../src/common/failpoint.js';
import { REPO_ROOT } from '../helpers/env.js';

afterEach(() => disarmAllFailpoints());

describe('failpoints', () => {
  it('parses a spec and rejects bad entries with EINVAL naming them', () => {
    const m = parseFailpointSpec('a.b=crash, c-d=delay:20@2 ,e=error');
    expect(m.get('a.b')).toEqual({ action: { kind: 'crash' }, onHit: undefined });
    expect(m.get('c-d')).toEqual({ action: { kind: 'delay', delayMs: 20 }, onHit: 2 });
    expect(m.get('e')!.action.kind).toBe('error');
    for (const bad of ['x', 'x=boom', 'x=delay:', 'X=crash', 'x=crash@0']) {
      expect(() => parseFailpointSpec(bad)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    }
  });

  it('unarmed points return undefined; error fires on the chosen hit only', async () => {
    expect(failpoint('nothing.here')).toBeUndefined();
    armFailpoint('p.err', 'error@2');
    await failpoint('p.err');
    await expect(Promise.resolve().then(() => failpoint('p.err'))).rejects.toMatchObject({ code: 'EIO' });
    await failpoint('p.err');
    expect(failpointHits('p.err')).toBe(3);
  });

  it('delay waits and goes on', async () => {
    armFailpoint('p.delay', 'delay:30');
    let done = false;
    const p = Promise.resolve(failpoint('p.delay')).then(() => (done = true));
    expect(done).toBe(false);
    await p;
    expect(done).toBe(true);
  });

  it('crash kills the process with SIGKILL, armed from CAIRN_FAILPOINTS', async () => {
    const code = `import { failpoint } from './src/common/failpoint.ts'; process.stdout.write('before\\n'); await failpoint('t.crash'); process.stdout.write('after\\n');`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: REPO_ROOT,
      env: { ...process.env, CAIRN_FAILPOINTS: 't.crash=crash' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const signal = await new Promise<NodeJS.Signals | null>((r) => child.on('close', (_c, s) => r(s)));
    expect(signal).toBe('SIGKILL');
    expect(out).toContain('before');
    expect(out).not.toContain('after');
  });
});
