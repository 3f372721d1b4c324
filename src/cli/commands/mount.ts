/**
 * `cairn mount DIR` / `cairn umount DIR` / `cairn mounts`: FUSE mounts made by a node daemon
 * (proto/mount.proto, src/fuse/service.ts). The daemon — the one owner of its node's write
 * cache — serves the mount; the CLI only asks. `cairn umount` also clears a dead mount (one
 * whose daemon was killed: "Transport endpoint is not connected") without any daemon, by
 * fusermount3 -uz on this machine.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { z } from 'zod';
import { addressSchema } from '../../common/config.js';
import { CairnError } from '../../common/errors.js';
import { call, makeClient, serviceOf, type grpc } from '../../rpc/grpc.js';
import { printJson, printTable } from '../output.js';
import { parseOptions } from '../usage.js';

const MOUNT_PROTO = 'mount.proto';
const MOUNT_SERVICE = 'cairn.mount.Mounts';

const base = { endpoint: addressSchema, json: z.boolean().default(false) };
const mountSchema = z.object({ ...base, mode: z.enum(['weak', 'strong']).optional() });
const umountSchema = z.object({ ...base, force: z.boolean().default(false) });

function endpointOf(raw: { endpoint?: string }): string {
  return raw.endpoint ?? process.env.CAIRN_ENDPOINT ?? process.env.CAIRN_ENDPOINTS?.split(',')[0] ?? '127.0.0.1:7400';
}

async function withMounts<T>(endpoint: string, fn: (c: grpc.Client) => Promise<T>): Promise<T> {
  const c = makeClient<grpc.Client>(serviceOf(MOUNT_PROTO, MOUNT_SERVICE), endpoint);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Is a mount of this machine at dir? (/proc/self/mountinfo) */
async function mountedHere(dir: string): Promise<boolean> {
  const { isMounted } = await import('../../fuse/binding.js');
  return isMounted(dir);
}

export function register(program: Command): void {
  const opts = (c: Command): Command =>
    c.option('--endpoint <host:port>', 'node daemon to ask (default: $CAIRN_ENDPOINT, first of $CAIRN_ENDPOINTS, or 127.0.0.1:7400)').option('--json', 'print JSON');

  opts(
    program
      .command('mount')
      .description('mount Cairn at DIR (an existing directory on the node daemon\'s machine); the daemon serves it')
      .argument('<dir>', 'mount point')
      .option('--mode <mode>', 'weak (fsync/close durable in the node\'s cache) or strong (committed); default: the node\'s daemon.file.mode'),
  ).action(async (dir: string, raw: { endpoint?: string; mode?: string; json?: boolean }) => {
    const o = parseOptions(mountSchema, { ...raw, endpoint: endpointOf(raw) });
    const r = await withMounts(o.endpoint, (c) =>
      call<unknown, { dir: string; mode: string }>(c, 'Mount', { dir: resolve(dir), mode: o.mode ?? '' }, 30_000),
    );
    if (o.json) printJson(r);
    else process.stdout.write(`${r.dir}: mounted (${r.mode})\n`);
  });

  opts(
    program
      .command('umount')
      .alias('unmount')
      .description('unmount DIR; clears a dead mount too ("Transport endpoint is not connected")')
      .argument('<dir>', 'mount point')
      .option('--force', 'detach even if busy (lazy unmount)'),
  ).action(async (dir: string, raw: { endpoint?: string; force?: boolean; json?: boolean }) => {
    const o = parseOptions(umountSchema, { ...raw, endpoint: endpointOf(raw) });
    const abs = resolve(dir);
    let how = 'daemon';
    try {
      await withMounts(o.endpoint, (c) => call(c, 'Unmount', { dir: abs, force: o.force }, 30_000));
    } catch (err) {
      // No daemon (or not its mount): clear whatever is mounted there on this machine.
      if (!(await mountedHere(abs))) {
        throw err instanceof CairnError ? err : new CairnError('EINVAL', `${abs} is not mounted`);
      }
      const { forceUnmount } = await import('../../fuse/binding.js');
      if (!(await forceUnmount(abs))) throw new CairnError('EBUSY', `${abs} could not be unmounted (fusermount3 -uz and umount -l failed)`);
      how = 'local';
    }
    if (o.json) printJson({ dir: abs, unmounted: true, how });
    else process.stdout.write(`${abs}: unmounted\n`);
  });

  opts(program.command('mounts').description('list the FUSE mounts a node daemon serves')).action(async (raw: { endpoint?: string; json?: boolean }) => {
    const o = parseOptions(z.object(base), { ...raw, endpoint: endpointOf(raw) });
    const r = await withMounts(o.endpoint, (c) => call<unknown, { mounts?: Array<{ dir: string; mode: string }> }>(c, 'List', {}, 10_000));
    const mounts = r.mounts ?? [];
    if (o.json) printJson({ mounts });
    else printTable(['dir', 'mode'], mounts.map((m) => [m.dir, m.mode]));
  });
}
