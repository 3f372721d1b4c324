/**
 * The one module that knows the third-party FUSE binding (fuse-napi 2.3.1, libfuse 3, path-based
 * high-level API). Everything else in src/fuse talks to this module's types, so swapping the
 * binding (e.g. @cocalc/fuse-native, libfuse 2) touches this file only.
 *
 * Why fuse-napi (docs/mount.md): libfuse 3 (renameat2 flags reach us, so RENAME_NOREPLACE is
 * honoured; utimensat's UTIME_NOW/OMIT arrive as timespecs), writes of up to 1 MiB per request,
 * per-open direct_io/keep_cache, lock/flock/fallocate/copy_file_range hooks.
 *
 * Stable inode numbers: libfuse 3 takes `use_ino` (st_ino from getattr reaches the kernel, so
 * two hard links of one file show one inode) only from fuse_config in its init hook; the -o
 * option was removed in libfuse 3.0, and fuse-napi sets only nullpath_ok/direct_io there. Cairn
 * therefore applies ops/fuse-napi/use-ino.patch (a 6-line change to fuse-napi's C: operation
 * flag 32 sets config->use_ino) and rebuilds the addon from source at install
 * (ops/fuse-napi/apply.sh, package.json "postinstall"); fuse-napi is MIT-licensed. This module
 * sets that flag; a binding built without the patch refuses it at mount with a clear error.
 */
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { promisify } from 'node:util';
import { CairnError } from '../common/errors.js';
import { logger } from '../common/log.js';

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
  /** st_ino is the `ino` getattr returns (needs the patched binding; see the header). */
  useIno: boolean;
  /**
   * Kernel read-ahead of the mount, KiB (its backing device's read_ahead_kb in sysfs, set after
   * mounting; FUSE's init can only lower the 128 KiB default). Unset: the kernel's default.
   */
  readAheadKb?: number;
}

export interface MountedBinding {
  readonly dir: string;
  /** The caller of the request being handled (call synchronously at the start of a handler). */
  caller(): RequestCaller | null;
  unmount(): Promise<void>;
}

interface FuseInstance {
  /** fuse-napi's flags word handed to the native mount (set in its constructor). */
  _operationFlags: number;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
  context(): { uid: number; gid: number; pid: number; umask: number; fileInfo?: { lockOwner: number | bigint; flockRelease: boolean } | null } | null;
}
/** fuse-napi's operation flag added by ops/fuse-napi/use-ino.patch: sets fuse_config.use_ino. */
const OPERATION_FLAG_USE_INO = 32;

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

export const BINDING_NAME = 'fuse-napi 2.3.1 (libfuse 3, with use_ino)';

/** Mount `ops` at `dir`. Resolves once the kernel mount is in place. */
export async function mountBinding(dir: string, ops: BindingOps, o: BindingOptions): Promise<MountedBinding> {
  const Fuse = fuseClass();
  const fuse = new Fuse(dir, ops, {
    attrTimeout: o.attrTimeoutS,
    entryTimeout: o.entryTimeoutS,
    allowOther: o.allowOther,
    defaultPermissions: o.defaultPermissions,
    fsname: o.fsname,
    // Node ids are never forgotten (libfuse's path table stays valid for handles of unlinked files).
    noforget: true,
    subtype: 'cairn',
    maxConcurrency: o.maxConcurrency,
    // Handle-based operations on an unlinked file get a null path (we key by handle anyway).
    nullPathOk: true,
    timeout: false,
    force: true,
  });
  if (o.useIno) fuse._operationFlags |= OPERATION_FLAG_USE_INO;
  await new Promise<void>((resolve, reject) =>
    fuse.mount((err) => {
      if (err === null || err === undefined) {
        resolve();
        return;
      }
      const unpatched = o.useIno && /operation flags/i.test(err.message);
      reject(
        new CairnError(
          'EIO',
          unpatched
            ? `mount ${dir}: the FUSE binding was built without Cairn's use_ino patch (${err.message}); run \`npm ci\` or ops/fuse-napi/apply.sh`
            : `mount ${dir}: ${err.message}`,
        ),
      );
    }),
  );
  if (o.readAheadKb !== undefined) await setReadAhead(dir, o.readAheadKb);
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
 * Set a FUSE mount's read-ahead: /sys/class/bdi/MAJOR:MINOR/read_ahead_kb of its anonymous device
 * (needs root; otherwise the kernel's 128 KiB stays, which only costs speed: logged, not fatal).
 */
async function setReadAhead(dir: string, kb: number): Promise<void> {
  const { stat, writeFile } = await import('node:fs/promises');
  try {
    const dev = (await stat(dir)).dev;
    const major = Math.floor(dev / 256) & 0xfff;
    const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
    await writeFile(`/sys/class/bdi/${major}:${minor}/read_ahead_kb`, String(Math.floor(kb)));
  } catch (err) {
    logger('fuse').warn({ dir, kb, err: (err as Error).message }, 'could not set the mount\'s read-ahead; the kernel default (128 KiB) stays');
  }
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
