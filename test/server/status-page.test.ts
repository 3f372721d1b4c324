/**
 * The HTTPS status page (src/server/status-page.ts) on a real three-process cluster secured by its
 * own CA, read by a real headless Chromium (the system's, through playwright-core) that trusts the
 * cluster's CA key: the page shows a healthy verdict, reloads itself, and shows the cluster no
 * longer healthy (NODE_DOWN listed) once a node is stopped. A page that is not anonymous refuses a
 * request without a client certificate (401, logged) and serves one with the owner's certificate;
 * /status.json and /metrics are on the same listener.
 */
import { join } from 'node:path';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createHash, X509Certificate } from 'node:crypto';
import { request } from 'node:https';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { writeLocalCluster } from '../../src/cli/commands/server.js';
import { eventually, spawnCairn, tempDir, waitReady } from '../helpers/env.js';

const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
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

function get(url: string, tls: { ca: string; cert?: string; key?: string }, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ...tls, method }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the HTTPS status page', () => {
  it('shows the verdict in a headless browser, and a node stopped makes it degraded', async () => {
    const dir = await tempDir('cairn-page-');
    cleanup.push(dir.remove);
    const basePort = 20_000 + Math.floor(Math.random() * 35_000);
    const nodes = await writeLocalCluster({ nodes: 3, dir: dir.path, basePort, statusBasePort: basePort + 10, disks: 1, diskSizeBytes: 256 << 20 });
    // Node 2's page is for holders of a certificate of the cluster only; the others are anonymous on 127.0.0.1.
    const cfg2 = JSON.parse(await readFile(nodes[1]!.path, 'utf8')) as { statusPage: { anonymous: boolean; refreshSeconds?: number } };
    cfg2.statusPage.anonymous = false;
    await writeFile(nodes[1]!.path, JSON.stringify(cfg2));
    const cfg1 = JSON.parse(await readFile(nodes[0]!.path, 'utf8')) as { statusPage: { refreshSeconds?: number } };
    cfg1.statusPage.refreshSeconds = 1;
    await writeFile(nodes[0]!.path, JSON.stringify(cfg1));
    const procs = await Promise.all(nodes.map((n) => start(n.path)));

    const caPem = await readFile(join(dir.path, 'ca', 'ca.crt'), 'utf8');
    // The browser trusts the cluster's CA key (as an owner who imported ca.crt would).
    const caSpki = createHash('sha256').update(new X509Certificate(caPem).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    const browser: Browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${caSpki}`] });
    cleanup.push(() => browser.close());
    const page = await browser.newPage();
    const url = `https://127.0.0.1:${basePort + 10}/`;
    // One snapshot of the page per read (it reloads itself every second).
    type Shown = { verdict: string; codes: string[]; checks: string[]; headers: string[]; rows: number; summary: string };
    // Run in the page (a string: this project's TypeScript has no DOM types).
    const verdictNow = async (): Promise<Shown> =>
      (await page.evaluate(`(() => {
        const all = (q) => [...document.querySelectorAll(q)];
        return {
          verdict: document.querySelector('#verdict')?.getAttribute('data-verdict') ?? '',
          codes: all('#checks > li').map((li) => li.getAttribute('data-code') ?? ''),
          checks: all('#checks > li').map((li) => li.textContent ?? ''),
          headers: all('#disks th').map((th) => th.textContent ?? ''),
          rows: all('#disks tbody tr').length,
          summary: document.querySelector('#summary')?.textContent ?? '',
        };
      })()`)) as Shown;
    /** Wait, one self-reload of the page at a time, until the page shows what `want` accepts. */
    const waitForPage = async (want: (v: Shown) => boolean, what: string): Promise<Shown> => {
      const deadline = Date.now() + 90_000;
      for (;;) {
        const v = await verdictNow().catch((): Shown => ({ verdict: '', codes: [], checks: [], headers: [], rows: 0, summary: '' }));
        if (want(v)) return v;
        if (Date.now() > deadline) throw new Error(`the page never showed ${what}; last: ${JSON.stringify(v)}`);
        await page.waitForEvent('load', { timeout: 30_000 });
      }
    };
    const res = await page.goto(url);
    expect(res?.status()).toBe(200);
    // A fresh cluster: healthy once every node registered its disks and the diskmap is made.
    const healthy = await waitForPage((v) => v.verdict === 'healthy', 'a healthy verdict');
    expect(healthy.codes).toEqual([]);
    expect(healthy.headers).toEqual(expect.arrayContaining(['used', 'free', 'fill']));
    expect(healthy.rows).toBe(3);
    expect(healthy.summary).toMatch(/capacity: .* used .* free/);

    // A node stops: the page (reloading itself, not reloaded by us) shows the cluster degraded.
    const third = procs[2]!.p;
    third.kill('SIGTERM');
    await once(third, 'exit');
    const degraded = await waitForPage((v) => v.codes.includes('NODE_DOWN'), 'NODE_DOWN');
    // EC 2+1 over three machines with one out: one more failure loses data, so "at risk" ranks above "degraded".
    expect(['degraded', 'at risk']).toContain(degraded.verdict);
    expect(degraded.checks.find((t) => t.includes('NODE_DOWN'))).toMatch(/1 of 3 nodes do not answer/);

    // Node 2's page: no client certificate, no page (and the node logs the refusal).
    const page2 = `https://127.0.0.1:${basePort + 11}`;
    const anon = await get(`${page2}/status.json`, { ca: caPem });
    expect(anon.status).toBe(401);
    expect(anon.body).toMatch(/EACCES/);
    // The node's log (written asynchronously) says so.
    await eventually(() => /status page: refused a request/.test(procs[1]!.log()), 20_000);
    const [cert, key] = await Promise.all([readFile(join(dir.path, 'client', 'client.crt'), 'utf8'), readFile(join(dir.path, 'client', 'client.key'), 'utf8')]);
    const owner = await get(`${page2}/status.json`, { ca: caPem, cert, key });
    expect(owner.status).toBe(200);
    const js = JSON.parse(owner.body) as { verdict: string; checks: Array<{ code: string }> };
    expect(js.checks.map((c) => c.code)).toContain('NODE_DOWN');
    const metrics = await get(`${page2}/metrics`, { ca: caPem, cert, key });
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^cairn_status_page_requests_total\{path="\/status.json",result="refused"\} 1$/m);
    // Read-only.
    expect((await get(`${url}status.json`, { ca: caPem }, 'POST')).status).toBe(405);
  }, 240_000);
});
