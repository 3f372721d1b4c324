/**
 * The namespace commands against a running cluster, all clients of MetaClient:
 * `cairn ls | stat | mkdir | rm | mv | ln | watch --endpoint a[,b,c]` (or $CAIRN_ENDPOINTS, else
 * 127.0.0.1:7400, node 1 of `cairn local up`). `--endpoints` is still accepted (hidden).
 */
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { addressSchema } from '../../common/config.js';
import type { Attr, MetaClient } from '../../meta/client.js';
import { printJson, printTable } from '../output.js';
import { parseOptions, usageError } from '../usage.js';

const baseSchema = z.object({
  endpoints: z
    .string({ error: 'give --endpoint host:port[,…] or set CAIRN_ENDPOINTS' })
    .min(1)
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
    .pipe(z.array(addressSchema).min(1)),
  json: z.boolean().default(false),
  timeoutMs: z.coerce.number().int().min(1).max(600_000).default(10_000),
});

function withEndpoints(c: Command): Command {
  return c
    .option('--endpoint <host:port>', 'node(s) to talk to, comma-separated (default: $CAIRN_ENDPOINTS, $CAIRN_ENDPOINT, or 127.0.0.1:7400)')
    .addOption(new Option('--endpoints <list>', 'same as --endpoint').hideHelp())
    .option('--timeout-ms <n>', 'deadline of each request in milliseconds', '10000')
    .option('--json', 'print JSON');
}

async function withClient<T>(raw: Record<string, unknown>, fn: (c: MetaClient, o: z.infer<typeof baseSchema>) => Promise<T>): Promise<T> {
  const endpoints = raw.endpoint ?? raw.endpoints ?? process.env.CAIRN_ENDPOINTS ?? process.env.CAIRN_ENDPOINT ?? '127.0.0.1:7400';
  const o = parseOptions(baseSchema, { ...raw, endpoint: undefined, endpoints });
  const { MetaClient } = await import('../../meta/client.js');
  const c = new MetaClient({ endpoints: o.endpoints, timeoutMs: o.timeoutMs });
  try {
    return await fn(c, o);
  } finally {
    c.close();
  }
}

function modeString(a: Attr): string {
  const t = a.type === 'dir' ? 'd' : a.type === 'symlink' ? 'l' : '-';
  const bits = 'rwxrwxrwx';
  let s = '';
  for (let i = 0; i < 9; i++) s += a.mode & (1 << (8 - i)) ? bits[i] : '-';
  return t + s;
}

function attrRow(name: string, a: Attr): Array<string | number> {
  return [modeString(a), a.nlink, a.uid, a.gid, a.size, a.version, new Date(a.mtimeMs).toISOString(), a.type === 'symlink' ? `${name} -> ${a.target}` : name];
}

function parseMode(s: string | undefined, dflt: number): number {
  if (s === undefined) return dflt;
  if (!/^[0-7]{1,4}$/.test(s)) throw usageError(`--mode must be octal like 755, got ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function absolute(p: string): string {
  if (!p.startsWith('/')) throw usageError(`paths in the cluster are absolute: ${JSON.stringify(p)}`);
  return p;
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir.replace(/\/+$/, '')}/${name}`;
}

async function removeTree(c: MetaClient, path: string): Promise<number> {
  let n = 0;
  const a = await c.stat(path);
  if (a.type === 'dir') {
    // list a page, remove it, list again: names stay valid while we delete
    for (;;) {
      const page = await c.readdir({ ino: a.ino }, { limit: 1000 });
      if (page.entries.length === 0) break;
      for (const e of page.entries) n += await removeTree(c, join(path, e.name));
    }
    if (path !== '/') await c.rmdir(path);
  } else await c.unlink(path);
  return n + 1;
}

export function register(program: Command): void {
  withEndpoints(
    program
      .command('ls')
      .description('list a directory of the cluster (or show one file)')
      .argument('[path]', 'absolute path', '/')
      .option('-l, --long', 'show attributes')
      .option('--serializable', 'read the local state of the node (may be stale)'),
  ).action(async (path: string, raw: Record<string, unknown>) =>
    withClient(raw, async (c, o) => {
      const p = absolute(path);
      const serializable = raw.serializable === true;
      const a = await c.stat(p, { serializable });
      const rows: Array<{ name: string; attr?: Attr; type: string; ino: number }> = [];
      if (a.type !== 'dir') rows.push({ name: p, attr: a, type: a.type, ino: a.ino });
      else {
        const withAttrs = raw.long === true || o.json;
        for await (const e of c.readdirAll({ ino: a.ino }, { serializable, withAttrs })) {
          rows.push({ name: e.name, type: e.type, ino: e.ino, ...(e.attr ? { attr: e.attr } : {}) });
        }
      }
      if (o.json) printJson(rows.map((r) => ({ name: r.name, ...r.attr })));
      else if (raw.long === true) printTable(['mode', 'links', 'uid', 'gid', 'size', 'version', 'mtime', 'name'], rows.map((r) => attrRow(r.name, r.attr!)));
      else for (const r of rows) process.stdout.write(`${r.name}${r.type === 'dir' ? '/' : ''}\n`);
    }),
  );

  withEndpoints(
    program
      .command('stat')
      .description('show the attributes of a path (and the layout of a file)')
      .argument('<path>', 'absolute path')
      .option('--serializable', 'read the local state of the node (may be stale)'),
  ).action(async (path: string, raw: Record<string, unknown>) =>
    withClient(raw, async (c, o) => {
      const serializable = raw.serializable === true;
      const a = await c.stat(absolute(path), { serializable });
      const layout = a.type === 'file' ? await c.layout({ ino: a.ino }, { serializable }) : undefined;
      if (o.json) {
        printJson({ path, ...a, ...(layout ? { extents: layout.extents } : {}) });
        return;
      }
      printTable(
        ['field', 'value'],
        [
          ['path', path], ['ino', a.ino], ['type', a.type], ['mode', `${modeString(a)} (${a.mode.toString(8)})`], ['links', a.nlink],
          ['uid', a.uid], ['gid', a.gid], ['size', a.size], ['version', a.version], ['mtime', new Date(a.mtimeMs).toISOString()],
          ['ctime', new Date(a.ctimeMs).toISOString()], ['xattrs', a.xattrs],
          ...(a.target !== undefined ? [['target', a.target]] : []),
          ...(layout ? [['extents', layout.extents.length]] : []),
        ],
      );
    }),
  );

  withEndpoints(
    program
      .command('mkdir')
      .description('create a directory')
      .argument('<path>', 'absolute path')
      .option('-p, --parents', 'create missing parents; no error if it exists')
      .option('--mode <octal>', 'permission bits', '755'),
  ).action(async (path: string, raw: Record<string, unknown>) =>
    withClient(raw, async (c, o) => {
      const mode = parseMode(raw.mode as string | undefined, 0o755);
      const p = absolute(path);
      let attr: Attr | undefined;
      if (raw.parents === true) {
        let cur = '';
        for (const part of p.split('/').filter(Boolean)) {
          cur += `/${part}`;
          try {
            attr = await c.mkdir(cur, { mode });
          } catch (err) {
            if ((err as { code?: string }).code !== 'EEXIST') throw err;
            attr = await c.stat(cur);
            if (attr.type !== 'dir') throw err;
          }
        }
      } else attr = await c.mkdir(p, { mode });
      if (o.json) printJson(attr);
    }),
  );

  withEndpoints(
    program
      .command('rm')
      .description('remove a file or symlink (-r: a directory tree; -d: an empty directory)')
      .argument('<path>', 'absolute path')
      .option('-r, --recursive', 'remove a directory and everything under it')
      .option('-d, --dir', 'remove an empty directory'),
  ).action(async (path: string, raw: Record<string, unknown>) =>
    withClient(raw, async (c, o) => {
      const p = absolute(path);
      let removed = 1;
      if (raw.recursive === true) removed = await removeTree(c, p);
      else if (raw.dir === true) await c.rmdir(p);
      else await c.unlink(p);
      if (o.json) printJson({ removed });
    }),
  );

  withEndpoints(
    program
      .command('mv')
      .description('rename a file or directory (atomically, across directories, replacing the target)')
      .argument('<from>', 'absolute path')
      .argument('<to>', 'absolute path')
      .option('-n, --no-clobber', 'fail with EEXIST instead of replacing an existing target'),
  ).action(async (from: string, to: string, raw: Record<string, unknown>) =>
    withClient(raw, async (c, o) => {
      const r = await c.rename(absolute(from), absolute(to), { noReplace: raw.clobber === false });
      if (o.json) printJson(r);
    }),
  );

  withEndpoints(
    program
      .command('ln')
      .description('make a hard link (or with -s a symbolic link) at <link> to <target>')
      .argument('<target>', 'existing path (or, with -s, any target text)')
      .argument('<link>', 'absolute path of the new name')
      .option('-s, --symbolic', 'make a symbolic link'),
  ).action(async (target: string, link: string, raw: Record<string, unknown>) =>
    withClient(raw, async (c, o) => {
      const a = raw.symbolic === true ? await c.symlink(absolute(link), target) : await c.link(absolute(target), absolute(link));
      if (o.json) printJson(a);
    }),
  );

  withEndpoints(
    program
      .command('watch')
      .description('print changes under a path as they happen (resumes across node failures)')
      .argument('[path]', 'absolute path of the subtree to watch', '/')
      .option('--from <revision>', 'first revision to show (default: changes from now on)')
      .option('--count <n>', 'exit after this many events'),
  ).action(async (path: string, raw: Record<string, unknown>) =>
    withClient(raw, async (c, o) => {
      const opt = parseOptions(
        z.object({ from: z.coerce.number().int().min(0).default(0), count: z.coerce.number().int().min(1).optional() }),
        { from: raw.from, count: raw.count },
      );
      const ac = new AbortController();
      const stop = (): void => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      let n = 0;
      try {
        for await (const ev of c.watch(absolute(path), { fromRevision: opt.from, signal: ac.signal })) {
          if (o.json) process.stdout.write(`${JSON.stringify(ev)}\n`);
          else process.stdout.write(`${ev.revision}\t${ev.kind}\t${ev.path}${ev.newPath !== undefined ? ` -> ${ev.newPath}` : ''}\n`);
          if (opt.count !== undefined && ++n >= opt.count) break;
        }
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    }),
  );
}
