/**
 * What `cairn status` and the HTTPS status page show, built once: a node's Cluster answer, the
 * mutes kept in the cluster, the verdict (health.ts), and the summary lines and the disk table
 * both print. The CLI writes them as text, the page as HTML; --json and /status.json carry
 * statusJson().
 */
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { formatBytes } from '../cli/output.js';
import { assessHealth, type Health, type Mute } from './health.js';
import type { ClusterDisk, ClusterInfo, FileClient } from './file-client.js';

export interface StatusReport {
  cluster: ClusterInfo;
  health: Health;
}

/** Mutes are a small file in the cluster itself, so every node and every owner sees the same. */
export const MUTES_PATH = '/.cairn/health-mutes.json';
const muteFileSchema = z.array(z.object({ code: z.string().max(64), untilMs: z.number() })).max(100);

export async function readMutes(c: FileClient): Promise<Mute[]> {
  try {
    const { data } = await c.get(MUTES_PATH);
    const parts: Buffer[] = [];
    for await (const b of data) parts.push(b);
    const r = muteFileSchema.safeParse(JSON.parse(Buffer.concat(parts).toString('utf8')));
    return r.success ? r.data : [];
  } catch (err) {
    if (err instanceof CairnError && err.code === 'ENOENT') return [];
    if (err instanceof SyntaxError) return [];
    throw err;
  }
}

/** Ask a node: its Cluster answer, the mutes, and the verdict. `secure`: reached over TLS. */
export async function gatherStatus(c: FileClient, secure: boolean): Promise<StatusReport> {
  const cluster = await c.cluster();
  const mutes = await readMutes(c).catch(() => []);
  return { cluster, health: assessHealth(cluster, { secure, mutes }) };
}

/** A disk's fill ratio, or null when its node did not say. */
export function fillOf(d: ClusterDisk): number | null {
  return d.usedBytes >= 0 && d.freeBytes >= 0 && d.usedBytes + d.freeBytes > 0 ? d.usedBytes / (d.usedBytes + d.freeBytes) : null;
}

export const fillText = (f: number): string => `${(f * 100).toFixed(1)}%`;

/** The report as --json and /status.json give it: the verdict first, then the cluster with each disk's fill. */
export function statusJson(r: StatusReport): Record<string, unknown> {
  const { health: h, cluster: cl } = r;
  return {
    verdict: h.verdict,
    checks: h.checks,
    redundancy: h.redundancy,
    capacity: h.capacity,
    pending: h.pending,
    ...cl,
    nodes: cl.nodes.map((n) => ({ ...n, disks: n.disks.map((d) => ({ ...d, fill: fillOf(d) })) })),
  };
}

/** The lines under the checks: leader, diskmap, redundancy, capacity, pending commits. */
export function summaryLines(r: StatusReport): string[] {
  const { health, cluster: cl } = r;
  const red = health.redundancy;
  const cap = health.capacity;
  return [
    `leader: node ${cl.leaderId || '-'}  term: ${cl.term}  answered by: node ${cl.answeredBy}`,
    `cluster version: ${cl.clusterVersion || '0.1.0 (answered by a v0.1.0 node)'}  node versions: ${cl.nodes.map((n) => `${n.nodeId}=${n.version || '?'}`).join(' ')}`,
    cl.diskmapEpoch === 0
      ? 'diskmap: none yet (waiting for every initial node to register)'
      : `diskmap: epoch ${cl.diskmapEpoch}, ${cl.scheme} per ${cl.failureDomain}, ${cl.groups} placement groups, buckets of ${formatBytes(cl.bucketSizeBytes)}`,
    ...(red === undefined ? [] : [`redundancy: ${red.scheme} over ${red.domains} ${red.failureDomain}s tolerates ${red.tolerates} out; ${red.out} out now`]),
    `capacity: ${formatBytes(cap.okBytes)} on ${cap.okDisks} working disks of ${cap.disks} (${formatBytes(cap.totalBytes)} configured)` +
      (cap.fill === null ? '' : `; used ${formatBytes(cap.usedBytes)}, free ${formatBytes(cap.freeBytes)} (${fillText(cap.fill)} full, raw bytes before redundancy)`),
    `pending commits (node ${cl.answeredBy}): ${health.pending.files} files, ${formatBytes(health.pending.bytes)}`,
  ];
}

export const DISK_TABLE_HEADERS = ['node', 'address', 'location', 'role', 'version', 'disk', 'capacity', 'used', 'free', 'fill', 'state', 'in map', 'path'];

/** One row per disk (one per node without disks), in DISK_TABLE_HEADERS order. */
export function diskTableRows(cl: ClusterInfo): Array<Array<string | number>> {
  return cl.nodes.flatMap((n) =>
    n.disks.length === 0
      ? [[n.nodeId, n.address, n.location, n.role, n.version || '-', '-', '-', '-', '-', '-', '-', '-', '-']]
      : n.disks.map((d) => {
          const f = fillOf(d);
          return [n.nodeId, n.address, n.location, n.role, n.version || '-', d.disk, formatBytes(d.capacityBytes), f === null ? '-' : formatBytes(d.usedBytes), f === null ? '-' : formatBytes(d.freeBytes), f === null ? '-' : fillText(f), d.state, d.inDiskmap ? 'yes' : 'no', d.path];
        }),
  );
}
