/**
 * `cairn local up`: run a whole Cairn cluster on this machine, each node a real `cairn start`
 * process on 127.0.0.1 with directory-backed disks under one folder (default ./.cairn-local).
 * This is what `npm start` runs. It writes the configs on first use (as `cairn init` does),
 * starts the nodes, waits for a leader, prints the cluster, and stops every node on Ctrl-C.
 * With --smoke it checks the cluster end to end and exits (0 when every check passed).
 */
import { THREADPOOL_SIZE } from '../threadpool.js';
import type { Command } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { CairnError } from '../../common/errors.js';
import { loadNodeConfig, type NodeConfig } from '../../common/config.js';
import { MetaClient } from '../../meta/client.js';
import { FileClient } from '../../server/file-client.js';
import { createHash, randomBytes } from 'node:crypto';
import { printJson, printTable } from '../output.js';
import { parseOptions } from '../usage.js';
import { writeLocalCluster } from './server.js';
import { pathExists, privateUmask } from '../../common/durable.js';
import { clientCredentialsDir, useClientCredentials } from '../credentials.js';
import { setTlsIdentity } from '../../rpc/security.js';

const upSchema = z.object({
  dir: z.string().min(1),
  nodes: z.coerce.number().int().min(1).max(9),
  basePort: z.coerce.number().int().min(1024).max(65_000),
  disks: z.coerce.number().int().min(1).max(16),
  smoke: z.boolean().default(false),
  json: z.boolean().default(false),
  readyTimeoutMs: z.coerce.number().int().min(1000).max(600_000),
});

interface RunningNode {
  config: NodeConfig;
  configPath: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}


/** Start one `cairn start` child; resolves once it printed its ready line. */
async function startNode(configPath: string, config: NodeConfig, logPath: string, timeoutMs: number): Promise<RunningNode> {
  const script = process.argv[1];
  if (script === undefined) throw new CairnError('EINVAL', 'cannot find the cairn entry script');
  // The same node binary and loader flags as this process (tsx when run from source).
  const child = spawn(process.execPath, [...process.execArgv, script, 'start', '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { UV_THREADPOOL_SIZE: String(THREADPOOL_SIZE), ...process.env },
  });
  const log = createWriteStream(logPath, { flags: 'a' });
  child.stderr?.pipe(log);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const ready = new Promise<void>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => rej(new CairnError('ETIMEDOUT', `node ${config.nodeId} did not start within ${timeoutMs} ms (log: ${logPath})`)), timeoutMs);
    rl.on('line', (line) => {
      log.write(`${line}\n`);
      if (line.includes('"ready":true')) {
        clearTimeout(timer);
        res();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new CairnError('EIO', `node ${config.nodeId} exited with code ${code} before it was ready (log: ${logPath})`));
    });
  });
  await ready;
  return { config, configPath, child, exited };
}

async function stopAll(nodes: RunningNode[]): Promise<void> {
  for (const n of nodes) if (n.child.exitCode === null) n.child.kill('SIGTERM');
  await Promise.all(
    nodes.map(async (n) => {
      const t = setTimeout(() => n.child.kill('SIGKILL'), 15_000);
      await n.exited;
      clearTimeout(t);
    }),
  );
}

async function waitForLeader(meta: MetaClient, endpoints: string[], timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const s = await meta.status(endpoints[0]);
      if (s.leaderId !== 0) return s.leaderId;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new CairnError('ETIMEDOUT', `no leader elected within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** End-to-end checks on a running cluster; each one says what it saw. */
async function smokeChecks(meta: MetaClient, endpoints: string[], configs: NodeConfig[]): Promise<Check[]> {
  const checks: Check[] = [];
  const check = async (name: string, fn: () => Promise<string>): Promise<void> => {
    try {
      checks.push({ name, ok: true, detail: await fn() });
    } catch (err) {
      checks.push({ name, ok: false, detail: err instanceof Error ? err.message : String(err) });
    }
  };
  const dir = `/smoke-${process.pid}-${Date.now()}`;
  await check('every node answers and agrees on the leader', async () => {
    const st = await Promise.all(endpoints.map((e) => meta.status(e)));
    const leaders = new Set(st.map((s) => s.leaderId));
    if (leaders.size !== 1) throw new Error(`nodes disagree on the leader: ${[...leaders].join(', ')}`);
    return `leader is node ${st[0]?.leaderId}, terms ${st.map((s) => s.term).join('/')}`;
  });
  await check('mkdir, then a linearizable read on every node sees it', async () => {
    await meta.mkdir(dir);
    for (const e of endpoints) {
      const one = new MetaClient({ endpoints: [e] });
      try {
        const a = await one.stat(dir);
        if (a.type !== 'dir') throw new Error(`${dir} on ${e} is a ${a.type}`);
      } finally {
        one.close();
      }
    }
    return `${dir} visible on ${endpoints.length} nodes`;
  });
  await check('rmdir removes it', async () => {
    await meta.rmdir(dir);
    try {
      await meta.stat(dir);
    } catch (err) {
      if (err instanceof CairnError && err.code === 'ENOENT') return 'gone';
      throw err;
    }
    throw new Error(`${dir} still exists`);
  });
  await fileChecks(check, meta, endpoints, configs);
  return checks;
}

/** The data path: the diskmap covers every disk; a strong put through node 1 reads back through node 3. */
async function fileChecks(
  check: (name: string, fn: () => Promise<string>) => Promise<void>,
  meta: MetaClient,
  endpoints: string[],
  configs: NodeConfig[],
): Promise<void> {
  const first = new FileClient(endpoints[0]!);
  const last = new FileClient(endpoints[endpoints.length - 1]!);
  const dir = `/smoke-files-${process.pid}-${Date.now()}`;
  const path = `${dir}/random.bin`;
  const sizeBytes = 10 * 1024 * 1024 + 4321;
  // Deterministic content from one random seed, generated piece by piece (never held whole).
  const seed = randomBytes(32);
  const pieces = function* (): Generator<Buffer> {
    for (let i = 0, at = 0; at < sizeBytes; i++, at += 1024 * 1024) {
      const n = Math.min(1024 * 1024, sizeBytes - at);
      const out = Buffer.alloc(n);
      for (let o = 0, j = 0; o < n; o += 32, j++) createHash('sha256').update(seed).update(`${i}:${j}`).digest().copy(out, o);
      yield out;
    }
  };
  try {
    await check('the diskmap exists and every node\'s disks are in it', async () => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const c = await first.cluster().catch(() => undefined);
        const disks = c?.nodes.flatMap((n) => n.disks) ?? [];
        const want = configs.reduce((s, x) => s + x.disks.length, 0);
        if (c !== undefined && c.diskmapEpoch > 0 && disks.length === want && disks.every((d) => d.inDiskmap && d.state === 'ok')) {
          return `epoch ${c.diskmapEpoch}, ${c.scheme} per ${c.failureDomain}, ${c.groups} groups over ${disks.length} disks on ${c.nodes.length} nodes`;
        }
        if (Date.now() > deadline) throw new Error(c === undefined ? 'no answer from node 1' : `epoch ${c.diskmapEpoch}, ${disks.filter((d) => d.inDiskmap).length} of ${want} disks in the map`);
        await new Promise((r) => setTimeout(r, 200));
      }
    });
    let wantHash = '';
    await check(`put ${(sizeBytes / 1024 / 1024).toFixed(1)} MiB of random bytes (strong) through node ${configs[0]!.nodeId}`, async () => {
      const h = createHash('sha256');
      for (const p of pieces()) h.update(p);
      wantHash = h.digest('hex');
      const t0 = Date.now();
      const r = await first.put(path, pieces(), { mode: 'strong', mkdirs: true });
      if (r.size !== sizeBytes) throw new Error(`stored ${r.size} bytes, sent ${sizeBytes}`);
      if (r.state !== 'durable') throw new Error(`strong put returned in state ${r.state}`);
      return `${path}: version ${r.version}, ${r.state} in ${Date.now() - t0} ms`;
    });
    await check(`get it back through node ${configs[configs.length - 1]!.nodeId}: same sha256`, async () => {
      const { data } = await last.get(path);
      const h = createHash('sha256');
      let n = 0;
      for await (const b of data) {
        h.update(b);
        n += b.length;
      }
      const got = h.digest('hex');
      if (n !== sizeBytes || got !== wantHash) throw new Error(`got ${n} bytes with sha256 ${got.slice(0, 16)}…, want ${sizeBytes} with ${wantHash.slice(0, 16)}…`);
      return `${n} bytes, sha256 ${got.slice(0, 16)}…`;
    });
    await check('status shows it durable', async () => {
      const s = await last.commitStatus(path);
      if (s.state !== 'durable' || s.pendingBytes !== 0) throw new Error(`state ${s.state}, ${s.pendingBytes} bytes pending`);
      return `state ${s.state}, version ${s.version}, nothing pending`;
    });
  } finally {
    await meta.unlink(path).catch(() => undefined);
    await meta.rmdir(dir).catch(() => undefined);
    first.close();
    last.close();
  }
}

export function register(program: Command): void {
  const local = program.command('local').description('run a whole cluster on this machine (directory-backed disks)');
  local
    .command('up')
    .description('start (and on first use create) a local cluster; Ctrl-C stops it')
    .option('--dir <dir>', 'folder for the nodes\' configs, data, caches and disks', '.cairn-local')
    .option('--nodes <n>', 'number of nodes', '3')
    .option('--base-port <port>', 'gRPC port of node 1 (node i uses base + i - 1)', '7400')
    .option('--disks <n>', 'directory disks per node (the appliance has three)', '3')
    .option('--ready-timeout-ms <ms>', 'how long to wait for the nodes and a leader', '60000')
    .option('--smoke', 'check the cluster end to end, stop it, and exit (0 when every check passed)')
    .option('--json', 'print JSON')
    .action(async (raw: unknown) => {
      const o = parseOptions(upSchema, raw);
      privateUmask();
      const dir = resolve(o.dir);
      const configPaths = Array.from({ length: o.nodes }, (_, i) => join(dir, `node${i + 1}`, 'cairn.json'));
      const have = await Promise.all(configPaths.map(pathExists));
      if (!have.every(Boolean)) {
        if (have.some(Boolean)) throw new CairnError('EEXIST', `${dir} holds some node configs but not all ${o.nodes}; remove it or pick another --dir`);
        // Each node's status page on base + 80 + i - 1 (7480…), anonymous on 127.0.0.1 only.
        await writeLocalCluster({ nodes: o.nodes, dir, basePort: o.basePort, ...(o.basePort + 80 <= 65_000 ? { statusBasePort: o.basePort + 80 } : {}), disks: o.disks, diskSizeBytes: 4 * 1024 ** 3, clusterName: 'local' });
      }
      const configs = await Promise.all(configPaths.map((p) => loadNodeConfig(p)));
      // This command is a client of its cluster too: with the owner's credentials that init wrote.
      const credentials = join(dir, 'client');
      const secured = configs.every((c) => c.tls !== undefined);
      if (secured) useClientCredentials({ CAIRN_CREDENTIALS: credentials });
      else setTlsIdentity(undefined);
      const nodes: RunningNode[] = [];
      let onSignal: () => void = () => undefined;
      const signalled = new Promise<void>((res) => (onSignal = res));
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const endpoints = configs.map((c) => c.advertise ?? c.listen);
      const meta = new MetaClient({ endpoints, timeoutMs: 5000, retryBudgetMs: 20_000 });
      try {
        // Start all nodes at once: a Raft group needs a quorum before any of them is useful.
        const started = await Promise.allSettled(
          configs.map((c, i) => startNode(configPaths[i]!, c, join(dir, `node${c.nodeId}`, 'node.log'), o.readyTimeoutMs)),
        );
        for (const s of started) if (s.status === 'fulfilled') nodes.push(s.value);
        const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
        if (failed) throw failed.reason;
        const leader = await waitForLeader(meta, endpoints, o.readyTimeoutMs);
        const info = await Promise.all(
          nodes.map(async (n) => {
            const s = await meta.status(n.config.listen).catch(() => undefined);
            return { nodeId: n.config.nodeId, listen: n.config.listen, pid: n.child.pid ?? null, role: s?.role ?? null, term: s?.term ?? null, disks: n.config.disks.length, config: n.configPath };
          }),
        );
        const rows = info.map((n) => [n.nodeId, n.listen, n.pid, n.role ?? '?', n.term, n.disks, n.config]);
        if (o.smoke) {
          const checks = await smokeChecks(meta, endpoints, configs);
          if (o.json) printJson({ leader, nodes: info, checks });
          else {
            printTable(['node', 'listen', 'pid', 'role', 'term', 'disks', 'config'], rows);
            process.stdout.write('\n');
            printTable(['check', 'ok', 'detail'], checks.map((c) => [c.name, c.ok ? 'ok' : 'FAILED', c.detail]));
          }
          const bad = checks.filter((c) => !c.ok);
          if (bad.length > 0) throw new CairnError('EIO', `${bad.length} of ${checks.length} smoke checks failed`);
          return;
        }
        if (o.json) printJson({ leader, nodes: info });
        else {
          printTable(['node', 'listen', 'pid', 'role', 'term', 'disks', 'config'], rows);
          const found = clientCredentialsDir({ ...process.env, CAIRN_CREDENTIALS: undefined });
          const env = !secured || found === credentials ? '' : `CAIRN_CREDENTIALS=${credentials} `;
          process.stdout.write(
            `\n${secured ? `Secured: every node requires a certificate of this cluster's CA; the CLI's is in ${credentials}${env === '' ? ' (found there by itself)' : ''}.` : `NOT secured: ${dir} was made without TLS (remove it to get a secured cluster).`}\n` +
              `Cairn is running (logs in ${dir}/node<N>/node.log; data kept in ${dir} across restarts). Try:\n` +
              `  ${env}npm run cairn -- status --endpoint ${endpoints[0]}\n` +
              `  ${env}npm run cairn -- put README.md /docs/README.md --strong --endpoint ${endpoints[0]}\n` +
              `  ${env}npm run cairn -- cat /docs/README.md --endpoint ${endpoints[endpoints.length - 1]}\n` +
              `  ${env}npm run cairn -- ls / --endpoint ${endpoints.join(',')}\n` +
              (configs[0]?.statusPage !== undefined
                ? `Status page: ${secured ? 'https' : 'http'}://${configs[0].statusPage.listen}/${secured ? ` (a browser trusts it once ${dir}/ca/ca.crt is imported as an authority)` : ''}\n`
                : '') +
              `Ctrl-C stops every node.\n`,
          );
        }
        await Promise.race([Promise.all(nodes.map((n) => n.exited)), signalled]);
      } finally {
        meta.close();
        await stopAll(nodes);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
