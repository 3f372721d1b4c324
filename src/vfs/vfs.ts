/**
 * The VFS: Cairn as a POSIX file system, keyed by inode number with file handles — the layer
 * the FUSE mount (src/fuse) is a thin adapter over. Namespace operations (lookup, mkdir,
 * rename, unlink, link, symlink, setattr, xattrs, readdir) go to the metadata service through
 * MetaClient by (parent inode, name); file data goes through the node's one CairnFs, opened by
 * file id, so a rename or unlink of an open file leaves its handles on the same file.
 *
 * Caching (docs/mount.md): a dentry cache (parent, name) → inode and an attribute cache by
 * inode, both in memory, each entry kept at most `cacheTtlMs` and dropped at once by this
 * node's own writes and by the metadata watch feed's events for other nodes' writes. A stale
 * answer is therefore served for at most min(cacheTtlMs, watch delay) after another node's
 * change; the kernel adds its own attr/entry timeout on top (the mount's attrTimeoutS).
 *
 * Errors are CairnErrors with POSIX code names; the adapter maps them to errno numbers.
 * Permissions: checked by the kernel (default_permissions) from the mode/uid/gid given here.
 */
import { CairnError } from '../common/errors.js';
import { logger, type Logger } from '../common/log.js';
import { counter } from '../common/metrics.js';
import type { Attr, MetaClient } from '../meta/client.js';
import type { CairnFs, Mode } from '../client/fs.js';
import { ROOT_INO } from '../meta/ops.js';
import { ClusterLocks, LocalLockPort } from './locks.js';

export { ROOT_INO };
export type { Attr };

/** Longest file name (bytes), as ext4. */
export const NAME_MAX = 255;
/** Entries one opendir snapshot holds at most (a larger directory lists in later snapshots, by name). */
const READDIR_PAGE = 1000;
const CACHE_MAX_ENTRIES = 200_000;
/** Key of the xattr cache meaning "this inode has no extended attributes at all" (not a valid name). */
const NO_XATTRS = '\0';
/** copy_file_range and fallocate's zeroing move data in pieces of this size… */
const COPY_PIECE = 1 << 20;
/** …and one copy_file_range call copies at most this much (a short copy; callers loop). */
const COPY_MAX = 64 << 20;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

export const O_ACCMODE = 3;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

const ops = counter('cairn_vfs_ops_total', 'VFS operations, by operation and result', ['op', 'result']);
const cacheHits = counter('cairn_vfs_cache_total', 'VFS dentry/attr cache look-ups, by cache and result', ['cache', 'result']);

export interface VfsAttr {
  ino: number;
  /** Type bits and permission bits, as st_mode. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  type: 'file' | 'dir' | 'symlink';
}

export interface Caller {
  uid: number;
  gid: number;
}

export type TimeSet = number | 'now';

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  atime?: TimeSet;
  mtime?: TimeSet;
  size?: number;
}

export interface DirEntryOut {
  name: string;
  attr: VfsAttr;
  /** Offset to pass back to continue after this entry (stable for the handle). */
  next: number;
}

export interface Statfs {
  totalBytes: number;
  freeBytes: number;
  files: number;
  freeFiles: number;
}

export interface VfsOptions {
  /** Commit mode of every handle: weak (fsync/close durable in this node's cache) or strong (committed). */
  mode: Mode;
  /** Longest a cached dentry (also a negative one: name absent)/attribute is served without asking the metadata (0: no cache). */
  cacheTtlMs: number;
  /** Free space, from the diskmap/registry (the daemon provides it). */
  statfs?: () => Promise<{ totalBytes: number; freeBytes: number }>;
  /**
   * The DFS cache's promise holds on this mount (docs/dfs-cache.md): the adapter turns the kernel's
   * page cache off (direct I/O), so every read reaches this VFS, which asks the file's writer node.
   */
  coherent?: boolean;
  /** The `replicated` durability level: every write returns once a replica node's cache disk has it too (docs/dfs-cache.md). */
  replicate?: boolean;
  /** POSIX/flock locks: cluster-wide (default) or kept on this node only (docs/mount.md, "Locks"). */
  locks?: 'cluster' | 'node';
}

interface FileHandle {
  ino: number;
  fd: number;
  write: boolean;
}

interface DirHandle {
  ino: number;
  /** The snapshot this handle lists: entries in name order; offset i+1 is after entry i. */
  entries: Array<{ name: string; attr: VfsAttr }> | null;
  /** Name after which the snapshot's next page starts ('' = from the start); null: complete. */
  more: string | null;
}

function typeBits(t: Attr['type']): number {
  return t === 'dir' ? S_IFDIR : t === 'symlink' ? S_IFLNK : S_IFREG;
}

function checkName(name: string): void {
  if (name.length === 0 || name === '.' || name === '..') throw new CairnError('EINVAL', `"${name}" is not a file name`);
  if (Buffer.byteLength(name) > NAME_MAX) throw new CairnError('ENAMETOOLONG', `a name is at most ${NAME_MAX} bytes`);
  if (name.includes('/') || name.includes('\0')) throw new CairnError('EINVAL', 'a name has no "/" or NUL');
}

function key(parent: number, name: string): string {
  return `${parent}/${name}`;
}

export class Vfs {
  private readonly handles = new Map<number, FileHandle>();
  private readonly dirs = new Map<number, DirHandle>();
  private nextHandle = 1;
  private readonly dentries = new Map<string, { ino: number; at: number }>();
  /** name → parents with a cached entry of that name (a watch event names a path, not a parent). */
  private readonly byName = new Map<string, Set<number>>();
  private readonly attrs = new Map<number, { attr: Attr; at: number }>();
  /**
   * getxattr answers by inode and name (null: absent), under the same TTL and invalidation as
   * attributes. The kernel asks for security.capability before every write(2) to a FUSE file
   * (file_remove_privs): uncached, each write cost a linearizable metadata read.
   */
  private readonly xattrs = new Map<number, Map<string, { value: Buffer | null; at: number }>>();
  private readonly watchAbort = new AbortController();
  private readonly log: Logger;
  private watching: Promise<void> | undefined;
  private readonly unsubscribe: () => void;
  /** Cluster-wide POSIX and flock locks of this mount (src/vfs/locks.ts). */
  readonly locks: ClusterLocks;
  /** Node-local locks: a mount with locks "node", and SQLite's *-shm files (host-local shared memory). */
  readonly localLocks: ClusterLocks;

  constructor(
    private readonly meta: MetaClient,
    readonly fs: CairnFs,
    private readonly opts: VfsOptions,
  ) {
    this.log = logger('vfs');
    this.locks = new ClusterLocks(
      meta,
      {
        // A granted lock revalidates the file (as NFS does); a release first commits this node's writes.
        afterAcquire: async (ino) => {
          this.forget(ino);
          await this.fs.revalidate(String(ino));
        },
        beforeRelease: (ino) => this.fs.settle(String(ino)),
      },
      { name: fs.holder.replace(/[^A-Za-z0-9._:-]/g, '_').slice(0, 100) },
    );
    this.localLocks = new ClusterLocks(new LocalLockPort(), { afterAcquire: async () => undefined, beforeRelease: async () => undefined }, { name: 'local' });
    // Another node claimed or gave back a file (src/peer): its cached attributes are stale.
    this.unsubscribe = fs.onInvalidate((fileId) => this.attrs.delete(Number(fileId)));
  }

  /** The locks an inode's lock operations go to. */
  async locksFor(ino: number): Promise<ClusterLocks> {
    if (this.opts.locks === 'node') return this.localLocks;
    const a = await this.metaAttr(ino);
    return a.name.endsWith('-shm') ? this.localLocks : this.locks;
  }

  get coherent(): boolean {
    return this.opts.coherent === true;
  }

  /** A file's attributes with the size/mtime its writer on another node sees now (docs/dfs-cache.md). */
  private async withWriter(v: VfsAttr): Promise<VfsAttr> {
    if (v.type !== 'file') return v;
    const r = await this.fs.remoteAttr(String(v.ino));
    if (r === undefined) return v;
    return { ...v, size: r.size, mtimeMs: r.mtimeMs, ctimeMs: Math.max(v.ctimeMs, r.mtimeMs) };
  }

  /** Follow the metadata watch feed and drop what it changes from the caches. */
  startWatch(): void {
    if (this.watching !== undefined || this.opts.cacheTtlMs === 0) return;
    this.watching = (async () => {
      try {
        for await (const ev of this.meta.watch('/', { signal: this.watchAbort.signal })) {
          this.attrs.delete(ev.ino);
          this.xattrs.delete(ev.ino);
          // The event names a path, not (parent, name): drop every dentry of that name.
          for (const p of [ev.path, ev.newPath]) {
            if (p === undefined) continue;
            const base = p.slice(p.lastIndexOf('/') + 1);
            const parents = this.byName.get(base);
            if (parents === undefined) continue;
            for (const parent of parents) this.dentries.delete(key(parent, base));
            this.byName.delete(base);
          }
        }
      } catch (err) {
        if (!this.watchAbort.signal.aborted) {
          this.log.warn({ err: String(err) }, 'watch feed ended; caching off from now on');
          this.opts.cacheTtlMs = 0;
          this.dentries.clear();
          this.byName.clear();
          this.attrs.clear();
          this.xattrs.clear();
        }
      }
    })();
  }

  async close(): Promise<void> {
    this.unsubscribe();
    await this.locks.close();
    await this.localLocks.close();
    this.watchAbort.abort();
    await this.watching?.catch(() => undefined);
    for (const h of this.handles.values()) await this.fs.close(h.fd).catch(() => undefined);
    this.handles.clear();
  }

  get mode(): Mode {
    return this.opts.mode;
  }

  // ------------------------------------------------------------------ caches

  private fresh(at: number): boolean {
    return Date.now() - at < this.opts.cacheTtlMs;
  }

  private remember(a: Attr): void {
    if (this.opts.cacheTtlMs === 0) return;
    if (this.attrs.size >= CACHE_MAX_ENTRIES) this.attrs.clear();
    this.attrs.set(a.ino, { attr: a, at: Date.now() });
  }

  private rememberEntry(parent: number, name: string, ino: number): void {
    if (this.opts.cacheTtlMs === 0) return;
    if (this.dentries.size >= CACHE_MAX_ENTRIES) {
      this.dentries.clear();
      this.byName.clear();
    }
    this.dentries.set(key(parent, name), { ino, at: Date.now() });
    let parents = this.byName.get(name);
    if (parents === undefined) this.byName.set(name, (parents = new Set()));
    parents.add(parent);
  }

  private forget(ino: number, parent?: number, name?: string): void {
    this.attrs.delete(ino);
    this.xattrs.delete(ino);
    if (parent !== undefined && name !== undefined) {
      this.dentries.delete(key(parent, name));
      const parents = this.byName.get(name);
      parents?.delete(parent);
      if (parents?.size === 0) this.byName.delete(name);
    }
  }

  private async metaAttr(ino: number): Promise<Attr> {
    const c = this.attrs.get(ino);
    if (c !== undefined && this.fresh(c.at)) {
      cacheHits.inc({ cache: 'attr', result: 'hit' });
      return c.attr;
    }
    cacheHits.inc({ cache: 'attr', result: 'miss' });
    const a = await this.meta.stat({ ino });
    this.remember(a);
    return a;
  }

  /** Metadata attributes merged with what this node's cache holds (size/mtime of unwritten data). */
  private toVfs(a: Attr): VfsAttr {
    let size = a.type === 'dir' ? 4096 : a.type === 'symlink' ? Buffer.byteLength(a.target ?? '') : a.size;
    let mtimeMs = a.mtimeMs;
    let ctimeMs = a.ctimeMs;
    if (a.type === 'file') {
      const c = this.fs.cachedAttr(String(a.ino));
      if (c !== undefined) {
        size = c.size;
        if (c.dirty) {
          mtimeMs = c.mtimeMs;
          // What the commit will record (src/meta: max(ctime, mtime)): no jump when it lands.
          ctimeMs = Math.max(a.ctimeMs, c.mtimeMs);
        }
      }
    }
    return {
      ino: a.ino,
      type: a.type,
      mode: typeBits(a.type) | (a.mode & 0o7777),
      uid: a.uid,
      gid: a.gid,
      size,
      nlink: a.nlink,
      atimeMs: a.atimeMs,
      mtimeMs,
      ctimeMs,
    };
  }

  private async run<T>(op: string, f: () => Promise<T>): Promise<T> {
    try {
      const r = await f();
      ops.inc({ op, result: 'ok' });
      return r;
    } catch (err) {
      const e = err instanceof CairnError ? err : new CairnError('EIO', String((err as Error)?.message ?? err));
      ops.inc({ op, result: e.code });
      throw e;
    }
  }

  // ------------------------------------------------------------------ names

  async lookup(parent: number, name: string): Promise<VfsAttr> {
    return this.run('lookup', async () => {
      if (Buffer.byteLength(name) > NAME_MAX) throw new CairnError('ENAMETOOLONG', `a name is at most ${NAME_MAX} bytes`);
      const d = this.dentries.get(key(parent, name));
      if (d !== undefined && this.fresh(d.at)) {
        cacheHits.inc({ cache: 'dentry', result: 'hit' });
        // A negative entry: the name was absent when last asked (a create's look-up before it).
        if (d.ino === 0) throw new CairnError('ENOENT', `${name} does not exist`);
        const c = this.attrs.get(d.ino);
        if (c !== undefined && this.fresh(c.at)) return this.withWriter(this.toVfs(c.attr));
      } else {
        cacheHits.inc({ cache: 'dentry', result: 'miss' });
      }
      let a: Attr;
      try {
        a = await this.meta.lookup(parent, name);
      } catch (err) {
        if (err instanceof CairnError && err.code === 'ENOENT') this.rememberEntry(parent, name, 0);
        throw err;
      }
      this.remember(a);
      this.rememberEntry(parent, name, a.ino);
      return this.withWriter(this.toVfs(a));
    });
  }

  async getattr(ino: number): Promise<VfsAttr> {
    return this.run('getattr', async () => this.withWriter(this.toVfs(await this.metaAttr(ino))));
  }

  async setattr(ino: number, ch: SetAttr, fh?: number): Promise<VfsAttr> {
    return this.run('setattr', async () => {
      if (ch.size !== undefined) await this.truncate(ino, ch.size, fh);
      const now = Date.now();
      const m: { mode?: number; uid?: number; gid?: number; mtimeMs?: number; atimeMs?: number } = {};
      if (ch.mode !== undefined) m.mode = ch.mode & 0o7777;
      if (ch.uid !== undefined && ch.uid !== -1 && ch.uid !== 0xffffffff) m.uid = ch.uid;
      if (ch.gid !== undefined && ch.gid !== -1 && ch.gid !== 0xffffffff) m.gid = ch.gid;
      if (ch.mtime !== undefined) {
        m.mtimeMs = ch.mtime === 'now' ? now : ch.mtime;
        this.fs.setMtime(String(ino), m.mtimeMs);
      }
      if (ch.atime !== undefined) m.atimeMs = ch.atime === 'now' ? now : ch.atime;
      this.forget(ino);
      if (Object.keys(m).length === 0) return this.toVfs(await this.metaAttr(ino));
      const a = await this.meta.setattr({ ino }, m);
      this.remember(a);
      return this.toVfs(a);
    });
  }

  private async truncate(ino: number, size: number, fh?: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new CairnError('EINVAL', `size ${size} must be a non-negative integer`);
    const h = fh === undefined ? undefined : this.handles.get(fh);
    if (h !== undefined && h.write) {
      await this.fs.truncate(h.fd, size);
      return;
    }
    const a = await this.metaAttr(ino);
    if (a.type === 'dir') throw new CairnError('EISDIR', `inode ${ino} is a directory`);
    if (a.type !== 'file') throw new CairnError('EINVAL', `inode ${ino} is not a regular file`);
    const fd = await this.fs.openById(String(ino), { write: true, mode: this.opts.mode, replicate: this.opts.replicate === true });
    try {
      await this.fs.truncate(fd, size);
    } finally {
      await this.fs.close(fd);
    }
  }

  async readlink(ino: number): Promise<string> {
    return this.run('readlink', async () => {
      const a = await this.metaAttr(ino);
      if (a.type !== 'symlink') throw new CairnError('EINVAL', `inode ${ino} is not a symbolic link`);
      return a.target ?? (await this.meta.readlink({ ino }));
    });
  }

  async mkdir(parent: number, name: string, mode: number, who: Caller): Promise<VfsAttr> {
    return this.run('mkdir', async () => {
      checkName(name);
      // Whatever comes back (EEXIST too), a cached entry of this name is no longer to be trusted.
      this.dentries.delete(key(parent, name));
      const a = await this.meta.mkdir({ parent, name }, { mode: mode & 0o7777, uid: who.uid, gid: who.gid });
      this.forget(parent);
      this.remember(a);
      this.rememberEntry(parent, name, a.ino);
      return this.toVfs(a);
    });
  }

  async symlink(parent: number, name: string, target: string, who: Caller): Promise<VfsAttr> {
    return this.run('symlink', async () => {
      checkName(name);
      if (target.length === 0 || Buffer.byteLength(target) > 4095) throw new CairnError('ENAMETOOLONG', 'a link target is 1–4095 bytes');
      // Whatever comes back (EEXIST too), a cached entry of this name is no longer to be trusted.
      this.dentries.delete(key(parent, name));
      const a = await this.meta.symlink({ parent, name }, target, { uid: who.uid, gid: who.gid });
      this.forget(parent);
      this.remember(a);
      this.rememberEntry(parent, name, a.ino);
      return this.toVfs(a);
    });
  }

  async link(ino: number, parent: number, name: string): Promise<VfsAttr> {
    return this.run('link', async () => {
      checkName(name);
      // Whatever comes back (EEXIST too), a cached entry of this name is no longer to be trusted.
      this.dentries.delete(key(parent, name));
      const a = await this.meta.link({ ino }, { parent, name });
      this.forget(parent);
      this.remember(a);
      this.rememberEntry(parent, name, a.ino);
      return this.toVfs(a);
    });
  }

  /** The inode (parent, name) names right now, asked of the metadata (never the cache). */
  private async current(parent: number, name: string): Promise<Attr | undefined> {
    try {
      return await this.meta.lookup(parent, name);
    } catch (err) {
      if (err instanceof CairnError && err.code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * A file lost a name. If it is cached on this node and that was its last name (the inode is gone,
   * or kept only as an orphan for a lease), its cached data will never be committed: discard it.
   */
  private async lostName(ino: number): Promise<void> {
    this.forget(ino);
    if (this.fs.cachedAttr(String(ino)) === undefined) return;
    let last = false;
    try {
      last = (await this.meta.stat({ ino })).nlink === 0;
    } catch (err) {
      if (!(err instanceof CairnError && err.code === 'ENOENT')) throw err;
      last = true;
    }
    if (last) this.fs.discard(String(ino));
  }

  async unlink(parent: number, name: string): Promise<void> {
    return this.run('unlink', async () => {
      // The kernel looked the name up just before: the dentry cache usually knows the inode.
      const d = this.dentries.get(key(parent, name));
      const ino = d !== undefined && this.fresh(d.at) && d.ino !== 0 ? d.ino : (await this.current(parent, name))?.ino;
      const a = ino === undefined ? undefined : this.attrs.get(ino)?.attr;
      if (a?.type === 'dir') throw new CairnError('EISDIR', `${name} is a directory`);
      await this.meta.unlink({ parent, name });
      this.forget(parent, parent, name);
      // The name is absent now: a look-up right after (sqlite's next journal) needs no metadata read.
      this.rememberEntry(parent, name, 0);
      if (ino !== undefined) await this.lostName(ino);
    });
  }

  async rmdir(parent: number, name: string): Promise<void> {
    return this.run('rmdir', async () => {
      if (name === '.') throw new CairnError('EINVAL', 'rmdir of "."');
      if (name === '..') throw new CairnError('ENOTEMPTY', 'rmdir of ".."');
      const before = this.dentries.get(key(parent, name));
      await this.meta.rmdir({ parent, name });
      this.forget(parent, parent, name);
      this.rememberEntry(parent, name, 0);
      if (before !== undefined && before.ino !== 0) this.forget(before.ino);
    });
  }

  async rename(fromParent: number, fromName: string, toParent: number, toName: string, flags: number): Promise<void> {
    return this.run('rename', async () => {
      checkName(toName);
      if ((flags & RENAME_EXCHANGE) !== 0) throw new CairnError('EINVAL', 'RENAME_EXCHANGE is not supported');
      const noReplace = (flags & RENAME_NOREPLACE) !== 0;
      const r = await this.meta.rename({ parent: fromParent, name: fromName }, { parent: toParent, name: toName }, { noReplace });
      const moved = this.dentries.get(key(fromParent, fromName));
      this.forget(fromParent, fromParent, fromName);
      this.forget(toParent, toParent, toName);
      if (moved !== undefined && moved.ino !== 0) this.forget(moved.ino);
      if (r.replaced !== 0) await this.lostName(r.replaced);
    });
  }

  // ------------------------------------------------------------------ directories

  async opendir(ino: number): Promise<number> {
    return this.run('opendir', async () => {
      const a = await this.metaAttr(ino);
      if (a.type !== 'dir') throw new CairnError('ENOTDIR', `inode ${ino} is not a directory`);
      const h = this.nextHandle++;
      this.dirs.set(h, { ino, entries: null, more: '' });
      return h;
    });
  }

  /**
   * Entries from `offset` on (0: the start). Offsets are positions in the handle's snapshot, so
   * they stay valid while the handle lives, whatever changes meanwhile (POSIX leaves open whether
   * such changes show). Pages of 1,000 are fetched as the reader gets to them.
   */
  async readdir(dh: number, offset: number): Promise<DirEntryOut[]> {
    return this.run('readdir', async () => {
      const d = this.dirs.get(dh);
      if (d === undefined) throw new CairnError('EINVAL', `directory handle ${dh} is not open`);
      if (d.entries === null) d.entries = [];
      while (offset >= d.entries.length && d.more !== null) {
        const page = await this.meta.readdir({ ino: d.ino }, { after: d.more, limit: READDIR_PAGE, withAttrs: true });
        for (const e of page.entries) {
          if (e.attr === undefined) continue;
          this.remember(e.attr);
          this.rememberEntry(d.ino, e.name, e.ino);
          d.entries.push({ name: e.name, attr: this.toVfs(e.attr) });
        }
        d.more = page.more ? page.nextAfter : null;
      }
      const out: DirEntryOut[] = [];
      for (let i = offset; i < d.entries.length && out.length < READDIR_PAGE; i++) {
        const e = d.entries[i]!;
        out.push({ name: e.name, attr: e.attr, next: i + 1 });
      }
      return out;
    });
  }

  releasedir(dh: number): void {
    this.dirs.delete(dh);
  }

  // ------------------------------------------------------------------ files

  async create(parent: number, name: string, mode: number, flags: number, who: Caller): Promise<{ attr: VfsAttr; fh: number }> {
    return this.run('create', async () => {
      checkName(name);
      // Whatever comes back (EEXIST too), a cached entry of this name is no longer to be trusted.
      this.dentries.delete(key(parent, name));
      const made = await this.meta.create(
        { parent, name },
        { mode: mode & 0o7777, uid: who.uid, gid: who.gid, exclusive: true, lease: { holder: this.fs.holder, ttlMs: this.fs.leaseTtlMs, ...(this.fs.peerAddr !== undefined ? { addr: this.fs.peerAddr } : {}) } },
      );
      this.forget(parent);
      this.remember(made.attr);
      this.rememberEntry(parent, name, made.attr.ino);
      // A file this call made has no extended attributes yet (a write's security.capability check).
      if (made.created && this.opts.cacheTtlMs > 0) this.xattrs.set(made.attr.ino, new Map([[NO_XATTRS, { value: null, at: Date.now() }]]));
      const fd = await this.fs.openById(String(made.attr.ino), {
        write: true,
        append: (flags & O_APPEND) !== 0,
        mode: this.opts.mode,
        replicate: this.opts.replicate === true,
        ...(made.created ? { created: { path: name, mode: made.attr.mode, version: made.attr.version, mtimeMs: made.attr.mtimeMs } } : {}),
        ...(made.lease !== undefined ? { leaseToken: String(made.lease.token) } : {}),
      });
      const fh = this.nextHandle++;
      this.handles.set(fh, { ino: made.attr.ino, fd, write: true });
      return { attr: this.toVfs(made.attr), fh };
    });
  }

  async open(ino: number, flags: number): Promise<number> {
    return this.run('open', async () => {
      const acc = flags & O_ACCMODE;
      const write = acc === O_WRONLY || acc === O_RDWR;
      const a = await this.metaAttr(ino);
      if (a.type === 'dir') {
        if (write) throw new CairnError('EISDIR', `inode ${ino} is a directory`);
      } else if (a.type !== 'file') {
        throw new CairnError('EINVAL', `inode ${ino} is not a regular file`);
      }
      const fd = await this.fs.openById(String(ino), {
        write,
        truncate: write && (flags & O_TRUNC) !== 0,
        append: (flags & O_APPEND) !== 0,
        mode: this.opts.mode,
        replicate: this.opts.replicate === true,
        // Other nodes may write it too, coordinated by cluster-wide locks (src/vfs/locks.ts): the
        // write lease is taken by the commit, not held from open to close. A coherent mount keeps
        // one writer from open to close instead, and other nodes' writes go to it (docs/dfs-cache.md).
        lazyLease: !this.coherent,
      });
      const fh = this.nextHandle++;
      this.handles.set(fh, { ino, fd, write });
      return fh;
    });
  }

  /** The inode an open file handle is on (a handle survives rename and unlink of its names). */
  inoOf(fh: number): number {
    return this.handle(fh).ino;
  }

  private handle(fh: number): FileHandle {
    const h = this.handles.get(fh);
    if (h === undefined) throw new CairnError('EINVAL', `file handle ${fh} is not open`);
    return h;
  }

  async read(fh: number, length: number, position: number): Promise<Buffer> {
    const h = this.handle(fh);
    try {
      return await this.fs.read(h.fd, length, position);
    } catch (err) {
      ops.inc({ op: 'read', result: err instanceof CairnError ? err.code : 'EIO' });
      throw err;
    }
  }

  async write(fh: number, data: Buffer, position: number): Promise<number> {
    const h = this.handle(fh);
    try {
      return await this.fs.write(h.fd, data, position);
    } catch (err) {
      ops.inc({ op: 'write', result: err instanceof CairnError ? err.code : 'EIO' });
      throw err;
    }
  }

  /** close(2) of one descriptor: weak — nothing to wait for (writes are in the journal); strong — committed. */
  async flush(fh: number): Promise<void> {
    return this.run('flush', async () => {
      const h = this.handle(fh);
      if (h.write && this.opts.mode === 'strong') await this.fs.flush(h.fd);
    });
  }

  /** fsync(2): weak — durable on this node's cache disk; strong — committed and durable. */
  async fsync(fh: number): Promise<void> {
    return this.run('fsync', async () => {
      const h = this.handle(fh);
      if (h.write) await this.fs.fsync(h.fd);
    });
  }

  async release(fh: number): Promise<void> {
    return this.run('release', async () => {
      const h = this.handles.get(fh);
      if (h === undefined) return;
      this.handles.delete(fh);
      // Size and times may change with the commit after close; extended attributes do not.
      this.attrs.delete(h.ino);
      await this.fs.close(h.fd);
    });
  }

  /**
   * fallocate(2) on an open handle. Cairn stores no preallocated blocks: without `keepSize` the
   * size grows to offset+length (the new range reads as zeros) but no space is reserved, so a
   * later write can still fail with ENOSPC. `zero` (PUNCH_HOLE, ZERO_RANGE) writes zeros over the
   * part of the range inside the file, through the write cache like any write.
   */
  async fallocate(fh: number, offset: number, length: number, o: { keepSize: boolean; zero: boolean }): Promise<void> {
    return this.run('fallocate', async () => {
      const h = this.handle(fh);
      if (!h.write) throw new CairnError('EINVAL', `file handle ${fh} is not open for writing`);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length <= 0 || !Number.isSafeInteger(offset + length)) {
        throw new CairnError('EINVAL', `fallocate range ${offset}+${length} must be a non-negative offset and a positive length`);
      }
      const sizeNow = async (): Promise<number> => this.fs.cachedAttr(String(h.ino))?.size ?? (await this.metaAttr(h.ino)).size;
      const end = offset + length;
      if (o.zero) {
        const stop = Math.min(end, await sizeNow());
        const zeros = Buffer.alloc(Math.min(COPY_PIECE, Math.max(0, stop - offset)));
        for (let at = offset; at < stop; at += zeros.length) await this.fs.write(h.fd, at + zeros.length <= stop ? zeros : zeros.subarray(0, stop - at), at);
      }
      if (!o.keepSize && end > (await sizeNow())) await this.fs.truncate(h.fd, end);
      this.forget(h.ino);
    });
  }

  /**
   * copy_file_range(2) between two open handles: reads and writes through the node's cache in
   * pieces of 1 MiB, at most COPY_MAX bytes per call (a short copy; the caller continues).
   * Returns the bytes copied (0 at the source's end).
   */
  async copyRange(fhIn: number, offIn: number, fhOut: number, offOut: number, length: number): Promise<number> {
    return this.run('copy_file_range', async () => {
      const src = this.handle(fhIn);
      const dst = this.handle(fhOut);
      if (!dst.write) throw new CairnError('EINVAL', `file handle ${fhOut} is not open for writing`);
      for (const v of [offIn, offOut, length]) {
        if (!Number.isSafeInteger(v) || v < 0) throw new CairnError('EINVAL', `copy_file_range offsets and length must be non-negative integers`);
      }
      const max = Math.min(length, COPY_MAX);
      // Overlapping ranges of one file are EINVAL (as the kernel answers for one inode; two hard
      // links of a file are two kernel inodes here, so the check must be ours too).
      if (src.ino === dst.ino && offIn < offOut + max && offOut < offIn + max) {
        throw new CairnError('EINVAL', 'copy_file_range within one file with overlapping ranges');
      }
      let done = 0;
      while (done < max) {
        const b = await this.fs.read(src.fd, Math.min(COPY_PIECE, max - done), offIn + done);
        if (b.length === 0) break;
        await this.fs.write(dst.fd, b, offOut + done);
        done += b.length;
      }
      this.forget(dst.ino);
      return done;
    });
  }

  // ------------------------------------------------------------------ xattrs, statfs

  async getxattr(ino: number, name: string): Promise<Buffer> {
    return this.run('getxattr', async () => {
      const m0 = this.xattrs.get(ino);
      const c = m0?.get(name) ?? m0?.get(NO_XATTRS);
      if (c !== undefined && this.fresh(c.at)) {
        cacheHits.inc({ cache: 'xattr', result: 'hit' });
        if (c.value === null) throw new CairnError('ENOENT', `no extended attribute ${name}`);
        return c.value;
      }
      cacheHits.inc({ cache: 'xattr', result: 'miss' });
      let value: Buffer | null;
      try {
        value = await this.meta.getxattr({ ino }, name);
      } catch (err) {
        if (!(err instanceof CairnError && err.code === 'ENOENT')) throw err;
        value = null;
      }
      if (this.opts.cacheTtlMs > 0) {
        if (this.xattrs.size >= CACHE_MAX_ENTRIES) this.xattrs.clear();
        let m = this.xattrs.get(ino);
        if (m === undefined) this.xattrs.set(ino, (m = new Map()));
        m.set(name, { value, at: Date.now() });
      }
      if (value === null) throw new CairnError('ENOENT', `no extended attribute ${name}`);
      return value;
    });
  }

  async listxattr(ino: number): Promise<string[]> {
    return this.run('listxattr', () => this.meta.listxattr({ ino }));
  }

  async setxattr(ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    return this.run('setxattr', async () => {
      const flag = (flags & XATTR_CREATE) !== 0 ? 'create' : (flags & XATTR_REPLACE) !== 0 ? 'replace' : 'any';
      await this.meta.setxattr({ ino }, name, value, flag);
      this.forget(ino);
    });
  }

  async removexattr(ino: number, name: string): Promise<void> {
    return this.run('removexattr', async () => {
      await this.meta.removexattr({ ino }, name);
      this.forget(ino);
    });
  }

  async statfs(): Promise<Statfs> {
    return this.run('statfs', async () => {
      const s = this.opts.statfs !== undefined ? await this.opts.statfs() : { totalBytes: 0, freeBytes: 0 };
      return { ...s, files: 1 << 30, freeFiles: (1 << 30) - 1 };
    });
  }
}
