/**
 * Real processes: `cairn init` writes a 3-node local cluster, three `cairn start` daemons run
 * it, and the namespace CLI (mkdir, ln, mv, ls, stat, watch, rm) works against it; after
 * kill -9 of every node and a restart, every acknowledged write is there; the daemons stop
 * cleanly on SIGTERM.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { freePort, runCairn, spawnCairn, tempDir } from '../helpers/env.js';
import { MetaClient } from '../../src/meta/client.js';
import { credentialFiles, loadIdentity, setTlsIdentity } from '../../src/rpc/security.js';
import { call, makeClient, serviceOf } from '../../src/rpc/grpc.js';

let base: { path: string; remove: () => Promise<void> };
const procs: ChildProcess[] = [];
let endpoints = '';
let configs: string[] = [];
let credentials = '';

function waitReady(p: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`node did not start: ${out}`)), 30_000);
    p.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('"ready":true')) {
        clearTimeout(t);
        resolve();
      }
    });
    p.once('exit', (code) => reject(new Error(`node exited with ${code}`)));
  });
}

beforeAll(async () => {
  base = await tempDir('cairn-meta-proc-');
  // three consecutive free ports: pick a base whose next two are free too
  let port = 0;
  for (let tries = 0; tries < 20 && port === 0; tries++) {
    const p = await freePort();
    if (p < 65_000 && (await freePortIs(p + 1)) && (await freePortIs(p + 2))) port = p;
  }
  const init = await runCairn(['init', '--nodes', '3', '--dir', base.path, '--base-port', String(port), '--json']);
  expect(init.code, init.stderr).toBe(0);
  const made = JSON.parse(init.stdout) as { nodes: Array<{ config: string; listen: string }>; credentials: string };
  const nodes = made.nodes;
  credentials = made.credentials;
  // This test process is a client of the secured cluster too (its MetaClient below).
  setTlsIdentity(loadIdentity(credentialFiles(credentials, 'client')));
  endpoints = nodes.map((n) => n.listen).join(',');
  configs = nodes.map((n) => n.config);
  await startAll();
});

async function startAll(): Promise<void> {
  const started = configs.map((c) => spawnCairn(['start', '--config', c], { env: { CAIRN_LOG_LEVEL: 'warn' } }));
  procs.push(...started);
  await Promise.all(started.map(waitReady));
}

function exitOf(p: ChildProcess): Promise<number | null> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve(p.exitCode) : new Promise((r) => p.once('exit', (c) => r(c)));
}


async function freePortIs(port: number): Promise<boolean> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

afterAll(async () => {
  setTlsIdentity(undefined);
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  await base?.remove();
});

describe('cairn start + namespace CLI', () => {
  it('runs a 3-node cluster that the CLI can use', async () => {
    const cli = (args: string[]): ReturnType<typeof runCairn> => runCairn([...args, '--endpoint', endpoints], { env: { CAIRN_CREDENTIALS: credentials } });
    expect((await cli(['mkdir', '-p', '/a/b/c'])).code).toBe(0);
    expect((await cli(['ln', '-s', '/a/b', '/a/link'])).code).toBe(0);
    expect((await cli(['mv', '/a/b', '/a/b2'])).code).toBe(0);
    // independent reads in parallel: each CLI run is a process start
    const [ls, bad, watch, usage] = await Promise.all([
      cli(['ls', '/a', '--json']),
      cli(['stat', '/a/b']),
      cli(['watch', '/a', '--from', '1', '--count', '5', '--json']),
      cli(['mkdir', 'relative/path']),
    ]);
    expect(ls.code, ls.stderr).toBe(0);
    const names = (JSON.parse(ls.stdout) as Array<{ name: string; type: string }>).map((e) => `${e.name}:${e.type}`);
    expect(names).toEqual(['b2:dir', 'link:symlink']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('ENOENT');
    expect(usage.code).toBe(2); // a usage error
    expect(watch.code, watch.stderr).toBe(0);
    const evs = watch.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; path: string; newPath?: string });
    expect(evs.map((e) => `${e.kind} ${e.path}${e.newPath ? ` ${e.newPath}` : ''}`)).toEqual([
      'mkdir /a', 'mkdir /a/b', 'mkdir /a/b/c', 'symlink /a/link', 'rename /a/b /a/b2',
    ]);
    expect((await cli(['rm', '-r', '/a'])).code).toBe(0);
    expect((await cli(['ls', '/', '--json'])).stdout.trim()).toBe('[]');
    // the same daemon serves the chunk service over the disk `cairn init` configured
    const chunk = makeClient(serviceOf('chunk.proto', 'cairn.chunk.Chunk'), endpoints.split(',')[0]!);
    try {
      const ds = await call<object, { disks: Array<{ path: string }> }>(chunk, 'DiskStatus', {});
      expect(ds.disks.map((d) => d.path)).toEqual([join(base.path, 'node1', 'disk0')]);
    } finally {
      chunk.close();
    }
    // kill -9 every node: every acknowledged write survives the restart
    const client = new MetaClient({ endpoints: endpoints.split(',') });
    try {
      await client.mkdir('/k');
      for (let i = 0; i < 30; i++) await client.create(`/k/f${i}`);
      const running = procs.splice(0);
      const killed = running.map(exitOf);
      for (const p of running) p.kill('SIGKILL');
      await Promise.all(killed);
      await startAll();
      const names: string[] = [];
      for await (const e of client.readdirAll('/k')) names.push(e.name);
      expect(names.length).toBe(30);
    } finally {
      client.close();
    }
    // SIGTERM: clean exit
    const exits = procs.map(exitOf);
    for (const p of procs) p.kill('SIGTERM');
    expect(await Promise.all(exits)).toEqual([0, 0, 0]);
  });
});
