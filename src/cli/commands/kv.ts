/**
 * `cairn kv …`: the trivial key-value Raft group used for development, tests and the
 * metadata benchmark. `serve` runs one node until SIGTERM/SIGINT; put/get/cas/del/status
 * are clients of the KV gRPC service.
 */
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { loadNodeConfig, addressSchema } from '../../common/config.js';
import { CairnError } from '../../common/errors.js';
import { logger } from '../../common/log.js';
import { printJson, printTable } from '../output.js';
import { parseOptions, usageError } from '../usage.js';
import { untilSignal } from '../signals.js';

const endpointsSchema = z.object({
  endpoints: z
    .string({ error: 'give --endpoint host:port[,…]' })
    .min(1)
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
    .pipe(z.array(addressSchema).min(1)),
  json: z.boolean().optional(),
  timeoutMs: z.coerce.number().int().min(1).max(600_000).default(5000),
});

function endpointOptions(c: Command): Command {
  return c
    .option('--endpoint <host:port>', 'KV node(s), comma-separated')
    .addOption(new Option('--endpoints <list>', 'same as --endpoint').hideHelp())
    .option('--timeout-ms <n>', 'deadline of each call in milliseconds', '5000')
    .option('--json', 'print JSON');
}

async function withClient<T>(raw: unknown, fn: (c: import('../../raft/kv/client.js').KvClient, o: z.infer<typeof endpointsSchema>) => Promise<T>): Promise<T> {
  const r = raw as { endpoint?: string; endpoints?: string };
  const o = parseOptions(endpointsSchema, { ...r, endpoint: undefined, endpoints: r.endpoint ?? r.endpoints });
  const { KvClient } = await import('../../raft/kv/client.js');
  const c = new KvClient(o.endpoints, o.timeoutMs);
  try {
    return await fn(c, o);
  } finally {
    c.close();
  }
}

export function register(program: Command): void {
  const kv = program.command('kv').description('a replicated key-value store on a Cairn Raft group (development and benchmarks)');

  kv.command('serve')
    .description('run one node of a KV Raft group until SIGTERM or SIGINT')
    .requiredOption('--config <file>', 'node config file (JSON: nodeId, listen, peers, dataDir, raft, …)')
    .option('--join', 'start with an empty membership and wait to be added to a running group')
    .action(async (raw: { config: string; join?: boolean }) => {
      const cfg = await loadNodeConfig(raw.config);
      const { startKvNode } = await import('../../raft/kv/server.js');
      const log = logger('kv-serve', { node: cfg.nodeId });
      const n = await startKvNode(cfg, { join: raw.join === true });
      process.stdout.write(`${JSON.stringify({ ready: true, nodeId: cfg.nodeId, address: n.node.listenAddress, pid: process.pid })}\n`);
      await untilSignal(log);
      await n.stop();
    });

  endpointOptions(kv.command('put').description('set a key').argument('<key>').argument('<value>')).action(
    async (key: string, value: string, raw: unknown) =>
      withClient(raw, async (c, o) => {
        await c.put(key, Buffer.from(value, 'utf8'));
        if (o.json) printJson({ ok: true });
      }),
  );

  endpointOptions(
    kv.command('get').description('read a key (linearizable unless --serializable)').argument('<key>').option('--serializable', 'read the local, possibly stale, state'),
  ).action(async (key: string, raw: { serializable?: boolean }) =>
    withClient(raw, async (c, o) => {
      const v = await c.get(key, raw.serializable !== true);
      if (o.json) printJson({ found: v !== undefined, value: v?.toString('utf8') });
      else if (v === undefined) throw new CairnError('ENOENT', `key ${key} not found`);
      else process.stdout.write(`${v.toString('utf8')}\n`);
    }),
  );

  endpointOptions(
    kv
      .command('cas')
      .description('set a key only if its value is <expect> (or absent with --absent)')
      .argument('<key>')
      .argument('<value>')
      .option('--expect <old>', 'the value the key must have')
      .option('--absent', 'the key must not exist'),
  ).action(async (key: string, value: string, raw: { expect?: string; absent?: boolean }) => {
    if ((raw.expect === undefined) === (raw.absent !== true)) throw usageError('give exactly one of --expect <old> or --absent');
    return withClient(raw, async (c, o) => {
      const r = await c.cas(key, raw.absent === true ? null : Buffer.from(raw.expect!, 'utf8'), Buffer.from(value, 'utf8'));
      if (o.json) printJson({ ok: r.ok, current: r.current?.toString('utf8') });
      else if (!r.ok) throw new CairnError('ECONFLICT', `cas failed: current value is ${r.current === undefined ? '(absent)' : JSON.stringify(r.current.toString('utf8'))}`);
    });
  });

  endpointOptions(kv.command('del').description('delete a key').argument('<key>')).action(async (key: string, raw: unknown) =>
    withClient(raw, async (c, o) => {
      const deleted = await c.delete(key);
      if (o.json) printJson({ deleted });
    }),
  );

  endpointOptions(kv.command('status').description('raft status of every endpoint')).action(async (raw: unknown) =>
    withClient(raw, async (c, o) => {
      const rows = await Promise.all(
        c.endpoints.map(async (e, i) => {
          try {
            return { endpoint: e, ...(await c.status(i)) };
          } catch (err) {
            return { endpoint: e, error: (err as Error).message };
          }
        }),
      );
      if (o.json) {
        printJson(rows);
        return;
      }
      printTable(
        ['endpoint', 'id', 'role', 'leader', 'term', 'commit', 'applied', 'voters', 'learners', 'error'],
        rows.map((r) =>
          'error' in r
            ? [r.endpoint, '', '', '', '', '', '', '', '', r.error]
            : [r.endpoint, r.id, r.role, r.leader, r.term, r.commit, r.applied, r.voters.join(','), r.learners.join(','), ''],
        ),
      );
    }),
  );
}
