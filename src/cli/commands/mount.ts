/**
 * `cairn mount DIR` / `cairn umount DIR` / `cairn mounts`: FUSE mounts made by a node daemon
 * (proto/mount.proto, src/fuse/service.ts). The daemon — the one owner of its node's write
 * cache — serves the mount; the CLI only asks. `cairn umount` also clears a dead mount (one
 * whose daemon was killed: "Transport endpoint is not connected") without any daemon, by
 * fusermount3 -uz on this machine.
 *
 * For systemd (ops/systemd, docs/mount.md): `cairn mounts --config FILE --wait S` waits until
 * every mount the node config names (daemon.mounts) is up and answering on this machine, and
 * `cairn umount --configured --config FILE` clears those left dead after the daemon exited.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { z } from 'zod';
import { stat } from 'node:fs/promises';
import { addressSchema, loadNodeConfig } from '../../common/config.js';
import { CairnError } from '../../common/errors.js';
import { call, makeClient, serviceOf, type grpc } from '../../rpc/grpc.js';
import { printJson, printTable } from '../output.js';
import { parseOptions } from '../usage.js';

const MOUNT_PROTO = 'mount.proto';
const MOUNT_SERVICE = 'cairn.mount.Mounts';

const base = { endpoint: addressSchema, json: z.boolean().default(false) };
const mountSchema = z.object({ ...base, mode: z.enum(['weak', 'strong']).optional() });
const umountSchema = z.object({ ...base, force: z.boolean().default(false), configured: z.boolean().default(false), config: z.string().min(1).optional() });
const mountsSchema = z.object({ ...base, config: z.string().min(1).optional(), wait: z.coerce.number().min(0).max(3600).optional() });

/** The dirs of a node config's daemon.mounts. */
async function configuredDirs(config: string): Promise<string[]> {
  const cfg = await loadNodeConfig(config);
  return cfg.daemon.mounts.map((m) => resolve(m.dir));
}

/**
 * State of a configured mount on this machine: 'up' (mounted and answering), 'dead' (mounted,
 * but its daemon is gone: ENOTCONN), 'absent'. A hung daemon makes the stat hang: bounded.
 */
async function mountState(dir: string): Promise<'up' | 'dead' | 'absent'> {
  if (!(await mountedHere(dir))) return 'absent';
  const r = await Promise.race([
    stat(dir).then(
      () => 'up' as const,
      () => 'dead' as const,
    ),
    new Promise<'dead'>((res) => setTimeout(() => res('dead'), 5_000).unref()),
  ]);
  return r;
}

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
      .argument('[dir]', 'mount point')
      .option('--force', 'detach even if busy (lazy unmount)')
      .option('--configured', 'clear every mount of --config\'s daemon.mounts left dead on this machine (after the daemon exited; systemd ExecStopPost)')
      .option('--config <file>', 'node config file (with --configured)'),
  ).action(async (dir: string | undefined, raw: { endpoint?: string; force?: boolean; json?: boolean; configured?: boolean; config?: string }) => {
    const o = parseOptions(umountSchema, { ...raw, endpoint: endpointOf(raw) });
    if (o.configured) {
      if (o.config === undefined || dir !== undefined) throw new CairnError('EINVAL', 'umount --configured takes --config FILE and no DIR');
      const { forceUnmount } = await import('../../fuse/binding.js');
      const out: Array<{ dir: string; state: string; cleared: boolean }> = [];
      for (const d of await configuredDirs(o.config)) {
        const state = await mountState(d);
        // A live mount belongs to a running daemon: only --force detaches it from under it.
        const clear = state === 'dead' || (state === 'up' && o.force);
        if (clear && !(await forceUnmount(d))) throw new CairnError('EBUSY', `${d} could not be unmounted (fusermount3 -uz and umount -l failed)`);
        out.push({ dir: d, state, cleared: clear });
      }
      if (o.json) printJson({ mounts: out });
      else printTable(['dir', 'state', 'cleared'], out.map((m) => [m.dir, m.state, m.cleared ? 'yes' : 'no']));
      return;
    }
    if (dir === undefined) throw new CairnError('EINVAL', 'umount needs DIR (or --configured --config FILE)');
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

  opts(
    program
      .command('mounts')
      .description('list the FUSE mounts a node daemon serves; with --config, the state on this machine of the mounts its daemon.mounts names')
      .option('--config <file>', 'node config file: report its daemon.mounts (up, dead, absent) from this machine, asking no daemon')
      .option('--wait <seconds>', 'with --config: wait until every one is up (exit 1 with the ones still missing after that long)'),
  ).action(async (raw: { endpoint?: string; json?: boolean; config?: string; wait?: string }) => {
    const o = parseOptions(mountsSchema, { ...raw, endpoint: endpointOf(raw) });
    if (o.config !== undefined) {
      const dirs = await configuredDirs(o.config);
      const deadline = Date.now() + (o.wait ?? 0) * 1000;
      let states = await Promise.all(dirs.map(async (d) => ({ dir: d, state: await mountState(d) })));
      while (o.wait !== undefined && states.some((m) => m.state !== 'up') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        states = await Promise.all(dirs.map(async (d) => ({ dir: d, state: await mountState(d) })));
      }
      if (o.json) printJson({ mounts: states });
      else printTable(['dir', 'state'], states.map((m) => [m.dir, m.state]));
      const missing = states.filter((m) => m.state !== 'up');
      if (o.wait !== undefined && missing.length > 0) {
        throw new CairnError('ETIMEDOUT', `waited ${o.wait} s for the daemon to mount ${missing.map((m) => `${m.dir} (${m.state})`).join(', ')}`);
      }
      return;
    }
    if (o.wait !== undefined) throw new CairnError('EINVAL', 'mounts --wait needs --config FILE (the mounts to wait for)');
    const r = await withMounts(o.endpoint, (c) => call<unknown, { mounts?: Array<{ dir: string; mode: string }> }>(c, 'List', {}, 10_000));
    const mounts = r.mounts ?? [];
    if (o.json) printJson({ mounts });
    else printTable(['dir', 'mode'], mounts.map((m) => [m.dir, m.mode]));
  });
}
