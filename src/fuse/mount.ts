/**
 * The FUSE mount: a thin adapter from the binding's path-based callbacks (src/fuse/binding.ts)
 * to the inode-keyed VFS (src/vfs). A path is resolved to an inode by looking its components
 * up through the VFS (whose dentry cache answers most of them); handle-based calls go straight
 * to the VFS handle. Every error becomes the errno of its CairnError code, never a crash.
 */
import { CairnError } from '../common/errors.js';
import { logger } from '../common/log.js';
import { ROOT_INO, type Caller, type Vfs, type VfsAttr } from '../vfs/vfs.js';
import { LOCK_EOF, type LockMode } from '../vfs/locks.js';
import { errnoOf, mountBinding, type BindingOps, type BindingStats, type MountedBinding, type Timespec } from './binding.js';

const log = logger('fuse');

/** Codes the kernel knows under another name. */
const ERRNO_ALIAS: Record<string, string> = {
  ECONFLICT: 'EIO',
  EFENCED: 'EIO',
  ECORRUPT: 'EIO',
  EUNAVAIL: 'EIO',
  ENOTLEADER: 'EIO',
  ECOMPACTED: 'EIO',
  EUNSAFE: 'EIO',
  ETIMEDOUT: 'EIO',
  ECONNREFUSED: 'EIO',
};

function errno(err: unknown, op: string): number {
  if (err instanceof CairnError) return errnoOf(ERRNO_ALIAS[err.code] ?? err.code);
  log.error({ op, err: String((err as Error)?.stack ?? err) }, 'unexpected error in a FUSE operation; answered EIO');
  return errnoOf('EIO');
}

function stats(a: VfsAttr): BindingStats {
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    nlink: a.nlink,
    ino: a.ino,
    blksize: 4096,
    blocks: Math.ceil(a.size / 512),
    atime: new Date(a.atimeMs),
    mtime: new Date(a.mtimeMs),
    ctime: new Date(a.ctimeMs),
  };
}

/** The name libfuse gives a file it hides (fuse.c: ".fuse_hidden%08x%08x"). */
const HIDDEN = /^\.fuse_hidden[0-9a-f]{16}$/;

const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;
// fcntl(2) and flock(2) constants (Linux).
const F_GETLK = 5;
const F_SETLKW = 7;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

interface BindingLock {
  type: number;
  whence: number;
  start: number | bigint;
  length: number | bigint;
  pid: number;
}

const UTIME_NOW = 0x3fffffff;
const UTIME_OMIT = 0x3ffffffe;

function timeOf(t: Timespec): number | 'now' | undefined {
  if (t.nanoseconds === UTIME_OMIT) return undefined;
  if (t.nanoseconds === UTIME_NOW) return 'now';
  return Number(t.seconds) * 1000 + Math.floor(t.nanoseconds / 1e6);
}

function split(path: string): { dir: string; name: string } {
  const i = path.lastIndexOf('/');
  return { dir: i <= 0 ? '/' : path.slice(0, i), name: path.slice(i + 1) };
}

export interface MountOptions {
  /** Kernel attribute/entry cache, seconds (part of the staleness bound, docs/mount.md). */
  attrTimeoutS?: number;
  allowOther?: boolean;
  maxConcurrency?: number;
  /** Kernel read-ahead, KiB (default 1024: sequential reads arrive as 1 MiB requests, not 128 KiB). */
  readAheadKb?: number;
}

export interface Mount {
  readonly dir: string;
  unmount(): Promise<void>;
}

/** Mount `vfs` at `dir` (an existing empty directory). */
export async function mountVfs(vfs: Vfs, dir: string, o: MountOptions = {}): Promise<Mount> {
  let binding: MountedBinding | undefined;
  const caller = (): Caller => {
    const c = binding?.caller();
    return { uid: c?.uid ?? 0, gid: c?.gid ?? 0 };
  };

  async function resolve(path: string): Promise<number> {
    if (path === '/' || path === '') return ROOT_INO;
    let ino = ROOT_INO;
    for (const part of path.split('/')) {
      if (part === '') continue;
      ino = (await vfs.lookup(ino, part)).ino;
    }
    return ino;
  }

  async function inoFor(path: string | null, fh?: number | bigint): Promise<number> {
    if (fh !== undefined && Number(fh) !== 0) {
      try {
        return vfs.inoOf(Number(fh));
      } catch {
        // not a file handle (a directory handle, or 0): by path
      }
    }
    if (path === null) throw new CairnError('ENOENT', 'no path and no open handle');
    return resolve(path);
  }

  /** Run an async operation and answer its callback once, mapping errors. */
  function answer<T>(op: string, cb: (err: number, v?: T) => void, f: () => Promise<T>): void {
    f().then(
      (v) => cb(0, v),
      (err: unknown) => cb(errno(err, op)),
    );
  }

  /** A lock operation; failures other than a conflict or an interrupt are logged (they reach the program as EIO). */
  const lockOp = <T>(op: string, f: () => Promise<T>) => async (): Promise<T> => {
    try {
      return await f();
    } catch (err) {
      if (!(err instanceof CairnError && (err.code === 'EAGAIN' || err.code === 'EINTR'))) log.warn({ op, err: String(err) }, 'lock operation failed');
      throw err;
    }
  };

  const ops: BindingOps = {
    initWithConfig: (_conn: unknown, cb: (err: number, cfg?: Record<string, unknown>) => void) => cb(0, { maxWrite: 1024 * 1024, asyncRead: true }),
    getattr: (path: string, cb: (err: number, s?: BindingStats) => void) =>
      answer('getattr', cb, async () => stats(await vfs.getattr(await resolve(path)))),
    fgetattr: (path: string | null, fd: number, cb: (err: number, s?: BindingStats) => void) =>
      answer('fgetattr', cb, async () => stats(await vfs.getattr(await inoFor(path, fd)))),
    access: (path: string, _mode: number, cb: (err: number) => void) =>
      answer('access', cb, async () => {
        await resolve(path);
      }),
    statfs: (_path: string, cb: (err: number, s?: Record<string, number>) => void) =>
      answer('statfs', cb, async () => {
        const s = await vfs.statfs();
        const bsize = 4096;
        return {
          bsize,
          frsize: bsize,
          blocks: Math.floor(s.totalBytes / bsize),
          bfree: Math.floor(s.freeBytes / bsize),
          bavail: Math.floor(s.freeBytes / bsize),
          files: s.files,
          ffree: s.freeFiles,
          favail: s.freeFiles,
          namemax: 255,
        };
      }),
    readlink: (path: string, cb: (err: number, target?: string) => void) =>
      answer('readlink', cb, async () => vfs.readlink(await resolve(path))),
    mkdir: (path: string, mode: number, cb: (err: number) => void) => {
      const who = caller();
      answer('mkdir', cb, async () => {
        const { dir, name } = split(path);
        await vfs.mkdir(await resolve(dir), name, mode, who);
      });
    },
    rmdir: (path: string, cb: (err: number) => void) =>
      answer('rmdir', cb, async () => {
        const { dir, name } = split(path);
        await vfs.rmdir(await resolve(dir), name);
      }),
    unlink: (path: string, cb: (err: number) => void) =>
      answer('unlink', cb, async () => {
        const { dir, name } = split(path);
        await vfs.unlink(await resolve(dir), name);
      }),
    symlink: (target: string, path: string, cb: (err: number) => void) => {
      const who = caller();
      answer('symlink', cb, async () => {
        const { dir, name } = split(path);
        await vfs.symlink(await resolve(dir), name, target, who);
      });
    },
    link: (src: string, dest: string, cb: (err: number) => void) =>
      answer('link', cb, async () => {
        const { dir, name } = split(dest);
        await vfs.link(await resolve(src), await resolve(dir), name);
      }),
    renameWithFlags: (src: string, dest: string, flags: number, cb: (err: number) => void) =>
      answer('rename', cb, async () => {
        const a = split(src);
        const b = split(dest);
        if (a.dir === b.dir && HIDDEN.test(b.name)) {
          // libfuse hides a file that is unlinked (or renamed over) while open by renaming it to
          // .fuse_hiddenN and unlinks that at the last release — with the pre-rename path when
          // the release races the unlink, which leaves the hidden file behind. The VFS keeps open
          // handles on their file by id, so the unlink can simply happen now.
          await vfs.unlink(await resolve(a.dir), a.name);
          return;
        }
        await vfs.rename(await resolve(a.dir), a.name, await resolve(b.dir), b.name, flags);
      }),
    chmodWithHandle: (path: string | null, fd: number, mode: number, cb: (err: number) => void) =>
      answer('chmod', cb, async () => {
        await vfs.setattr(await inoFor(path, fd), { mode });
      }),
    chownWithHandle: (path: string | null, fd: number, uid: number, gid: number, cb: (err: number) => void) =>
      answer('chown', cb, async () => {
        await vfs.setattr(await inoFor(path, fd), { uid, gid });
      }),
    utimensWithHandle: (path: string | null, fd: number, atime: Timespec, mtime: Timespec, cb: (err: number) => void) =>
      answer('utimens', cb, async () => {
        const a = timeOf(atime);
        const m = timeOf(mtime);
        await vfs.setattr(await inoFor(path, fd), { ...(a !== undefined ? { atime: a } : {}), ...(m !== undefined ? { mtime: m } : {}) });
      }),
    truncate: (path: string, size: number | bigint, cb: (err: number) => void) =>
      answer('truncate', cb, async () => {
        await vfs.setattr(await resolve(path), { size: Number(size) });
      }),
    ftruncate: (path: string | null, fd: number, size: number | bigint, cb: (err: number) => void) =>
      answer('ftruncate', cb, async () => {
        await vfs.setattr(await inoFor(path, fd), { size: Number(size) }, Number(fd));
      }),
    createWithFlags: (path: string, mode: number, flags: number, cb: (err: number, r?: unknown) => void) => {
      const who = caller();
      answer('create', cb, async () => {
        const { dir, name } = split(path);
        const { fh } = await vfs.create(await resolve(dir), name, mode, flags, who);
        return { fd: fh, keepCache: false, directIO: vfs.coherent };
      });
    },
    open: (path: string, flags: number, cb: (err: number, r?: unknown) => void) =>
      answer('open', cb, async () => ({ fd: await vfs.open(await resolve(path), flags), keepCache: false, directIO: vfs.coherent })),
    readBuffer: (_path: string | null, fd: number, length: number, position: number | bigint, cb: (err: number, b?: Buffer) => void) =>
      answer('read', cb, () => vfs.read(Number(fd), length, Number(position))),
    writeBuffer: (_path: string | null, fd: number, buffer: Buffer, length: number, position: number | bigint, cb: (n: number) => void) => {
      vfs.write(Number(fd), length === buffer.length ? buffer : buffer.subarray(0, length), Number(position)).then(
        (n) => cb(n),
        (err: unknown) => cb(errno(err, 'write')),
      );
    },
    flush: (_path: string | null, fd: number, cb: (err: number) => void) => answer('flush', cb, () => vfs.flush(Number(fd))),
    fsync: (_path: string | null, _data: boolean, fd: number, cb: (err: number) => void) => answer('fsync', cb, () => vfs.fsync(Number(fd))),
    fallocate: (_path: string | null, fd: number, mode: number, offset: number | bigint, length: number | bigint, cb: (err: number) => void) => {
      // Allocation (0), KEEP_SIZE, and PUNCH_HOLE/ZERO_RANGE (zeros written); COLLAPSE_RANGE,
      // INSERT_RANGE, UNSHARE_RANGE move or share blocks Cairn does not have: EOPNOTSUPP.
      const zero = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
      if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0 || zero === (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        cb(errnoOf('EOPNOTSUPP'));
        return;
      }
      answer('fallocate', cb, () => vfs.fallocate(Number(fd), Number(offset), Number(length), { keepSize: (mode & FALLOC_FL_KEEP_SIZE) !== 0, zero: zero !== 0 }));
    },
    copyFileRange: (
      _pathIn: string | null,
      fdIn: number,
      offIn: number | bigint,
      _pathOut: string | null,
      fdOut: number,
      offOut: number | bigint,
      length: number | bigint,
      _flags: number,
      cb: (result: number) => void,
    ) => {
      vfs.copyRange(Number(fdIn), Number(offIn), Number(fdOut), Number(offOut), Number(length)).then(
        (n) => cb(n),
        (err: unknown) => cb(errno(err, 'copy_file_range')),
      );
    },
    release: (_path: string | null, fd: number, cb: (err: number) => void) => {
      const c = binding?.caller();
      answer('release', cb, async () => {
        // The last close of a file description that took flock locks: they go now (fuse.h: flock_release).
        if (c?.flockRelease === true && c.lockOwner !== undefined) {
          const ino = vfs.inoOf(Number(fd));
          for (const l of [vfs.locks, vfs.localLocks]) await l.releaseOwner(ino, c.lockOwner, 'flock').catch((err: unknown) => log.warn({ err: String(err) }, 'flock release at close failed'));
        }
        await vfs.release(Number(fd));
      });
    },
    opendir: (path: string, _flags: number, cb: (err: number, r?: unknown) => void) =>
      answer('opendir', cb, async () => ({ fd: await vfs.opendir(await resolve(path)) })),
    readdirPaged: (
      _path: string | null,
      fd: number,
      offset: number | bigint,
      cb: (err: number, names?: string[], st?: BindingStats[], next?: number[]) => void,
    ) => {
      vfs.readdir(Number(fd), Number(offset)).then(
        (entries) => cb(0, entries.map((e) => e.name), entries.map((e) => stats(e.attr)), entries.map((e) => e.next)),
        (err: unknown) => cb(errno(err, 'readdir')),
      );
    },
    releasedir: (_path: string | null, fd: number, cb: (err: number) => void) => {
      vfs.releasedir(Number(fd));
      cb(0);
    },
    fsyncdir: (_path: string | null, _data: boolean, _fd: number, cb: (err: number) => void) => cb(0),
    // Cluster-wide locks (src/vfs/locks.ts). libfuse gives ranges from SEEK_SET, length 0 = to EOF;
    // it also sends an unlock of the whole file for the owner at every close (flush), and
    // flock(LOCK_UN) at the last close of a file description that used flock.
    lock: (path: string | null, fd: number, cmd: number, lk: BindingLock, cb: (err: number, l?: BindingLock) => void) => {
      const c = binding?.caller();
      answer<BindingLock | undefined>('lock', cb, lockOp('lock', async () => {
        const ino = await inoFor(path, fd);
        const mode: LockMode | 'unlock' | undefined = lk.type === F_RDLCK ? 'read' : lk.type === F_WRLCK ? 'write' : lk.type === F_UNLCK ? 'unlock' : undefined;
        const start = Number(lk.start);
        const length = Number(lk.length);
        if (mode === undefined || lk.whence !== 0 || !Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length < 0) {
          throw new CairnError('EINVAL', `lock type ${lk.type} whence ${lk.whence} range ${start}+${length} is not valid`);
        }
        const args = {
          ino, owner: c?.lockOwner ?? `pid-${c?.pid ?? 0}`, kind: 'posix' as const, mode, start,
          end: length === 0 ? LOCK_EOF : Math.min(LOCK_EOF, start + length), pid: lk.pid || (c?.pid ?? 0), waiterPid: c?.pid ?? lk.pid,
        };
        // The unlock libfuse sends at every close: nothing to do for an owner that never locked here.
        if (mode === 'unlock' && !vfs.locks.holds(ino, args.owner) && !vfs.localLocks.holds(ino, args.owner)) return undefined;
        const locks = await vfs.locksFor(ino);
        if (cmd === F_GETLK) {
          const h = await locks.test(args);
          if (h === undefined) return { type: F_UNLCK, whence: 0, start, length, pid: 0 };
          return { type: h.mode === 'write' ? F_WRLCK : F_RDLCK, whence: 0, start: h.start, length: h.end === LOCK_EOF ? 0 : h.end - h.start, pid: h.pid };
        }
        await locks.set(args, cmd === F_SETLKW);
        return undefined;
      }));
    },
    flock: (path: string | null, fd: number, op: number, cb: (err: number) => void) => {
      const c = binding?.caller();
      answer('flock', cb, lockOp('flock', async () => {
        const ino = await inoFor(path, fd);
        const what = op & ~LOCK_NB;
        const mode: LockMode | 'unlock' | undefined = what === LOCK_SH ? 'read' : what === LOCK_EX ? 'write' : what === LOCK_UN ? 'unlock' : undefined;
        if (mode === undefined) throw new CairnError('EINVAL', `flock operation ${op} is not valid`);
        const pid = c?.pid ?? 0;
        await (await vfs.locksFor(ino)).set({ ino, owner: c?.lockOwner ?? `pid-${pid}`, kind: 'flock', mode, start: 0, end: LOCK_EOF, pid }, (op & LOCK_NB) === 0);
      }));
    },
    setxattr: (path: string, name: string, value: Buffer, _pos: number, flags: number, cb: (err: number) => void) =>
      answer('setxattr', cb, async () => vfs.setxattr(await resolve(path), name, Buffer.from(value), flags)),
    getxattr: (path: string, name: string, _pos: number, cb: (err: number, v?: Buffer | null) => void) => {
      resolve(path)
        .then((ino) => vfs.getxattr(ino, name))
        .then(
          (v) => cb(0, v),
          (err: unknown) => (err instanceof CairnError && err.code === 'ENOENT' ? cb(0, null) : cb(errno(err, 'getxattr'))),
        );
    },
    listxattr: (path: string, cb: (err: number, names?: string[]) => void) =>
      answer('listxattr', cb, async () => vfs.listxattr(await resolve(path))),
    removexattr: (path: string, name: string, cb: (err: number) => void) => {
      resolve(path)
        .then((ino) => vfs.removexattr(ino, name))
        .then(
          () => cb(0),
          (err: unknown) => cb(err instanceof CairnError && err.code === 'ENOENT' ? errnoOf('ENODATA') : errno(err, 'removexattr')),
        );
    },
  };
  binding = await mountBinding(dir, ops, {
    attrTimeoutS: o.attrTimeoutS ?? 1,
    entryTimeoutS: o.attrTimeoutS ?? 1,
    allowOther: o.allowOther ?? false,
    defaultPermissions: true,
    fsname: 'cairn',
    maxConcurrency: o.maxConcurrency ?? 64,
    useIno: true,
    readAheadKb: o.readAheadKb ?? 1024,
  });
  log.info({ dir, mode: vfs.mode }, 'mounted');
  const b = binding;
  return {
    dir,
    unmount: async () => {
      await b.unmount();
      log.info({ dir }, 'unmounted');
    },
  };
}
