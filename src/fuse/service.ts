/**
 * The daemon's mounts: the FUSE mounts a node daemon serves over its one CairnFs (the node's
 * write cache has exactly one owner, the daemon), made at start from `daemon.mounts` and on
 * request of `cairn mount` / `cairn umount` through the Mounts service (proto/mount.proto).
 * Each mount has its own VFS (its own commit mode and caches) over the shared CairnFs.
 */
import { stat, statfs as fsStatfs } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { mountConfigSchema } from '../common/config.js';
import { logger } from '../common/log.js';
import { grpc, serviceOf, unary } from '../rpc/grpc.js';
import type { CairnFs, Mode } from '../client/fs.js';
import type { MetaClient } from '../meta/client.js';
import { Vfs } from '../vfs/vfs.js';
import { forceUnmount, isMounted } from './binding.js';
import { mountVfs, type Mount } from './mount.js';
import type { NodeContext } from '../server/services.js';
import { clusterPartsOf } from '../server/cluster.js';

export const MOUNT_PROTO = 'mount.proto';
export const MOUNT_SERVICE = 'cairn.mount.Mounts';

const log = logger('mounts');

export type MountConfig = z.input<typeof mountConfigSchema>;

export interface SpaceSource {
  /** Raw capacity of every disk in the registry, and this node's disk directories. */
  capacityBytes(): number;
  localDisks(): Array<{ path: string; capacityBytes: number }>;
  /** Stored bytes per user byte (1.5 for EC 2+1, 3 for 3 replicas). */
  overhead(): number;
}

/** Free space as the mount reports it: the cluster's capacity, as full as this node's disks are, in user bytes. */
export async function clusterSpace(src: SpaceSource): Promise<{ totalBytes: number; freeBytes: number }> {
  const total = src.capacityBytes();
  let cap = 0;
  let free = 0;
  for (const d of src.localDisks()) {
    const s = await fsStatfs(d.path).catch(() => undefined);
    if (s === undefined) continue;
    cap += d.capacityBytes;
    free += Math.min(d.capacityBytes, Number(s.bavail) * Number(s.bsize));
  }
  const fraction = cap > 0 ? free / cap : 1;
  const k = Math.max(1, src.overhead());
  return { totalBytes: Math.floor(total / k), freeBytes: Math.floor((total * fraction) / k) };
}

export class MountManager {
  private readonly mounts = new Map<string, { mount: Mount; vfs: Vfs; mode: Mode }>();
  stopped = false;

  constructor(
    private readonly fs: CairnFs,
    private readonly meta: MetaClient,
    private readonly defaultMode: Mode,
    private readonly space?: SpaceSource,
  ) {}

  list(): Array<{ dir: string; mode: Mode }> {
    return [...this.mounts.entries()].map(([dir, m]) => ({ dir, mode: m.mode }));
  }

  async mount(raw: MountConfig): Promise<{ dir: string; mode: Mode }> {
    const c = mountConfigSchema.parse(raw);
    const dir = resolvePath(c.dir);
    if (this.stopped) throw new CairnError('ECANCELED', 'the daemon is stopping');
    if (this.mounts.has(dir)) throw new CairnError('EBUSY', `${dir} is already a Cairn mount of this node`);
    // A dead mount left by a killed daemon: detach it first ("Transport endpoint is not connected").
    if (await isMounted(dir)) {
      log.warn({ dir }, 'a mount is in the way (a dead one?); detaching it');
      await forceUnmount(dir);
    }
    const st = await stat(dir).catch((err: NodeJS.ErrnoException) => {
      throw new CairnError(err.code === 'ENOENT' ? 'ENOENT' : 'EIO', `${dir}: ${err.message}`);
    });
    if (!st.isDirectory()) throw new CairnError('ENOTDIR', `${dir} is not a directory`);
    // The DFS cache's durability level names the commit mode (docs/dfs-cache.md).
    const mode = c.durability === 'committed' ? 'strong' : c.durability === 'local' ? 'weak' : (c.mode ?? this.defaultMode);
    const space = this.space;
    const coherent = c.durability !== undefined;
    const vfs = new Vfs(this.meta, this.fs, {
      mode,
      coherent,
      replicate: c.durability === 'replicated',
      cacheTtlMs: c.cacheTtlMs,
      locks: c.locks,
      ...(space !== undefined ? { statfs: () => clusterSpace(space) } : {}),
    });
    vfs.startWatch();
    try {
      // A coherent mount keeps no kernel attributes: every stat asks the VFS (and the writer node).
      const mount = await mountVfs(vfs, dir, { attrTimeoutS: coherent ? 0 : (c.attrTimeoutS ?? (c.locks === 'node' ? 1 : 0)), allowOther: c.allowOther });
      this.mounts.set(dir, { mount, vfs, mode });
    } catch (err) {
      await vfs.close();
      throw err;
    }
    return { dir, mode };
  }

  /** Take a mount down; `force` also detaches a mount this daemon does not own (a dead one). */
  async unmount(rawDir: string, force = false): Promise<void> {
    const dir = resolvePath(rawDir);
    const m = this.mounts.get(dir);
    if (m === undefined) {
      if (force || (await isMounted(dir))) {
        if (!(await forceUnmount(dir))) throw new CairnError('EINVAL', `${dir} is not mounted`);
        return;
      }
      throw new CairnError('EINVAL', `${dir} is not a Cairn mount of this node`);
    }
    this.mounts.delete(dir);
    await m.mount.unmount();
    await m.vfs.close();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const dir of [...this.mounts.keys()]) {
      await this.unmount(dir).catch((err: unknown) => log.warn({ dir, err: String(err) }, 'unmount at stop failed'));
    }
  }

  definition(): { service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
    const mountReq = z.object({ dir: z.string().min(1).max(4096), mode: z.enum(['weak', 'strong', '']).default('') });
    const unmountReq = z.object({ dir: z.string().min(1).max(4096), force: z.boolean().default(false) });
    return {
      service: serviceOf(MOUNT_PROTO, MOUNT_SERVICE).service,
      impl: {
        Mount: unary(mountReq, async (q) => this.mount({ dir: q.dir, ...(q.mode !== '' ? { mode: q.mode } : {}) })),
        Unmount: unary(unmountReq, async (q) => {
          await this.unmount(q.dir, q.force);
          return {};
        }),
        List: unary(z.object({}).passthrough(), async () => ({ mounts: this.list() })),
      },
    };
  }
}

/** Space of the cluster as this node's view sees it (registry capacities, the diskmap's scheme). */
export function spaceOf(ctx: NodeContext): SpaceSource {
  const { view } = clusterPartsOf(ctx);
  return {
    capacityBytes: () => view.registry().reduce((n, r) => n + r.disks.reduce((m, d) => m + d.capacityBytes, 0), 0),
    localDisks: () => ctx.cfg.disks.map((d) => ({ path: d.path, capacityBytes: d.capacityBytes })),
    overhead: () => {
      if (!view.hasDiskmap()) return 1;
      const s = view.diskmap().scheme;
      return s.kind === 'ec' ? (s.k + s.m) / s.k : s.n;
    },
  };
}

/**
 * Make the mounts of daemon.mounts once the node runs (in the background: a mount that fails
 * is logged and retried every few seconds until it succeeds or the daemon stops).
 */
export function startMounts(mgr: MountManager, ctx: NodeContext): void {
  for (const m of ctx.cfg.daemon.mounts) {
    const attempt = (n: number): void => {
      if (mgr.stopped) return;
      mgr.mount(m).then(
        () => log.info({ dir: m.dir }, 'configured mount made'),
        (err: unknown) => {
          log.warn({ dir: m.dir, attempt: n, err: String(err) }, 'configured mount failed; trying again');
          const t = setTimeout(() => attempt(n + 1), Math.min(10_000, 500 * n));
          t.unref();
        },
      );
    };
    attempt(1);
  }
}
