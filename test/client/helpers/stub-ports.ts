/**
 * STAND-INS for the metadata service and the chunk store, kept in a directory so that they
 * outlive a client process killed with kill -9. They let the client's cache, journal, recovery
 * and state machine be tested before src/meta and src/chunk are wired in; a test that uses them
 * proves the client, NOT the pipeline against the real services (see docs/client.md).
 *
 * StubMeta: one JSON document (files, leases, commit records) rewritten durably on every change.
 * StubChunks: one file per chunk under chunks/, content-addressed; health can be made partial.
 */
import { readFile, readdir, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { CairnError, errnoCode } from '../../../src/common/errors.js';
import { writeFileDurable } from '../../../src/common/durable.js';
import { Mutex } from '../../../src/client/cached-file.js';
import { spliceExtents } from '../../../src/meta/ops.js';
import type { ChunkHealth, ChunkPort, ChunkRef, CommitRecord, CommitRequest, FileAttr, Lease, MetaPort, PutChunkResult } from '../../../src/client/ports.js';

interface MetaDoc {
  nextId: number;
  files: Record<string, FileAttr>;
  paths: Record<string, string>;
  leases: Record<string, { holder: string; token: string; expiresAtMs: number }>;
  commits: Record<string, CommitRecord>;
}


export class StubMeta implements MetaPort {
  private readonly lock = new Mutex();
  calls: string[] = [];
  constructor(readonly dir: string) {}

  private get path(): string {
    return join(this.dir, 'meta.json');
  }

  async load(): Promise<MetaDoc> {
    try {
      return JSON.parse(await readFile(this.path, 'utf8')) as MetaDoc;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      return { nextId: 1, files: {}, paths: {}, leases: {}, commits: {} };
    }
  }

  private async tx<T>(fn: (d: MetaDoc) => T): Promise<T> {
    return this.lock.run(async () => {
      await mkdir(this.dir, { recursive: true });
      const d = await this.load();
      const r = fn(d);
      await writeFileDurable(this.path, JSON.stringify(d));
      return r;
    });
  }

  async lookup(path: string): Promise<FileAttr | null> {
    this.calls.push('lookup');
    const d = await this.load();
    const id = d.paths[path];
    return id === undefined ? null : structuredClone(d.files[id]!);
  }

  async create(path: string, opts: { mode: number; lease?: { holder: string; ttlMs: number } }): Promise<FileAttr & { lease?: Lease }> {
    this.calls.push('create');
    return this.tx((d) => {
      if (d.paths[path] !== undefined) throw new CairnError('EEXIST', `${path} exists`);
      const fileId = String(d.nextId++);
      const attr: FileAttr = { fileId, path, size: 0, version: 0, mode: opts.mode, mtimeMs: Date.now(), extents: [] };
      d.files[fileId] = attr;
      d.paths[path] = fileId;
      if (opts.lease === undefined) return structuredClone(attr);
      const lease = { holder: opts.lease.holder, token: randomBytes(8).toString('hex'), expiresAtMs: Date.now() + opts.lease.ttlMs };
      d.leases[fileId] = lease;
      return { ...structuredClone(attr), lease: { token: lease.token, expiresAtMs: lease.expiresAtMs } };
    });
  }

  async getattr(fileId: string): Promise<FileAttr> {
    const d = await this.load();
    const f = d.files[fileId];
    if (f === undefined) throw new CairnError('ENOENT', `file ${fileId} does not exist`);
    return structuredClone(f);
  }

  async acquireLease(fileId: string, holder: string, ttlMs: number): Promise<Lease> {
    this.calls.push('acquireLease');
    return this.tx((d) => {
      const now = Date.now();
      const l = d.leases[fileId];
      if (l !== undefined && l.holder !== holder && l.expiresAtMs > now) throw new CairnError('EBUSY', `file ${fileId} has another writer`);
      const lease = { holder, token: randomBytes(8).toString('hex'), expiresAtMs: now + ttlMs };
      d.leases[fileId] = lease;
      return { token: lease.token, expiresAtMs: lease.expiresAtMs };
    });
  }

  async renewLease(fileId: string, _holder: string, token: string, ttlMs: number): Promise<Lease> {
    return this.tx((d) => {
      const l = d.leases[fileId];
      if (l === undefined || l.token !== token || l.expiresAtMs < Date.now()) throw new CairnError('EFENCED', 'lease lost');
      l.expiresAtMs = Date.now() + ttlMs;
      return { token, expiresAtMs: l.expiresAtMs };
    });
  }

  async releaseLease(fileId: string, _holder: string, token: string): Promise<void> {
    this.calls.push('releaseLease');
    await this.tx((d) => {
      if (d.leases[fileId]?.token === token) delete d.leases[fileId];
    });
  }

  /** Pins keep chunks from GC in the real metadata; the stand-in has no GC. */
  async pinVersion(): Promise<void> {}
  async unpinVersion(): Promise<void> {}

  /** Inline content is the real metadata's (test/client/inline.test.ts runs it); the stand-in refuses it. */
  async putFile(): Promise<FileAttr> {
    throw new CairnError('EINVAL', 'the stand-in metadata stores no inline content');
  }

  async commitVersion(req: CommitRequest): Promise<{ version: number }> {
    this.calls.push('commitVersion');
    if (req.inline !== undefined) throw new CairnError('EINVAL', 'the stand-in metadata stores no inline content');
    return this.tx((d) => {
      const f = d.files[req.fileId];
      if (f === undefined) throw new CairnError('ENOENT', 'no such file');
      const l = d.leases[req.fileId];
      if (l === undefined || l.token !== req.leaseToken) throw new CairnError('EFENCED', 'lease token does not match');
      if (f.version !== req.expectedVersion) throw new CairnError('ECONFLICT', `file is at version ${f.version}, not ${req.expectedVersion}`);
      f.version += 1;
      f.size = req.size;
      // A delta commit keeps the current layout outside its range (the real metadata's rule).
      f.extents = structuredClone(req.splice === undefined ? req.extents : (spliceExtents(f.extents, req.splice.from, req.splice.to, req.size, req.extents) as typeof req.extents));
      f.mtimeMs = req.mtimeMs;
      d.commits[req.fileId] = { fileId: req.fileId, version: f.version, commitId: req.commitId, state: req.durable === true ? 'durable' : 'visible' };
      return { version: f.version };
    });
  }

  async markDurable(fileId: string, version: number, commitId: string): Promise<void> {
    this.calls.push('markDurable');
    await this.tx((d) => {
      const c = d.commits[fileId];
      if (c !== undefined && c.version === version && c.commitId === commitId) c.state = 'durable';
    });
  }

  async commitStatus(fileId: string, version: number): Promise<CommitRecord | null> {
    const d = await this.load();
    const c = d.commits[fileId];
    return c !== undefined && c.version === version ? c : null;
  }

  /** Test hook: another writer installs a version behind the client's back. */
  async forceCommit(path: string, size: number): Promise<void> {
    await this.tx((d) => {
      const f = d.files[d.paths[path]!]!;
      f.version += 1;
      f.size = size;
      f.extents = [];
    });
  }
}

export class StubChunks implements ChunkPort {
  puts: string[] = [];
  gets = 0;
  /** While > 0, each put stores only `needed` of `wanted` shards (a disk is down). */
  partialPuts = 0;
  /** While set, puts wait for it (a slow or unreachable chunk store). */
  gate: Promise<void> | null = null;
  private partial = new Set<string>();

  constructor(readonly dir: string) {}

  private file(hash: string): string {
    return join(this.dir, 'chunks', hash);
  }

  async putChunk(hash: string, bytes: Buffer): Promise<PutChunkResult> {
    if (this.gate !== null) await this.gate;
    if (createHash('sha256').update(bytes).digest('hex') !== hash) throw new CairnError('EINVAL', 'hash does not match bytes');
    this.puts.push(hash);
    await mkdir(join(this.dir, 'chunks'), { recursive: true });
    await writeFileDurable(this.file(hash), bytes);
    if (this.partialPuts > 0) {
      this.partialPuts--;
      this.partial.add(hash);
      return { stored: 2, wanted: 3, needed: 2, scheme: 'ec2+1', pg: 7 };
    }
    this.partial.delete(hash);
    return { stored: 3, wanted: 3, needed: 2, scheme: 'ec2+1', pg: 7 };
  }

  async getChunk(ref: ChunkRef): Promise<Buffer> {
    this.gets++;
    try {
      const bytes = await readFile(this.file(ref.chunkHash));
      // The port's contract: verified bytes or an error (the real reader checks the chunk hash).
      if (createHash('sha256').update(bytes).digest('hex') !== ref.chunkHash) throw new CairnError('ECORRUPT', `chunk ${ref.chunkHash} failed its hash check`);
      return bytes;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new CairnError('EIO', `chunk ${ref.chunkHash} not stored`);
      throw err;
    }
  }

  async health(ref: ChunkRef): Promise<ChunkHealth> {
    return { stored: this.partial.has(ref.chunkHash) ? 2 : 3, wanted: 3, needed: 2 };
  }

  async storedHashes(): Promise<string[]> {
    try {
      return await readdir(join(this.dir, 'chunks'));
    } catch {
      return [];
    }
  }
}
