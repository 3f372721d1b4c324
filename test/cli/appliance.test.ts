/**
 * The appliance's life through the CLI on real processes: `cairn init` makes a secured cluster on
 * a first machine, `cairn token create` + `cairn join` add a second (learner, then voter), a client
 * without credentials or with another cluster's are refused, and `cairn status` gives a verdict.
 */
import { join } from 'node:path';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { MetaClient } from '../../src/meta/client.js';
import { credentialFiles, loadIdentity, setTlsIdentity } from '../../src/rpc/security.js';
import { closeAllLanes } from '../../src/rpc/lane.js';
import { eventually, freePort, runCairn, spawnCairn, tempDir } from '../helpers/env.js';

const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  setTlsIdentity(undefined);
  closeAllLanes();
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function start(config: string): Promise<ChildProcess> {
  const p = spawnCairn(['start', '--config', config], { env: { CAIRN_LOG_LEVEL: 'warn' } });
  cleanup.push(async () => {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await once(p, 'exit');
    }
  });
  let out = '';
  p.stdout!.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    p.stdout!.on('data', (d: string) => {
      out += d;
      if (out.includes('"ready":true')) resolve();
    });
    p.once('exit', (c) => reject(new Error(`node exited with ${c} before it was ready`)));
  });
  return p;
}

describe('init, join, credentials, status', () => {
  it('makes a secured cluster, adds a machine with a join token, refuses strangers', async () => {
    const base = await tempDir('cairn-appliance-');
    cleanup.push(base.remove);
    const [p1, p2, pOther] = [await freePort(), await freePort(), await freePort()];
    const m1 = join(base.path, 'm1');
    const m2 = join(base.path, 'm2');
    const other = join(base.path, 'other');
    const size = String(1 << 30);
    // Two clusters: ours (m1) and another one, made the same way.
    const [init1, initOther] = await Promise.all([
      runCairn(['init', '--dir', m1, '--listen', `127.0.0.1:${p1}`, '--disk', join(m1, 'd0'), join(m1, 'd1'), join(m1, 'd2'), '--disk-size-bytes', size, '--json']),
      runCairn(['init', '--dir', other, '--listen', `127.0.0.1:${pOther}`, '--disk', join(other, 'd0'), '--disk-size-bytes', size, '--json']),
    ]);
    expect(init1.code, init1.stderr).toBe(0);
    expect(initOther.code, initOther.stderr).toBe(0);
    const made = JSON.parse(init1.stdout) as { config: string; credentials: string; clusterId: string };
    const otherMade = JSON.parse(initOther.stdout) as { credentials: string; clusterId: string };
    expect(made.clusterId).not.toBe(otherMade.clusterId);
    await start(made.config);

    const token = await runCairn(['token', 'create', '--config', made.config, '--node-id', '2', '--ttl', '10m']);
    expect(token.code, token.stderr).toBe(0);
    const [joined, bad] = await Promise.all([
      runCairn(['join', token.stdout.trim(), '--dir', m2, '--listen', `127.0.0.1:${p2}`, '--disk', join(m2, 'd0'), '--disk-size-bytes', size, '--json']),
      runCairn(['join', 'cairn1.bm90IGEgdG9rZW4', '--dir', join(base.path, 'm3'), '--listen', `127.0.0.1:${p2 + 1}`, '--disk', join(base.path, 'm3', 'd0')]),
    ]);
    expect(joined.code, joined.stderr).toBe(0);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/join token is damaged/);
    const j = JSON.parse(joined.stdout) as { config: string; peers: Array<{ id: number }> };
    expect(j.peers.map((p) => p.id).sort()).toEqual([1, 2]);
    await start(j.config);

    // This test process is the owner's client: node 2 catches up and becomes a voter.
    setTlsIdentity(loadIdentity(credentialFiles(made.credentials, 'client')));
    const meta = new MetaClient({ endpoints: [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`] });
    cleanup.push(async () => meta.close());
    await meta.mkdir('/joined');
    const st2 = await eventually(async () => {
      const s = await meta.status(`127.0.0.1:${p2}`).catch(() => undefined);
      return s !== undefined && s.role !== 'learner' && s.leaderId !== 0 ? s : undefined;
    }, 60_000, 200);
    expect(st2.leaderId).toBe(1);
    const one = new MetaClient({ endpoints: [`127.0.0.1:${p2}`] });
    cleanup.push(async () => one.close());
    expect((await one.stat('/joined')).type).toBe('dir');

    // Strangers: no credentials, and the client certificate of another cluster.
    const ep = ['--endpoint', `127.0.0.1:${p1}`];
    const [none, foreign, status] = await Promise.all([
      runCairn(['ls', '/', ...ep], { env: { CAIRN_CREDENTIALS: 'none' }, timeoutMs: 90_000 }),
      runCairn(['ls', '/', ...ep], { env: { CAIRN_CREDENTIALS: otherMade.credentials }, timeoutMs: 90_000 }),
      runCairn(['status', '--json', ...ep], { env: { CAIRN_CREDENTIALS: made.credentials }, timeoutMs: 90_000 }),
    ]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/EACCES: .*requires TLS/);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/EACCES/);
    expect(status.code, status.stderr).toBe(0);
    const s = JSON.parse(status.stdout) as { verdict: string; checks: Array<{ code: string }>; nodes: Array<{ nodeId: number }> };
    expect(['healthy', 'degraded', 'at risk', 'down']).toContain(s.verdict);
    expect(s.checks.map((c) => c.code)).not.toContain('INSECURE_TRANSPORT');
    expect(s.checks.map((c) => c.code)).not.toContain('NO_LEADER');
  }, 240_000);
});
