/**
 * The one fsync discipline of Cairn: a file is durable once its bytes are fsynced and the
 * directory entry that names it is fsynced too. Everything that acknowledges a write to
 * someone (Raft log, shard files, write cache, config) goes through these helpers.
 *
 * What they create is private to the owner: files 0600, directories 0700 (cluster data, keys and
 * configs are nobody else's business). The daemon also sets its umask to 077 (`cairn start`), so
 * what other code creates (LevelDB, shard files) is private too.
 */
import { open, rename, mkdir, unlink, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, basename, join } from 'node:path';

/** fsync a directory so that creates, renames and unlinks inside it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** mkdir -p, then fsync the new directory's parent chain up to the first that existed. */
export async function mkdirDurable(dir: string, mode = 0o700): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode });
  if (first === undefined) return;
  // fsync every parent of a newly created directory, deepest first.
  let d = dir;
  while (d.length >= first.length) {
    await fsyncDir(dirname(d));
    if (d === first) break;
    d = dirname(d);
  }
}

/**
 * Write a whole file atomically and durably: write to a temporary sibling, fsync it,
 * rename it over the target, fsync the directory. Readers see the old or the new
 * content, never a mix; after return, the new content survives power loss.
 */
export async function writeFileDurable(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    // open's mode is filtered by the umask; a file that must be private is made so whatever it is.
    await fh.chmod(mode);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  await fsyncDir(dir);
}

/** Remove a file and make the removal durable. Missing files are not an error. */
export async function unlinkDurable(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** True when something exists at the path (any error counts as "no"). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Make this process's new files private (0600 files, 0700 directories): the daemon's data is. */
export function privateUmask(): void {
  process.umask(0o077);
}
