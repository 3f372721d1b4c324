/**
 * Shared test plumbing: private temp dirs, free loopback ports, and real `cairn` processes.
 * Every test cleans up what it starts (use `using`-style disposers returned here in afterEach).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { createServer } from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A fresh private directory under the OS temp dir; remove it with the returned function. */
export async function tempDir(prefix = 'cairn-test-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        reject(new Error('no port'));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}

/** Run the CLI from source (through tsx) as a real process. */
export function spawnCairn(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli', 'main.ts'), ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    // A CLI run by a test finds no credentials of its own (./.cairn-local/client of `npm start`).
    env: { ...process.env, CAIRN_CREDENTIALS: 'none', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * Resolves once a `cairn start` process prints its ready line; rejects if it exits first, naming
 * `what` and, when given, what its stderr said.
 */
export async function waitReady(p: ChildProcess, what = 'node', stderr?: () => string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('"ready":true')) resolve();
    });
    p.once('exit', (c) => reject(new Error(`${what} exited with ${c} before it was ready${stderr !== undefined ? `: ${stderr()}` : ''}`)));
  });
}

/** Run the CLI to completion and collect its output and exit code. */
export async function runCairn(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnCairn(args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Poll until fn returns a truthy value or the deadline passes. */
export async function eventually<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms${lastErr ? `: ${String(lastErr)}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
