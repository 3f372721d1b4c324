/**
 * How full a node's disks are, for `cairn status`, the status page and the disk metrics: the
 * file system's size and free space (statfs), and the bytes the disk's folder holds.
 *
 * A disk that is its own file system (a mount point, as on the appliance) holds what its file
 * system says is used. A disk that is a folder on a shared file system (`cairn local up`, a test)
 * holds what a walk of its folder adds up; the walk runs in the background, at most once a
 * minute and at most 1/50 of the time (a walk that takes 10 s runs every 500 s), so a disk with
 * millions of shards is not walked over and over. Until the first walk ends the figure is
 * unknown (storedBytes -1).
 */
import { lstat, readdir, stat, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface DiskSpace {
  /** Size of the file system that holds the disk. */
  fsTotalBytes: number;
  /** Bytes an unprivileged writer may still use there (bavail). */
  fsAvailBytes: number;
  /** Bytes the disk holds: its file system's used bytes if it is a mount point, else its folder's walked size; -1 unknown. */
  storedBytes: number;
  /** Whether the disk is a file system of its own (a mount point). */
  ownFs: boolean;
}

interface Walk {
  bytes: number;
  nextMs: number;
  running: Promise<void> | undefined;
}

export const MIN_WALK_INTERVAL_MS = 60_000;

/** The bytes under a folder (files' sizes; what cannot be read counts as 0). */
export async function folderBytes(path: string): Promise<number> {
  let total = 0;
  const stack = [path];
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) total += (await lstat(p).catch(() => ({ size: 0 }))).size;
    }
  }
  return total;
}

export class DiskUsage {
  private readonly walks = new Map<string, Walk>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Start the walks of these disks now (at start-up), so that the first status has a figure. */
  prime(paths: readonly string[]): void {
    for (const p of paths) void this.of(p, 0).catch(() => undefined);
  }

  /**
   * The space of the disk at `path`; undefined when its file system cannot be asked. Waits at
   * most `waitMs` for a walk in progress (the first one), else reports storedBytes -1.
   */
  async of(path: string, waitMs = 500): Promise<DiskSpace | undefined> {
    const [fs, own] = await Promise.all([statfs(path).catch(() => undefined), isMountPoint(path)]);
    if (fs === undefined) return undefined;
    const fsTotalBytes = Number(fs.blocks) * Number(fs.bsize);
    const fsAvailBytes = Number(fs.bavail) * Number(fs.bsize);
    if (own) return { fsTotalBytes, fsAvailBytes, storedBytes: Math.max(0, fsTotalBytes - Number(fs.bfree) * Number(fs.bsize)), ownFs: true };
    let w = this.walks.get(path);
    if (w === undefined) {
      w = { bytes: -1, nextMs: 0, running: undefined };
      this.walks.set(path, w);
    }
    if (w.running === undefined && this.now() >= w.nextMs) {
      const walk = w;
      const t0 = this.now();
      walk.running = folderBytes(path).then(
        (bytes) => {
          walk.bytes = bytes;
          walk.nextMs = this.now() + Math.max(MIN_WALK_INTERVAL_MS, 50 * (this.now() - t0));
          walk.running = undefined;
        },
        () => {
          walk.nextMs = this.now() + MIN_WALK_INTERVAL_MS;
          walk.running = undefined;
        },
      );
    }
    if (w.bytes < 0 && w.running !== undefined && waitMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([w.running, new Promise<void>((res) => (timer = setTimeout(res, waitMs)))]);
      clearTimeout(timer);
    }
    return { fsTotalBytes, fsAvailBytes, storedBytes: w.bytes, ownFs: false };
  }

  /** Count bytes written to (or removed from) a walked disk since its last walk (-n for removed). */
  adjust(path: string, delta: number): void {
    const w = this.walks.get(path);
    if (w !== undefined && w.bytes >= 0) w.bytes = Math.max(0, w.bytes + delta);
  }
}

/** Whether `path` is the root of a file system (its device differs from its parent's). */
async function isMountPoint(path: string): Promise<boolean> {
  const [a, b] = await Promise.all([stat(path).catch(() => undefined), stat(dirname(path)).catch(() => undefined)]);
  if (a === undefined || b === undefined) return false;
  return a.dev !== b.dev || a.ino === b.ino;
}
