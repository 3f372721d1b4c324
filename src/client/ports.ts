/**
 * The two narrow interfaces the client needs from the layers below it: the metadata
 * service (src/meta) and the chunk store (src/chunk). The client is written and tested
 * against these; src/client/adapters.ts binds them to the real services. Nothing in
 * src/client reaches around these ports.
 */

/** Hex SHA-256 of a chunk's bytes (64 lowercase hex characters). */
export type ChunkHash = string;

/** Where a stored chunk lives: enough for the chunk reader to find its shards. */
export interface ChunkRef {
  chunkHash: ChunkHash;
  /** Chunk length in bytes. */
  length: number;
  /** Redundancy scheme as the chunk layer names it (e.g. "rs-2+1", "rep-3"). */
  scheme: string;
  /** Placement group (diskmap index) chosen when the chunk was written. */
  pg: number;
}

/**
 * One piece of a file version's layout: file bytes [offset, offset+length) are chunk bytes
 * [chunkOffset, chunkOffset+length) — a slice of a chunk of `chunkLength` bytes. Both absent: the
 * whole chunk (chunkOffset 0, chunkLength = length).
 */
export interface Extent extends ChunkRef {
  offset: number;
  chunkOffset?: number;
  chunkLength?: number;
}

/** The chunk an extent reads from (its whole length, for fetching and checking). */
export function chunkOf(e: Extent): ChunkRef {
  return e.chunkLength === undefined ? e : { chunkHash: e.chunkHash, length: e.chunkLength, scheme: e.scheme, pg: e.pg };
}

/** What the metadata service knows of one file version. Extents are sorted and never overlap; gaps read as zeros. */
export interface FileAttr {
  fileId: string;
  path: string;
  size: number;
  version: number;
  mode: number;
  mtimeMs: number;
  extents: Extent[];
  /**
   * The content when the version is stored inline in the metadata (small files; then `extents`
   * is empty): bytes [0, inline.length) of the file, zeros after it up to `size`.
   */
  inline?: Buffer;
}

export interface Lease {
  /** Fencing token every commit under this lease must present. */
  token: string;
  /** Wall-clock expiry as the leader granted it (with its safety margin already taken off). */
  expiresAtMs: number;
}

export interface CommitRequest {
  fileId: string;
  /** Compare-and-set: the version the new layout was computed against. */
  expectedVersion: number;
  leaseToken: string;
  /** Chosen by the client and stored in the commit record, so a client that crashed can tell its own commit. */
  commitId: string;
  size: number;
  extents: Extent[];
  mtimeMs: number;
  /** Every shard of the new chunks is stored already: the record says durable at once (no markDurable). */
  durable?: boolean;
  /** The whole content, stored inline in the metadata (extents empty; durable at once). ENOSPC: the inline budget is full. */
  inline?: Buffer;
  /**
   * A delta commit: `extents` are only the new layout's extents within [from, to); outside it the
   * layout of `expectedVersion` stays (cut at `size`). O(changed extents) on the wire and in the log.
   */
  splice?: { from: number; to: number };
}

export type CommitRecordState = 'visible' | 'durable';

export interface CommitRecord {
  fileId: string;
  version: number;
  /** The client's commit id when the service keeps it (src/meta does not yet: null). */
  commitId: string | null;
  state: CommitRecordState;
}

export interface MetaPort {
  /** Resolve a path (linearizable); null when it does not exist. */
  lookup(path: string): Promise<FileAttr | null>;
  /**
   * Create an empty regular file (version 0, no extents); EEXIST when the path exists. With
   * `lease`, the new file comes with that holder's write lease, granted in the same operation.
   */
  create(path: string, opts: { mode: number; lease?: { holder: string; ttlMs: number; addr?: string } }): Promise<FileAttr & { lease?: Lease }>;
  getattr(fileId: string): Promise<FileAttr>;
  /** One writer per file: EBUSY while another holder's lease is live (its details name the holder's `addr` and `token`). `addr`: this node's peer address. */
  acquireLease(fileId: string, holder: string, ttlMs: number, addr?: string): Promise<Lease>;
  /** EFENCED when the lease has expired or was taken over. */
  renewLease(fileId: string, holder: string, token: string, ttlMs: number): Promise<Lease>;
  releaseLease(fileId: string, holder: string, token: string): Promise<void>;
  /** The file's live write lease (its token and holder's peer address), or null when none is live. */
  leaseOf?(fileId: string): Promise<{ token: number; addr?: string } | null>;
  /** Install a new version: ECONFLICT when the file is no longer at expectedVersion, EFENCED for a dead lease. */
  commitVersion(req: CommitRequest): Promise<{ version: number }>;
  /** Record that every chunk of `version` reached full health. Idempotent. */
  markDurable(fileId: string, version: number, commitId: string): Promise<void>;
  /** The commit record of one version of the file, or null when there is none. */
  commitStatus(fileId: string, version: number): Promise<CommitRecord | null>;
  /**
   * A whole small file in one metadata write: a new file holding `data` inline, durable when this
   * returns, linked at `path` in place of an existing regular file (as a rename over it); `mkdirs`
   * makes missing parents. ENOSPC when the metadata's inline budget is full.
   */
  putFile(path: string, data: Buffer, opts: { mode: number; mkdirs: boolean }): Promise<FileAttr>;
  /**
   * Pin a version this node has open (chunk GC keeps its chunks even once it is superseded or
   * unlinked); again to renew. ECONFLICT when the file is no longer at that version.
   */
  pinVersion(fileId: string, version: number, holder: string, ttlMs: number): Promise<void>;
  unpinVersion(fileId: string, holder: string): Promise<void>;
}

export interface ChunkHealth {
  /** Shards (or replicas) stored. */
  stored: number;
  /** Shards (or replicas) the scheme wants. */
  wanted: number;
  /** Shards needed to read the chunk (k). */
  needed: number;
}

export interface PutChunkResult extends ChunkHealth {
  scheme: string;
  pg: number;
}

export interface ChunkPort {
  /**
   * Store a chunk under its hash (placement from the diskmap). Resolves once every shard write
   * has finished or failed, reporting how many landed. Idempotent: existing shards are kept.
   */
  putChunk(hash: ChunkHash, bytes: Buffer): Promise<PutChunkResult>;
  /** Read a whole chunk, verified against its hash (degraded reads allowed). ECORRUPT/EIO, never wrong bytes. */
  getChunk(ref: ChunkRef): Promise<Buffer>;
  /** Current health of a stored chunk. */
  health(ref: ChunkRef): Promise<ChunkHealth>;
}
