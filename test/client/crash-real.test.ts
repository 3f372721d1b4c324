/**
 * kill -9 at commit failpoints against the REAL services (3-node metadata cluster, three chunk
 * servers, EC 2+1): a child applies version B over a committed version A in strong mode and
 * SIGKILLs itself at the failpoint; the committed file is A before the compare-and-set and B from
 * it on, never a mix; a restarted client on the child's cache finishes the commit to durable.
 * Three representative steps (the stand-in test, crash.test.ts, covers all seven).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnFs } from '../../src/client/index.js';
import { FAILPOINTS } from '../../src/client/pipeline.js';
import { eventually, tempDir, REPO_ROOT } from '../helpers/env.js';
import { startRealServices, type RealServices } from './helpers/real-services.js';
import { CHUNK, applyAll, contentA, mutationsB } from './fixtures/crash-plan.js';

const WRITER = join(REPO_ROOT, 'test', 'client', 'fixtures', 'crash-writer.ts');

let base: { path: string; remove: () => Promise<void> };
let svc: RealServices;
const started: CairnFs[] = [];

async function client(cache: string): Promise<CairnFs> {
  const fs = await CairnFs.start(
    { cacheDir: join(base.path, cache), chunker: { kind: 'fixed', sizeBytes: CHUNK }, retryBaseMs: 20, idleCommitDelayMs: 600_000 },
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
  base = await tempDir('cairn-client-crash-real-');
  svc = await startRealServices(base.path);
}, 60_000);

afterAll(async () => {
  for (const fs of started.splice(0)) await fs.shutdown();
  await svc?.close();
  await base?.remove();
});

describe('kill -9 at a commit failpoint, real services', () => {
  const A = contentA();
  const B = applyAll(A, mutationsB());

  it.each([['client.after-store'], ['client.after-meta-commit'], ['client.before-cache-drop']] as const)('%s', async (fp) => {
    // Every case starts from version A of /f (a new version over the previous case's B).
    const setup = await client(`setup-${fp}`);
    const fd = await setup.open('/f', { create: true, mode: 'strong' });
    await setup.truncate(fd, 0);
    await setup.write(fd, A, 0);
    await setup.close(fd);
    await eventually(async () => (await readdir(join(base.path, `setup-${fp}`, 'files'))).length === 0);

    const cache = join(base.path, `cache-${fp}`);
    const child = spawn(process.execPath, ['--import', 'tsx', WRITER, 'strong', cache, base.path], {
      cwd: REPO_ROOT,
      env: { ...process.env, CAIRN_FAILPOINTS: `${fp}=crash`, CAIRN_TEST_SERVICES: JSON.stringify(svc.spec), CAIRN_LOG_LEVEL: 'silent' },
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
    expect((await committed('/f', `${fp}-1`)).equals(casDone ? B : A)).toBe(true);

    const fs = await client(`cache-${fp}`);
    await eventually(async () => (await readdir(join(cache, 'files'))).length === 0, 30_000);
    expect((await committed('/f', `${fp}-2`)).equals(B)).toBe(true);
    const l = await svc.metaClient.layout('/f');
    expect((await svc.metaClient.commitStatus(l.attr.ino, l.attr.version)).state).toBe('durable');
    await fs.shutdown();
  });
});
