/**
 * What a hostile user found, through the CLI on real processes: a bad config names its field
 * (unknown fields, unbounded durations), local file errors and a closed stdout end cleanly with
 * exit codes 0/1/2, a node ends on SIGTERM and ends non-zero when Raft fails, and what a node
 * writes is private (0600 files in 0700 folders).
 */
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, runCairn, spawnCairn, tempDir } from '../helpers/env.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function dir(): Promise<string> {
  const d = await tempDir('cairn-hygiene-');
  cleanup.push(d.remove);
  return d.path;
}

/** A one-node cluster's config (what `cairn init --nodes 1` writes), for this test to edit. */
async function oneNode(extra: string[] = []): Promise<{ base: string; config: string }> {
  const base = await dir();
  const r = await runCairn(['init', '--nodes', '1', '--dir', base, '--base-port', String(await freePort()), '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return { base, config: (JSON.parse(r.stdout) as { nodes: Array<{ config: string }> }).nodes[0]!.config };
}

describe('config validation', () => {
  it('names a misspelled field and an unbounded duration, and passes a good file', async () => {
    const { config } = await oneNode(['--insecure']);
    const cfg = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
    const bad = join(await dir(), 'bad.json');
    await writeFile(bad, JSON.stringify({ ...cfg, daemon: { scrubb: { enabled: false }, gc: { intervalMs: 1e12 } } }));
    // Independent CLI runs in parallel (each is a process start).
    const [good, r, s, j] = await Promise.all([
      runCairn(['config', 'check', config]),
      runCairn(['config', 'check', bad]),
      runCairn(['start', '--config', bad]),
      runCairn(['config', 'check', bad, '--json']),
    ]);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toContain('ok');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('daemon.scrubb: unknown field');
    expect(r.stderr).toMatch(/daemon\.gc\.intervalMs: .*(604800000|less than or equal)/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    // `cairn start` refuses it the same way, before doing anything.
    expect(s.code).toBe(1);
    expect(s.stderr).toContain('daemon.scrubb: unknown field');
    expect(j.code).toBe(1);
    expect((JSON.parse(j.stdout) as { ok: boolean; errors: string[] }).errors.some((e) => e.includes('daemon.scrubb'))).toBe(true);
  });
});

describe('clean failures', () => {
  it('get into a folder that does not exist: ENOENT, exit 1, no stack', async () => {
    const r = await runCairn(['get', '/f', join(await dir(), 'no-such-dir', 'x'), '--endpoint', `127.0.0.1:${await freePort()}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cairn: ENOENT: .*no-such-dir/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('a reader that closes the pipe early (`cairn … | head`) ends the command with 0, quietly', async () => {
    const { config } = await oneNode(['--insecure']);
    const child = spawnCairn(['config', 'check', config, '--json']);
    child.stdout!.destroy(); // the reader is gone before anything is written
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const [code] = (await once(child, 'close')) as [number | null];
    expect(stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(code).toBe(0);
  });
});

describe('a node process', () => {
  it('exits 0 on SIGTERM, and writes only private files', async () => {
    const { base, config } = await oneNode();
    const p = spawnCairn(['start', '--config', config], { env: { CAIRN_LOG_LEVEL: 'warn' } });
    cleanup.push(async () => void (p.exitCode === null && p.signalCode === null && p.kill('SIGKILL')));
    let out = '';
    p.stdout!.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      p.stdout!.on('data', (d: string) => {
        out += d;
        if (out.includes('"ready":true')) resolve();
      });
      p.once('exit', (c) => reject(new Error(`exited with ${c} before it was ready`)));
    });
    const exited = once(p, 'exit') as Promise<[number | null, string | null]>;
    p.kill('SIGTERM');
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    // Everything under the cluster folder: data, cache, disks, config, keys.
    const open: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const path = join(d, e.name);
        const st = await stat(path);
        if ((st.mode & 0o077) !== 0) open.push(`${(st.mode & 0o777).toString(8)} ${path}`);
        if (e.isDirectory()) await walk(path);
      }
    };
    await walk(base);
    expect(open).toEqual([]);
  });

  it('ends with a non-zero status when Raft fails', async () => {
    const { config } = await oneNode(['--insecure']);
    // The 5th Ready of the Raft loop fails (a stand-in for a failed fsync): the process must end.
    const p = spawnCairn(['start', '--config', config], { env: { CAIRN_LOG_LEVEL: 'warn', CAIRN_FAILPOINTS: 'raft.ready=error@5' } });
    cleanup.push(async () => void (p.exitCode === null && p.signalCode === null && p.kill('SIGKILL')));
    let stderr = '';
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const [code] = (await once(p, 'exit')) as [number | null];
    expect(code).toBe(1);
    expect(stderr).toContain('raft failed');
  });
});
