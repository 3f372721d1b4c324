/**
 * One health verdict for the cluster, from what a node reports of it (the file service's Cluster
 * answer): healthy, degraded, at risk or down, and the checks behind it. Pure logic, no I/O, so
 * the CLI (`cairn status`) and anything else that shows the cluster read it the same way.
 *
 * Each check has a stable code (as `ceph health detail` has) that scripts and mutes refer to:
 *
 *   NO_LEADER              down      the metadata Raft group has no leader (no quorum)
 *   DATA_UNAVAILABLE       down      more failure domains are out than the redundancy tolerates
 *   REDUNDANCY_EXHAUSTED   at risk   one more failure of a disk/machine loses data
 *   NODE_DOWN              degraded  a registered node does not answer
 *   DISK_FAILED            degraded  a disk is not ok (missing, failed, unreadable)
 *   DISK_NOT_IN_MAP        degraded  a working disk holds no data yet (not in the diskmap)
 *   DISK_FULL              at risk   a disk is at least 95% full: writes to its groups will fail
 *   DISK_NEARFULL          degraded  a disk is at least 85% full
 *   CLUSTER_FULL           at risk   the working disks together are at least 95% full
 *   CLUSTER_NEARFULL       degraded  the working disks together are at least 85% full
 *   NO_DISKMAP             degraded  no diskmap yet (waiting for every initial node to register)
 *   INSECURE_TRANSPORT     degraded  the node was reached without TLS: it serves anyone
 *   PENDING_COMMITS        info      writes in the answering node's cache not yet durable
 *   UNREACHABLE            down      (the CLI's own) the node asked does not answer at all
 *
 * A muted check (`cairn health mute CODE --for 1h`) is still listed, but does not count for the
 * verdict until its mute ends.
 */
import type { ClusterInfo } from './file-client.js';
import type { DiskSpace } from '../chunk/usage.js';

export type Verdict = 'healthy' | 'degraded' | 'at risk' | 'down';
export type Severity = 'info' | 'warn' | 'risk' | 'down';

export const CHECK_CODES = [
  'NO_LEADER', 'DATA_UNAVAILABLE', 'REDUNDANCY_EXHAUSTED', 'NODE_DOWN', 'DISK_FAILED', 'DISK_NOT_IN_MAP', 'NO_DISKMAP',
  'INSECURE_TRANSPORT', 'PENDING_COMMITS', 'DISK_FULL', 'DISK_NEARFULL', 'CLUSTER_FULL', 'CLUSTER_NEARFULL',
] as const;

/** Fill ratios at which a disk or the cluster is nearly full (degraded) and full (at risk), as Ceph's defaults. */
export const FILL_THRESHOLDS = { nearfull: 0.85, full: 0.95 } as const;
export type CheckCode = (typeof CHECK_CODES)[number];

export interface HealthCheck {
  code: CheckCode;
  severity: Severity;
  summary: string;
  /** One line per thing it is about (a node, a disk, a file). */
  detail: string[];
  muted: boolean;
  /** When the mute ends (ms since the epoch), if muted. */
  mutedUntilMs?: number;
}

export interface Health {
  verdict: Verdict;
  checks: HealthCheck[];
  /** Failure domains the redundancy tolerates losing, and how many are out now. */
  redundancy: { scheme: string; failureDomain: string; domains: number; tolerates: number; out: number } | undefined;
  /**
   * okBytes: capacity of the working disks; usedBytes/freeBytes: of the working disks whose fill
   * is known (raw bytes, before redundancy); fill: usedBytes / (usedBytes + freeBytes), or null.
   */
  capacity: { disks: number; okDisks: number; totalBytes: number; okBytes: number; usedBytes: number; freeBytes: number; fill: number | null };
  pending: { files: number; bytes: number };
}

export interface Mute {
  code: string;
  untilMs: number;
}

const RANK: Record<Severity, number> = { info: 0, warn: 1, risk: 2, down: 3 };
const VERDICT: Record<Severity, Verdict> = { info: 'healthy', warn: 'degraded', risk: 'at risk', down: 'down' };

/** How many failure domains a scheme tolerates losing when its shards are spread over `domains`. */
export function toleratedDomains(scheme: string, domains: number): number {
  if (domains <= 0) return 0;
  const ec = /^EC (\d+)\+(\d+)$/.exec(scheme);
  if (ec !== null) {
    const k = Number(ec[1]);
    const m = Number(ec[2]);
    // The most shards of one group a single domain holds.
    const perDomain = Math.ceil((k + m) / domains);
    return Math.floor(m / perDomain);
  }
  const rep = /^(\d+) replicas$/.exec(scheme);
  if (rep !== null) return Math.min(Number(rep[1]), domains) - 1;
  return 0;
}

/**
 * A disk's used and free bytes of its configured capacity: free is what the capacity leaves
 * beside what the disk holds, and no more than its file system has left (a folder disk on a
 * shared file system fills up when either does). Undefined without a figure from its node.
 */
export function diskFill(capacityBytes: number, space: DiskSpace | undefined): { usedBytes: number; freeBytes: number; fill: number } | undefined {
  if (space === undefined || space.fsTotalBytes <= 0 || capacityBytes <= 0) return undefined;
  const stored = Math.max(0, space.storedBytes);
  const freeBytes = Math.max(0, Math.min(capacityBytes - stored, space.fsAvailBytes));
  const usedBytes = capacityBytes - freeBytes;
  return { usedBytes, freeBytes, fill: usedBytes / capacityBytes };
}

const pct = (f: number): string => `${Math.round(f * 1000) / 10}%`;

/** The verdict and its checks. `secure`: whether the node was reached over TLS. */
export function assessHealth(c: ClusterInfo, o: { secure: boolean; mutes?: Mute[]; nowMs?: number }): Health {
  const now = o.nowMs ?? Date.now();
  const checks: Omit<HealthCheck, 'muted'>[] = [];
  const add = (code: CheckCode, severity: Severity, summary: string, detail: string[] = []): void => {
    checks.push({ code, severity, summary, detail });
  };
  const down = c.nodes.filter((n) => n.role === 'unreachable');
  const disks = c.nodes.flatMap((n) => n.disks.map((d) => ({ node: n, d })));
  const badDisks = disks.filter(({ node, d }) => node.role !== 'unreachable' && d.state !== 'ok');
  if (c.leaderId === 0) add('NO_LEADER', 'down', 'the metadata group has no leader: no quorum, nothing can be read or written');
  if (down.length > 0) add('NODE_DOWN', 'warn', `${down.length} of ${c.nodes.length} nodes do not answer`, down.map((n) => `node ${n.nodeId} (${n.address})`));
  if (badDisks.length > 0) {
    add('DISK_FAILED', 'warn', `${badDisks.length} disk${badDisks.length > 1 ? 's are' : ' is'} not ok`, badDisks.map(({ node, d }) => `node ${node.nodeId} disk ${d.disk} (${d.path}): ${d.state}${d.reason ? `, ${d.reason}` : ''}`));
  }
  const unmapped = disks.filter(({ node, d }) => node.role !== 'unreachable' && d.state === 'ok' && !d.inDiskmap);
  if (c.diskmapEpoch === 0) add('NO_DISKMAP', 'warn', 'no diskmap yet: waiting for every initial node to register its disks');
  else if (unmapped.length > 0) add('DISK_NOT_IN_MAP', 'warn', `${unmapped.length} working disk(s) hold no data yet (not in the diskmap)`, unmapped.map(({ node, d }) => `node ${node.nodeId} disk ${d.disk} (${d.path})`));
  const okDisks = disks.filter(({ node, d }) => node.role !== 'unreachable' && d.state === 'ok');
  const known = okDisks.filter(({ d }) => d.usedBytes >= 0 && d.freeBytes >= 0 && d.usedBytes + d.freeBytes > 0);
  const fillOf = (d: { usedBytes: number; freeBytes: number }): number => d.usedBytes / (d.usedBytes + d.freeBytes);
  const full = known.filter(({ d }) => fillOf(d) >= FILL_THRESHOLDS.full);
  const nearfull = known.filter(({ d }) => fillOf(d) >= FILL_THRESHOLDS.nearfull && fillOf(d) < FILL_THRESHOLDS.full);
  const diskLine = ({ node, d }: (typeof disks)[number]): string => `node ${node.nodeId} disk ${d.disk} (${d.path}): ${pct(fillOf(d))} full, ${d.freeBytes} bytes free`;
  if (full.length > 0) add('DISK_FULL', 'risk', `${full.length} disk(s) at least ${pct(FILL_THRESHOLDS.full)} full: writes to their placement groups will fail`, full.map(diskLine));
  if (nearfull.length > 0) add('DISK_NEARFULL', 'warn', `${nearfull.length} disk(s) at least ${pct(FILL_THRESHOLDS.nearfull)} full`, nearfull.map(diskLine));
  const usedBytes = known.reduce((s, { d }) => s + d.usedBytes, 0);
  const freeBytes = known.reduce((s, { d }) => s + d.freeBytes, 0);
  const fill = usedBytes + freeBytes > 0 ? usedBytes / (usedBytes + freeBytes) : null;
  if (fill !== null && fill >= FILL_THRESHOLDS.full) add('CLUSTER_FULL', 'risk', `the working disks are ${pct(fill)} full: add a disk or delete files`);
  else if (fill !== null && fill >= FILL_THRESHOLDS.nearfull) add('CLUSTER_NEARFULL', 'warn', `the working disks are ${pct(fill)} full`);
  let redundancy: Health['redundancy'];
  if (c.diskmapEpoch > 0) {
    const byMachine = c.failureDomain !== 'disk';
    const domains = byMachine ? c.nodes.length : disks.length;
    const outDomains = byMachine
      ? new Set([...down.map((n) => n.nodeId), ...badDisks.map(({ node }) => node.nodeId)]).size
      : disks.filter(({ node, d }) => node.role === 'unreachable' || d.state !== 'ok').length;
    const tolerates = toleratedDomains(c.scheme, domains);
    redundancy = { scheme: c.scheme, failureDomain: c.failureDomain, domains, tolerates, out: outDomains };
    if (outDomains > tolerates) add('DATA_UNAVAILABLE', 'down', `${outDomains} ${c.failureDomain}s out, ${c.scheme} tolerates ${tolerates}: some data cannot be read`);
    else if (outDomains > 0 && outDomains === tolerates) add('REDUNDANCY_EXHAUSTED', 'risk', `${outDomains} ${c.failureDomain}(s) out, ${c.scheme} tolerates ${tolerates}: one more failure loses data`);
    else if (tolerates === 0) add('REDUNDANCY_EXHAUSTED', 'risk', `${c.scheme} over ${domains} ${c.failureDomain}s tolerates no failure`);
  }
  if (!o.secure) add('INSECURE_TRANSPORT', 'warn', 'reached without TLS: this node serves anyone who can reach its port (see docs/operations.md)');
  const pendingFiles = c.cachedFiles.filter((f) => f.pendingBytes > 0 || f.state !== 'durable');
  const pendingBytes = pendingFiles.reduce((s, f) => s + f.pendingBytes, 0);
  if (pendingFiles.length > 0) {
    add('PENDING_COMMITS', 'info', `${pendingFiles.length} file(s) in node ${c.answeredBy}'s write cache are not durable yet`, pendingFiles.map((f) => `${f.path}: ${f.state}, ${f.pendingBytes} bytes pending${f.error ? ` (${f.error})` : ''}`));
  }
  const mutes = (o.mutes ?? []).filter((m) => m.untilMs > now);
  const out: HealthCheck[] = checks
    .map((ch) => {
      const m = mutes.find((x) => x.code === ch.code);
      return m === undefined ? { ...ch, muted: false } : { ...ch, muted: true, mutedUntilMs: m.untilMs };
    })
    .sort((a, b) => RANK[b.severity] - RANK[a.severity] || a.code.localeCompare(b.code));
  const worst = out.filter((ch) => !ch.muted).reduce<Severity>((w, ch) => (RANK[ch.severity] > RANK[w] ? ch.severity : w), 'info');
  return {
    verdict: VERDICT[worst],
    checks: out,
    redundancy,
    capacity: {
      disks: disks.length,
      okDisks: okDisks.length,
      totalBytes: disks.reduce((s, { d }) => s + d.capacityBytes, 0),
      okBytes: okDisks.reduce((s, { d }) => s + d.capacityBytes, 0),
      usedBytes,
      freeBytes,
      fill,
    },
    pending: { files: pendingFiles.length, bytes: pendingBytes },
  };
}
