/**
 * The client's ports bound to the real services: MetaPort over src/meta's MetaClient (gRPC,
 * leader failover) and ChunkPort over src/chunk's writer and reader, with placement from the
 * diskmap (a chunk's group is groupForKey(diskmap, its SHA-256); shard i goes to the group's
 * bucket i). Translation only: no policy lives here.
 */
import { CairnError } from '../common/errors.js';
import type { MetaClient, Attr, Extent as MetaExtent } from '../meta/client.js';
import type { ChunkClients } from '../chunk/client.js';
import { writeChunk } from '../chunk/writer.js';
import { readChunk } from '../chunk/reader.js';
import { formatBucketId, parseSchemeTag, schemeTag, shardsNeeded, shardCount, type Scheme, type ShardTarget } from '../chunk/types.js';
import { groupForKey, type BucketId, type Diskmap } from '../diskmap/index.js';
import { handoffDisks, handoffFor, type HandoffOptions } from '../chunk/handoff.js';
import type { ChunkHealth, ChunkPort, ChunkRef, CommitRecord, CommitRequest, FileAttr, Lease, MetaPort, PutChunkResult } from './ports.js';

function inoOf(fileId: string): number {
  const ino = Number(fileId);
  if (!Number.isSafeInteger(ino) || ino <= 0) throw new CairnError('EINVAL', `"${fileId}" is not an inode number`);
  return ino;
}

function tokenOf(token: string): number {
  const t = Number(token);
  if (!Number.isSafeInteger(t) || t < 0) throw new CairnError('EINVAL', `"${token}" is not a lease token`);
  return t;
}

function fileAttr(path: string, attr: Attr, extents: readonly MetaExtent[], inline?: Buffer): FileAttr {
  if (attr.type !== 'file') throw new CairnError(attr.type === 'dir' ? 'EISDIR' : 'EINVAL', `${path} is not a regular file`);
  return {
    ...(inline !== undefined ? { inline } : {}),
    fileId: String(attr.ino),
    path,
    size: attr.size,
    // The commit compares-and-sets on the inode's version: use that one.
    version: attr.version,
    mode: attr.mode,
    mtimeMs: attr.mtimeMs,
    extents: extents.map((e) => ({ offset: e.offset, length: e.length, chunkHash: e.chunkHash, scheme: e.scheme, pg: e.pg, ...(e.chunkLength !== undefined ? { chunkOffset: e.chunkOffset ?? 0, chunkLength: e.chunkLength } : {}) })),
  };
}

export class MetaAdapter implements MetaPort {
  constructor(private readonly meta: MetaClient) {}

  async lookup(path: string): Promise<FileAttr | null> {
    try {
      const l = await this.meta.layout(path);
      return fileAttr(path, l.attr, l.extents, l.inline);
    } catch (err) {
      if (err instanceof CairnError && err.code === 'ENOENT') return null;
      throw err;
    }
  }

  async create(path: string, opts: { mode: number; lease?: { holder: string; ttlMs: number; addr?: string } }): Promise<FileAttr & { lease?: Lease }> {
    const { attr, lease } = await this.meta.create(path, { mode: opts.mode, exclusive: true, ...(opts.lease !== undefined ? { lease: opts.lease } : {}) });
    const a = fileAttr(path, attr, []);
    return lease !== undefined ? { ...a, lease: { token: String(lease.token), expiresAtMs: lease.validUntilMs } } : a;
  }

  async getattr(fileId: string): Promise<FileAttr> {
    const l = await this.meta.layout({ ino: inoOf(fileId) });
    return fileAttr(l.attr.name === '' ? `#${fileId}` : l.attr.name, l.attr, l.extents, l.inline);
  }

  async acquireLease(fileId: string, holder: string, ttlMs: number, addr?: string): Promise<Lease> {
    const g = await this.meta.leaseAcquire(inoOf(fileId), holder, ttlMs, addr ?? '');
    return { token: String(g.token), expiresAtMs: g.validUntilMs };
  }

  async renewLease(fileId: string, holder: string, token: string, ttlMs: number): Promise<Lease> {
    const g = await this.meta.leaseRenew(inoOf(fileId), holder, tokenOf(token), ttlMs);
    return { token: String(g.token), expiresAtMs: g.validUntilMs };
  }

  async leaseOf(fileId: string): Promise<{ token: number; addr?: string } | null> {
    const l = await this.meta.leaseGet(inoOf(fileId));
    return l === null ? null : { token: l.token, ...(l.addr !== undefined ? { addr: l.addr } : {}) };
  }

  async releaseLease(fileId: string, holder: string, token: string): Promise<void> {
    await this.meta.leaseRelease(inoOf(fileId), holder, tokenOf(token));
  }

  async commitVersion(req: CommitRequest): Promise<{ version: number }> {
    const { record } = await this.meta.commitVersion({
      ino: inoOf(req.fileId),
      expectedVersion: req.expectedVersion,
      fence: tokenOf(req.leaseToken),
      size: req.size,
      extents: req.extents.map((e) => ({ offset: e.offset, length: e.length, chunkHash: e.chunkHash, scheme: e.scheme, pg: e.pg, ...(e.chunkLength !== undefined ? { chunkOffset: e.chunkOffset ?? 0, chunkLength: e.chunkLength } : {}) })),
      mtimeMs: Math.floor(req.mtimeMs),
      durable: req.durable === true,
      ...(req.inline !== undefined ? { inline: req.inline } : {}),
      ...(req.splice !== undefined ? { splice: req.splice } : {}),
    });
    return { version: record.version };
  }

  async pinVersion(fileId: string, version: number, holder: string, ttlMs: number): Promise<void> {
    await this.meta.pin(inoOf(fileId), version, holder, ttlMs);
  }

  async unpinVersion(fileId: string, holder: string): Promise<void> {
    await this.meta.unpin(inoOf(fileId), holder);
  }

  async putFile(path: string, data: Buffer, opts: { mode: number; mkdirs: boolean }): Promise<FileAttr> {
    const attr = await this.meta.putFile(path, data, { mode: opts.mode, mkdirs: opts.mkdirs });
    return fileAttr(path, attr, [], data);
  }

  async markDurable(fileId: string, version: number): Promise<void> {
    await this.meta.markDurable(inoOf(fileId), version);
  }

  async commitStatus(fileId: string, version: number): Promise<CommitRecord | null> {
    try {
      const r = await this.meta.commitStatus(inoOf(fileId), version);
      return { fileId, version: r.version, commitId: null, state: r.state === 'durable' ? 'durable' : 'visible' };
    } catch (err) {
      if (err instanceof CairnError && err.code === 'ENOENT') return null;
      throw err;
    }
  }
}

/** What the chunk adapter needs to place a chunk: the current diskmap and where each bucket is served. */
export interface ChunkPlacement {
  diskmap(): Diskmap;
  /** host:port of the chunk service that holds this bucket's disk. */
  addressOf(bucket: BucketId): string;
}

function handoffAvailable(dm: Diskmap): boolean {
  return handoffDisks(dm).length > 0;
}

export class ChunkAdapter implements ChunkPort {
  constructor(
    private readonly clients: ChunkClients,
    private readonly placement: ChunkPlacement,
    private readonly timeoutMs = 30_000,
  ) {}

  private targets(dm: Diskmap, pg: number, scheme: Scheme): ShardTarget[] {
    const g = dm.groups[pg];
    if (g === undefined || g.retired) throw new CairnError('ESTALE', `placement group ${pg} is not in diskmap epoch ${dm.epoch}`);
    if (g.buckets.length !== shardCount(scheme)) {
      throw new CairnError('ESTALE', `placement group ${pg} has ${g.buckets.length} buckets, scheme ${schemeTag(scheme)} needs ${shardCount(scheme)}`);
    }
    return g.buckets.map((b) => ({ bucketId: b, address: this.placement.addressOf(b) }));
  }

  /** Where a shard of this chunk goes, and is found, when its home is down (src/chunk/handoff.ts). */
  private handoff(dm: Diskmap, hash: string, targets: readonly ShardTarget[]): HandoffOptions {
    return handoffFor(dm, hash, targets.map((t) => t.bucketId), (b) => this.placement.addressOf(b));
  }

  async putChunk(hash: string, bytes: Buffer): Promise<PutChunkResult> {
    const dm = this.placement.diskmap();
    const g = groupForKey(dm, Buffer.from(hash, 'hex'));
    const scheme = dm.scheme as Scheme;
    const targets = this.targets(dm, g.id, scheme);
    const r = await writeChunk(this.clients, bytes, scheme, targets, {
      hash,
      diskmapEpoch: dm.epoch,
      timeoutMs: this.timeoutMs,
      handoff: this.handoff(dm, hash, targets),
    });
    if (r.readable && !r.protected && handoffAvailable(dm)) {
      // Acknowledging it would break the promise that one more disk loss loses nothing. (A map
      // that lists no disks offers no handoff: the chunk then stays visible, not durable.)
      throw new CairnError('EUNAVAIL', `chunk ${hash.slice(0, 16)}… cannot be stored with ${schemeTag(scheme)}'s redundancy on the disks that are up: ${r.unprotected ?? 'too few live disks'}; bring a node or disk back`);
    }
    return { stored: r.stored, wanted: r.wanted, needed: shardsNeeded(scheme), scheme: schemeTag(scheme), pg: g.id };
  }

  async getChunk(ref: ChunkRef): Promise<Buffer> {
    const scheme = parseSchemeTag(ref.scheme);
    const dm = this.placement.diskmap();
    const targets = this.targets(dm, ref.pg, scheme);
    return readChunk(this.clients, ref.chunkHash, scheme, targets, { timeoutMs: this.timeoutMs, handoff: this.handoff(dm, ref.chunkHash, targets) });
  }

  async health(ref: ChunkRef): Promise<ChunkHealth> {
    const scheme = parseSchemeTag(ref.scheme);
    const dm = this.placement.diskmap();
    const targets = this.targets(dm, ref.pg, scheme);
    const handoff = this.handoff(dm, ref.chunkHash, targets);
    const has = (b: BucketId, address: string, index: number): Promise<boolean> =>
      this.clients
        .get(address)
        .statShard({ bucket: formatBucketId(b), hash: ref.chunkHash, scheme, index }, { timeoutMs: this.timeoutMs })
        .then(
          () => true,
          () => false,
        );
    // A shard counts where it is: at home, or as a guest on a handoff disk while home is down.
    const found = await Promise.all(
      targets.map(async (t, index) => {
        if (await has(t.bucketId, t.address, index)) return true;
        for (const c of handoff.candidates(index)) if (await has(c.bucket, handoff.addressOf(c.bucket), index)) return true;
        return false;
      }),
    );
    return { stored: found.filter(Boolean).length, wanted: targets.length, needed: shardsNeeded(scheme) };
  }
}

