/**
 * A rolling upgrade under a write load, on real processes: a 3-node cluster of the previous
 * release (v0.1.0, built from its tag by release.ts) takes strong puts through every node while
 * each node in turn is stopped (SIGTERM) and started again on this tree with the same config and
 * data. Between restarts it waits for what ops/upgrade.md tells an operator to check (the node is
 * back, a leader exists, the node has caught up, writes go on through it). While the cluster is
 * mixed its version stays 0.1.0; once every node runs this release the leader records 0.2.0.
 * At the end every acknowledged file reads back byte for byte through every node, and
 * `cairn status --json` shows each node's version and the cluster version.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileClient } from '../../src/server/file-client.js';
import { MetaClient } from '../../src/meta/client.js';
import { closeAllLanes } from '../../src/rpc/lane.js';
import { CAIRN_VERSION, BASE_VERSION } from '../../src/common/version.js';
import { REPO_ROOT, eventually, freePort, runCairn, tempDir } from '../helpers/env.js';
import { SupervisedProcess } from '../jepsen-lite/supervisor.js';
import { PREVIOUS_RELEASE_TAG, prepareRelease, type Release } from './release.js';

const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
  closeAllLanes();
}, 120_000);

const N = 3;

/** A node config both releases accept: only fields v0.1.0 knows, no TLS (as `--insecure`). */
function rawConfig(dir: string, id: number, ports: number[]): Record<string, unknown> {
  const peers = ports.map((p, i) => ({ id: i + 1, address: `127.0.0.1:${p}` }));
  const home = join(dir, `node${id}`);
  return {
    clusterName: 'upgrade',
    nodeId: id,
    listen: peers[id - 1]!.address,
    peers,
    dataDir: join(home, 'data'),
    cacheDir: join(home, 'cache'),
    location: { machine: id - 1 },
    disks: [{ path: join(home, 'disk0'), disk: 0, capacityBytes: 256 * 1024 * 1024 }],
    // Snapshots and log compaction happen during the run, so a restarted node may catch up by a
    // snapshot sent by a node of the other release.
    raft: { tickMs: 50, electionTicks: 10, heartbeatTicks: 2, snapshotEntries: 20, compactionMarginEntries: 5 },
    daemon: {
      controllerIntervalMs: 200,
      file: { idleCommitDelayMs: 100, chunkSizeBytes: 256 * 1024 },
      gc: { enabled: false },
      scrub: { enabled: false },
    },
  };
}

function nodeProcess(tree: string, id: number, config: string, logDir: string, release: string): SupervisedProcess {
  return new SupervisedProcess({
    name: `n${id}-${release}`,
    command: process.execPath,
    args: ['--import', 'tsx', join(tree, 'src', 'cli', 'main.ts'), 'start', '--config', config],
    cwd: tree,
    // Info: the logs say when a snapshot was sent and installed (counted at the end).
    env: { CAIRN_LOG_LEVEL: 'info', CAIRN_CREDENTIALS: 'none' },
    ready: (line) => line.includes('"ready":true'),
    logFile: join(logDir, `node${id}.log`),
  });
}

interface Acked {
  path: string;
  data: Buffer;
  via: number;
}

describe(`rolling upgrade from ${PREVIOUS_RELEASE_TAG}`, () => {
  it('keeps serving and loses nothing while each node restarts onto this release', { timeout: 600_000 }, async () => {
    const t0 = Date.now();
    const phases: string[] = [];
    const phase = (what: string): void => void phases.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const release: Release = await prepareRelease();
    phase('release ready');
    cleanup.push(release.remove);
    const base = await tempDir('cairn-upgrade-');
    cleanup.push(base.remove);

    const ports: number[] = [];
    for (let i = 0; i < N; i++) ports.push(await freePort());
    const addr = (id: number): string => `127.0.0.1:${ports[id - 1]}`;
    const configs: string[] = [];
    for (let id = 1; id <= N; id++) {
      const file = join(base.path, `node${id}.json`);
      await writeFile(file, `${JSON.stringify(rawConfig(base.path, id, ports), null, 2)}\n`);
      configs.push(file);
    }

    // The cluster of the previous release.
    const procs: SupervisedProcess[] = [];
    for (let id = 1; id <= N; id++) procs.push(nodeProcess(release.dir, id, configs[id - 1]!, base.path, 'old'));
    cleanup.push(async () => {
      await Promise.all(procs.map((p) => p.stop(10_000)));
    });
    await Promise.all(procs.map((p) => p.start(180_000)));
    phase('old cluster up');
    const runs: Array<'old' | 'new'> = procs.map(() => 'old');

    const files = new Map<number, FileClient>();
    for (let id = 1; id <= N; id++) files.set(id, new FileClient(addr(id), 30_000));
    const meta = new MetaClient({ endpoints: ports.map((_, i) => addr(i + 1)) });
    cleanup.push(async () => {
      meta.close();
      for (const f of files.values()) f.close();
    });
    await eventually(async () => (await files.get(1)!.cluster()).diskmapEpoch >= 1, 120_000, 200);

    // The write load: two writers, strong puts, small (inline in the metadata) and chunked files,
    // round robin over the nodes that are up. Only what a put acknowledged must survive.
    const acked: Acked[] = [];
    const down = new Set<number>();
    let stopLoad = false;
    let failures = 0;
    let seq = 0;
    const writer = async (w: number): Promise<void> => {
      let turn = w;
      while (!stopLoad) {
        const up = [...files.keys()].filter((id) => !down.has(id));
        const via = up[turn++ % up.length]!;
        const n = seq++;
        // Every third file is chunked (100-400 KB: one or two 256 KiB chunks), the others inline.
        const size = n % 3 === 0 ? 100_000 + (n % 7) * 50_003 : 1024 + (n % 5) * 3_001;
        const data = randomBytes(size);
        const path = `/up/w${w}/f${n}`;
        try {
          await files.get(via)!.put(path, [data], { mode: 'strong', mkdirs: true });
          acked.push({ path, data, via });
          // A steady load, not a flood: every acknowledged file is read back three times at the end.
          await new Promise((r) => setTimeout(r, 100));
        } catch {
          failures++;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    const load = Promise.all([writer(0), writer(1)]);
    cleanup.push(async () => {
      // The writers end with their next put; the nodes are stopped next, so none waits long.
      stopLoad = true;
    });

    const ackedVia = (id: number, after: number): number => acked.slice(after).filter((a) => a.via === id).length;
    await eventually(() => acked.length >= 10, 120_000, 100);
    phase('load running');

    for (let id = 1; id <= N; id++) {
      // Stop one node cleanly, start it on this tree with the same config and data.
      down.add(id);
      await procs[id - 1]!.stop(30_000);
      const exit = procs[id - 1]!.exits.at(-1);
      expect(exit, `node ${id} of ${PREVIOUS_RELEASE_TAG} did not stop`).toBeDefined();
      expect({ node: id, code: exit!.code, signal: exit!.signal }).toEqual({ node: id, code: 0, signal: null });
      phase(`node ${id} stopped`);
      const whileDown = acked.length;
      // The two others keep serving while it is down (long enough for the log to be compacted past
      // the node, so that it catches up by a snapshot from a node of the other release).
      await eventually(() => acked.length >= whileDown + 8, 120_000, 100);
      procs[id - 1] = nodeProcess(REPO_ROOT, id, configs[id - 1]!, base.path, 'new');
      await procs[id - 1]!.start(180_000);
      runs[id - 1] = 'new';
      phase(`node ${id} started on this release`);
      down.delete(id);
      const since = acked.length;

      // What ops/upgrade.md has the operator check before the next node: the node answers with
      // the new release, the cluster has a leader, the node has applied what the leader has, and
      // writes go through it.
      const st = await eventually(async () => {
        const s = await meta.status(addr(id));
        return s.leaderId !== 0 ? s : undefined;
      }, 120_000, 200);
      expect(st.version).toBe(CAIRN_VERSION);
      await eventually(async () => {
        const leader = await meta.status(addr((await meta.status(addr(id))).leaderId));
        const mine = await meta.status(addr(id));
        return mine.applied >= leader.applied - 5;
      }, 120_000, 200);
      phase(`node ${id} caught up`);
      await eventually(() => ackedVia(id, since) >= 2 && acked.length >= since + 6, 90_000, 100);
      phase(`node ${id} took writes`);

      // Each node reports its release; while any node runs the previous one, the cluster stays at
      // the previous version (nothing new is written that it could not read).
      for (let other = 1; other <= N; other++) {
        const s = await meta.status(addr(other));
        expect({ node: other, version: s.version }).toEqual({ node: other, version: runs[other - 1] === 'new' ? CAIRN_VERSION : BASE_VERSION });
        if (id < N) expect({ node: other, clusterVersion: s.clusterVersion }).toEqual({ node: other, clusterVersion: BASE_VERSION });
      }
      if (id === N - 1) {
        // The gate itself, on a leader of this release with a member of the previous one: make
        // sure a new node leads (pause the old one until the others elect one of themselves),
        // let the writes go on through every node, and see the cluster version stay put.
        const oldId = N;
        if ((await meta.status(addr(1))).leaderId === oldId) {
          procs[oldId - 1]!.pause();
          try {
            await eventually(async () => {
              const l = (await meta.status(addr(1))).leaderId;
              return l !== 0 && l !== oldId;
            }, 120_000, 200);
          } finally {
            procs[oldId - 1]!.resume();
          }
        }
        const mark = acked.length;
        await eventually(() => ackedVia(oldId, mark) >= 2 && acked.length >= mark + 10, 120_000, 100);
        const leader = (await meta.status(addr(1))).leaderId;
        expect(leader, 'a node of this release leads while one of the previous release follows').not.toBe(oldId);
        phase(`node ${leader} of this release leads a mixed cluster`);
        for (let other = 1; other <= N; other++) {
          expect({ node: other, clusterVersion: (await meta.status(addr(other))).clusterVersion }).toEqual({ node: other, clusterVersion: BASE_VERSION });
        }
      }
      if (id === 1) {
        // What an operator sees in the mixed cluster, asked of the upgraded node.
        const mixed = await runCairn(['status', '--json', '--endpoint', addr(1)], { timeoutMs: 60_000 });
        expect(mixed.code, mixed.stderr).toBe(0);
        const mj = JSON.parse(mixed.stdout) as { clusterVersion: string; nodes: Array<{ nodeId: number; version: string }> };
        expect(mj.clusterVersion).toBe(BASE_VERSION);
        expect(mj.nodes.map((n) => [n.nodeId, n.version]).sort()).toEqual([[1, CAIRN_VERSION], [2, BASE_VERSION], [3, BASE_VERSION]]);
      }
    }

    // Every node runs this release: the leader records the cluster version, every node applies it.
    for (let id = 1; id <= N; id++) {
      await eventually(async () => (await meta.status(addr(id))).clusterVersion === CAIRN_VERSION, 30_000, 200);
    }
    phase('cluster version recorded');
    const more = acked.length;
    await eventually(() => acked.length >= more + 3, 120_000, 100);
    stopLoad = true;
    await load;

    // Every acknowledged file, through every node, byte for byte.
    expect(acked.length).toBeGreaterThan(30);
    const wrong: string[] = [];
    const readAll = async (id: number): Promise<void> => {
      const fc = files.get(id)!;
      let next = 0;
      const reader = async (): Promise<void> => {
        for (let i = next++; i < acked.length; i = next++) {
          const a = acked[i]!;
          const { data } = await fc.get(a.path);
          const parts: Buffer[] = [];
          for await (const p of data) parts.push(p);
          const got = Buffer.concat(parts);
          if (!got.equals(a.data)) wrong.push(`${a.path} (written through node ${a.via}) read through node ${id}: ${got.length} bytes differ from the ${a.data.length} acknowledged`);
        }
      };
      await Promise.all(Array.from({ length: 6 }, reader));
    };
    for (let id = 1; id <= N; id++) await readAll(id);
    expect(wrong).toEqual([]);

    phase('all read back');
    // cairn status shows each node's version and the cluster version.
    const [status, human] = await Promise.all([
      runCairn(['status', '--json', '--endpoint', addr(1)], { timeoutMs: 60_000 }),
      runCairn(['status', '--endpoint', addr(2)], { timeoutMs: 60_000 }),
    ]);
    expect(status.code, status.stderr).toBe(0);
    expect(human.stdout).toContain(`cluster version: ${CAIRN_VERSION}  node versions: 1=${CAIRN_VERSION} 2=${CAIRN_VERSION} 3=${CAIRN_VERSION}`);
    const js = JSON.parse(status.stdout) as { clusterVersion: string; nodes: Array<{ nodeId: number; version: string }> };
    expect(js.clusterVersion).toBe(CAIRN_VERSION);
    expect(js.nodes.map((n) => [n.nodeId, n.version]).sort()).toEqual([[1, CAIRN_VERSION], [2, CAIRN_VERSION], [3, CAIRN_VERSION]]);
    let sent = 0;
    let installed = 0;
    for (let id = 1; id <= N; id++) {
      const log = await readFile(join(base.path, `node${id}.log`), 'utf8');
      sent += log.split('"msg":"snapshot sent"').length - 1;
      installed += log.split('"msg":"restoring the state machine from a snapshot"').length - 1;
    }
    phases.push(`metadata snapshots sent ${sent}, installed ${installed}`);
    console.info(
      `rolling upgrade: ${acked.length} files acknowledged, ${failures} puts refused or failed while nodes restarted; node_modules of ${release.tag} ${release.modules}; ${phases.join(', ')}`,
    );
  });
});
