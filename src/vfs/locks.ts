/**
 * Cluster-wide locks for one mount (docs/mount.md, "Locks and SQLite across nodes"): POSIX fcntl
 * record locks (F_GETLK/F_SETLK/F_SETLKW) and flock(2) go to the lock table in the metadata
 * (src/meta/lock-table.ts, replicated by Raft), so a lock taken through one node's mount holds
 * against every other node's.
 *
 * - A session per mount, created at the first lock, renewed every ttl/3; when the node dies, the
 *   leader's sweep drops its locks ttl + 1 s after the last renewal. A session found expired
 *   (a long partition) is replaced by a new one and its old locks are reported lost in the log.
 * - F_SETLKW and blocking flock wait by polling with backoff (5 ms doubling to 250 ms), first
 *   against a serializable read of the table (no Raft write while the conflict lasts), and are
 *   woken at once when the holder is on this node and releases. There is no watch event for
 *   locks: the watch log would carry every lock operation. A wait ends with EINTR when the
 *   waiting process has a signal pending or is gone (/proc/PID/status: the FUSE binding does
 *   not pass the kernel's interrupt on), or when the mount closes.
 * - A granted lock revalidates the file: the VFS drops its cached attributes and a clean cached
 *   copy moves to the newest committed version (CairnFs.revalidate), so a process that locks and
 *   then reads sees what the previous holder wrote before its unlock.
 * - Before an unlock (and the unlock at close) the file's dirty data on this node is committed,
 *   durable, and its write lease given back (CairnFs.settle): the next holder, on any node, reads
 *   it and can commit its own writes.
 * - No delegation (a node granting its own processes without the metadata) yet: every lock
 *   operation is one Raft write on the leader (docs/mount.md has the figures).
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { CairnError } from '../common/errors.js';
import { logger } from '../common/log.js';
import { counter, histogram } from '../common/metrics.js';
import { LOCK_EOF, applyLock, conflictOf, releaseOwner, type HeldLock, type LockKind, type LockMode, type LockRequest } from '../meta/lock-table.js';

export { LOCK_EOF };
export type { HeldLock, LockKind, LockMode };

const log = logger('locks');
const lockOps = counter('cairn_vfs_lock_ops_total', 'Cluster-wide lock operations of the mounts, by operation and result', ['op', 'result']);
const lockWait = histogram('cairn_vfs_lock_wait_seconds', 'Time a blocking lock request waited before it was granted or gave up', [], [
  0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60,
]);

/** What the locks need of the metadata (MetaClient has it). */
export interface LockMetaPort {
  lockSession(session: string, ttlMs: number, create: boolean): Promise<void>;
  lockSessionEnd(session: string): Promise<number>;
  lock(req: { ino: number; session: string; owner: string; kind: LockKind; mode: LockMode | 'unlock'; start: number; end: number; pid: number }): Promise<{ granted: boolean; conflict?: HeldLock }>;
  lockRelease(ino: number, session: string, owner: string, kind?: LockKind): Promise<number>;
  lockList(ino: number, opts?: { serializable?: boolean }): Promise<HeldLock[]>;
}

/** What the locks need of the file layer (the VFS provides it). */
export interface LockFileHooks {
  /** A lock was granted on the file: drop cached attributes, move a clean cached copy to the newest version. */
  afterAcquire(ino: number): Promise<void>;
  /** A lock of the file is about to be released: commit this node's writes and give the write lease back. */
  beforeRelease(ino: number): Promise<void>;
}

export interface ClusterLocksOptions {
  /** Session lifetime without renewal (the bound on how long a dead node's locks outlive it, plus 1 s). */
  ttlMs?: number;
  /** Prefix of the session id (the node's holder name). */
  name: string;
  /** Is a signal pending for (or is gone) the process waiting in F_SETLKW? Default: read /proc. */
  interrupted?: (pid: number) => Promise<boolean>;
}

export interface LockArgs {
  ino: number;
  /** The kernel's lock owner (POSIX) or open file description (flock), as text. */
  owner: string;
  kind: LockKind;
  mode: LockMode | 'unlock';
  start: number;
  /** Exclusive; LOCK_EOF: to the end of the file. */
  end: number;
  pid: number;
  /** The thread that waits (checked for pending signals during F_SETLKW); default pid. */
  waiterPid?: number;
}

/**
 * The same lock rules kept in this process's memory: node-local locks (a mount with
 * `locks: "node"`, and SQLite's WAL index files, *-shm, whose locks guard shared memory that
 * exists on one host only). No session, nothing replicated.
 */
export class LocalLockPort implements LockMetaPort {
  private readonly tables = new Map<number, HeldLock[]>();
  async lockSession(): Promise<void> {}
  async lockSessionEnd(): Promise<number> {
    const n = this.tables.size;
    this.tables.clear();
    return n;
  }
  async lock(req: { ino: number; session: string; owner: string; kind: LockKind; mode: LockMode | 'unlock'; start: number; end: number; pid: number }): Promise<{ granted: boolean; conflict?: HeldLock }> {
    const t = this.tables.get(req.ino) ?? [];
    const c = conflictOf(t, req);
    if (c !== undefined) return { granted: false, conflict: c };
    const next = applyLock(t, req);
    if (next.length === 0) this.tables.delete(req.ino);
    else this.tables.set(req.ino, next);
    return { granted: true };
  }
  async lockRelease(ino: number, session: string, owner: string, kind?: LockKind): Promise<number> {
    const t = this.tables.get(ino) ?? [];
    const next = releaseOwner(t, session, owner, kind);
    if (next.length === 0) this.tables.delete(ino);
    else this.tables.set(ino, next);
    return t.length - next.length;
  }
  async lockList(ino: number): Promise<HeldLock[]> {
    return this.tables.get(ino) ?? [];
  }
}

const POLL_FIRST_MS = 5;
const POLL_MAX_MS = 250;

/** Signals pending for a thread and not blocked, or the thread is gone (/proc/PID/status). */
export async function signalPending(pid: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return true; // gone
  }
  const field = (name: string): bigint => {
    const m = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(text);
    return m === null ? 0n : BigInt(`0x${m[1]}`);
  };
  if (/^State:\s*[ZX]/m.test(text)) return true;
  const pending = field('SigPnd') | field('ShdPnd');
  return (pending & ~field('SigBlk') & ~field('SigIgn')) !== 0n;
}

export class ClusterLocks {
  private session: string | undefined;
  private starting: Promise<string> | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private readonly ttlMs: number;
  private closed = false;
  /** Owners that may hold locks, per inode (an unlock or release of anyone else needs no metadata write). */
  private readonly held = new Map<number, Set<string>>();
  /** Waiters per inode, woken when this node releases a lock of that inode. */
  private readonly waiters = new Map<number, Set<() => void>>();
  private readonly abort = new AbortController();

  constructor(
    private readonly meta: LockMetaPort,
    private readonly hooks: LockFileHooks,
    private readonly opts: ClusterLocksOptions,
  ) {
    this.ttlMs = opts.ttlMs ?? 10_000;
  }

  /** The session id (created on first use). */
  private async sessionId(): Promise<string> {
    if (this.closed) throw new CairnError('ECANCELED', 'the mount is closing; its locks are gone');
    if (this.session !== undefined) return this.session;
    this.starting ??= (async () => {
      const id = `${this.opts.name}.${randomBytes(6).toString('hex')}`;
      await this.meta.lockSession(id, this.ttlMs, true);
      this.session = id;
      this.renewTimer = setInterval(() => void this.renew(), Math.max(100, Math.floor(this.ttlMs / 3)));
      this.renewTimer.unref();
      log.info({ session: id, ttlMs: this.ttlMs }, 'lock session started');
      return id;
    })().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private renewing = false;
  private async renew(): Promise<void> {
    const s = this.session;
    if (s === undefined || this.renewing || this.closed) return;
    this.renewing = true;
    try {
      await this.meta.lockSession(s, this.ttlMs, false);
    } catch (err) {
      if (err instanceof CairnError && err.code === 'EFENCED' && this.session === s) {
        // The cluster dropped this session's locks: processes here that held some no longer do.
        const lost = [...this.held.entries()].map(([ino, owners]) => ({ ino, owners: owners.size }));
        log.error({ session: s, lost }, 'lock session expired (this node was cut off longer than its ttl): its locks were released cluster-wide; a new session starts at the next lock');
        this.session = undefined;
        this.held.clear();
        if (this.renewTimer !== undefined) clearInterval(this.renewTimer);
        this.renewTimer = undefined;
      } else {
        log.warn({ session: s, err: String(err) }, 'lock session renewal failed; trying again');
      }
    } finally {
      this.renewing = false;
    }
  }

  /** F_GETLK: a lock of another owner that would block this request (undefined: none). */
  async test(a: LockArgs): Promise<HeldLock | undefined> {
    if (a.mode === 'unlock') return undefined;
    const session = await this.sessionId();
    const table = await this.meta.lockList(a.ino);
    lockOps.inc({ op: 'getlk', result: 'ok' });
    return conflictOf(table, this.request(a, session));
  }

  /** May this owner hold a lock on the inode here (else its unlock has nothing to do)? */
  holds(ino: number, owner: string): boolean {
    return this.held.get(ino)?.has(owner) === true;
  }

  /** This mount's lock session, if one was started (locks it holds name it). */
  get sessionName(): string | undefined {
    return this.session;
  }

  private request(a: LockArgs, session: string): LockRequest {
    return {
      kind: a.kind, session, owner: a.owner, mode: a.mode,
      start: a.kind === 'flock' ? 0 : a.start, end: a.kind === 'flock' ? LOCK_EOF : a.end, pid: a.pid,
    };
  }

  /**
   * F_SETLK / F_SETLKW / flock: take, change or release a lock. Without `wait`, a conflict is
   * EAGAIN. With `wait`, it waits until granted, or EINTR (a signal for the waiting process, the
   * mount closing).
   */
  async set(a: LockArgs, wait: boolean): Promise<void> {
    if (a.kind === 'posix' && !(Number.isSafeInteger(a.start) && Number.isSafeInteger(a.end) && a.start >= 0 && a.end > a.start)) {
      throw new CairnError('EINVAL', `lock range [${a.start}, ${a.end}) is empty or out of range`);
    }
    log.debug({ ino: a.ino, owner: a.owner, kind: a.kind, mode: a.mode, start: a.start, end: a.end, wait }, 'lock request');
    if (a.mode === 'unlock') return this.unlock(a);
    // A downgrade (write → read) lets readers in: what was written under the write lock goes first.
    if (a.mode === 'read' && this.held.get(a.ino)?.has(a.owner) === true) await this.settle(a.ino);
    const started = Date.now();
    let delay = POLL_FIRST_MS;
    for (let attempt = 0; ; attempt++) {
      const session = await this.sessionId();
      let granted: boolean;
      try {
        granted = (await this.meta.lock({ ino: a.ino, ...this.request(a, session), mode: a.mode })).granted;
      } catch (err) {
        if (err instanceof CairnError && err.code === 'EFENCED' && this.session === session) {
          this.session = undefined; // expired under us: a new session on the next round
          continue;
        }
        lockOps.inc({ op: 'setlk', result: err instanceof CairnError ? err.code : 'EIO' });
        throw err;
      }
      if (granted) {
        let owners = this.held.get(a.ino);
        if (owners === undefined) this.held.set(a.ino, (owners = new Set()));
        owners.add(a.owner);
        if (wait && attempt > 0) lockWait.observe((Date.now() - started) / 1000);
        lockOps.inc({ op: 'setlk', result: 'ok' });
        await this.hooks.afterAcquire(a.ino);
        return;
      }
      if (!wait) {
        lockOps.inc({ op: 'setlk', result: 'EAGAIN' });
        throw new CairnError('EAGAIN', `inode ${a.ino} is locked by another owner`);
      }
      // Wait: until this node releases a lock of the inode, or the table (read locally) shows no conflict.
      for (;;) {
        await this.pause(a.ino, delay);
        delay = Math.min(POLL_MAX_MS, delay * 2);
        if (this.closed) throw new CairnError('EINTR', 'the mount is closing');
        if (await (this.opts.interrupted ?? signalPending)(a.waiterPid ?? a.pid)) {
          lockWait.observe((Date.now() - started) / 1000);
          lockOps.inc({ op: 'setlkw', result: 'EINTR' });
          throw new CairnError('EINTR', `the process waiting for a lock on inode ${a.ino} was interrupted`);
        }
        const table = await this.meta.lockList(a.ino, { serializable: true }).catch(() => undefined);
        if (table === undefined || conflictOf(table, this.request(a, this.session ?? '')) === undefined) break;
      }
    }
  }

  private async unlock(a: LockArgs): Promise<void> {
    // Only owners that took a lock through this mount can hold one: the unlock at every close
    // of every other process costs nothing.
    const owners = this.held.get(a.ino);
    const session = this.session;
    if (owners === undefined || !owners.has(a.owner) || session === undefined) return;
    await this.settle(a.ino);
    const whole = a.kind === 'flock' || (a.start === 0 && a.end === LOCK_EOF);
    try {
      await this.meta.lock({ ino: a.ino, ...this.request(a, session), mode: 'unlock' });
      lockOps.inc({ op: 'unlock', result: 'ok' });
    } catch (err) {
      lockOps.inc({ op: 'unlock', result: err instanceof CairnError ? err.code : 'EIO' });
      // An expired session holds nothing any more: the unlock has happened.
      if (!(err instanceof CairnError && (err.code === 'EFENCED' || err.code === 'ESTALE'))) throw err;
    }
    if (whole && a.kind === 'posix') {
      owners.delete(a.owner);
      if (owners.size === 0) this.held.delete(a.ino);
    }
    this.wake(a.ino);
  }

  /** Release every lock one owner holds on an inode (flock at the last close of its file description). */
  async releaseOwner(ino: number, owner: string, kind?: LockKind): Promise<void> {
    const owners = this.held.get(ino);
    const session = this.session;
    if (owners === undefined || !owners.has(owner) || session === undefined) return;
    await this.settle(ino);
    await this.meta.lockRelease(ino, session, owner, kind).catch((err: unknown) => {
      if (!(err instanceof CairnError && (err.code === 'EFENCED' || err.code === 'ESTALE'))) throw err;
    });
    owners.delete(owner);
    if (owners.size === 0) this.held.delete(ino);
    this.wake(ino);
  }

  /** Commit before a release; an unlock happens even when that fails (the data stays in this node's cache, logged). */
  private async settle(ino: number): Promise<void> {
    try {
      await this.hooks.beforeRelease(ino);
    } catch (err) {
      log.error({ ino, err: String(err) }, 'the writes made under a lock could not be committed before its release; they stay in this node\'s cache and commit later');
    }
  }

  private pause(ino: number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let set = this.waiters.get(ino);
      if (set === undefined) this.waiters.set(ino, (set = new Set()));
      const done = (): void => {
        clearTimeout(t);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(ino) === set) this.waiters.delete(ino);
        this.abort.signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      set.add(done);
      this.abort.signal.addEventListener('abort', done, { once: true });
    });
  }

  private wake(ino: number): void {
    for (const w of [...(this.waiters.get(ino) ?? [])]) w();
  }

  /** End the session (every lock of this mount is released cluster-wide); waiters get EINTR. */
  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    if (this.renewTimer !== undefined) clearInterval(this.renewTimer);
    const s = this.session ?? (await this.starting?.catch(() => undefined));
    this.session = undefined;
    this.held.clear();
    if (s !== undefined) {
      await this.meta.lockSessionEnd(s).catch((err: unknown) => log.warn({ session: s, err: String(err) }, 'ending the lock session failed; its locks expire with it'));
    }
  }
}
