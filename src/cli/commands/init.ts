/**
 * Making a cluster and adding machines to it:
 *
 *   cairn init --dir D --listen HOST:PORT --disk PATH…   the first machine: cluster id, CA, this
 *                                                        node's key and certificate, an owner's
 *                                                        client certificate, the config
 *   cairn token create --config D/cairn.json --node-id N a short-lived join token (a certificate
 *                                                        that may only ask to join, and where to)
 *   cairn join TOKEN --dir D --listen HOST:PORT --disk … another machine: its own key, a node
 *                                                        certificate from the cluster, the config;
 *                                                        it joins as a learner and becomes a voter
 *                                                        once caught up (src/server/admin-service.ts)
 *   cairn init --nodes N --dir D                         N nodes on 127.0.0.1 (development, tests)
 *
 * Everything is written private (0600 files, 0700 folders). `cairn start --config D/cairn.json`
 * runs the node.
 */
import type { Command } from 'commander';
import { statfs } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { addressSchema, loadNodeConfig, nodeConfigSchema, nodeIdSchema, type NodeConfig } from '../../common/config.js';
import { CairnError } from '../../common/errors.js';
import { mkdirDurable, pathExists, privateUmask, writeFileDurable } from '../../common/durable.js';
import { call, makeClient, serviceOf } from '../../rpc/grpc.js';
import { issueCert, newKeyPair } from '../../rpc/pki.js';
import { loadIdentity, makeIdentity, setTlsIdentity } from '../../rpc/security.js';
import { TOKEN_SCOPES, newClientToken } from '../../rpc/tokens.js';
import { FileClient } from '../../server/file-client.js';
import { addTokenRecord, readTokenRecords, removeTokenRecord } from '../../server/token-book.js';
import { issueInto, writeIdentity, writeNewCa } from '../credentials.js';
import { printJson, printTable } from '../output.js';
import { parseOptions, usageError } from '../usage.js';
import { initSchema, writeLocalCluster } from './server.js';

const applianceSchema = z.object({
  dir: z.string().min(1),
  listen: addressSchema,
  advertise: addressSchema.optional(),
  disk: z.array(z.string().min(1)).min(1, 'give at least one --disk PATH'),
  diskSizeBytes: z.coerce.number().int().min(1 << 20).optional(),
  cache: z.string().min(1).optional(),
  nodeId: z.coerce.number().pipe(nodeIdSchema).default(1),
  machine: z.coerce.number().int().min(0).max(255).optional(),
  clusterName: z.string().default('cairn'),
  metricsListen: addressSchema.optional(),
  force: z.boolean().default(false),
  json: z.boolean().default(false),
});

const joinSchema = applianceSchema.omit({ nodeId: true, clusterName: true });

/** What a join token carries (base64url JSON after "cairn1."). */
const tokenSchema = z.strictObject({
  endpoints: z.array(addressSchema).min(1),
  nodeId: nodeIdSchema,
  ca: z.string().min(1),
  cert: z.string().min(1),
  key: z.string().min(1),
  expiresMs: z.number(),
});
const TOKEN_PREFIX = 'cairn1.';

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
}

/** Capacity a directory disk offers: given, or the size of the file system that holds it. */
async function capacityOf(path: string, given: number | undefined): Promise<number> {
  if (given !== undefined) return given;
  const s = await statfs(path);
  return Math.max(1 << 20, Number(s.blocks) * Number(s.bsize));
}

/** The config, data, cache and disk folders of one machine. */
async function writeMachine(
  o: z.infer<typeof joinSchema> & { nodeId: number; clusterName: string },
  tls: NodeConfig['tls'],
  peers: Array<{ id: number; address: string }>,
  joining: boolean,
): Promise<{ path: string; config: NodeConfig }> {
  const dir = resolve(o.dir);
  const path = join(dir, 'cairn.json');
  if (!o.force && (await pathExists(path))) throw new CairnError('EEXIST', `${path} exists; use --force to overwrite it`);
  const disks = [];
  for (const [i, d] of o.disk.entries()) {
    await mkdirDurable(resolve(d));
    disks.push({ path: resolve(d), disk: i, capacityBytes: await capacityOf(resolve(d), o.diskSizeBytes), class: 'hdd' as const });
  }
  const config = nodeConfigSchema.parse({
    clusterName: o.clusterName,
    nodeId: o.nodeId,
    listen: o.listen,
    ...(o.advertise !== undefined ? { advertise: o.advertise } : {}),
    peers,
    dataDir: join(dir, 'data'),
    cacheDir: resolve(o.cache ?? join(dir, 'cache')),
    location: { machine: o.machine ?? (o.nodeId - 1) % 256 },
    disks,
    ...(o.metricsListen !== undefined ? { metricsListen: o.metricsListen } : {}),
    tls,
    ...(joining ? { join: true } : {}),
  });
  await mkdirDurable(config.dataDir);
  await mkdirDurable(config.cacheDir);
  await writeFileDurable(path, `${JSON.stringify(config, null, 2)}\n`);
  return { path, config };
}

async function initAppliance(o: z.infer<typeof applianceSchema>): Promise<Record<string, unknown>> {
  const dir = resolve(o.dir);
  const address = o.advertise ?? o.listen;
  const clusterId = `${o.clusterName}-${randomBytes(6).toString('hex')}`;
  const ca = await writeNewCa(dir, clusterId);
  const host = hostOf(address);
  const files = await issueInto(join(dir, 'tls'), ca, { kind: 'node', name: `node-${o.nodeId}`, ...(isIP(host) ? { ips: [host] } : {}) });
  await issueInto(join(dir, 'client'), ca, { kind: 'client', name: 'client-admin' });
  const made = await writeMachine(o, { ...files, caKeyFile: join(dir, 'ca', 'ca.key') }, [{ id: o.nodeId, address }], false);
  return { clusterId, nodeId: o.nodeId, config: made.path, listen: o.listen, credentials: join(dir, 'client'), disks: made.config.disks.map((d) => d.path) };
}

function decodeToken(token: string): z.infer<typeof tokenSchema> {
  if (!token.startsWith(TOKEN_PREFIX)) throw usageError('not a Cairn join token (it starts with "cairn1.")');
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(token.slice(TOKEN_PREFIX.length), 'base64url').toString('utf8'));
  } catch {
    throw usageError('the join token is damaged (not base64url JSON)');
  }
  const r = tokenSchema.safeParse(json);
  if (!r.success) throw usageError('the join token is damaged (fields missing)');
  if (r.data.expiresMs < Date.now()) throw new CairnError('EACCES', `the join token expired at ${new Date(r.data.expiresMs).toISOString()}; make a new one with cairn token create`);
  return r.data;
}

async function joinCluster(token: string, o: z.infer<typeof joinSchema>): Promise<Record<string, unknown>> {
  const t = decodeToken(token);
  // Talk to the cluster as the token's holder: a certificate that may only ask to join.
  setTlsIdentity(makeIdentity(t.ca, t.cert, t.key, 'the join token'));
  const mine = newKeyPair();
  const Admin = serviceOf('admin.proto', 'cairn.admin.Admin');
  const address = o.advertise ?? o.listen;
  const queue = [...t.endpoints];
  const tried = new Set<string>();
  let reply: { ca_pem: string; cert_pem: string; ca_key_pem: string; peers: Array<{ id: number; address: string }>; cluster_name: string } | undefined;
  let last: unknown;
  while (reply === undefined && queue.length > 0) {
    const ep = queue.shift()!;
    if (tried.has(ep)) continue;
    tried.add(ep);
    const c = makeClient(Admin, ep);
    try {
      reply = await call(c, 'Join', { node_id: t.nodeId, address, public_key_pem: mine.publicKeyPem }, 30_000);
    } catch (err) {
      last = err;
      // A follower names the leader: ask it next.
      const leaderAddress = err instanceof CairnError ? err.details?.address : undefined;
      if (typeof leaderAddress === 'string' && leaderAddress !== '') queue.unshift(leaderAddress);
    } finally {
      c.close();
    }
  }
  setTlsIdentity(undefined);
  if (reply === undefined) throw last instanceof CairnError ? last : new CairnError('EUNAVAIL', `no member of the cluster answered (${t.endpoints.join(', ')})`);
  const dir = resolve(o.dir);
  const files = await writeIdentity(join(dir, 'tls'), reply.ca_pem, { keyPem: mine.keyPem, certPem: reply.cert_pem }, 'node');
  const caKeyFile = join(dir, 'tls', 'ca.key');
  await writeFileDurable(caKeyFile, reply.ca_key_pem);
  const peers = reply.peers.map((p) => ({ id: Number(p.id), address: p.address })).filter((p) => p.address !== '');
  const made = await writeMachine({ ...o, nodeId: t.nodeId, clusterName: reply.cluster_name }, { ...files, caKeyFile }, peers, true);
  return { nodeId: t.nodeId, config: made.path, listen: o.listen, peers, disks: made.config.disks.map((d) => d.path) };
}

export function register(program: Command): void {
  program
    .command('init')
    .description('make a new cluster on this machine (CA, keys, config); with --nodes N, N nodes on 127.0.0.1')
    .requiredOption('--dir <dir>', "this node's folder (config, data, keys), e.g. /var/lib/cairn; with --nodes, the folder of node1/, node2/, …")
    .option('--listen <host:port>', 'address this node serves on (one port for everything)')
    .option('--advertise <host:port>', 'address other machines reach it at (default: --listen)')
    .option('--disk <paths...>', 'a folder on each data disk (its mount point or a folder in it)')
    .option('--disk-size-bytes <n>', 'capacity each disk offers (default: the size of its file system)')
    .option('--cache <dir>', 'write cache folder, best on the SSD (default: <dir>/cache)')
    .option('--node-id <n>', "this node's id", '1')
    .option('--machine <n>', "this machine's number in the topology (default: node id - 1)")
    .option('--cluster-name <name>', 'cluster name')
    .option('--metrics-listen <host:port>', 'serve Prometheus /metrics here')
    .option('--nodes <n>', 'instead: N nodes on 127.0.0.1 (development)')
    .option('--base-port <port>', 'with --nodes: port of node 1 (node i: base + i - 1)', '7400')
    .option('--metrics-base-port <port>', 'with --nodes: /metrics of node i on this port + i - 1')
    .option('--disks <n>', 'with --nodes: directory disks per node', '1')
    .option('--insecure', 'with --nodes: no TLS, the nodes accept anyone (benchmarks)')
    .option('--force', 'overwrite existing config files')
    .option('--json', 'print JSON')
    .action(async (raw: Record<string, unknown>) => {
      privateUmask();
      if (raw.nodes !== undefined) {
        const o = parseOptions(initSchema, { ...raw, clusterName: raw.clusterName ?? 'local' });
        const nodes = await writeLocalCluster(o);
        const credentials = o.insecure ? null : join(resolve(o.dir), 'client');
        if (o.json) {
          printJson({ nodes: nodes.map((n) => ({ nodeId: n.config.nodeId, config: n.path, listen: n.config.listen })), credentials });
          return;
        }
        printTable(['node', 'listen', 'config'], nodes.map((n) => [n.config.nodeId, n.config.listen, n.path]));
        process.stdout.write(
          `\nstart each node with:  cairn start --config ${join(resolve(o.dir), 'node<N>', 'cairn.json')}\n` +
            `then e.g.:             ${credentials === null ? '' : `CAIRN_CREDENTIALS=${credentials} `}cairn ls / --endpoint ${nodes.map((n) => n.config.listen).join(',')}\n`,
        );
        return;
      }
      if (raw.listen === undefined) throw usageError('give --listen HOST:PORT and --disk PATH… (or --nodes N for a local cluster)');
      const o = parseOptions(applianceSchema, raw);
      const r = await initAppliance(o);
      if (o.json) {
        printJson(r);
        return;
      }
      process.stdout.write(
        `cluster ${String(r.clusterId)}: node ${o.nodeId} on ${o.listen}, ${o.disk.length} disk(s); config ${String(r.config)}\n\n` +
          `next:\n` +
          `  cairn start --config ${String(r.config)}          (or: systemctl enable --now cairn, see ops/)\n` +
          `  cairn token create --config ${String(r.config)} --node-id 2   then on the next machine: cairn join TOKEN --dir … --listen … --disk …\n` +
          `  CAIRN_CREDENTIALS=${String(r.credentials)} cairn status --endpoint ${o.advertise ?? o.listen}\n`,
      );
    });

  const token = program.command('token').description('join tokens for new machines, client tokens for programs without a certificate');
  token
    .command('create')
    .description('print a token (run on a member that holds the CA key): --kind join (default): a short-lived join token for one new node; --kind client: a client token (stored hashed in the cluster, shown once)')
    .requiredOption('--config <file>', "a member's config (its tls.caKeyFile signs the token)")
    .option('--kind <kind>', 'join | client', 'join')
    .option('--node-id <n>', 'the id the new node will have (join tokens)')
    .option('--name <name>', 'who the client token is for (client tokens)', 'client')
    .option('--scope <scope>', 'read | write (client tokens: read may only look, list, read and ask status)', 'read')
    .option('--ttl <duration>', 'how long the token is valid: e.g. 30m, 2h, 30d (join: at most 24h; client: at most 365d)', '1h')
    .option('--endpoint <host:port>', 'members to ask, comma-separated (default: this member)')
    .option('--json', 'print JSON')
    .action(async (raw: Record<string, unknown>) => {
      const o = parseOptions(
        z.object({
          config: z.string().min(1),
          kind: z.enum(['join', 'client']),
          nodeId: z.coerce.number().pipe(nodeIdSchema).optional(),
          name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, dot, dash or underscore (at most 64)'),
          scope: z.enum(TOKEN_SCOPES),
          ttl: z
            .string()
            .regex(/^\d+(m|h|d)$/, 'minutes, hours or days, e.g. 30m, 2h or 30d')
            .transform((t) => Number(t.slice(0, -1)) * (t.endsWith('d') ? 86_400_000 : t.endsWith('h') ? 3_600_000 : 60_000))
            .pipe(z.number().int().min(60_000).max(365 * 86_400_000)),
          endpoint: z.string().optional(),
          json: z.boolean().default(false),
        }),
        raw,
      );
      const cfg = await loadNodeConfig(o.config);
      if (cfg.tls?.caKeyFile === undefined) throw new CairnError('EINVAL', `${o.config}: no tls.caKeyFile: this member cannot sign tokens`);
      const { readFile } = await import('node:fs/promises');
      const ca = { keyPem: await readFile(cfg.tls.caKeyFile, 'utf8'), certPem: await readFile(cfg.tls.caFile, 'utf8') };
      const endpoints = parseOptions(z.array(addressSchema).min(1), (o.endpoint ?? cfg.advertise ?? cfg.listen).split(',').map((x) => x.trim()).filter(Boolean));
      if (o.kind === 'client') {
        const made = newClientToken(ca.keyPem, { name: o.name, scope: o.scope, ttlMs: o.ttl });
        // Kept in the cluster (the record only: the secret's hash), written as this member.
        setTlsIdentity(loadIdentity(cfg.tls));
        const c = new FileClient(endpoints[0]!);
        try {
          await addTokenRecord(c, made.record);
        } finally {
          c.close();
        }
        if (o.json) printJson({ token: made.text, id: made.record.id, name: o.name, scope: o.scope, expiresMs: made.record.expiresMs });
        else process.stdout.write(`${made.text}\n`);
        return;
      }
      if (o.nodeId === undefined) throw usageError('a join token needs --node-id');
      if (o.ttl > 24 * 3_600_000) throw usageError('a join token is valid at most 24h');
      const holder = issueCert(ca, { kind: 'join', name: `join-${o.nodeId}`, validMs: o.ttl });
      const expiresMs = Date.now() + o.ttl;
      const text = TOKEN_PREFIX + Buffer.from(JSON.stringify({ endpoints, nodeId: o.nodeId, ca: ca.certPem, cert: holder.certPem, key: holder.keyPem, expiresMs })).toString('base64url');
      if (o.json) printJson({ token: text, nodeId: o.nodeId, expiresMs, endpoints });
      else process.stdout.write(`${text}\n`);
    });

  token
    .command('list')
    .description('the client tokens the cluster accepts (id, name, scope, expiry; never the secrets, which it does not keep)')
    .option('--endpoint <host:port>', 'a node of the cluster (default $CAIRN_ENDPOINT or 127.0.0.1:7400)')
    .option('--json', 'print JSON')
    .action(async (raw: Record<string, unknown>) => {
      const o = parseOptions(z.object({ endpoint: addressSchema, json: z.boolean().default(false) }), { ...raw, endpoint: raw.endpoint ?? process.env.CAIRN_ENDPOINT ?? '127.0.0.1:7400' });
      const c = new FileClient(o.endpoint);
      try {
        const records = await readTokenRecords(c);
        const rows = records.map((r) => ({ id: r.id, name: r.name, scope: r.scope, createdMs: r.createdMs, expiresMs: r.expiresMs, expired: r.expiresMs < Date.now() }));
        if (o.json) printJson(rows);
        else printTable(['id', 'name', 'scope', 'expires', 'state'], rows.map((r) => [r.id, r.name, r.scope, new Date(r.expiresMs).toISOString(), r.expired ? 'expired' : 'valid']));
      } finally {
        c.close();
      }
    });
  token
    .command('revoke')
    .description('stop accepting a client token (every node within a few seconds)')
    .argument('<id>', 'the token id (the 16 hex digits after "cairnct1.", or from `cairn token list`)')
    .option('--endpoint <host:port>', 'a node of the cluster (default $CAIRN_ENDPOINT or 127.0.0.1:7400)')
    .option('--json', 'print JSON')
    .action(async (id: string, raw: Record<string, unknown>) => {
      const o = parseOptions(z.object({ id: z.string().regex(/^[0-9a-f]{16}$/, '16 hex digits'), endpoint: addressSchema, json: z.boolean().default(false) }), {
        ...raw,
        id,
        endpoint: raw.endpoint ?? process.env.CAIRN_ENDPOINT ?? '127.0.0.1:7400',
      });
      const c = new FileClient(o.endpoint);
      try {
        const removed = await removeTokenRecord(c, o.id);
        if (!removed) throw new CairnError('ENOENT', `no client token ${o.id} in this cluster`);
        if (o.json) printJson({ id: o.id, revoked: true });
        else process.stdout.write(`token ${o.id} revoked\n`);
      } finally {
        c.close();
      }
    });

  program
    .command('join')
    .description('add this machine to a cluster with a join token (it joins as a learner, then becomes a voter)')
    .argument('<token>', 'from `cairn token create` on a member')
    .requiredOption('--dir <dir>', "this node's folder (config, data, keys)")
    .requiredOption('--listen <host:port>', 'address this node serves on')
    .option('--advertise <host:port>', 'address other machines reach it at (default: --listen)')
    .requiredOption('--disk <paths...>', 'a folder on each data disk')
    .option('--disk-size-bytes <n>', 'capacity each disk offers (default: the size of its file system)')
    .option('--cache <dir>', 'write cache folder (default: <dir>/cache)')
    .option('--machine <n>', "this machine's number in the topology (default: node id - 1)")
    .option('--metrics-listen <host:port>', 'serve Prometheus /metrics here')
    .option('--force', 'overwrite an existing config file')
    .option('--json', 'print JSON')
    .action(async (token: string, raw: unknown) => {
      privateUmask();
      const o = parseOptions(joinSchema, raw);
      const r = await joinCluster(token.trim(), o);
      if (o.json) printJson(r);
      else {
        process.stdout.write(
          `node ${String(r.nodeId)} joined as a learner; it becomes a voter once it has caught up.\n` +
            `next: cairn start --config ${String(r.config)}\n`,
        );
      }
    });
}
