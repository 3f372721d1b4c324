/**
 * The key layout of the metadata database (classic-level, utf8 keys and values).
 * Numbers are fixed-width lowercase hex so that LevelDB's byte order is numeric order;
 * names follow a NUL separator (names never contain NUL), so a directory's entries are
 * one contiguous, name-ordered key range.
 *
 *   m:applied            {index, term} of the last applied Raft entry (same batch as its effects)
 *   m:nextIno            next inode number to allocate
 *   m:fence              last fencing token handed out
 *   m:rev / m:firstRev   last revision / oldest revision still in the watch log
 *   i:<ino>              inode
 *   d:<parent>\0<name>   directory entry {ino, type}
 *   x:<ino>\0<name>      extended attribute (base64)
 *   f:<ino>              layout of the current version {version, extents}
 *   b:<ino>              inline content of the current version (base64; checksum in the layout)
 *   m:inlineBytes        total bytes of inline content (the inline budget counts against it)
 *   p:<ino>\0<holder>    version pin {ino, version, holder, expiresAtMs} (an open handle's version)
 *   r:<ino>:<version>    layout of a superseded (or unlinked) version kept while a pin holds it
 *   c:<ino>:<version>    commit record {state visible|durable, …}
 *   l:<ino>              write lease {holder, token, expiresAtMs}
 *   o:<ino>              orphan marker: unlinked while a lease kept it open
 *   g:doc                the diskmap {epoch, documentJson}
 *   g:h:<epoch>          diskmap change record {epoch, diffJson, revision, nowMs}
 *   w:<rev>              watch event
 *   n:<nodeId>           node registry record (opaque JSON written by src/server/registry.ts)
 *   m:clusterVersion     the cluster version (src/common/version.ts); absent: 0.1.0
 *   lock:<ino>           the inode's lock table {locks: HeldLock[]} (src/meta/lock-table.ts)
 *   lsess:<session>      lock session {session, expiresAtMs}
 *   lsidx:<session>\0<ino> a session holds locks on this inode (for dropping them when it ends)
 */

export function hex(n: number): string {
  return n.toString(16).padStart(16, '0');
}

export const K = {
  applied: 'm:applied',
  nextIno: 'm:nextIno',
  fence: 'm:fence',
  rev: 'm:rev',
  firstRev: 'm:firstRev',
  inode: (ino: number): string => `i:${hex(ino)}`,
  dirent: (parent: number, name: string): string => `d:${hex(parent)}\0${name}`,
  direntPrefix: (parent: number): string => `d:${hex(parent)}\0`,
  xattr: (ino: number, name: string): string => `x:${hex(ino)}\0${name}`,
  xattrPrefix: (ino: number): string => `x:${hex(ino)}\0`,
  layout: (ino: number): string => `f:${hex(ino)}`,
  inline: (ino: number): string => `b:${hex(ino)}`,
  inlinePrefix: 'b:',
  inlineBytes: 'm:inlineBytes',
  pin: (ino: number, holder: string): string => `p:${hex(ino)}\0${holder}`,
  pinPrefix: (ino: number): string => `p:${hex(ino)}\0`,
  pinsPrefix: 'p:',
  retained: (ino: number, version: number): string => `r:${hex(ino)}:${hex(version)}`,
  retainedPrefix: 'r:',
  commit: (ino: number, version: number): string => `c:${hex(ino)}:${hex(version)}`,
  commitPrefix: (ino: number): string => `c:${hex(ino)}:`,
  lease: (ino: number): string => `l:${hex(ino)}`,
  leasePrefix: 'l:',
  orphan: (ino: number): string => `o:${hex(ino)}`,
  diskmap: 'g:doc',
  diskmapHistory: (epoch: number): string => `g:h:${hex(epoch)}`,
  event: (rev: number): string => `w:${hex(rev)}`,
  eventPrefix: 'w:',
  node: (nodeId: number): string => `n:${hex(nodeId)}`,
  nodePrefix: 'n:',
  clusterVersion: 'm:clusterVersion',
  locks: (ino: number): string => `lock:${hex(ino)}`,
  lockSession: (session: string): string => `lsess:${session}`,
  lockSessionPrefix: 'lsess:',
  lockIndex: (session: string, ino: number): string => `lsidx:${session}\0${hex(ino)}`,
  lockIndexPrefix: (session: string): string => `lsidx:${session}\0`,
} as const;

/** The smallest key greater than every key that starts with prefix (prefix ends in a byte < 0xff). */
export function prefixEnd(prefix: string): string {
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}
