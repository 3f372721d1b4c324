/**
 * One process per disk. Two processes serving the same disk directory (two daemons started with
 * overlapping configs, or `cairn chunk scrub` beside a running node) would clear each other's
 * temporary files and race on quarantine and repair. A lock file in the disk directory names
 * the process that serves it; a second process on the same host finds it alive and leaves the
 * disk alone (the store then reports the disk as failed, with the reason). A lock left behind by
 * a process that is gone (kill -9, a crash, a reboot) is taken over. The lock is advisory and
 * local to one host: Cairn disks are local disks.
 *
 * "Gone" is decided from /proc where there is one, not from kill(pid, 0) alone: a process killed
 * with kill -9 stays a zombie until its parent reaps it (a supervisor that restarts it at once
 * may not have yet), and a pid is reused by unrelated processes after a reboot or a wrap. The
 * lock records the holder's start time (field 22 of /proc/PID/stat) and the kernel's boot id:
 * a zombie, a pid now started at another time, or a lock from another boot is stale.
 */
import { readFileSync } from 'node:fs';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { CairnError, errnoCode } from '../common/errors.js';
import { logger } from '../common/log.js';

export const DISK_LOCK_FILE = 'cairn-disk.lock';

const log = logger('chunk-disk-lock');

const lockSchema = z.object({
  pid: z.number().int().min(1),
  host: z.string().min(1).max(256),
  sinceMs: z.number().int().min(0),
  /** Start time of the holder in clock ticks since boot (/proc/PID/stat field 22); absent off Linux. */
  startTicks: z.number().int().min(0).optional(),
  /** /proc/sys/kernel/random/boot_id of the boot the holder ran in; absent off Linux. */
  bootId: z.string().max(64).optional(),
});
type LockRecord = z.infer<typeof lockSchema>;

/** State letter and start time of a process from /proc/PID/stat; undefined if it is gone; null without /proc. */
export function procStat(pid: number): { state: string; startTicks: number } | undefined | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') return null;
    try {
      readFileSync('/proc/self/stat');
      return undefined; // /proc works: the process is gone
    } catch {
      return null;
    }
  }
  // "pid (comm) S ppid ..." — comm may hold spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const startTicks = Number(rest[19]);
  return { state: rest[0] ?? '?', startTicks: Number.isSafeInteger(startTicks) ? startTicks : -1 };
}

function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Why the holder of a lock is no longer running, or undefined if it still runs. */
export function staleReason(held: Pick<LockRecord, 'pid' | 'startTicks' | 'bootId'>): string | undefined {
  const boot = bootId();
  if (held.bootId !== undefined && boot !== undefined && held.bootId !== boot) return 'left by an earlier boot';
  const st = procStat(held.pid);
  if (st === undefined) return `process ${held.pid} is gone`;
  if (st === null) {
    try {
      process.kill(held.pid, 0);
      return undefined;
    } catch (err) {
      return errnoCode(err) === 'EPERM' ? undefined : `process ${held.pid} is gone`; // EPERM: exists, not ours to signal
    }
  }
  if (st.state === 'Z' || st.state === 'X') return `process ${held.pid} has exited (a zombie its parent has not reaped yet)`;
  if (held.startTicks !== undefined && st.startTicks !== held.startTicks) return `pid ${held.pid} now belongs to another process`;
  return undefined;
}

function myRecord(): LockRecord {
  const st = procStat(process.pid);
  const boot = bootId();
  return {
    pid: process.pid,
    host: hostname(),
    sinceMs: Date.now(),
    ...(st ? { startTicks: st.startTicks } : {}),
    ...(boot !== undefined ? { bootId: boot } : {}),
  };
}

async function readLock(path: string): Promise<LockRecord | undefined> {
  try {
    const parsed = lockSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw err;
    return undefined; // unreadable or not JSON: a torn write of a process that is gone
  }
}

/**
 * Take the lock of the disk at `diskPath` for this process. Throws EBUSY naming the process
 * when another live process on this host holds it. Taking it again in the same process is
 * allowed (a store reopened after a restart within one process).
 */
export async function lockDisk(diskPath: string): Promise<void> {
  const path = join(diskPath, DISK_LOCK_FILE);
  const mine = myRecord();
  const text = `${JSON.stringify(mine)}\n`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(path, text, { flag: 'wx' });
      return;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    let held: LockRecord | undefined;
    try {
      held = await readLock(path);
    } catch {
      continue; // removed meanwhile: try to create it again
    }
    const stale = held !== undefined && held.host === mine.host && held.pid !== mine.pid ? staleReason(held) : 'ours';
    if (held !== undefined && held.host === mine.host && held.pid !== mine.pid && stale === undefined) {
      throw new CairnError(
        'EBUSY',
        `disk ${diskPath} is in use by process ${held.pid} since ${new Date(held.sinceMs).toISOString()}; stop that process, or remove ${path} if it is not a Cairn process`,
        { pid: held.pid },
      );
    }
    // Ours already, or left by a process that is gone (or on another host, or unreadable): replace it.
    if (held === undefined || held.pid !== mine.pid || held.host !== mine.host) {
      log.warn({ disk: diskPath, previous: held ?? 'unreadable', why: stale }, 'taking over the lock of a disk from a process that is gone');
    }
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, text);
    await rename(tmp, path);
    return;
  }
  throw new CairnError('EBUSY', `disk ${diskPath}: could not take ${path} (it keeps changing); is another process starting on it?`);
}

/** Release the lock if this process holds it. */
export async function unlockDisk(diskPath: string): Promise<void> {
  const path = join(diskPath, DISK_LOCK_FILE);
  try {
    const held = await readLock(path);
    if (held !== undefined && held.pid === process.pid && held.host === hostname()) await unlink(path);
  } catch {
    // gone already
  }
}
