/**
 * kill -9 of the writer while a file crosses the inline threshold, against the REAL services:
 * a child replaces an inline file with a chunked version (grow) or a chunked file with an inline
 * version (shrink) in strong mode and SIGKILLs itself at a commit failpoint. The committed file is
 * the old version before the compare-and-set and the new one from it on — never a mix — and a
 * restarted client on the child's cache finishes the commit (durable, cache dropped).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnFs } from '../../src/client/index.js';
import { FAILPOINTS } from '../../src/client/pipeline.js';
import { eventually, tempDir, REPO_ROOT } from '../helpers/env.js';
import { startRealServices, type RealServices } from './helpers/real-services.js';
import { CHUNK, pseudoRandom } from './fixtures/crash-plan.js';

const WRITER = join(REPO_ROOT, 'test', 'client', 'fixtures', 'crash-writer.ts');
const INLINE = 16 * 1024;

let base: { path: string; remove: () => Promise<void> };
let svc: RealServices;
const started: CairnFs[] = [];

async function client(cache: string): Promise<CairnFs> {
  const fs = await CairnFs.start(
    { cacheDir: join(base.path, cache), chunker: { kind: 'fixed', sizeBytes: CHUNK }, retryBaseMs: 20, idleCommitDelayMs: 600_000, inlineMaxBytes: INLINE },
    { meta: svc.meta, chunks: svc.chunks },
  );
  started.push(fs);
  return fs;
}

async function committed(path: string, tag: string): Promise<Buffer> {
  const fs = await client(`reader-${tag}`);
  const fd = await fs.open(path);
  const b = await fs.read(fd, (await fs.stat(path)).size + 1, 0);
  await fs.close(fd);
  return b;
}

beforeAll(async () => {
  base = await tempDir('cairn-client-crash-inline-');
  svc = await startRealServices(base.path);
}, 60_000);

afterAll(async () => {
  for (const fs of started.splice(0)) await fs.shutdown();
  await svc?.close();
  await base?.remove();
});

describe('kill -9 of the writer while a file crosses the inline threshold', () => {
  const cases = [
    ['grow', 'client.after-store'], ['grow', 'client.before-meta-commit'], ['grow', 'client.after-meta-commit'],
    ['shrink', 'client.after-store'], ['shrink', 'client.after-meta-commit'], ['shrink', 'client.before-cache-drop'],
  ] as const;
  it.each(cases)('%s, killed at %s', async (kind, fp) => {
    const path = `/${kind}-${fp.replace('client.', '')}`;
    const oldBytes = kind === 'grow' ? pseudoRandom(`${path}-old`, 5_000) : pseudoRandom(`${path}-old`, 3 * CHUNK + 7);
    const newSize = kind === 'grow' ? 3 * CHUNK + 11 : 4_000;
    const newBytes = pseudoRandom(`${path}-new`, newSize);
    const setup = await client(`setup${path}`);
    const fd = await setup.open(path, { create: true, mode: 'strong' });
    await setup.write(fd, oldBytes, 0);
    await setup.close(fd);
    expect((await svc.metaClient.layout(path)).inline !== undefined).toBe(kind === 'grow');
    await eventually(async () => (await readdir(join(base.path, `setup${path}`, 'files'))).length === 0);

    const cache = join(base.path, `cache${path}`);
    const child = spawn(process.execPath, ['--import', 'tsx', WRITER, `replace:${path}:${path}-new:${newSize}`, cache, base.path], {
      cwd: REPO_ROOT,
      env: { ...process.env, CAIRN_FAILPOINTS: `${fp}=crash`, CAIRN_TEST_SERVICES: JSON.stringify(svc.spec), CAIRN_TEST_INLINE_MAX: String(INLINE), CAIRN_LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const signal = await new Promise<NodeJS.Signals | null>((r) => child.on('close', (_c, s) => r(s)));
    clearTimeout(timer);
    expect(signal, `child should die at ${fp}; stderr: ${stderr.slice(-2000)}`).toBe('SIGKILL');
    expect(stdout).toContain('written');

    const casDone = FAILPOINTS.indexOf(fp) >= FAILPOINTS.indexOf('client.after-meta-commit');
    expect((await committed(path, `${kind}-${fp}-1`)).equals(casDone ? newBytes : oldBytes)).toBe(true);

    const fs = await client(`cache${path}`);
    await eventually(async () => (await readdir(join(cache, 'files'))).length === 0, 30_000);
    expect((await committed(path, `${kind}-${fp}-2`)).equals(newBytes)).toBe(true);
    const l = await svc.metaClient.layout(path);
    expect(l.inline !== undefined).toBe(kind === 'shrink');
    expect((await svc.metaClient.commitStatus(l.attr.ino, l.attr.version)).state).toBe('durable');
    await fs.shutdown();
  });
});
