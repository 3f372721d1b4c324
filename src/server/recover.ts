/**
 * `cairn recover` (docs/recovery.md): a cluster rebuilt from its data disks alone, when every
 * node's metadata and Raft directories are gone. Offline: nothing runs while it works.
 *
 *  1. Every disk given: its label, and the metadata copies in its reserved area (checked: manifest
 *     checksum, snapshot SHA-256, tail CRCs). Copies of two clusters → refused.
 *  2. The newest usable copy (highest Raft index reached) becomes a metadata database (the state
 *     machine's own restore + apply: the database as a whole).
 *  3. Every disk's label must be in that cluster's diskmap (else: another cluster's disk, refused).
 *  4. A scan of the self-describing shards: every chunk a file references is verified (CRC-32 of
 *     each shard read, SHA-256 of the reassembled chunk); chunks no file references are listed.
 *  5. Unless dry-run: per node of the registry, a config and a data dir for a fresh start — the
 *     database, and a Raft log whose snapshot is the copy's index (a new group of the same voters).
 */
import { cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { nodeConfigSchema, type NodeConfig } from '../common/config.js';
import { CairnError, fail } from '../common/errors.js';
import { writeFileDurable } from '../common/durable.js';
import { parseDiskmap } from '../diskmap/index.js';
import { readDiskLabel, diskKeyOfLabel } from '../chunk/store.js';
import type { DiskLabel } from '../chunk/format.js';
import { parseSchemeTag, schemeTag, type Scheme } from '../chunk/types.js';
import { scanDiskShards, verifyChunk, type ScannedShard } from '../chunk/scan.js';
import { DISK_LOCK_FILE } from '../chunk/disk-lock.js';
import { listCopies, materializeCopy, COPY_DIR, type FoundCopy, type TailCommit } from '../meta/disk-copy.js';
import { MetaStateMachine, LEASE_SAFETY_MARGIN_MS, type EntryResult } from '../meta/state-machine.js';
import { encodeEntry } from '../meta/entry.js';
import type { Op } from '../meta/ops.js';
import { EntryType } from '../raft/types.js';
import { DiskStorage } from '../raft/storage.js';
import { listNodes } from './registry.js';

export interface RecoverOptions {
  disks: string[];
  /** Where the node directories are written (ignored with dryRun). */
  outDir: string;
  dryRun?: boolean;
  /** Listen on 127.0.0.1:basePort+i instead of the addresses the registry recorded. */
  basePort?: number;
  /** Check every referenced chunk's shards and SHA-256 (default true). */
  verify?: boolean;
}

export interface RecoveredFile {
  path: string;
  ino: number;
  version: number;
  size: number;
  chunks: number;
}

export interface RecoveryReport {
  clusterName: string;
  clusterId: string;
  copy: { disk: string; dir: string; nodeId: number; snapshotIndex: number; index: number; term: number; diskmapEpoch: number; createdAtMs: number; lastEntryMs: number; tailEntries: number; tailTorn?: string };
  copiesConsidered: Array<{ disk: string; dir: string; index: number; problems: string[] }>;
  disks: Array<{ path: string; diskKey: string; state: 'ok' | 'missing'; reason?: string; copies: number; shards: number; badShards: number }>;
  appliedIndex: number;
  filesIntact: RecoveredFile[];
  /** Files a writer held a lease on when the copy was taken: their last commit may be newer than the copy. */
  filesMaybeNewer: Array<RecoveredFile & { intact: boolean }>;
  filesUnrecoverable: Array<{ path: string; ino: number; version: number; problem: string }>;
  /**
   * Files whose version in the copy lacks shards, brought back with the content of their newest
   * older version (from the copy's tail) whose chunks are all intact, installed as a new version.
   */
  filesOlderVersion: Array<{ path: string; ino: number; lostVersion: number; problem: string; contentOfVersion: number; newVersion: number; size: number }>;
  unreferencedChunks: Array<{ hash: string; scheme: string; shards: number; createdMs: number; newerThanCopy: boolean }>;
  badShards: Array<{ path: string; problem: string }>;
  scan: { shards: number; bytesChecked: number; seconds: number; mbPerSec: number; newestShardEpoch: number };
  /** Things the operator should know (e.g. shards written under a newer diskmap than the copy's). */
  warnings: string[];
  nodes: Array<{ nodeId: number; config: string; listen: string; disks: string[] }>;
  dryRun: boolean;
  seconds: number;
}

interface ChunkEntry {
  hash: string;
  scheme: Scheme;
  shards: ScannedShard[];
  createdMs: number;
}

export async function recover(o: RecoverOptions): Promise<RecoveryReport> {
  const t0 = performance.now();
  if (o.disks.length === 0) fail('EINVAL', 'recover needs at least one data disk (--disks D1,D2,…)');
  // 1. Labels and copies.
  const disks: RecoveryReport['disks'] = [];
  const labels = new Map<string, DiskLabel>();
  const copies: FoundCopy[] = [];
  for (const p of o.disks.map((d) => resolve(d))) {
    const holder = await liveHolder(p);
    if (holder !== undefined && o.dryRun !== true) {
      fail('EBUSY', `disk ${p} is served by a running process (pid ${holder} on this host); recover runs offline: stop the node first (or use --dry-run)`);
    }
    try {
      const label = await readDiskLabel(p);
      labels.set(p, label);
      const found = await listCopies(p);
      copies.push(...found);
      disks.push({ path: p, diskKey: diskKeyOfLabel(label), state: 'ok', copies: found.length, shards: 0, badShards: 0 });
    } catch (err) {
      disks.push({ path: p, diskKey: '', state: 'missing', reason: (err as Error).message, copies: 0, shards: 0, badShards: 0 });
    }
  }
  const usable = copies.filter((c) => c.manifest !== undefined && c.problems.length === 0);
  const clusters = new Map<string, string[]>();
  for (const c of usable) {
    const id = `${c.manifest!.clusterName}/${c.manifest!.clusterId}`;
    clusters.set(id, [...(clusters.get(id) ?? []), c.diskPath]);
  }
  if (clusters.size > 1) {
    fail('EINVAL', `the disks belong to ${clusters.size} different clusters; recover one cluster at a time: ${[...clusters].map(([id, ds]) => `${id} on ${[...new Set(ds)].join(', ')}`).join('; ')}`);
  }
  if (usable.length === 0) {
    const missing = disks.filter((d) => d.state === 'missing');
    fail(
      'ENOENT',
      `no usable metadata copy on the ${o.disks.length} disk(s) given${copies.length > 0 ? ` (${copies.length} damaged: ${copies.map((c) => `${c.dir}: ${c.problems.join(', ')}`).join('; ')})` : ` (none has a ${COPY_DIR}/ area)`}` +
        (missing.length > 0 ? `; unreadable: ${missing.map((d) => d.reason).join('; ')}` : ''),
    );
  }
  // 2. The newest usable copy becomes a database.
  const chosen = usable.reduce((a, b) => (b.lastIndex > a.lastIndex || (b.lastIndex === a.lastIndex && b.lastTerm > a.lastTerm) ? b : a));
  const work = await mkdtemp(join(o.dryRun ? tmpdir() : (await mkdir(o.outDir, { recursive: true }), o.outDir), '.recover-'));
  try {
    const applied = await materializeCopy(chosen, work);
    const sm = await MetaStateMachine.open({ dataDir: work });
    let report: RecoveryReport;
    try {
      report = await analyse(o, sm, chosen, copies, disks, labels, applied);
      // Roll-backs applied entries of their own: the new Raft group starts after them.
      applied.index = await sm.appliedIndex();
      applied.term = sm.appliedTerm();
      await sm.snapshot(); // a synced write before the database is copied
    } finally {
      await sm.close();
    }
    // 5. Node directories for a fresh start.
    if (!o.dryRun) report.nodes = await writeNodes(o, work, report, applied, labels);
    report.seconds = (performance.now() - t0) / 1000;
    return report;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function analyse(
  o: RecoverOptions,
  sm: MetaStateMachine,
  chosen: FoundCopy,
  copies: FoundCopy[],
  disks: RecoveryReport['disks'],
  labels: Map<string, DiskLabel>,
  applied: { index: number; term: number; lastEntryMs: number; commits: TailCommit[] },
): Promise<RecoveryReport> {
  const m = chosen.manifest!;
  // 3. Every disk must be one of this cluster's.
  const dm = await sm.diskmap();
  if (dm.epoch === 0) fail('ECORRUPT', `${chosen.dir}: the copy holds no diskmap`);
  const map = parseDiskmap(dm.documentJson, 'recovered diskmap');
  const known = new Set<string>();
  for (const mc of map.topology.machines) for (const d of mc.disks) known.add(`${mc.dc}.${mc.row}.${mc.rack}.${mc.machine}.${d.disk}/${d.incarnation.toString(16).padStart(16, '0')}`);
  const foreign: string[] = [];
  for (const [p, l] of labels) {
    if (!known.has(`${l.dc}.${l.row}.${l.rack}.${l.machine}.${l.disk}/${l.incarnation}`)) foreign.push(`${p} (${diskKeyOfLabel(l)})`);
  }
  if (foreign.length > 0) {
    fail('EINVAL', `disk(s) not in cluster ${m.clusterName}/${m.clusterId}'s diskmap (epoch ${dm.epoch}): ${foreign.join(', ')}; they belong to another cluster or were never part of this one — leave them out`);
  }
  // 4. The shard scan.
  const ts = performance.now();
  const chunks = new Map<string, ChunkEntry>();
  const badShards: RecoveryReport['badShards'] = [];
  let shardCount = 0;
  let newestShardEpoch = 0;
  for (const d of disks) {
    if (d.state !== 'ok') continue;
    for await (const s of scanDiskShards(d.path)) {
      shardCount++;
      d.shards++;
      if (s.info === undefined || s.key === undefined) {
        d.badShards++;
        badShards.push({ path: s.path, problem: s.problem ?? 'bad header' });
        continue;
      }
      const id = `${s.key.hash}.${schemeTag(s.key.scheme)}`;
      let c = chunks.get(id);
      if (c === undefined) chunks.set(id, (c = { hash: s.key.hash, scheme: s.key.scheme, shards: [], createdMs: s.info.createdMs }));
      c.shards.push(s);
      c.createdMs = Math.max(c.createdMs, s.info.createdMs);
      newestShardEpoch = Math.max(newestShardEpoch, s.info.diskmapEpoch);
    }
  }
  const checked = new Map<string, { ok: boolean; problem: string | undefined }>();
  let bytesChecked = 0;
  const check = async (hash: string, tag: string): Promise<{ ok: boolean; problem: string | undefined }> => {
    const id = `${hash}.${tag}`;
    const done = checked.get(id);
    if (done !== undefined) return done;
    const c = chunks.get(id);
    let r: { ok: boolean; problem: string | undefined };
    if (c === undefined) r = { ok: false, problem: `chunk ${hash.slice(0, 12)}… (${tag}): no shard found on the disks` };
    else if (o.verify === false) r = { ok: true, problem: undefined };
    else {
      const v = await verifyChunk(hash, c.scheme, c.shards);
      bytesChecked += v.bytesRead;
      r = { ok: v.ok, problem: v.ok ? undefined : `chunk ${hash.slice(0, 12)}… (${tag}): ${v.problem}` };
    }
    checked.set(id, r);
    return r;
  };
  const leased = new Set(await sm.expiredLeases(Number.MAX_SAFE_INTEGER - 10_000, 1_000_000));
  const intact: RecoveredFile[] = [];
  const maybeNewer: RecoveryReport['filesMaybeNewer'] = [];
  const lost: RecoveryReport['filesUnrecoverable'] = [];
  for (let after = 0; ; ) {
    const page = await sm.scanLayouts(after, 1000);
    if (page.length === 0) break;
    for (const l of page) {
      after = l.ino;
      let path = '';
      let size = 0;
      try {
        path = await sm.pathOf(l.ino);
        size = (await sm.getattr({ ino: l.ino })).size;
      } catch {
        path = `(inode ${l.ino}, no path: an orphan)`;
      }
      let problem: string | undefined;
      for (const e of l.extents) {
        let tag: string;
        try {
          tag = schemeTag(parseSchemeTag(e.scheme));
        } catch {
          problem = `extent with unknown scheme ${e.scheme}`;
          break;
        }
        const r = await check(e.chunkHash, tag);
        if (!r.ok) {
          problem = r.problem;
          break;
        }
      }
      const f: RecoveredFile = { path, ino: l.ino, version: l.version, size, chunks: l.extents.length };
      if (leased.has(l.ino)) maybeNewer.push({ ...f, intact: problem === undefined });
      if (problem === undefined) intact.push(f);
      else lost.push({ path, ino: l.ino, version: l.version, problem });
    }
  }
  // Where shards allow: a file whose copied version is not intact gets its newest older version
  // (known from the copy's tail) whose chunks all check, installed through the state machine's own
  // operations (a lease, a commit on top of the lost version, a release).
  const older: RecoveryReport['filesOlderVersion'] = [];
  for (const f of [...lost]) {
    const candidates = applied.commits.filter((c) => c.ino === f.ino && c.version < f.version).sort((a, b) => b.version - a.version);
    for (const c of candidates) {
      let ok = true;
      for (const e of c.extents) {
        let tag: string;
        try {
          tag = schemeTag(parseSchemeTag(e.scheme));
        } catch {
          ok = false;
          break;
        }
        if (!(await check(e.chunkHash, tag)).ok) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      const newVersion = await rollBack(sm, f.ino, f.version, c);
      older.push({ path: f.path, ino: f.ino, lostVersion: f.version, problem: f.problem, contentOfVersion: c.version, newVersion, size: c.size });
      lost.splice(lost.indexOf(f), 1);
      break;
    }
  }
  const copyTimeMs = applied.lastEntryMs;
  const unreferenced: RecoveryReport['unreferencedChunks'] = [];
  for (const [id, c] of chunks) {
    if (checked.has(id)) continue;
    unreferenced.push({ hash: c.hash, scheme: schemeTag(c.scheme), shards: c.shards.length, createdMs: c.createdMs, newerThanCopy: c.createdMs > copyTimeMs });
  }
  const scanSeconds = (performance.now() - ts) / 1000;
  const warnings: string[] = [];
  if (newestShardEpoch > dm.epoch) {
    warnings.push(`shards were written under diskmap epoch ${newestShardEpoch}, newer than the copy's ${dm.epoch}: a map change after the copy is lost (its moved shards read degraded until a rebalance)`);
  }
  const newer = unreferenced.filter((c) => c.newerThanCopy).length;
  if (newer > 0) warnings.push(`${newer} chunk(s) were written after the copy was taken and no file of the copy references them: commits after the copy (lost with the metadata), or uploads that never committed`);
  return {
    clusterName: m.clusterName,
    clusterId: m.clusterId,
    copy: {
      disk: chosen.diskPath, dir: chosen.dir, nodeId: m.nodeId, snapshotIndex: m.snapshotIndex, index: chosen.lastIndex, term: chosen.lastTerm,
      diskmapEpoch: dm.epoch, createdAtMs: m.createdAtMs, lastEntryMs: applied.lastEntryMs, tailEntries: chosen.tailEntries, ...(chosen.tailTorn ? { tailTorn: chosen.tailTorn } : {}),
    },
    copiesConsidered: copies.map((c) => ({ disk: c.diskPath, dir: c.dir, index: c.lastIndex, problems: c.problems })),
    disks,
    appliedIndex: applied.index,
    filesIntact: intact,
    filesMaybeNewer: maybeNewer,
    filesUnrecoverable: lost,
    filesOlderVersion: older,
    unreferencedChunks: unreferenced,
    badShards,
    scan: { shards: shardCount, bytesChecked, seconds: scanSeconds, mbPerSec: scanSeconds > 0 ? bytesChecked / 1e6 / scanSeconds : 0, newestShardEpoch },
    warnings,
    nodes: [],
    dryRun: o.dryRun === true,
    seconds: 0,
  };
}

/** Install an older version's layout as the file's next version (lease, commit, release), offline. */
async function rollBack(sm: MetaStateMachine, ino: number, current: number, c: TailCommit): Promise<number> {
  let index = await sm.appliedIndex();
  const term = sm.appliedTerm();
  const lease = await sm.lease(ino);
  const nowMs = Math.max(Date.now(), lease !== undefined ? lease.expiresAtMs + LEASE_SAFETY_MARGIN_MS + 1 : 0);
  const run = async (op: Op): Promise<Record<string, unknown>> => {
    const [r] = (await sm.apply([{ index: ++index, term, type: EntryType.Normal, data: encodeEntry(op, nowMs) }])) as EntryResult[];
    const one = Array.isArray(r) ? r[0] : r;
    if (one === null || one === undefined || !one.ok) throw new CairnError('EIO', `rolling inode ${ino} back to the content of version ${c.version}: ${op.op} failed (${one && !one.ok ? one.message : 'no result'})`);
    return one.value;
  };
  const holder = 'cairn-recover';
  const got = await run({ op: 'leaseAcquire', ino, holder, ttlMs: 60_000 });
  const token = (got.lease as { token: number }).token;
  await run({ op: 'commit', ino, expectedVersion: current, fence: token, size: c.size, extents: c.extents, durable: true });
  await run({ op: 'leaseRelease', ino, holder, token });
  return current + 1;
}

async function writeNodes(
  o: RecoverOptions,
  work: string,
  report: RecoveryReport,
  applied: { index: number; term: number },
  labels: Map<string, DiskLabel>,
): Promise<RecoveryReport['nodes']> {
  const out = resolve(o.outDir);
  const sm = await MetaStateMachine.open({ dataDir: work });
  let records;
  try {
    records = (await listNodes(() => sm.nodeRecords())).sort((a, b) => a.nodeId - b.nodeId);
  } finally {
    await sm.close();
  }
  if (records.length === 0) fail('ECORRUPT', 'the recovered metadata has no node registry: cannot tell which node served which disk');
  for (const r of records) {
    const dir = join(out, `node${r.nodeId}`);
    if (await stat(join(dir, 'data')).then(() => true, () => false)) fail('EEXIST', `${dir}/data exists; recover writes into an empty --dir`);
  }
  const peers = records.map((r, i) => ({ id: r.nodeId, address: o.basePort !== undefined ? `127.0.0.1:${o.basePort + i}` : r.address }));
  const nodes: RecoveryReport['nodes'] = [];
  for (const [i, r] of records.entries()) {
    const dir = join(out, `node${r.nodeId}`);
    const dataDir = join(dir, 'data');
    await mkdir(dataDir, { recursive: true });
    await cp(join(work, 'meta'), join(dataDir, 'meta'), { recursive: true });
    // A Raft log that starts after the copy's index: the same voters, a new group.
    const storage = await DiskStorage.open(join(dataDir, 'raft'));
    try {
      const conf = { voters: peers.map((p) => p.id).sort((a, b) => a - b), learners: [] };
      await storage.persist({ snapshot: { index: applied.index, term: applied.term, conf }, hardState: { term: applied.term, vote: 0, commit: applied.index }, entries: [], sync: true });
      await storage.setPeers(new Map(peers.map((p) => [p.id, p.address])));
    } finally {
      await storage.close();
    }
    // This node's disks: the ones given whose label is at the node's location.
    const mine: NodeConfig['disks'] = [];
    for (const [p, l] of labels) {
      if (l.dc !== r.location.dc || l.row !== r.location.row || l.rack !== r.location.rack || l.machine !== r.location.machine) continue;
      const rec = r.disks.find((d) => d.disk === l.disk);
      mine.push({ path: p, disk: l.disk, capacityBytes: rec?.capacityBytes ?? 1 << 30, class: rec?.class ?? 'hdd' });
    }
    // Disks of this node that were not given (lost): configured at their old path, served as failed.
    for (const d of r.disks) if (!mine.some((x) => x.disk === d.disk)) mine.push({ path: d.path, disk: d.disk, capacityBytes: d.capacityBytes, class: d.class });
    await writeFileDurable(join(dataDir, 'disks.json'), `${JSON.stringify({ v: 1, disks: mine.map((d) => ({ path: d.path, disk: d.disk, incarnation: [...labels].find(([p]) => p === d.path)?.[1].incarnation ?? r.disks.find((x) => x.disk === d.disk)?.incarnation ?? '' })) }, null, 2)}\n`);
    const cfg = nodeConfigSchema.parse({
      clusterName: report.clusterName,
      nodeId: r.nodeId,
      listen: peers[i]!.address,
      peers,
      dataDir,
      cacheDir: join(dir, 'cache'),
      location: r.location,
      disks: mine,
    });
    const file = join(dir, 'cairn.json');
    await writeFile(file, `${JSON.stringify(cfg, null, 2)}\n`);
    nodes.push({ nodeId: r.nodeId, config: file, listen: cfg.listen, disks: mine.map((d) => d.path) });
  }
  return nodes;
}

/** The pid of a live process on this host that holds the disk's lock (src/chunk/disk-lock.ts), if any. */
async function liveHolder(diskPath: string): Promise<number | undefined> {
  try {
    const rec = JSON.parse(await readFile(join(diskPath, DISK_LOCK_FILE), 'utf8')) as { pid?: unknown; host?: unknown };
    if (typeof rec.pid !== 'number' || rec.host !== hostname() || rec.pid === process.pid) return undefined;
    process.kill(rec.pid, 0);
    return rec.pid;
  } catch {
    return undefined; // no lock, an unreadable one, or its process is gone
  }
}

/** For the CLI: a one-screen summary of a report. */
export function summarize(r: RecoveryReport): string {
  const lines = [
    `cluster ${r.clusterName}/${r.clusterId}`,
    `metadata copy: ${r.copy.dir} (node ${r.copy.nodeId}), snapshot at index ${r.copy.snapshotIndex} + ${r.copy.tailEntries} tail entries = index ${r.copy.index} (term ${r.copy.term}), diskmap epoch ${r.copy.diskmapEpoch}, newest entry ${new Date(r.copy.lastEntryMs).toISOString()}`,
    ...r.copiesConsidered.filter((c) => c.problems.length > 0).map((c) => `  rejected copy ${c.dir}: ${c.problems.join('; ')}`),
    ...r.disks.map((d) => `disk ${d.path}: ${d.state === 'ok' ? `${d.diskKey}, ${d.copies} copies, ${d.shards} shards (${d.badShards} bad)` : `MISSING (${d.reason})`}`),
    `files recovered intact (every chunk's SHA-256 checked): ${r.filesIntact.length}`,
    `files a writer held open when the copy was taken (a newer commit may be lost): ${r.filesMaybeNewer.length}${r.filesMaybeNewer.map((f) => `\n  ${f.path} at version ${f.version}${f.intact ? '' : ' (not intact)'}`).join('')}`,
    `files brought back at an older version (their copied version lacks shards): ${r.filesOlderVersion.length}${r.filesOlderVersion.map((f) => `\n  ${f.path}: version ${f.lostVersion} lost (${f.problem}); content of version ${f.contentOfVersion} installed as version ${f.newVersion}`).join('')}`,
    `files unrecoverable: ${r.filesUnrecoverable.length}${r.filesUnrecoverable.map((f) => `\n  ${f.path} v${f.version}: ${f.problem}`).join('')}`,
    `chunks no file references: ${r.unreferencedChunks.length} (${r.unreferencedChunks.filter((c) => c.newerThanCopy).length} written after the copy)`,
    `bad shards: ${r.badShards.length}${r.badShards.slice(0, 20).map((b) => `\n  ${b.path}: ${b.problem}`).join('')}`,
    ...r.warnings.map((w) => `warning: ${w}`),
    `scan: ${r.scan.shards} shards, ${(r.scan.bytesChecked / 1e6).toFixed(1)} MB checked in ${r.scan.seconds.toFixed(2)} s (${r.scan.mbPerSec.toFixed(0)} MB/s)`,
    r.dryRun ? 'dry run: nothing written' : `node directories written:${r.nodes.map((n) => `\n  node ${n.nodeId}: cairn start --config ${n.config}`).join('')}`,
  ];
  return `${lines.join('\n')}\n`;
}

