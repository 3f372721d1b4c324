/**
 * The one module that knows the third-party FUSE binding (fuse-napi 2.3.1, libfuse 3, path-based
 * high-level API). Everything else in src/fuse talks to this module's types, so swapping the
 * binding (e.g. @cocalc/fuse-native, libfuse 2) touches this file only.
 *
 * Why fuse-napi (docs/mount.md): libfuse 3 (renameat2 flags reach us, so RENAME_NOREPLACE is
 * honoured; utimensat's UTIME_NOW/OMIT arrive as timespecs), writes of up to 1 MiB per request,
 * per-open direct_io/keep_cache, lock/flock/fallocate hooks. What it lacks: raw libfuse options
 * such as use_ino are refused (libfuse 3 takes use_ino only from fuse_config in init, which
 * fuse-napi does not expose: passing "-o use_ino" through fails with "unknown option"), so
 * st_ino is libfuse's node id, kept stable for the mount's lifetime with `noforget`, not
 * Cairn's inode number — and two hard links of one file show different st_ino (docs/mount.md).
 */
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { promisify } from 'node:util';
import { CairnError } from '../common/errors.js';

const require = createRequire(import.meta.url);

export interface Timespec {
  seconds: number | bigint;
  nanoseconds: number;
}

export interface BindingStats {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number;
  blksize: number;
  blocks: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
}

export interface BindingStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  namemax: number;
}

export interface RequestCaller {
  uid: number;
  gid: number;
  pid: number;
  umask: number;
  /** The kernel's lock owner of the request's open file (hex), when it has one (lock, flock, flush, release). */
  lockOwner?: string;
  /** release: the file description held flock locks; release them (libfuse's high-level API leaves it to us). */
  flockRelease?: boolean;
}

/** Callbacks of the binding as fuse-napi names them (the subset Cairn implements). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type BindingOps = Record<string, (...args: any[]) => unknown>;

export interface BindingOptions {
  /** Attribute and entry cache timeouts of the kernel, seconds. */
  attrTimeoutS: number;
  entryTimeoutS: number;
  /** Let every user reach the mount (root mounts: needs user_allow_other only for non-root). */
  allowOther: boolean;
  /** The kernel checks permissions from mode/uid/gid (as a local file system would). */
  defaultPermissions: boolean;
  fsname: string;
  maxConcurrency: number;
}

export interface MountedBinding {
  readonly dir: string;
  /** The caller of the request being handled (call synchronously at the start of a handler). */
  caller(): RequestCaller | null;
  unmount(): Promise<void>;
}

interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
  context(): { uid: number; gid: number; pid: number; umask: number; fileInfo?: { lockOwner: number | bigint; flockRelease: boolean } | null } | null;
}
type FuseCtor = (new (dir: string, ops: BindingOps, opts: Record<string, unknown>) => FuseInstance) & {
  unmount(dir: string, cb: (err: Error | null) => void): void;
};

let loaded: FuseCtor | undefined;
function fuseClass(): FuseCtor {
  if (loaded === undefined) {
    try {
      loaded = require('fuse-napi') as FuseCtor;
    } catch (err) {
      throw new CairnError('EIO', `the FUSE binding (fuse-napi) could not be loaded: ${(err as Error).message}; is libfuse3 installed (apt install fuse3)?`);
    }
  }
  return loaded;
}

/** Negative errno the binding expects for a POSIX code name (EIO for unknown names). */
export function errnoOf(code: string): number {
  const n = (osConstants.errno as Record<string, number>)[code];
  return -(n ?? osConstants.errno.EIO);
}

export const BINDING_NAME = 'fuse-napi 2.3.1 (libfuse 3)';

/** Mount `ops` at `dir`. Resolves once the kernel mount is in place. */
export async function mountBinding(dir: string, ops: BindingOps, o: BindingOptions): Promise<MountedBinding> {
  const Fuse = fuseClass();
  const fuse = new Fuse(dir, ops, {
    attrTimeout: o.attrTimeoutS,
    entryTimeout: o.entryTimeoutS,
    allowOther: o.allowOther,
    defaultPermissions: o.defaultPermissions,
    fsname: o.fsname,
    // Node ids are never forgotten: st_ino of a path stays the same while the mount lives.
    noforget: true,
    subtype: 'cairn',
    maxConcurrency: o.maxConcurrency,
    // Handle-based operations on an unlinked file get a null path (we key by handle anyway).
    nullPathOk: true,
    timeout: false,
    force: true,
  });
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(new CairnError('EIO', `mount ${dir}: ${err.message}`)) : resolve())));
  let gone: Promise<void> | undefined;
  return {
    dir,
    caller: () => {
      const c = fuse.context();
      if (c === null) return null;
      const owner = c.fileInfo?.lockOwner;
      return {
        uid: c.uid, gid: c.gid, pid: c.pid, umask: c.umask,
        ...(owner !== undefined ? { lockOwner: BigInt(owner).toString(16) } : {}),
        ...(c.fileInfo?.flockRelease === true ? { flockRelease: true } : {}),
      };
    },
    unmount: () =>
      (gone ??= new Promise<void>((resolve) => {
        fuse.unmount((err) => {
          if (err === null) {
            resolve();
            return;
          }
          // Busy or already gone: a lazy unmount detaches it in every case.
          void forceUnmount(dir).finally(() => resolve());
        });
      })),
  };
}

/**
 * Detach a mount, also a dead one ("Transport endpoint is not connected"): fusermount3 -uz
 * (lazy), then umount -l. Resolves whether or not something was mounted.
 */
export async function forceUnmount(dir: string): Promise<boolean> {
  const run = promisify(execFile);
  for (const [cmd, args] of [
    ['fusermount3', ['-uz', dir]],
    ['umount', ['-l', dir]],
  ] as const) {
    try {
      await run(cmd, [...args], { timeout: 10_000 });
      return true;
    } catch {
      // try the next way
    }
  }
  return false;
}

/** Is `dir` a mount point of this machine (per /proc/self/mountinfo)? */
export async function isMounted(dir: string): Promise<boolean> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const esc = dir.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return text.split('\n').some((l) => l.split(' ')[4] === esc);
}
