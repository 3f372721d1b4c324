/**
 * The node's write-cache directory and its space budget.
 *
 *   <cacheDir>/node-id            this node's stable holder name for write leases
 *   <cacheDir>/files/<key>/       one directory per cached file (key = SHA-256 of the file id, 32 hex)
 *       state.json                the file's base version, layout and commit intent (written atomically)
 *       seg-00000001.log …        journal segments (journal.ts)
 *
 * Space: the sum of all segment sizes may not pass `maxBytes`. A writer that would pass it
 * waits (first come, first served) until commits drop enough cache, and gets ENOSPC after
 * `fullTimeoutMs`. Waiting writers call `onPressure` so that commits start at once.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { CairnError, errnoCode } from '../common/errors.js';
import { mkdirDurable, writeFileDurable } from '../common/durable.js';

interface Waiter {
  bytes: number;
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** At most this many writers may wait for space; more get EAGAIN at once (every queue has a bound). */
export const MAX_SPACE_WAITERS = 4096;

export class CacheStore {
  usedBytes = 0;
  private readonly waiters: Waiter[] = [];
  onPressure: () => void = () => undefined;

  constructor(
    readonly dir: string,
    readonly maxBytes: number,
    readonly fullTimeoutMs: number,
  ) {}

  get filesDir(): string {
    return join(this.dir, 'files');
  }

  /**
   * Where volatile cached files live (CachedFile.volatile): never trusted after a restart, so
   * init() empties it, and nothing in it is fsynced.
   */
  get volatileDir(): string {
    return join(this.dir, 'volatile');
  }

  fileDir(fileId: string, volatile = false): string {
    return join(volatile ? this.volatileDir : this.filesDir, createHash('sha256').update(fileId).digest('hex').slice(0, 32));
  }

  async init(): Promise<string> {
    await mkdirDurable(this.filesDir);
    // Uploads that were in flight when the node stopped: none was acknowledged.
    await rm(this.volatileDir, { recursive: true, force: true });
    await mkdir(this.volatileDir, { recursive: true });
    const idPath = join(this.dir, 'node-id');
    try {
      const id = (await readFile(idPath, 'utf8')).trim();
      if (/^[0-9a-f]{16}$/.test(id)) return id;
      throw new CairnError('EINVAL', `${idPath} does not hold a 16-hex-digit node id; remove it to get a new one (open files' leases are then lost)`);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    const id = randomBytes(8).toString('hex');
    await writeFileDurable(idPath, `${id}\n`);
    return id;
  }

  async listFileDirs(): Promise<string[]> {
    const names = await readdir(this.filesDir);
    return names.filter((n) => /^[0-9a-f]{32}$/.test(n)).map((n) => join(this.filesDir, n));
  }

  /** Take `bytes` of the budget, waiting for space if needed. */
  async reserve(bytes: number): Promise<void> {
    if (bytes > this.maxBytes) {
      throw new CairnError('ENOSPC', `a ${bytes}-byte write cannot fit a write cache of ${this.maxBytes} bytes; split it or raise cacheMaxBytes`);
    }
    if (this.waiters.length === 0 && this.usedBytes + bytes <= this.maxBytes) {
      this.usedBytes += bytes;
      return;
    }
    if (this.waiters.length >= MAX_SPACE_WAITERS) {
      throw new CairnError('EAGAIN', `${MAX_SPACE_WAITERS} writers already wait for write-cache space; try again later`);
    }
    this.onPressure();
    await new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        bytes,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(
            new CairnError(
              'ENOSPC',
              `the write cache (${this.maxBytes} bytes) stayed full for ${this.fullTimeoutMs} ms: commits are not draining it (is the chunk store reachable?)`,
            ),
          );
          this.grant();
        }, this.fullTimeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Count bytes already on disk (recovery) without waiting. */
  account(bytes: number): void {
    this.usedBytes += bytes;
  }

  release(bytes: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - bytes);
    this.grant();
  }

  private grant(): void {
    while (this.waiters.length > 0 && this.usedBytes + this.waiters[0]!.bytes <= this.maxBytes) {
      const w = this.waiters.shift()!;
      clearTimeout(w.timer);
      this.usedBytes += w.bytes;
      w.resolve();
    }
  }

  get waiting(): number {
    return this.waiters.length;
  }

  close(): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new CairnError('ECANCELED', 'the file system was closed while this write waited for cache space'));
    }
  }
}
