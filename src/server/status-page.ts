/**
 * The node's read-only status page over HTTPS (config `statusPage`): the same verdict, checks,
 * summary and disk table as `cairn status` (status-report.ts), as an HTML page that reloads
 * itself every `refreshSeconds`; /status.json (the same as `cairn status --json`) and /metrics
 * (Prometheus text) on the same listener.
 *
 * TLS is the node's own certificate from the cluster CA: a browser trusts the page once the owner
 * imports the cluster's ca.crt as an authority (docs/operations.md). Who may read:
 *   - by default, a client with a certificate of the cluster (kind client or node: the owner's
 *     client.crt/key imported into the browser, or Prometheus with tls_config cert_file/key_file),
 *     or with a client token (`Authorization: Bearer …`, src/rpc/tokens.ts);
 *   - with `anonymous: true`, anyone who reaches `listen` (meant for 127.0.0.1 or a management
 *     network; the page shows no file data, only the cluster's shape and health).
 * Anything else gets 401 and a warning in the log, and counts in
 * cairn_status_page_requests_total{result="refused"}. Only GET and HEAD are served.
 * A node without TLS (a config without `tls`) serves the page over plain HTTP to anyone, as it
 * serves everything else, and the verdict says INSECURE_TRANSPORT.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../common/log.js';
import { counter } from '../common/metrics.js';
import { registry } from '../common/metrics.js';
import { tlsIdentity, verifyPeer } from '../rpc/security.js';
import { tokenRecords, verifyToken } from '../rpc/tokens.js';
import { FileClient } from './file-client.js';
import type { HealthCheck } from './health.js';
import { DISK_TABLE_HEADERS, diskTableRows, gatherStatus, statusJson, summaryLines, type StatusReport } from './status-report.js';

const requests = counter('cairn_status_page_requests_total', 'Requests to the status page listener by path and result (ok, refused, not_found, error)', ['path', 'result']);

export interface StatusPageOptions {
  listen: string;
  anonymous: boolean;
  refreshSeconds: number;
  /** The node's own address (its file service answers the Cluster call). */
  nodeAddress: () => string;
  log: Logger;
}

export interface StatusPage {
  address: string;
  secure: boolean;
  close(): Promise<void>;
}

type Outcome = { ok: true; report: StatusReport } | { ok: false; error: string };

export async function startStatusPage(o: StatusPageOptions): Promise<StatusPage> {
  const id = tlsIdentity();
  const secure = id !== undefined;
  let client: FileClient | undefined;
  // One Cluster call serves every request in the next second (a page open in many tabs, a scraper).
  let cached: { atMs: number; outcome: Promise<Outcome> } | undefined;
  const report = (): Promise<Outcome> => {
    if (cached !== undefined && Date.now() - cached.atMs < 1_000) return cached.outcome;
    client ??= new FileClient(o.nodeAddress());
    const outcome = gatherStatus(client, secure).then(
      (r): Outcome => ({ ok: true, report: r }),
      (err: unknown): Outcome => ({ ok: false, error: (err as Error).message }),
    );
    cached = { atMs: Date.now(), outcome };
    return outcome;
  };

  const who = (req: IncomingMessage): string | undefined => {
    if (o.anonymous || id === undefined) return 'anonymous';
    const auth = req.headers.authorization;
    if (typeof auth === 'string' && auth.startsWith('Bearer ')) {
      try {
        return `token ${verifyToken(auth.slice('Bearer '.length).trim(), tokenRecords(), id.ca).name}`;
      } catch {
        // a bad token: a client certificate may still vouch for the request
      }
    }
    const cert = (req.socket as TLSSocket).getPeerX509Certificate?.();
    if (cert === undefined) return undefined;
    try {
      const s = verifyPeer(id, cert);
      return s.kind === 'client' || s.kind === 'node' ? `${s.kind} ${s.name}` : undefined;
    } catch {
      return undefined;
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const known = path === '/' || path === '/status.json' || path === '/metrics';
    const label = known ? path : 'other';
    const common = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      requests.inc({ path: label, result: 'refused' });
      res.writeHead(405, { ...common, allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      res.end('EPERM: the status page is read-only (GET and HEAD only)\n');
      return;
    }
    const peer = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? 0}`;
    if (who(req) === undefined) {
      requests.inc({ path: label, result: 'refused' });
      o.log.warn({ peer, path }, 'status page: refused a request without a client certificate or token of this cluster');
      res.writeHead(401, { ...common, 'www-authenticate': 'Bearer realm="cairn"', 'content-type': 'text/plain; charset=utf-8' });
      res.end('EACCES: this page needs a client certificate of the cluster or a client token (Authorization: Bearer …); see docs/operations.md\n');
      return;
    }
    if (!known) {
      requests.inc({ path: label, result: 'not_found' });
      res.writeHead(404, { ...common, 'content-type': 'text/plain; charset=utf-8' });
      res.end('ENOENT: try /, /status.json or /metrics\n');
      return;
    }
    try {
      if (path === '/metrics') {
        const body = await registry.metrics();
        res.writeHead(200, { ...common, 'content-type': registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      } else if (path === '/status.json') {
        const r = await report();
        const body = r.ok ? statusJson(r.report) : { verdict: 'down', checks: [unreachable(r.error)] };
        res.writeHead(r.ok ? 200 : 503, { ...common, 'content-type': 'application/json' });
        res.end(req.method === 'HEAD' ? undefined : `${JSON.stringify(body, null, 2)}\n`);
      } else {
        const r = await report();
        res.writeHead(200, {
          ...common,
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
          'x-frame-options': 'DENY',
          'referrer-policy': 'no-referrer',
        });
        res.end(req.method === 'HEAD' ? undefined : renderPage(r, o.refreshSeconds));
      }
      requests.inc({ path: label, result: 'ok' });
    } catch (err) {
      requests.inc({ path: label, result: 'error' });
      o.log.warn({ path, err: (err as Error).message }, 'status page: request failed');
      if (!res.headersSent) res.writeHead(500, { ...common, 'content-type': 'text/plain; charset=utf-8' });
      res.end(`EIO: ${(err as Error).message}\n`);
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => void handle(req, res);
  const srv: Server =
    id === undefined
      ? createHttpServer(onRequest)
      : createHttpsServer({ key: id.keyPem, cert: id.certPem, ca: id.caPem, requestCert: !o.anonymous, rejectUnauthorized: false, minVersion: 'TLSv1.2' }, onRequest);
  srv.on('tlsClientError', (err: Error, s: TLSSocket) => o.log.debug({ peer: `${s.remoteAddress ?? '?'}`, err: err.message }, 'status page: TLS handshake failed'));
  srv.keepAliveTimeout = 5_000;
  srv.headersTimeout = 10_000;
  srv.requestTimeout = 30_000;
  const i = o.listen.lastIndexOf(':');
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(Number(o.listen.slice(i + 1)), o.listen.slice(0, i).replace(/^\[|\]$/g, ''), () => resolve());
  });
  const a = srv.address();
  const address = a !== null && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : o.listen;
  if (id === undefined) o.log.warn({ address }, 'status page over plain HTTP: the node has no TLS identity, the page serves anyone');
  return {
    address,
    secure,
    close: async () => {
      client?.close();
      srv.closeAllConnections();
      await new Promise<void>((res) => srv.close(() => res()));
    },
  };
}

function unreachable(error: string): Omit<HealthCheck, 'code' | 'severity'> & { code: string; severity: string } {
  return { code: 'UNREACHABLE', severity: 'down', summary: `this node's file service does not answer: ${error}`, detail: [], muted: false };
}

const esc = (s: unknown): string =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

const COLOURS: Record<string, string> = { healthy: '#1a7f37', degraded: '#9a6700', 'at risk': '#bc4c00', down: '#cf222e' };

/** The page: verdict, checks, summary, disk table, repair, pending files; reloads itself. */
export function renderPage(r: Outcome, refreshSeconds: number): string {
  const verdict = r.ok ? r.report.health.verdict : 'down';
  const checks: Array<{ code: string; severity: string; summary: string; detail: string[]; muted: boolean; mutedUntilMs?: number }> = r.ok ? r.report.health.checks : [unreachable(r.error)];
  const table = (headers: string[], rows: Array<Array<string | number>>, idAttr: string): string =>
    `<table id="${idAttr}"><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
      .map((row) => `<tr>${row.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
      .join('')}</tbody></table>`;
  const parts: string[] = [];
  parts.push(`<h1 id="verdict" data-verdict="${esc(verdict)}" style="color:${COLOURS[verdict] ?? '#000'}">cluster: ${esc(verdict.toUpperCase())}</h1>`);
  parts.push(
    checks.length === 0
      ? '<p id="checks">no check raised</p>'
      : `<ul id="checks">${checks
          .map(
            (c) =>
              `<li data-code="${esc(c.code)}" data-muted="${c.muted}"><b>[${esc(c.muted ? 'muted' : c.severity)}] ${esc(c.code)}</b>: ${esc(c.summary)}${
                c.muted && c.mutedUntilMs !== undefined ? ` (muted until ${esc(new Date(c.mutedUntilMs).toISOString())})` : ''
              }${c.detail.length > 0 ? `<ul>${c.detail.slice(0, 20).map((d) => `<li>${esc(d)}</li>`).join('')}${c.detail.length > 20 ? `<li>… and ${c.detail.length - 20} more</li>` : ''}</ul>` : ''}</li>`,
          )
          .join('')}</ul>`,
  );
  if (r.ok) {
    const cl = r.report.cluster;
    parts.push(`<pre id="summary">${summaryLines(r.report).map(esc).join('\n')}</pre>`);
    parts.push(table(DISK_TABLE_HEADERS, diskTableRows(cl), 'disks'));
    const rp = cl.repair;
    parts.push(
      `<p id="repair">${esc(
        rp === null
          ? 'repair: none needed so far'
          : `repair: ${rp.state} — ${rp.reason}${rp.bytesTotal > 0 ? ` (${Math.floor((100 * rp.bytesDone) / rp.bytesTotal)}% of ${rp.bytesTotal} bytes checked, ${rp.shardsRebuilt} shards rebuilt${rp.etaSec !== null ? `, ETA ${Math.ceil(rp.etaSec)} s` : ''})` : ''}`,
      )}</p>`,
    );
    if (cl.cachedFiles.length > 0) {
      parts.push(`<h2>files in node ${esc(cl.answeredBy)}'s write cache</h2>`);
      parts.push(table(['path', 'state', 'pending bytes'], cl.cachedFiles.slice(0, 200).map((f) => [f.path, f.state, f.pendingBytes]), 'pending'));
    }
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="${refreshSeconds}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cairn: ${esc(verdict)}</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}pre{background:#f6f8fa;padding:.5em}</style>
</head><body>
${parts.join('\n')}
<p><small>as of ${esc(new Date().toISOString())}; this page reloads every ${refreshSeconds} s · <a href="status.json">status.json</a> · <a href="metrics">metrics</a></small></p>
</body></html>
`;
}
