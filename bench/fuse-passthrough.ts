/**
 * A trivial passthrough FUSE file system over a local directory, through Cairn's binding module
 * (src/fuse/binding.ts, same options as the Cairn mount): the ceiling the binding allows, so a
 * gap between the Cairn mount and the local disk splits into binding and Cairn.
 *   node --import tsx bench/fuse-passthrough.ts BACKING_DIR MOUNT_DIR   (SIGTERM unmounts)
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { errnoOf, mountBinding, type BindingOps } from '../src/fuse/binding.js';

const [backing, mnt] = process.argv.slice(2);
if (backing === undefined || mnt === undefined) {
  process.stderr.write('usage: fuse-passthrough.ts BACKING_DIR MOUNT_DIR\n');
  process.exit(2);
}
const p = (path: string): string => join(backing, path);
type Cb = (err: number, ...rest: unknown[]) => void;
const done = (cb: Cb) => (err: NodeJS.ErrnoException | null, v?: unknown): void => (err ? cb(errnoOf(err.code ?? 'EIO')) : cb(0, v));
const st = (s: fs.Stats): Record<string, unknown> => ({
  mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink, ino: s.ino, blksize: s.blksize, blocks: s.blocks,
  atime: s.atime, mtime: s.mtime, ctime: s.ctime,
});
const UTIME_NOW = 0x3fffffff;
const UTIME_OMIT = 0x3ffffffe;
const dirs = new Map<number, string>();
let nextDir = 1;
const ops: BindingOps = {
  initWithConfig: (_c: unknown, cb: Cb) => cb(0, { maxWrite: 1024 * 1024, asyncRead: true }),
  getattr: (path: string, cb: Cb) => fs.lstat(p(path), (e, s) => (e ? cb(errnoOf(e.code ?? 'EIO')) : cb(0, st(s)))),
  fgetattr: (_path: string, fd: number, cb: Cb) => fs.fstat(fd, (e, s) => (e ? cb(errnoOf(e.code ?? 'EIO')) : cb(0, st(s)))),
  statfs: (_path: string, cb: Cb) =>
    fs.statfs(backing, (e, s) => (e ? cb(errnoOf(e.code ?? 'EIO')) : cb(0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: 255 }))),
  readlink: (path: string, cb: Cb) => fs.readlink(p(path), done(cb)),
  mkdir: (path: string, mode: number, cb: Cb) => fs.mkdir(p(path), mode, done(cb)),
  rmdir: (path: string, cb: Cb) => fs.rmdir(p(path), done(cb)),
  unlink: (path: string, cb: Cb) => fs.unlink(p(path), done(cb)),
  symlink: (target: string, path: string, cb: Cb) => fs.symlink(target, p(path), done(cb)),
  link: (a: string, b: string, cb: Cb) => fs.link(p(a), p(b), done(cb)),
  renameWithFlags: (a: string, b: string, _f: number, cb: Cb) => fs.rename(p(a), p(b), done(cb)),
  chmodWithHandle: (path: string, _fd: number, mode: number, cb: Cb) => fs.chmod(p(path), mode, done(cb)),
  chownWithHandle: (path: string, _fd: number, uid: number, gid: number, cb: Cb) => fs.lchown(p(path), uid, gid, done(cb)),
  utimensWithHandle: (path: string, _fd: number, a: { seconds: number; nanoseconds: number }, m: { seconds: number; nanoseconds: number }, cb: Cb) => {
    const t = (x: { seconds: number; nanoseconds: number }): number => (x.nanoseconds === UTIME_NOW || x.nanoseconds === UTIME_OMIT ? Date.now() / 1000 : Number(x.seconds) + x.nanoseconds / 1e9);
    fs.utimes(p(path), t(a), t(m), done(cb));
  },
  truncate: (path: string, size: number, cb: Cb) => fs.truncate(p(path), Number(size), done(cb)),
  ftruncate: (_path: string, fd: number, size: number, cb: Cb) => fs.ftruncate(fd, Number(size), done(cb)),
  createWithFlags: (path: string, mode: number, flags: number, cb: Cb) => fs.open(p(path), flags | fs.constants.O_CREAT, mode, (e, fd) => (e ? cb(errnoOf(e.code ?? 'EIO')) : cb(0, { fd }))),
  open: (path: string, flags: number, cb: Cb) => fs.open(p(path), flags & ~fs.constants.O_CREAT, (e, fd) => (e ? cb(errnoOf(e.code ?? 'EIO')) : cb(0, { fd }))),
  readBuffer: (_path: string, fd: number, len: number, pos: number, cb: Cb) => {
    const b = Buffer.allocUnsafe(len);
    fs.read(fd, b, 0, len, Number(pos), (e, n) => (e ? cb(errnoOf(e.code ?? 'EIO')) : cb(0, b.subarray(0, n))));
  },
  writeBuffer: (_path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) =>
    fs.write(fd, buf, 0, len, Number(pos), (e, n) => cb(e ? errnoOf(e.code ?? 'EIO') : n)),
  flush: (_path: string, _fd: number, cb: Cb) => cb(0),
  fsync: (_path: string, _d: boolean, fd: number, cb: Cb) => fs.fsync(fd, done(cb)),
  release: (_path: string, fd: number, cb: Cb) => fs.close(fd, done(cb)),
  // nullPathOk: readdir gets no path, so a directory handle remembers it (opendir/releasedir).
  opendir: (path: string, _flags: number, cb: Cb) => {
    const h = nextDir++;
    dirs.set(h, path);
    cb(0, { fd: h });
  },
  readdirPaged: (_path: string | null, fd: number, offset: number | bigint, cb: Cb) => {
    const from = Number(offset);
    fs.readdir(p(dirs.get(Number(fd)) ?? '/'), (e, all) => {
      if (e) return cb(errnoOf(e.code ?? 'EIO'));
      const names = all.slice(from, from + 1000);
      cb(0, names, [], names.map((_, i) => from + i + 1));
    });
  },
  releasedir: (_path: string | null, fd: number, cb: Cb) => {
    dirs.delete(Number(fd));
    cb(0);
  },
  fsyncdir: (_path: string, _d: boolean, _fd: number, cb: Cb) => cb(0),
};
// The binding holds no libuv handle of its own while mounting: keep the process alive.
const keepAlive = setInterval(() => undefined, 1 << 30);
const m = await mountBinding(mnt, ops, { attrTimeoutS: 1, entryTimeoutS: 1, allowOther: false, defaultPermissions: true, fsname: 'passthrough', maxConcurrency: 64, useIno: process.env.PT_USE_INO !== '0', ...(process.env.PT_READ_AHEAD_KB ? { readAheadKb: Number(process.env.PT_READ_AHEAD_KB) } : {}) });
process.stdout.write(`${JSON.stringify({ ready: true, mnt })}\n`);
const stop = (): void => {
  void m.unmount().then(() => {
    clearInterval(keepAlive);
    process.exit(0);
  });
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
