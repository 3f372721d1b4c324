/**
 * Crash safety of the client with real kill -9: a child process applies version B over a
 * committed version A in strong mode and is killed (SIGKILL, by its own failpoint) at each
 * step of the commit. After each crash the file is exactly A or exactly B as any other node
 * reads it, and a restarted daemon on the same cache finishes the commit (B, durable, cache
 * dropped). Also: weak writes acknowledged before a kill -9 are all there after restart.
 *
 * Metadata and chunks are the directory-backed stand-ins (helpers/stub-ports.ts), which
 * outlive the child; this proves the client's journal, intent and recovery, not the services.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir, eventually, REPO_ROOT } from '../helpers/env.js';
import { CairnFs } from '../../src/client/index.js';
import { FAILPOINTS } from '../../src/client/pipeline.js';
import { StubMeta, StubChunks } from './helpers/stub-ports.js';
import { CHUNK, applyAll, contentA, mutationsB, pseudoRandom } from './fixtures/crash-plan.js';

const WRITER = join(REPO_ROOT, 'test', 'client', 'fixtures', 'crash-writer.ts');

let dir: { path: string; remove: () => Promise<void> };
const started: CairnFs[] = [];

function ports(): { meta: StubMeta; chunks: StubChunks } {
  return { meta: new StubMeta(join(dir.path, 'meta')), chunks: new StubChunks(join(dir.path, 'store')) };
}

async function startFs(cache: string): Promise<CairnFs> {
  const fs = await CairnFs.start(
    { cacheDir: join(dir.path, cache), chunker: { kind: 'fixed', sizeBytes: CHUNK }, retryBaseMs: 5, idleCommitDelayMs: 600_000 },
    ports(),
  );
  started.push(fs);
  return fs;
}

/** What a node with an empty cache reads: the committed version only. */
async function committedContent(tag: string): Promise<Buffer> {
  const fs = await startFs(`reader-${tag}`);
  const fd = await fs.open('/f');
  const st = await fs.stat('/f');
  const b = await fs.read(fd, st.size + 1, 0);
  await fs.close(fd);
  return b;
}

function runChild(args: string[], env: Record<string, string>, onLine?: (line: string, kill: () => void) => void) {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    if (onLine) for (const l of d.split('\n')) if (l) onLine(l, () => child.kill('SIGKILL'));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
}

beforeEach(async () => {
  dir = await tempDir('cairn-crash-');
});

afterEach(async () => {
  for (const fs of started.splice(0)) await fs.shutdown();
  await dir.remove();
});

describe('kill -9 at every failpoint of a strong-mode commit', () => {
  const A = contentA();
  const B = applyAll(A, mutationsB());

  it.each(FAILPOINTS.map((f) => [f]))('%s: the file is A or B, never a mix; restart finishes B', async (fp) => {
    const setup = await startFs('setup');
    const fd = await setup.open('/f', { create: true, mode: 'strong' });
    await setup.write(fd, A, 0);
    await setup.close(fd);

    const r = await runChild(['strong', join(dir.path, 'cache'), dir.path], { CAIRN_FAILPOINTS: `${fp}=crash`, CAIRN_LOG_LEVEL: 'silent' });
    expect(r.signal, `child should die at ${fp}; stderr: ${r.stderr.slice(-2000)}`).toBe('SIGKILL');
    expect(r.stdout).toContain('written');
    expect(r.stdout).not.toContain('durable');

    const seen = await committedContent('after-crash');
    expect(seen.equals(A) || seen.equals(B), `committed content after crash at ${fp} is neither A nor B`).toBe(true);
    // Before the compare-and-set nothing is visible; from it on, B is.
    const casDone = FAILPOINTS.indexOf(fp) >= FAILPOINTS.indexOf('client.after-meta-commit');
    expect(seen.equals(casDone ? B : A), `after a crash at ${fp} readers should see ${casDone ? 'B' : 'A'}`).toBe(true);

    const fs = await startFs('cache');
    await eventually(async () => (await fs.commitStatus('/f')).state === 'durable' || (await readdir(join(dir.path, 'cache', 'files'))).length === 0);
    await eventually(async () => (await readdir(join(dir.path, 'cache', 'files'))).length === 0);
    expect((await committedContent('after-restart')).equals(B)).toBe(true);
    const attr = await ports().meta.lookup('/f');
    expect((await ports().meta.commitStatus(attr!.fileId, attr!.version))!.state).toBe('durable');
  });
});

describe('kill -9 after a strong fsync returned', () => {
  it('the acknowledged version is never lost: a crash in the next commit leaves B or C, and restart gives C', async () => {
    const A = contentA();
    const B = applyAll(A, mutationsB());
    const C = applyAll(B, [{ kind: 'write', offset: CHUNK, data: pseudoRandom('C', 3 * CHUNK) }]);
    const setup = await startFs('setup');
    const fd = await setup.open('/f', { create: true, mode: 'strong' });
    await setup.write(fd, A, 0);
    await setup.close(fd);
    const r = await runChild(['strong-two', join(dir.path, 'cache'), dir.path], {
      CAIRN_FAILPOINTS: 'client.after-store=crash@2',
      CAIRN_LOG_LEVEL: 'silent',
    });
    expect(r.signal, r.stderr.slice(-2000)).toBe('SIGKILL');
    expect(r.stdout).toContain('durable\n');
    expect(r.stdout).not.toContain('durable C');
    expect((await committedContent('after-crash')).equals(B)).toBe(true);
    await startFs('cache');
    await eventually(async () => (await readdir(join(dir.path, 'cache', 'files'))).length === 0);
    expect((await committedContent('after-restart')).equals(C)).toBe(true);
  });
});

describe('kill -9 during weak writes', () => {
  it('every write acknowledged before the kill is in the cache after restart and gets committed', async () => {
    let acked = -1;
    const r = await runChild(['weak-loop', join(dir.path, 'cache'), dir.path], { CAIRN_LOG_LEVEL: 'silent' }, (line, kill) => {
      const m = /^ack (\d+)$/.exec(line);
      if (m) {
        acked = Math.max(acked, Number(m[1]));
        if (acked >= 40) kill();
      }
    });
    expect(r.signal).toBe('SIGKILL');
    expect(acked).toBeGreaterThanOrEqual(40);
    const fs = await startFs('cache');
    const fd = await fs.open('/loop');
    for (let i = 0; i <= acked; i++) {
      const got = await fs.read(fd, 4096, i * 4096);
      expect(got.equals(pseudoRandom(`rec${i}`, 4096)), `record ${i} of ${acked} acknowledged`).toBe(true);
    }
    await fs.commit(fd, 'durable');
    const attr = await ports().meta.lookup('/loop');
    expect(attr!.size).toBeGreaterThanOrEqual((acked + 1) * 4096);
    await fs.close(fd);
  });
});
