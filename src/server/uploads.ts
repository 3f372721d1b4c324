/**
 * Leftovers of interrupted uploads. The file service streams a put into a hidden sibling
 * (`.<name>.put-<random>`) and renames it over the target at the end; a node killed in between
 * leaves the sibling in the namespace, where listings show it. This journal
 * (`<dataDir>/uploads.log`, one `+path` line when an upload starts and one `-path` line when it
 * ends either way) lets the next start of the node unlink the siblings of the uploads it never
 * finished. Lines are appended without fsync: it only serves cleanup (a crash of the whole
 * machine may leave a sibling behind, as before), and nothing acknowledged depends on it.
 */
import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../common/errors.js';
import type { Logger } from '../common/log.js';

/** The hidden siblings the file service makes: `.<name>.put-<12 hex>`. */
export const UPLOAD_SIBLING_RE = /(^|\/)\.[^/]*\.put-[0-9a-f]{12}$/;

export class UploadJournal {
  private constructor(
    private readonly fh: FileHandle,
    /** Siblings of uploads a previous process never finished. */
    readonly leftovers: string[],
  ) {}

  static async open(dataDir: string): Promise<UploadJournal> {
    const file = join(dataDir, 'uploads.log');
    const open_ = new Set<string>();
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const path = line.slice(1);
      if (!UPLOAD_SIBLING_RE.test(path)) continue; // torn or foreign line
      if (line.startsWith('+')) open_.add(path);
      else if (line.startsWith('-')) open_.delete(path);
    }
    await rm(file, { force: true });
    const fh = await open(file, 'a');
    const j = new UploadJournal(fh, [...open_]);
    // The leftovers stay listed until they are cleaned up (a restart before that tries again).
    for (const p of j.leftovers) await fh.appendFile(`+${p}\n`);
    return j;
  }

  async begin(path: string): Promise<void> {
    await this.fh.appendFile(`+${path}\n`);
  }

  async end(path: string): Promise<void> {
    await this.fh.appendFile(`-${path}\n`).catch(() => undefined);
  }

  /** Unlink every leftover sibling (ENOENT counts as done); retried in the background until the metadata answers. */
  async clean(unlink: (path: string) => Promise<void>, log: Logger, stopped: () => boolean): Promise<void> {
    for (let attempt = 0; this.leftovers.length > 0 && !stopped(); attempt++) {
      for (const p of [...this.leftovers]) {
        try {
          await unlink(p);
          log.info({ path: p }, 'removed the leftover of an interrupted upload');
        } catch (err) {
          if (!(err instanceof CairnError && err.code === 'ENOENT')) continue;
        }
        this.leftovers.splice(this.leftovers.indexOf(p), 1);
        await this.end(p);
      }
      if (this.leftovers.length > 0) await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** attempt)).unref());
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}
