/**
 * The replica side of the `replicated` durability level (docs/dfs-cache.md): the writes another
 * node (the writer) mirrors here, one append-only log per file on this node's disk, each record
 * fsynced before the writer's write is acknowledged.
 *
 * A log is valid for a committed version of the file: the writer says which version its cache
 * sits on when it starts mirroring (`known`), and which version a commit is about to install
 * before it installs it (`pending`). Once the writer's lease has expired (it died), this node
 * replays the log over the file's current version — only when that version is `known` or
 * `pending`, i.e. no commit this log did not hear of happened — as a writer of its own (lease,
 * claim, journal, commit), then deletes the log. Replaying every write since the log began over
 * a version that already holds a prefix of them gives the same bytes and size as the writer had
 * (each byte's last write or truncate is replayed last). A log that is not valid is moved aside
 * (`.stale`) and logged, never replayed. The writer's Release (its data committed) deletes the log.
 */
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { fsyncDir } from '../common/durable.js';
import type { Logger } from '../common/log.js';
import { CairnError } from '../common/errors.js';

const HeadSchema = z.object({
  k: z.enum(['w', 't', 'v']),
  o: z.number().int().nonnegative().optional(),
  n: z.number().int().nonnegative().optional(),
  /** 'v' records: the version the writer's cache sits on (known) or is about to install (pending). */
  known: z.number().int().nonnegative().optional(),
  pending: z.number().int().nonnegative().optional(),
  writer: z.string().max(256).optional(),
  token: z.number().int().nonnegative().optional(),
});
type Head = z.infer<typeof HeadSchema>;

export type ReplicaOp = { kind: 'write'; offset: number; data: Buffer } | { kind: 'truncate'; size: number };

interface OpenLog {
  fh: FileHandle;
  writer: string;
  token: number;
  known: number;
  pending: number | null;
  /** Appends of one log run one at a time (order = the writer's order). */
  tail: Promise<void>;
}

export interface ReplayTarget {
  /** The file's live lease (null: none): a log is replayed only once there is none. */
  leaseOf(fileId: string): Promise<{ token: number } | null>;
  /** The file's current committed version (null: the file is gone). */
  versionOf(fileId: string): Promise<number | null>;
  /** Apply the ops as this node's own writes (lease, claim, journal) and close: the commit follows. */
  apply(fileId: string, ops: ReplicaOp[]): Promise<void>;
}

export class ReplicaStore {
  private readonly logs = new Map<string, OpenLog>();
  private scanning = false;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  private path(fileId: string): string {
    return join(this.dir, `${fileId}.log`);
  }

  private async append(l: OpenLog, head: Head, data?: Buffer): Promise<void> {
    const h = Buffer.from(JSON.stringify(head));
    const len = Buffer.alloc(8);
    len.writeUInt32LE(h.length, 0);
    len.writeUInt32LE(data?.length ?? 0, 4);
    await l.fh.write(Buffer.concat([len, h, ...(data !== undefined ? [data] : [])]));
    await l.fh.datasync();
  }

  /** Run `fn` after the log's earlier appends (the writer's order). */
  private async queued(l: OpenLog, fn: () => Promise<void>): Promise<void> {
    const run = l.tail.then(fn);
    l.tail = run.catch(() => undefined);
    await run;
  }

  /** Mirror one write/truncate of `writer` (lease `token`) whose cache sits on version `known`. Durable when this returns. */
  async mirror(fileId: string, writer: string, token: number, known: number, fresh: boolean, op: ReplicaOp): Promise<void> {
    let l = this.logs.get(fileId);
    if (l !== undefined && (fresh || l.writer !== writer)) {
      // A fresh start (everything before is committed) or another writer: the older log is not needed.
      await this.drop(fileId);
      l = undefined;
    }
    if (l === undefined) {
      // No log in memory and not a fresh start: this node lost its log (a restart); the writer must commit first.
      if (!fresh) throw new CairnError('EAGAIN', `this replica holds no log of file ${fileId} (restarted?); the writer commits and starts again`);
      const fh = await open(this.path(fileId), 'w');
      l = { fh, writer, token, known, pending: null, tail: Promise.resolve() };
      this.logs.set(fileId, l);
      const first = l;
      await this.queued(l, async () => {
        await this.append(first, { k: 'v', known, writer, token });
        await fsyncDir(this.dir);
      });
    }
    const cur = l;
    await this.queued(cur, () =>
      op.kind === 'write' ? this.append(cur, { k: 'w', o: op.offset, n: op.data.length }, op.data) : this.append(cur, { k: 't', n: op.size }),
    );
  }

  /** The writer is about to install `version` (a commit's compare-and-set). */
  async intent(fileId: string, version: number): Promise<void> {
    const l = this.logs.get(fileId);
    if (l === undefined) return;
    await this.queued(l, async () => {
      if (l.pending !== null) l.known = l.pending;
      l.pending = version;
      await this.append(l, { k: 'v', known: l.known, pending: version });
    });
  }

  /** The writer gave its lease back (all committed): the log is not needed. */
  async released(fileId: string, writer: string): Promise<void> {
    const l = this.logs.get(fileId);
    if (l !== undefined && l.writer === writer) await this.drop(fileId);
  }

  private async drop(fileId: string): Promise<void> {
    const l = this.logs.get(fileId);
    this.logs.delete(fileId);
    if (l !== undefined) await l.tail.then(() => l.fh.close()).catch(() => undefined);
    await rm(this.path(fileId), { force: true });
  }

  /** Files this node holds mirrored data of: file id → its writer (for `cairn status`). */
  held(): Map<string, string> {
    return new Map([...this.logs].map(([k, v]) => [k, v.writer]));
  }

  /** Read a log back: its versions and ops (a torn last record is dropped: it was never acknowledged). */
  static parse(bytes: Buffer): { known: number; pending: number | null; writer: string; token: number; ops: ReplicaOp[] } {
    let at = 0;
    let known = 0;
    let pending: number | null = null;
    let writer = '';
    let token = 0;
    const ops: ReplicaOp[] = [];
    while (at + 8 <= bytes.length) {
      const hl = bytes.readUInt32LE(at);
      const dl = bytes.readUInt32LE(at + 4);
      if (at + 8 + hl + dl > bytes.length) break;
      let raw: unknown;
      try {
        raw = JSON.parse(bytes.subarray(at + 8, at + 8 + hl).toString('utf8'));
      } catch {
        break; // a torn or damaged record: it and what follows were never acknowledged whole
      }
      const r = HeadSchema.safeParse(raw);
      if (!r.success) break;
      const h = r.data;
      const data = bytes.subarray(at + 8 + hl, at + 8 + hl + dl);
      at += 8 + hl + dl;
      if (h.k === 'v') {
        if (h.known !== undefined) known = h.known;
        pending = h.pending ?? pending;
        if (h.writer !== undefined) writer = h.writer;
        if (h.token !== undefined) token = h.token;
      } else if (h.k === 'w') ops.push({ kind: 'write', offset: h.o ?? 0, data: Buffer.from(data) });
      else ops.push({ kind: 'truncate', size: h.n ?? 0 });
    }
    return { known, pending, writer, token, ops };
  }

  /**
   * Replay the logs whose writer's lease is gone (run every second or so). A log whose file moved
   * past the versions it knows is set aside, never replayed.
   */
  async takeOver(target: ReplayTarget): Promise<number> {
    if (this.scanning) return 0;
    this.scanning = true;
    let n = 0;
    try {
      for (const name of await readdir(this.dir)) {
        const m = /^([0-9]{1,16})\.log$/.exec(name);
        if (m === null) continue;
        const fileId = m[1]!;
        try {
          if (await this.takeOverOne(fileId, target)) n++;
        } catch (err) {
          this.log.warn({ fileId, err: String(err) }, 'taking over a mirrored file failed; trying again at the next pass');
        }
      }
    } finally {
      this.scanning = false;
    }
    return n;
  }

  private async takeOverOne(fileId: string, target: ReplayTarget): Promise<boolean> {
    if ((await target.leaseOf(fileId)) !== null) return false;
    const l = this.logs.get(fileId);
    if (l !== undefined) await l.tail;
    const parsed = ReplicaStore.parse(await readFile(this.path(fileId)));
    const current = await target.versionOf(fileId);
    if (current === null) {
      await this.drop(fileId);
      return false;
    }
    if (current !== parsed.known && current !== parsed.pending) {
      this.log.warn({ fileId, current, known: parsed.known, pending: parsed.pending }, 'a mirrored log is older than the file (a commit it did not hear of): set aside, not replayed');
      this.logs.delete(fileId);
      await l?.fh.close().catch(() => undefined);
      await rename(this.path(fileId), `${this.path(fileId)}.stale`);
      return false;
    }
    this.log.warn({ fileId, writer: parsed.writer, ops: parsed.ops.length, version: current }, 'the writer of a mirrored file is gone and its lease expired: committing its acknowledged writes from this replica');
    await target.apply(fileId, parsed.ops);
    await this.drop(fileId);
    return true;
  }

  async close(): Promise<void> {
    for (const l of this.logs.values()) await l.tail.then(() => l.fh.close()).catch(() => undefined);
    this.logs.clear();
  }
}
