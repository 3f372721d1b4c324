/**
 * The cluster version gate (src/common/version.ts): version order and the effective version of a
 * set of members, the gate's rules (only up, only once every member is heard, never past this
 * build), the `clusterVersion` operation on a real state machine (kept across reopen and a
 * snapshot), and three in-process nodes that record their version once each heard the others.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BASE_VERSION,
  CAIRN_VERSION,
  FEATURES,
  clusterSupports,
  compareVersions,
  effectiveVersion,
  nextClusterVersion,
  reportedVersion,
  requireFeature,
  VERSION_HEARD_WITHIN_MS,
} from '../../src/common/version.js';
import { CairnError } from '../../src/common/errors.js';
import { MetaStateMachine } from '../../src/meta/state-machine.js';
import { encodeEntry } from '../../src/meta/entry.js';
import { validateOp } from '../../src/meta/ops.js';
import { EntryType, type Entry } from '../../src/raft/types.js';
import { DiskStorage, LOG_FORMAT } from '../../src/raft/storage.js';
import { ClassicLevel } from 'classic-level';
import { startNode, type CairnNode } from '../../src/server/node.js';
import { REPO_ROOT, eventually, tempDir } from '../helpers/env.js';
import { clusterConfigs, startAll } from '../server/helpers.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

describe('versions', () => {
  it('is the package version, and v0.1.0 is the base', async () => {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(CAIRN_VERSION).toBe(pkg.version);
    expect(BASE_VERSION).toBe('0.1.0');
    expect(reportedVersion('')).toBe(BASE_VERSION);
    expect(reportedVersion(undefined)).toBe(BASE_VERSION);
    expect(reportedVersion('0.3.1')).toBe('0.3.1');
  });

  it('orders versions numerically and refuses malformed ones', () => {
    expect(compareVersions('0.2.0', '0.10.0')).toBeLessThan(0);
    expect(compareVersions('1.0.0', '0.99.99')).toBeGreaterThan(0);
    expect(compareVersions('0.2.0', '0.2.0')).toBe(0);
    expect(compareVersions('0.2.1', '0.2.0')).toBeGreaterThan(0);
    for (const bad of ['', '0.2', '0.2.0-rc1', 'v0.2.0', '01.2.3', '0.2.0.1']) {
      expect(() => compareVersions(bad, '0.1.0'), bad).toThrow(/not major.minor.patch/);
    }
  });

  it('takes the lowest member version, and none while a member is unheard', () => {
    expect(effectiveVersion(['0.2.0', '0.1.0', '0.3.0'])).toBe('0.1.0');
    expect(effectiveVersion(['0.2.0', '0.2.0'])).toBe('0.2.0');
    expect(effectiveVersion(['0.2.0', undefined])).toBeUndefined();
    expect(effectiveVersion(['0.2.0', 'garbage'])).toBeUndefined();
    expect(effectiveVersion([])).toBeUndefined();
  });

  it('moves the cluster version only up, only when every member runs it, never past this build', () => {
    expect(nextClusterVersion('0.1.0', ['0.2.0', '0.2.0', '0.1.0'])).toBeUndefined();
    expect(nextClusterVersion('0.1.0', ['0.2.0', '0.2.0', undefined])).toBeUndefined();
    expect(nextClusterVersion('0.1.0', ['0.2.0', '0.2.0', '0.2.0'])).toBe('0.2.0');
    // A node rolled back after the gate moved does not move it down.
    expect(nextClusterVersion('0.2.0', ['0.2.0', '0.1.0', '0.2.0'])).toBeUndefined();
    // Members newer than this build: the leader vouches for no more than its own release.
    expect(nextClusterVersion('0.1.0', ['9.0.0', '9.0.0'])).toBe(CAIRN_VERSION);
    expect(nextClusterVersion(CAIRN_VERSION, ['9.0.0', '9.0.0'])).toBeUndefined();
  });

  it('gates features on the cluster version, with an error that says what to do', () => {
    expect(clusterSupports('0.1.0', 'locks')).toBe(false);
    expect(clusterSupports('0.2.0', 'locks')).toBe(true);
    expect(clusterSupports({ clusterVersion: () => '0.2.0' }, 'peerRpc')).toBe(true);
    for (const f of Object.keys(FEATURES) as Array<keyof typeof FEATURES>) {
      expect(compareVersions(FEATURES[f], CAIRN_VERSION), `${f} belongs to a release not built yet`).toBeLessThanOrEqual(0);
    }
    try {
      requireFeature({ clusterVersion: () => '0.1.0' }, 'locks');
      expect.fail('requireFeature passed on a 0.1.0 cluster');
    } catch (err) {
      expect(err).toBeInstanceOf(CairnError);
      expect((err as CairnError).code).toBe('EAGAIN');
      expect((err as CairnError).message).toMatch(/locks needs cluster version 0\.2\.0.*at 0\.1\.0.*rolling upgrade/);
    }
    expect(() => requireFeature('0.2.0', 'locks')).not.toThrow();
  });
});

describe('the clusterVersion operation', () => {
  it('is recorded, only goes up, and survives reopen and a snapshot', async () => {
    const d = await tempDir('cairn-version-sm-');
    cleanups.push(d.remove);
    let sm = await MetaStateMachine.open({ dataDir: join(d.path, 'a') });
    cleanups.push(() => sm.close());
    expect(sm.clusterVersion()).toBe(BASE_VERSION);
    let index = 0;
    const apply = async (version: string): Promise<unknown> => {
      const e: Entry = { term: 1, index: ++index, type: EntryType.Normal, data: encodeEntry(validateOp({ op: 'clusterVersion', version }), 1_000) };
      return ((await sm.apply([e])) as unknown[][])[0]![0];
    };
    expect(await apply('0.2.0')).toEqual({ ok: true, value: { version: '0.2.0' } });
    expect(sm.clusterVersion()).toBe('0.2.0');
    // Lower or equal: nothing changes, the answer names the version in force.
    expect(await apply('0.1.5')).toEqual({ ok: true, value: { version: '0.2.0' } });
    expect(sm.clusterVersion()).toBe('0.2.0');
    expect(() => validateOp({ op: 'clusterVersion', version: 'v1' })).toThrow(/EINVAL|version/);

    await sm.close();
    sm = await MetaStateMachine.open({ dataDir: join(d.path, 'a') });
    expect(sm.clusterVersion()).toBe('0.2.0');

    const other = await MetaStateMachine.open({ dataDir: join(d.path, 'b') });
    cleanups.push(() => other.close());
    expect(other.clusterVersion()).toBe(BASE_VERSION);
    const snap = await sm.snapshot();
    await other.restore({ index: snap.index, term: snap.term, conf: { voters: [1], learners: [] } }, snap.chunks);
    expect(other.clusterVersion()).toBe('0.2.0');
  });
});

describe('the raft log format', () => {
  it('is written on open, and a newer one is refused with what to run', async () => {
    const d = await tempDir('cairn-version-log-');
    cleanups.push(d.remove);
    const dir = join(d.path, 'raft');
    await (await DiskStorage.open(dir)).close();
    const db = new ClassicLevel<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    await db.open();
    expect(JSON.parse((await db.get('v'))!)).toEqual({ format: LOG_FORMAT, writtenBy: CAIRN_VERSION });
    await db.put('v', JSON.stringify({ format: LOG_FORMAT + 1, writtenBy: '9.0.0' }));
    await db.close();
    await expect(DiskStorage.open(dir)).rejects.toThrow(/format 2 \(written by release 9\.0\.0\).*run release 9\.0\.0 or newer/);
  });
});

describe('a node older than the cluster version', () => {
  it('refuses to start and names the release to install', async () => {
    const d = await tempDir('cairn-version-old-');
    cleanups.push(d.remove);
    const [cfg] = await clusterConfigs(d.path, 1);
    const sm = await MetaStateMachine.open({ dataDir: cfg!.dataDir });
    const e: Entry = { term: 1, index: 1, type: EntryType.Normal, data: encodeEntry(validateOp({ op: 'clusterVersion', version: '9.0.0' }), 1_000) };
    await sm.apply([e]);
    await sm.close();
    const v = CAIRN_VERSION.replaceAll('.', '\\.');
    await expect(startNode(cfg!)).rejects.toThrow(new RegExp(`runs release ${v}, older than the cluster version 9\\.0\\.0.*install release 9\\.0\\.0 or newer`));
  });
});

describe('three nodes of this release', () => {
  it('hear each other and record the cluster version', { timeout: 90_000 }, async () => {
    const d = await tempDir('cairn-version-cluster-');
    cleanups.push(d.remove);
    const nodes: CairnNode[] = await startAll(await clusterConfigs(d.path, 3));
    cleanups.push(async () => {
      await Promise.all(nodes.map((n) => n.stop()));
    });
    expect(nodes.every((n) => n.meta.clusterVersion() === BASE_VERSION || n.meta.clusterVersion() === CAIRN_VERSION)).toBe(true);
    const leader = await eventually(() => nodes.find((n) => n.raft.isLeader()), 20_000);
    const heard = await eventually(() => {
      const m = leader.raft.memberVersions(VERSION_HEARD_WITHIN_MS);
      return m.length === 3 && m.every((x) => x.version === CAIRN_VERSION) ? m : undefined;
    }, 20_000);
    expect(heard.map((m) => m.id).sort()).toEqual([1, 2, 3]);
    for (const n of nodes) await eventually(() => n.meta.clusterVersion() === CAIRN_VERSION, 20_000);
  });
});
