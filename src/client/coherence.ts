/**
 * The port through which CairnFs keeps its cache coherent with the other nodes' (docs/dfs-cache.md).
 * CairnFs knows nothing of the network: src/peer implements this port over the node transport.
 *
 * Writer side: before a write handle opens on a file whose lease this node just took, `claim`
 * tells every other node "this node writes the file now" and waits for their answer; `released`
 * says the lease is given back (the data is committed). Reader side: `writerOf` names the node
 * that writes a file now, if another; reads, attributes and writes of such a file go to it.
 */

export interface RemoteWriter {
  /** The writer node's peer address (host:port). */
  addr: string;
  /** The fencing token of its lease (claims carry it, so an older claim never replaces a newer). */
  token: number;
}

export interface RemoteAttr {
  size: number;
  mtimeMs: number;
  /** The writer's commit state, pending bytes and durability level (for `cairn status PATH`). */
  state?: string;
  pendingBytes?: number;
  level?: string;
}

export interface CoherencePort {
  /** This node's peer address, named in the leases it takes. */
  readonly addr: string;
  /** Tell the other nodes this node writes `fileId` under lease `token`; resolves once they answered (or timed out). */
  claim(fileId: string, token: number): Promise<void>;
  /** This node gave the lease of `fileId` back (its data committed): readers go back to the chunk store. */
  released(fileId: string, token: number): void;
  /** The other node writing `fileId` now, if any. */
  writerOf(fileId: string): RemoteWriter | undefined;
  /** A writer learned otherwise (an EBUSY that named it): remember it. */
  learn(fileId: string, w: RemoteWriter): void;
  /** The writer no longer holds the file (it answered "not held"): forget it. */
  forget(fileId: string, w: RemoteWriter): void;
  /** Bytes [offset, offset+length) as the writer sees them (cut at its size); null: it no longer holds the file. */
  read(w: RemoteWriter, fileId: string, offset: number, length: number): Promise<(RemoteAttr & { data: Buffer }) | null>;
  attr(w: RemoteWriter, fileId: string): Promise<RemoteAttr | null>;
  /** A write handle on the writer, for a second node's writes (never two writers); null: not held there. */
  openWrite(w: RemoteWriter, fileId: string): Promise<number | null>;
  write(w: RemoteWriter, rfd: number, data: Uint8Array, position: number | null): Promise<{ at: number; size: number }>;
  truncate(w: RemoteWriter, rfd: number, size: number): Promise<void>;
  fsync(w: RemoteWriter, rfd: number): Promise<void>;
  close(w: RemoteWriter, rfd: number): Promise<void>;
  /**
   * The `replicated` level: mirror one write/truncate of a file this node writes (lease `token`,
   * its cache on committed version `known`) to a replica node's cache disk, fsynced there when
   * this resolves. `fresh`: the file has nothing uncommitted before this op (the replica starts a
   * new log). Rejects when no replica took it (the caller then commits durably instead).
   */
  mirror(fileId: string, token: number, known: number, op: { kind: 'write'; offset: number; data: Buffer } | { kind: 'truncate'; size: number }, fresh: boolean): Promise<void>;
  /** A commit is about to install `version` of a mirrored file: the replica must know before it happens. */
  intent(fileId: string, version: number): Promise<void>;
  /** Stop mirroring the file to its current replica (it failed): the next mirror picks one afresh. */
  resetReplica(fileId: string): void;
}
