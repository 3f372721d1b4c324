/**
 * `cairn put | get | cat | commit | status`: files through a node daemon's file service
 * (proto/file.proto, src/server/file-service.ts). The CLI is a client of the same API every
 * program uses; the node it talks to owns the write cache and runs the commit.
 *
 * The node: --endpoint host:port, else $CAIRN_ENDPOINT, else the first of $CAIRN_ENDPOINTS, else
 * 127.0.0.1:7400 (node 1 of `cairn local up`). Transfers larger than a few MiB show a progress
 * bar on stderr when stderr is a terminal.
 */
import type { Command } from 'commander';
import { createReadStream } from 'node:fs';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { once } from 'node:events';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import cliProgress from 'cli-progress';
import { CairnError } from '../../common/errors.js';
import { addressSchema } from '../../common/config.js';
import { FileClient } from '../../server/file-client.js';
import { DISK_TABLE_HEADERS, MUTES_PATH, diskTableRows, readMutes, statusJson, summaryLines, type StatusReport } from '../../server/status-report.js';
import { formatBytes, printJson, printTable } from '../output.js';
import { parseOptions, usageError } from '../usage.js';
import { repairLine } from './repair.js';
import { assessHealth, CHECK_CODES, type HealthCheck } from '../../server/health.js';
import { tlsIdentity } from '../../rpc/security.js';

/** Transfers at least this large get a progress bar (on a terminal). */
const PROGRESS_MIN_BYTES = 4 * 1024 * 1024;

/** host:port, or unix:/path (a node's local socket, config localSocket). */
const endpointSchema = addressSchema.or(z.string().regex(/^unix:\/[^\0]{1,100}$/, 'must be host:port or unix:/path'));

const base = {
  endpoint: endpointSchema,
  json: z.boolean().default(false),
};

function endpointOf(raw: { endpoint?: string }): string {
  return raw.endpoint ?? process.env.CAIRN_ENDPOINT ?? process.env.CAIRN_ENDPOINTS?.split(',')[0] ?? '127.0.0.1:7400';
}

function remotePath(p: string): string {
  if (!p.startsWith('/')) throw usageError(`remote path must be absolute (start with /): ${JSON.stringify(p)}`);
  return p;
}

function progress(totalBytes: number, label: string): { update(n: number): void; stop(): void } {
  if (!process.stderr.isTTY || totalBytes < PROGRESS_MIN_BYTES) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done} of {all} | {speed}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = Date.now();
  const fmt = (n: number): Record<string, string> => ({
    done: formatBytes(n),
    all: formatBytes(totalBytes),
    speed: `${formatBytes(Math.round(n / Math.max(0.001, (Date.now() - t0) / 1000)))}/s`,
  });
  bar.start(totalBytes, 0, fmt(0));
  return {
    update: (n) => bar.update(n, fmt(n)),
    stop: () => bar.stop(),
  };
}

/**
 * A client that waits says what it waits for: while a put has not answered 5 s after its last
 * byte was sent, look every 10 s at the cluster's status, and say on stderr what it waits for
 * when a node or disk is not up (or, when all are up, once a minute has passed).
 */
function waitNotice(endpoint: string, path: string, what: string): { poke(): void; stop(): void } {
  let t0 = Date.now();
  let told = false;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const tell = async (): Promise<void> => {
    let why = '';
    try {
      const cl = await withClient(endpoint, (c) => c.cluster());
      const down = cl.nodes.flatMap((n) => [
        ...(n.role === 'unreachable' ? [`node ${n.nodeId} unreachable`] : []),
        ...n.disks.filter((d) => !d.state.startsWith('ok')).map((d) => `disk ${d.path} of node ${n.nodeId} ${d.state}`),
      ]);
      why = down.length > 0 ? `; not up: ${down.join(', ')}` : '; every node and disk is up';
    } catch (err) {
      why = `; the node does not answer a status request either (${(err as Error).message})`;
    }
    const quiet = why === '; every node and disk is up' && Date.now() - t0 < 60_000;
    if (!quiet) told = true;
    if (!stopped && !quiet) process.stderr.write(`cairn: still waiting for ${path} to be ${what} (${Math.round((Date.now() - t0) / 1000)} s): the node is storing its shards and committing${why}\n`);
    if (!stopped) timer = setTimeout(() => void tell(), 10_000);
  };
  timer = setTimeout(() => void tell(), 5_000);
  return {
    poke: () => {
      if (told || stopped) return;
      clearTimeout(timer);
      t0 = Date.now();
      timer = setTimeout(() => void tell(), 5_000);
    },
    stop: () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}

async function withClient<T>(endpoint: string, fn: (c: FileClient) => Promise<T>): Promise<T> {
  const c = new FileClient(endpoint);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

const putSchema = z.object({ ...base, strong: z.boolean().default(false), weak: z.boolean().default(false), mkdirs: z.boolean().default(true) });
const getSchema = z.object({ ...base, offset: z.coerce.number().int().min(0).default(0), length: z.coerce.number().int().min(0).default(0) });
const commitSchema = z.object({ ...base, wait: z.enum(['none', 'visible', 'durable']).default('durable') });
const statusSchema = z.object(base);

export function register(program: Command): void {
  const endpointOpt = (c: Command): Command =>
    c.option('--endpoint <host:port>', 'node to talk to, or unix:/path for its local socket (default: $CAIRN_ENDPOINT, first of $CAIRN_ENDPOINTS, or 127.0.0.1:7400)').option('--json', 'print JSON');

  endpointOpt(
    program
      .command('put')
      .description('upload a local file (- for stdin) to REMOTE; readers see the old file or the whole new one')
      .argument('<local>', 'local file, or - for stdin')
      .argument('<remote>', 'absolute path in Cairn')
      .option('--strong', 'return once the file is durable (every shard stored)')
      .option('--weak', 'return once the new version is visible (the default of the node, unless it is strong)')
      .option('--no-mkdirs', 'fail if the parent directory does not exist'),
  ).action(async (local: string, remote: string, raw: { endpoint?: string }) => {
    const o = parseOptions(putSchema, { ...raw, endpoint: endpointOf(raw) });
    if (o.strong && o.weak) throw usageError('give --strong or --weak, not both');
    const path = remotePath(remote);
    let size = 0;
    if (local !== '-') {
      const st = await stat(local).catch(() => undefined);
      if (st === undefined) throw new CairnError('ENOENT', `${local}: no such local file`);
      if (!st.isFile()) throw new CairnError('EINVAL', `${local} is not a regular file`);
      size = st.size;
    }
    const src = local === '-' ? process.stdin : createReadStream(local, { highWaterMark: 1024 * 1024 });
    const bar = progress(size, `put ${basename(path)}`);
    const waiting = waitNotice(o.endpoint, path, o.strong ? 'durable' : 'visible');
    const r = await withClient(o.endpoint, (c) =>
      c.put(path, src, { mode: o.strong ? 'strong' : o.weak ? 'weak' : undefined, mkdirs: o.mkdirs, sizeHint: size, onBytes: (n) => {
        bar.update(n);
        waiting.poke();
      } }),
    ).finally(() => {
      waiting.stop();
      bar.stop();
    });
    if (o.json) printJson(r);
    else process.stdout.write(`${r.path}: ${formatBytes(r.size)}, version ${r.version}, ${r.state}${r.pendingBytes > 0 ? ` (${formatBytes(r.pendingBytes)} pending)` : ''}\n`);
  });

  endpointOpt(
    program
      .command('get')
      .description('download REMOTE to a local file (- for stdout); the local file appears whole or not at all')
      .argument('<remote>', 'absolute path in Cairn')
      .argument('<local>', 'local file, or - for stdout')
      .option('--offset <bytes>', 'start at this byte', '0')
      .option('--length <bytes>', 'at most this many bytes (0: to the end)', '0'),
  ).action(async (remote: string, local: string, raw: { endpoint?: string }) => {
    const o = parseOptions(getSchema, { ...raw, endpoint: endpointOf(raw) });
    const path = remotePath(remote);
    const toStdout = local === '-';
    const tmp = toStdout ? '' : join(dirname(local), `.${basename(local)}.cairn-get-${randomBytes(4).toString('hex')}`);
    // The local file is made before anything is asked of the cluster: a folder that does not exist
    // or cannot be written is one clear error (ENOENT, EACCES), not a stream error after the fact.
    const fh = toStdout
      ? undefined
      : await open(tmp, 'wx', 0o644).catch((err: NodeJS.ErrnoException) => {
          throw new CairnError(err.code === 'ENOENT' || err.code === 'EACCES' || err.code === 'ENOSPC' ? err.code : 'EIO', `${local}: cannot write the local file (${err.code ?? err.message})`);
        });
    await withClient(o.endpoint, async (c) => {
      const { stat: st, data } = await c.get(path, { offset: o.offset, length: o.length }).catch(async (err: unknown) => {
        await fh?.close().catch(() => undefined);
        if (!toStdout) await unlink(tmp).catch(() => undefined);
        throw err;
      });
      const total = o.length === 0 ? Math.max(0, st.size - o.offset) : Math.min(o.length, Math.max(0, st.size - o.offset));
      const out = fh === undefined ? process.stdout : fh.createWriteStream();
      let writeError: Error | undefined;
      out.on('error', (err) => (writeError = err));
      const bar = progress(total, `get ${basename(path)}`);
      let n = 0;
      try {
        for await (const piece of data) {
          if (writeError !== undefined) throw writeError;
          if (!out.write(piece)) await once(out, 'drain');
          n += piece.length;
          bar.update(n);
        }
        if (!toStdout) {
          await new Promise<void>((res, rej) => out.end((err?: Error | null) => (err ? rej(err) : res())));
          if (writeError !== undefined) throw writeError;
          await rename(tmp, local);
        }
      } catch (err) {
        if (!toStdout) {
          out.destroy();
          await fh?.close().catch(() => undefined);
          await unlink(tmp).catch(() => undefined);
        }
        throw err;
      } finally {
        bar.stop();
      }
      if (n !== total) throw new CairnError('EIO', `${path}: got ${n} bytes, expected ${total}`);
      if (!toStdout) {
        if (o.json) printJson({ path, local, bytes: n, version: st.version, state: st.state });
        else process.stderr.write(`${path} → ${local}: ${formatBytes(n)}, version ${st.version}\n`);
      }
    });
  });

  program
    .command('cat')
    .description('print REMOTE to stdout')
    .argument('<remote>', 'absolute path in Cairn')
    .option('--endpoint <host:port>', 'node to talk to (default: $CAIRN_ENDPOINT, first of $CAIRN_ENDPOINTS, or 127.0.0.1:7400)')
    .action(async (remote: string, raw: { endpoint?: string }) => {
      const o = parseOptions(z.object({ endpoint: endpointSchema }), { endpoint: endpointOf(raw) });
      const path = remotePath(remote);
      await withClient(o.endpoint, async (c) => {
        const { data } = await c.get(path);
        for await (const piece of data) if (!process.stdout.write(piece)) await once(process.stdout, 'drain');
      });
    });

  endpointOpt(
    program
      .command('commit')
      .description("commit REMOTE's cached writes on the node now and wait for them")
      .argument('<remote>', 'absolute path in Cairn')
      .option('--wait <state>', 'none | visible | durable', 'durable'),
  ).action(async (remote: string, raw: { endpoint?: string }) => {
    const o = parseOptions(commitSchema, { ...raw, endpoint: endpointOf(raw) });
    const s = await withClient(o.endpoint, (c) => c.commit(remotePath(remote), o.wait));
    if (o.json) printJson(s);
    else process.stdout.write(`${s.path}: ${s.state}, version ${s.version}, ${formatBytes(s.size)}${s.pendingBytes > 0 ? `, ${formatBytes(s.pendingBytes)} pending` : ''}${s.error ? ` (last error: ${s.error})` : ''}\n`);
  });

  endpointOpt(
    program
      .command('status')
      .description('the cluster: one verdict (healthy / degraded / at risk / down) with its checks, then leader, redundancy, capacity, nodes and disks; or, with a path, the commit state of a file')
      .argument('[remote]', 'absolute path in Cairn'),
  ).action(async (remote: string | undefined, raw: { endpoint?: string }) => {
    const o = parseOptions(statusSchema, { ...raw, endpoint: endpointOf(raw) });
    await withClient(o.endpoint, async (c) => {
      if (remote !== undefined) {
        const s = await c.commitStatus(remotePath(remote));
        if (o.json) printJson(s);
        else printTable(['path', 'state', 'version', 'size', 'pending', 'dirty on', 'level', 'error'], [[s.path, s.state, s.version, formatBytes(s.size), formatBytes(s.pendingBytes), s.writer || '-', s.level || '-', s.error || '-']]);
        return;
      }
      const cl = await c.cluster().catch((err: unknown) => {
        if (!(err instanceof CairnError && (err.code === 'EUNAVAIL' || err.code === 'ETIMEDOUT'))) throw err;
        // Nothing answers: that is the verdict (exit 1, the cluster could not be asked).
        const check = { code: 'UNREACHABLE', severity: 'down', summary: `no answer from ${o.endpoint}: ${err.message}`, detail: [], muted: false };
        if (o.json) printJson({ verdict: 'down', checks: [check] });
        else process.stdout.write(`cluster: DOWN\n  [DOWN] UNREACHABLE: ${check.summary}\n`);
        throw new CairnError(err.code, `${o.endpoint} did not answer`);
      });
      const mutes = await readMutes(c);
      const report: StatusReport = { cluster: cl, health: assessHealth(cl, { secure: tlsIdentity() !== undefined, mutes }) };
      const { health } = report;
      if (o.json) {
        printJson(statusJson(report));
        return;
      }
      const mark = (ch: HealthCheck): string => (ch.muted ? 'muted' : ch.severity === 'info' ? 'info' : ch.severity === 'warn' ? 'WARN' : ch.severity === 'risk' ? 'RISK' : 'DOWN');
      process.stdout.write(`cluster: ${health.verdict.toUpperCase()}\n`);
      for (const ch of health.checks) {
        process.stdout.write(`  [${mark(ch)}] ${ch.code}: ${ch.summary}${ch.muted && ch.mutedUntilMs !== undefined ? ` (muted until ${new Date(ch.mutedUntilMs).toISOString()})` : ''}\n`);
        for (const d of ch.detail.slice(0, 10)) process.stdout.write(`      ${d}\n`);
        if (ch.detail.length > 10) process.stdout.write(`      … and ${ch.detail.length - 10} more\n`);
      }
      process.stdout.write(`\n${summaryLines(report).join('\n')}\n\n`);
      printTable(DISK_TABLE_HEADERS, diskTableRows(cl));
      process.stdout.write(`\n${repairLine(cl.repair)}\n`);
      if (cl.cachedFiles.length > 0) {
        process.stdout.write(`\nfiles in node ${cl.answeredBy}'s write cache:\n`);
        printTable(['path', 'state', 'pending'], cl.cachedFiles.map((f) => [f.path, f.state, formatBytes(f.pendingBytes)]));
      }
    });
  });

  const health = program.command('health').description('mute a known health check for a while (cluster-wide), or unmute it');
  endpointOpt(
    health
      .command('mute')
      .description('keep a check (e.g. DISK_FAILED) from counting for the verdict for a while; it stays listed')
      .argument('<code>', `one of ${CHECK_CODES.join(', ')}`)
      .requiredOption('--for <duration>', 'how long: e.g. 30m, 2h, 1d (at most 7d)'),
  ).action(async (code: string, raw: { endpoint?: string; for: string }) => {
    const o = parseOptions(z.object({ ...base, code: z.enum(CHECK_CODES), for: durationText }), { ...raw, endpoint: endpointOf(raw), code });
    const until = await withClient(o.endpoint, async (c) => {
      const mutes = (await readMutes(c)).filter((m) => m.code !== o.code && m.untilMs > Date.now());
      const untilMs = Date.now() + o.for;
      await c.put(MUTES_PATH, [Buffer.from(`${JSON.stringify([...mutes, { code: o.code, untilMs }], null, 2)}\n`)], { mode: 'strong', mkdirs: true });
      return untilMs;
    });
    if (o.json) printJson({ code: o.code, untilMs: until });
    else process.stdout.write(`${o.code} muted until ${new Date(until).toISOString()}\n`);
  });
  endpointOpt(health.command('unmute').description('let a muted check count again').argument('<code>', 'a check code')).action(
    async (code: string, raw: { endpoint?: string }) => {
      const o = parseOptions(z.object({ ...base, code: z.enum(CHECK_CODES) }), { ...raw, endpoint: endpointOf(raw), code });
      await withClient(o.endpoint, async (c) => {
        const mutes = (await readMutes(c)).filter((m) => m.code !== o.code && m.untilMs > Date.now());
        await c.put(MUTES_PATH, [Buffer.from(`${JSON.stringify(mutes, null, 2)}\n`)], { mode: 'strong', mkdirs: true });
      });
      if (o.json) printJson({ code: o.code, muted: false });
      else process.stdout.write(`${o.code} unmuted\n`);
    },
  );
}

/** "30m", "2h", "1d", "90s" → milliseconds (at most 7 days). */
const durationText = z
  .string()
  .regex(/^\d+(s|m|h|d)$/, 'a number and a unit: s, m, h or d (e.g. 30m)')
  .transform((t) => Number(t.slice(0, -1)) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[t.slice(-1) as 's' | 'm' | 'h' | 'd'])
  .pipe(z.number().int().min(1_000).max(7 * 86_400_000));
