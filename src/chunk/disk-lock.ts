/**
 * One process per disk. Two processes serving the same disk directory (two daemons started with
 * overlapping configs, or `cairn chunk scrub` beside a running node) would clear each other's
 * temporary files and race on quarantine and repair. A lock file in the disk directory names
 * the process that serves it; a second process on the same host finds it alive and leaves the
 * disk alone (the store then reports the disk as failed, with the reason). A lock left behind by
 * a process that is gone (kill -9, a crash, a reboot) is taken over. The lock is advisory and
 * local to one host: Cairn disks are local disks.
 */
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
});
type LockRecord = z.infer<typeof lockSchema>;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM'; // exists, but not ours to signal
  }
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
  const mine: LockRecord = { pid: process.pid, host: hostname(), sinceMs: Date.now() };
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
    if (held !== undefined && held.host === mine.host && held.pid !== mine.pid && alive(held.pid)) {
      throw new CairnError(
        'EBUSY',
        `disk ${diskPath} is in use by process ${held.pid} since ${new Date(held.sinceMs).toISOString()}; stop that process, or remove ${path} if it is not a Cairn process`,
        { pid: held.pid },
      );
    }
    // Ours already, or left by a process that is gone (or on another host, or unreadable): replace it.
    if (held === undefined || held.pid !== mine.pid || held.host !== mine.host) {
      log.warn({ disk: diskPath, previous: held ?? 'unreadable' }, 'taking over the lock of a disk from a process that is gone');
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
