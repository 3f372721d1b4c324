/**
 * Clients without a certificate, on a real secured node process: a client token made by
 * `cairn token create --kind client` (stored hashed and signed in the cluster) lets a program in
 * within its scope; a wrong, unknown or out-of-scope token is refused and logged, never served;
 * a program on the node's machine gets in through the local unix socket only if the socket's
 * file permissions let it.
 */
import { join } from 'node:path';
import { request } from 'node:https';
import { once } from 'node:events';
import { readFile, stat, writeFile } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { writeLocalCluster } from '../../src/cli/commands/server.js';
import { TOKENS_PATH } from '../../src/rpc/tokens.js';
import { eventually, runCairn, spawnCairn, tempDir, waitReady } from '../helpers/env.js';
import { FileClient } from '../../src/server/file-client.js';
import { caOnlyIdentity, credentialFiles, loadIdentity, setTlsIdentity } from '../../src/rpc/security.js';
import { setClientToken } from '../../src/rpc/tokens.js';
import { closeAllLanes } from '../../src/rpc/lane.js';
import { CairnError } from '../../src/common/errors.js';

const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  setTlsIdentity(undefined);
  setClientToken(undefined);
  closeAllLanes();
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

async function start(config: string): Promise<{ p: ChildProcess; log: () => string }> {
  const p = spawnCairn(['start', '--config', config], { env: { CAIRN_LOG_LEVEL: 'warn' } });
  let err = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  cleanup.push(async () => {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await once(p, 'exit');
    }
  });
  await waitReady(p, 'node', () => err);
  return { p, log: () => err };
}

describe('client auth without a certificate', () => {
  it('tokens are scoped, revocable, and refused when wrong or unknown; the local socket admits by file permission', async () => {
    const dir = await tempDir('cairn-auth-');
    cleanup.push(dir.remove);
    const basePort = 20_000 + Math.floor(Math.random() * 35_000);
    const [n] = await writeLocalCluster({ nodes: 1, dir: dir.path, basePort, disks: 3, diskSizeBytes: 256 << 20 });
    const sock = join(dir.path, 'node1.sock');
    const cfg = JSON.parse(await readFile(n!.path, 'utf8')) as { tls: Record<string, string>; localSocket?: unknown };
    cfg.tls.caKeyFile = join(dir.path, 'ca', 'ca.key'); // this member may sign tokens
    cfg.localSocket = { path: sock, mode: '0600' };
    (cfg as Record<string, unknown>).statusPage = { listen: `127.0.0.1:${basePort + 1}` };
    await writeFile(n!.path, JSON.stringify(cfg));
    const node = await start(n!.path);
    const ep = `127.0.0.1:${basePort}`;
    const caPem = await readFile(join(dir.path, 'ca', 'ca.crt'), 'utf8');
    /** Talk to the node as someone (a new lane connection for each identity). */
    const asWho = async <T>(who: { cert: true } | { token: string | undefined }, fn: (c: FileClient) => Promise<T>): Promise<T> => {
      closeAllLanes();
      if ('cert' in who) {
        setTlsIdentity(loadIdentity(credentialFiles(join(dir.path, 'client'), 'client')));
        setClientToken(undefined);
      } else {
        setTlsIdentity(caOnlyIdentity(caPem, 'ca.crt'));
        setClientToken(who.token);
      }
      const c = new FileClient(ep, 20_000);
      try {
        return await fn(c);
      } finally {
        c.close();
      }
    };
    const text = async (c: FileClient, path: string): Promise<string> => {
      const { data } = await c.get(path);
      const parts: Buffer[] = [];
      for await (const b of data) parts.push(b);
      return Buffer.concat(parts).toString('utf8');
    };
    const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: unknown) => (e instanceof CairnError ? `${e.code}: ${e.message}` : String(e)));

    // The owner (client certificate) writes a file once the cluster has its diskmap.
    await eventually(() => asWho({ cert: true }, (c) => c.put('/f.txt', [Buffer.from('for readers\n')], { mode: 'strong', mkdirs: true }).then(() => true)), 90_000, 500);

    // Two tokens, made by the CLI on the member: read and write.
    const mk = async (scope: string): Promise<{ token: string; id: string }> => {
      const r = await runCairn(['token', 'create', '--kind', 'client', '--config', n!.path, '--scope', scope, '--name', `${scope}-bot`, '--ttl', '1d', '--json'], { timeoutMs: 90_000 });
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { token: string; id: string };
    };
    const reader = await mk('read');
    const writer = await mk('write');
    // Stored hashed: the record holds the secret's SHA-256, never the token.
    const stored = await asWho({ cert: true }, (c) => text(c, TOKENS_PATH));
    expect(stored).toContain(reader.id);
    expect(stored).toContain(writer.id);
    expect(stored).not.toContain(reader.token.split('.')[2]);

    // The node reads new records within a few seconds: then the read token reads…
    expect(await eventually(() => asWho({ token: reader.token }, (c) => text(c, '/f.txt')).catch(() => undefined), 30_000, 500)).toBe('for readers\n');
    // …and may not write.
    expect(await code(asWho({ token: reader.token }, (c) => c.put('/g.txt', [Buffer.from('x')], { mode: 'strong', mkdirs: true })))).toMatch(/^EACCES: .*read-scoped client token/);
    // The write token writes.
    await eventually(async () => (await code(asWho({ token: writer.token }, (c) => c.put('/g.txt', [Buffer.from('x')], { mode: 'strong', mkdirs: true })))) === 'ok', 30_000, 500);
    expect(await asWho({ token: writer.token }, (c) => text(c, '/g.txt'))).toBe('x');

    // A wrong secret, an unknown token, no token at all: refused (never served), and logged.
    expect(await code(asWho({ token: `${reader.token.slice(0, -4)}AAAA` }, (c) => text(c, '/f.txt')))).toMatch(/^EACCES: .*wrong secret/);
    expect(await code(asWho({ token: `cairnct1.0123456789abcdef.${'x'.repeat(43)}` }, (c) => text(c, '/f.txt')))).toMatch(/^EACCES: .*not known to this cluster/);
    expect(await code(asWho({ token: undefined }, (c) => text(c, '/f.txt')))).toMatch(/^EACCES: .*no client certificate and no client token/);
    await eventually(() => (node.log().match(/refused a connection: bad credentials/g) ?? []).length >= 3, 20_000);

    // The status page takes a token as a Bearer (and nothing else without a certificate).
    const page = (auth?: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = request(`https://127.0.0.1:${basePort + 1}/status.json`, { ca: caPem, headers: auth === undefined ? {} : { authorization: auth } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await page(`Bearer ${reader.token}`)).toBe(200);
    expect(await page(`Bearer ${reader.token.slice(0, -4)}AAAA`)).toBe(401);
    expect(await page()).toBe(401);

    // The CLI presents a token from its environment.
    const cat = await runCairn(['cat', '/f.txt', '--endpoint', ep], { env: { CAIRN_CREDENTIALS: 'none', CAIRN_TOKEN: reader.token, CAIRN_CA: join(dir.path, 'ca', 'ca.crt') } });
    expect(cat.code, cat.stderr).toBe(0);
    expect(cat.stdout).toBe('for readers\n');

    // The owner lists and revokes: the revoked token is refused on the node within seconds.
    const owner = { CAIRN_CREDENTIALS: join(dir.path, 'client') };
    const list = await runCairn(['token', 'list', '--json', '--endpoint', ep], { env: owner });
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ id: string; scope: string }>).map((r) => [r.id, r.scope]).sort()).toEqual([[reader.id, 'read'], [writer.id, 'write']].sort());
    const revoke = await runCairn(['token', 'revoke', reader.id, '--endpoint', ep], { env: owner, timeoutMs: 60_000 });
    expect(revoke.code, revoke.stderr).toBe(0);
    await eventually(async () => /^EACCES: .*not known to this cluster/.test(await code(asWho({ token: reader.token }, (c) => text(c, '/f.txt')))), 30_000, 500);

    // The local socket: 0600, the node's user gets in without TLS or token.
    expect((await stat(sock)).mode & 0o777).toBe(0o600);
    const local = await runCairn(['cat', '/f.txt', '--endpoint', `unix:${sock}`], { env: { CAIRN_CREDENTIALS: 'none' } });
    expect(local.code, local.stderr).toBe(0);
    expect(local.stdout).toBe('for readers\n');
    // Another user is kept out by the kernel (tests run as root, who passes every permission check,
    // so this is shown with a user the permissions name: nobody).
    if (process.getuid?.() === 0) {
      const { spawnSync } = await import('node:child_process');
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', `require('net').connect(${JSON.stringify(sock)}).on('error', (e) => { console.log(e.code); process.exit(0); }).on('connect', () => { console.log('connected'); process.exit(0); })`], { encoding: 'utf8' });
      expect(r.stdout.trim()).toBe('EACCES');
    }
  }, 240_000);
});
