/**
 * The trivial key-value state machine that runs on a Raft group for tests, the benchmark and
 * early fault-injection runs: a map kept in classic-level, with the applied index written in
 * the same batch as the effects of the entries (so a crash never applies an entry twice or
 * skips one).
 *
 * Layout under <dataDir>/kv: a pointer file CURRENT naming the live database directory
 * (db-<n>). A snapshot is restored into a fresh directory and the pointer is switched
 * durably at the end, so a crash during a restore leaves the old state intact.
 *
 * Applied batches are written without fsync: the Raft log is the durable truth and the
 * entries are re-applied from it after a power loss. snapshot() (before the log is compacted)
 * does an fsynced write so the compacted entries are never needed again.
 *
 * apply() returns once its effects are queued, not once LevelDB has them (that thread-pool hop
 * was ~0.5 ms on every write's path): one LevelDB write is in flight at a time, and everything
 * applied meanwhile is gathered into the next one (group commit; each thread-pool write also
 * costs main-thread CPU to issue). Until a write has landed its values are served from an
 * in-memory overlay, so a read after apply() sees them. A crash before the batch lands loses nothing: its entries are committed in the
 * Raft log and the durable applied index is older, so they are applied again. snapshot(),
 * restore() and close() wait for the queued batches; a failed write fails the next call.
 *
 * Snapshot stream: "CKV1" | appliedIndex u64 | appliedTerm u64, then records
 * keyLen u32 | key | valueLen u32 | value.
 */
import { ClassicLevel } from 'classic-level';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../common/errors.js';
import { mkdirDurable, writeFileDurable } from '../../common/durable.js';
import { EntryType, type Entry, type SnapshotMetadata, type StateMachine } from '../types.js';
import { decodeCommand, type KvResult } from './commands.js';

const K_APPLIED = Buffer.from([0x00, 0x61]); // "\0a": sorts before every data key
const DATA_PREFIX = 0x64; // 'd'
const SNAP_MAGIC = Buffer.from('CKV1');
const SNAP_CHUNK_BYTES = 256 * 1024;

type Db = ClassicLevel<Buffer, Buffer>;

const dataKey = (key: Uint8Array): Buffer => {
  const k = Buffer.allocUnsafe(1 + key.length);
  k[0] = DATA_PREFIX;
  k.set(key, 1);
  return k;
};

function u64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 0);
  b.writeUInt32BE(n >>> 0, 4);
  return b;
}
const readU64 = (b: Buffer, off: number): number => b.readUInt32BE(off) * 0x1_0000_0000 + b.readUInt32BE(off + 4);

/** Keys waiting in the overlay before apply() waits for LevelDB to catch up. */
const MAX_OVERLAY_KEYS = 65_536;

type Batch = ReturnType<Db['batch']>;

export class KvStateMachine implements StateMachine {
  private applied = { index: 0, term: 0 };
  private closed = false;
  /** The write LevelDB is doing (undefined when idle); it goes on with `next` when done. */
  private writing: Promise<void> | undefined;
  /** Effects applied while a write is in flight: the next write. */
  private next: { batch: Batch; seq: number; keys: Set<string> } | undefined;
  /** Values of writes not landed yet, by key (latin1 of the data key), with the write that has them. */
  private readonly overlay = new Map<string, { value: Buffer | null; seq: number }>();
  private batchSeq = 0;
  private writeError: Error | undefined;

  private constructor(
    private readonly dir: string,
    private db: Db,
    private current: string,
  ) {}

  static async open(dir: string): Promise<KvStateMachine> {
    await mkdirDurable(dir);
    let current = 'db-0';
    try {
      current = (await readFile(join(dir, 'CURRENT'), 'utf8')).trim();
      if (!/^db-\d+$/.test(current)) throw new CairnError('ECORRUPT', `${dir}/CURRENT names no database ("${current.slice(0, 40)}")`);
    } catch (err) {
      if (err instanceof CairnError) throw err;
      await writeFileDurable(join(dir, 'CURRENT'), current);
    }
    const db = await KvStateMachine.openDb(join(dir, current));
    const sm = new KvStateMachine(dir, db, current);
    const raw = db.getSync(K_APPLIED);
    if (raw !== undefined) {
      if (raw.length !== 16) throw new CairnError('ECORRUPT', `${dir}: applied index record is ${raw.length} bytes, expected 16`);
      sm.applied = { index: readU64(raw, 0), term: readU64(raw, 8) };
    }
    return sm;
  }

  private static async openDb(path: string): Promise<Db> {
    const db = new ClassicLevel<Buffer, Buffer>(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    try {
      await db.open();
    } catch (err) {
      throw new CairnError('EIO', `${path}: cannot open the kv database (${(err as Error).message})`);
    }
    return db;
  }

  async appliedIndex(): Promise<number> {
    return this.applied.index;
  }

  async apply(entries: Entry[]): Promise<unknown[]> {
    this.checkWritable();
    if (this.overlay.size >= MAX_OVERLAY_KEYS) await this.flush();
    // A chained batch: LevelDB's array form costs ~5x more CPU per operation in abstract-level.
    const nb = (this.next ??= { batch: this.db.batch(), seq: ++this.batchSeq, keys: new Set() });
    const batch = nb.batch;
    const mine = new Map<string, Buffer | null>();
    const results: Array<KvResult | undefined> = [];
    const current = (k: Buffer): Buffer | null => {
      const hex = k.toString('latin1');
      if (mine.has(hex)) return mine.get(hex)!;
      const q = this.overlay.get(hex);
      if (q !== undefined) return q.value;
      return this.db.getSync(k) ?? null;
    };
    for (const e of entries) {
      if (e.type !== EntryType.Normal || e.data.length === 0) {
        results.push(undefined);
        continue;
      }
      let c: ReturnType<typeof decodeCommand>;
      try {
        c = decodeCommand(e.data);
      } catch (err) {
        // A malformed command is committed everywhere alike: it becomes an error result on
        // every node (deterministic), not a crash of every node.
        results.push({ op: 'error', message: (err as Error).message });
        continue;
      }
      const k = dataKey(c.key);
      if (c.op === 'put') {
        batch.put(k, c.value);
        mine.set(k.toString('latin1'), c.value);
        results.push({ op: 'put' });
      } else if (c.op === 'delete') {
        const had = current(k) !== null;
        batch.del(k);
        mine.set(k.toString('latin1'), null);
        results.push({ op: 'delete', deleted: had });
      } else {
        const cur = current(k);
        const ok = c.expect === null ? cur === null : cur !== null && cur.equals(c.expect);
        if (ok) {
          batch.put(k, c.value);
          mine.set(k.toString('latin1'), c.value);
        }
        results.push({ op: 'cas', ok, current: ok ? null : cur === null ? null : Buffer.from(cur) });
      }
    }
    const last = entries[entries.length - 1];
    if (last !== undefined) {
      batch.put(K_APPLIED, Buffer.concat([u64(last.index), u64(last.term)]));
      this.applied = { index: last.index, term: last.term };
    }
    for (const [k, value] of mine) {
      this.overlay.set(k, { value, seq: nb.seq });
      nb.keys.add(k);
    }
    this.startWriting();
    return results;
  }

  private startWriting(): void {
    if (this.writing === undefined && this.next !== undefined) this.writing = this.pump();
  }

  /** Write `next` while there is one, one LevelDB write at a time (started with a `next`). */
  private async pump(): Promise<void> {
    try {
      for (let w = this.next; w !== undefined; w = this.next) {
        this.next = undefined;
        try {
          if (this.writeError === undefined) await w.batch.write({ sync: false });
          else await w.batch.close();
        } catch (err) {
          this.writeError ??= err as Error;
        } finally {
          for (const k of w.keys) if (this.overlay.get(k)?.seq === w.seq) this.overlay.delete(k);
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  /** Wait until everything applied has landed in LevelDB (fails if one could not be written). */
  async flush(): Promise<void> {
    this.startWriting();
    await this.writing;
    this.checkWritable();
  }

  private checkWritable(): void {
    if (this.writeError !== undefined) {
      throw new CairnError('EIO', `${this.dir}: writing applied entries to the kv database failed (${this.writeError.message}); the node must stop`);
    }
  }

  /** Read one key from the local state (no consistency barrier: the caller decides). */
  get(key: string): Buffer | undefined {
    const k = dataKey(Buffer.from(key, 'utf8'));
    const q = this.overlay.get(k.toString('latin1'));
    if (q !== undefined) return q.value ?? undefined;
    return this.db.getSync(k);
  }

  async snapshot(): Promise<{ index: number; term: number; chunks: AsyncIterable<Uint8Array> }> {
    // Make everything applied so far durable before the log behind it may be compacted.
    await this.flush();
    await this.db.put(K_APPLIED, Buffer.concat([u64(this.applied.index), u64(this.applied.term)]), { sync: true });
    const { index, term } = this.applied;
    // The iterator reads an implicit LevelDB snapshot taken when it is created, here.
    const it = this.db.iterator({ gte: Buffer.from([DATA_PREFIX]), lt: Buffer.from([DATA_PREFIX + 1]) });
    async function* chunks(): AsyncGenerator<Uint8Array> {
      let parts: Buffer[] = [SNAP_MAGIC, u64(index), u64(term)];
      let size = 20;
      try {
        for await (const [k, v] of it) {
          const h1 = Buffer.allocUnsafe(4);
          h1.writeUInt32BE(k.length - 1, 0);
          const h2 = Buffer.allocUnsafe(4);
          h2.writeUInt32BE(v.length, 0);
          parts.push(h1, k.subarray(1), h2, v);
          size += 8 + k.length - 1 + v.length;
          if (size >= SNAP_CHUNK_BYTES) {
            yield Buffer.concat(parts);
            parts = [];
            size = 0;
          }
        }
        if (parts.length > 0) yield Buffer.concat(parts);
      } finally {
        await it.close();
      }
    }
    return { index, term, chunks: chunks() };
  }

  async restore(_meta: SnapshotMetadata, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    await this.flush();
    const n = Number(this.current.slice(3)) + 1;
    const name = `db-${n}`;
    const path = join(this.dir, name);
    await rm(path, { recursive: true, force: true });
    const db = await KvStateMachine.openDb(path);
    let applied = { index: 0, term: 0 };
    try {
      let buf = Buffer.alloc(0);
      let header = false;
      let batch = db.batch();
      for await (const c of chunks) {
        buf = buf.length === 0 ? Buffer.from(c) : Buffer.concat([buf, c]);
        let off = 0;
        if (!header) {
          if (buf.length < 20) continue;
          if (!buf.subarray(0, 4).equals(SNAP_MAGIC)) throw new CairnError('ECORRUPT', 'kv snapshot: bad magic');
          applied = { index: readU64(buf, 4), term: readU64(buf, 12) };
          header = true;
          off = 20;
        }
        for (;;) {
          if (buf.length - off < 4) break;
          const kl = buf.readUInt32BE(off);
          if (buf.length - off < 8 + kl) break;
          const vl = buf.readUInt32BE(off + 4 + kl);
          if (buf.length - off < 8 + kl + vl) break;
          batch.put(dataKey(buf.subarray(off + 4, off + 4 + kl)), Buffer.from(buf.subarray(off + 8 + kl, off + 8 + kl + vl)));
          off += 8 + kl + vl;
          if (batch.length >= 1024) {
            await batch.write();
            batch = db.batch();
          }
        }
        buf = buf.subarray(off);
      }
      if (!header || buf.length !== 0) throw new CairnError('ECORRUPT', 'kv snapshot: truncated stream');
      batch.put(K_APPLIED, Buffer.concat([u64(applied.index), u64(applied.term)]));
      await batch.write({ sync: true });
    } catch (err) {
      await db.close().catch(() => undefined);
      await rm(path, { recursive: true, force: true });
      throw err;
    }
    await writeFileDurable(join(this.dir, 'CURRENT'), name);
    const old = this.db;
    const oldPath = join(this.dir, this.current);
    this.db = db;
    this.current = name;
    this.applied = applied;
    await old.close();
    await rm(oldPath, { recursive: true, force: true });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.startWriting();
    await this.writing; // (an error of the last write has nobody left to tell; the log replays it)
    await this.db.close();
  }
}
