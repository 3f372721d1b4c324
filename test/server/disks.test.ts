/**
 * A node's disks at start-up (openNodeDisks): formatted once with the node's location and a
 * random incarnation, reopened with the same label, a vanished disk served as failed and never
 * formatted again, a disk labelled by `cairn init` adopted as is.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { nodeConfigSchema, type NodeConfig } from '../../src/common/config.js';
import { logger } from '../../src/common/log.js';
import { ChunkStore } from '../../src/chunk/store.js';
import { openNodeDisks } from '../../src/server/chunk-node.js';
import { tempDir } from '../helpers/env.js';

const log = logger('test');
let dir: Awaited<ReturnType<typeof tempDir>> | undefined;
afterEach(async () => {
  await dir?.remove();
  dir = undefined;
});

function cfgOf(root: string, disks: number): NodeConfig {
  return nodeConfigSchema.parse({
    clusterName: 't',
    nodeId: 4,
    listen: '127.0.0.1:1',
    peers: [{ id: 4, address: '127.0.0.1:1' }],
    dataDir: join(root, 'data'),
    cacheDir: join(root, 'cache'),
    location: { rack: 2, machine: 7 },
    disks: Array.from({ length: disks }, (_, d) => ({ path: join(root, `disk${d}`), disk: d, capacityBytes: 1 << 30 })),
  });
}

const labelOf = async (p: string): Promise<{ incarnation: string; machine: number; rack: number; disk: number }> =>
  JSON.parse(await readFile(join(p, 'cairn-disk.json'), 'utf8')) as { incarnation: string; machine: number; rack: number; disk: number };

describe('node disks', () => {
  it('formats each disk once, reopens it with the same incarnation, serves a vanished one as failed and never reformats it', async () => {
    dir = await tempDir('cairn-disks-');
    const cfg = cfgOf(dir.path, 2);
    const s1 = await openNodeDisks(cfg, log);
    expect(s1.diskStatus().map((d) => d.state)).toEqual(['ok', 'ok']);
    const l0 = await labelOf(cfg.disks[0]!.path);
    expect(l0).toMatchObject({ machine: 7, rack: 2, disk: 0 });
    const l1 = await labelOf(cfg.disks[1]!.path);
    expect(l1.incarnation).not.toBe(l0.incarnation);

    const s2 = await openNodeDisks(cfg, log);
    expect(s2.diskStatus().map((d) => d.state)).toEqual(['ok', 'ok']);
    expect((await labelOf(cfg.disks[0]!.path)).incarnation).toBe(l0.incarnation);

    await rm(cfg.disks[1]!.path, { recursive: true, force: true });
    const s3 = await openNodeDisks(cfg, log);
    const st = s3.diskStatus();
    expect(st[0]!.state).toBe('ok');
    expect(st[1]!.state).toBe('failed');
    expect(st[1]!.reason).toMatch(/label/);
    expect(await stat(join(cfg.disks[1]!.path, 'cairn-disk.json')).then(() => true, () => false)).toBe(false);
  });

  it('adopts a disk labelled before (cairn init) and remembers it', async () => {
    dir = await tempDir('cairn-disks-');
    const cfg = cfgOf(dir.path, 1);
    const label = await ChunkStore.formatDisk(cfg.disks[0]!.path, { dc: 0, row: 0, rack: 2, machine: 7, disk: 0 });
    const s = await openNodeDisks(cfg, log);
    expect(s.diskStatus()[0]!.state).toBe('ok');
    expect((await labelOf(cfg.disks[0]!.path)).incarnation).toBe(label.incarnation);
    const remembered = JSON.parse(await readFile(join(cfg.dataDir, 'disks.json'), 'utf8')) as { disks: Array<{ path: string; incarnation: string }> };
    expect(remembered.disks).toEqual([{ path: cfg.disks[0]!.path, disk: 0, incarnation: label.incarnation }]);
    // Gone now: served as failed, not formatted afresh.
    await rm(cfg.disks[0]!.path, { recursive: true, force: true });
    expect((await openNodeDisks(cfg, log)).diskStatus()[0]!.state).toBe('failed');
    expect(await stat(join(cfg.disks[0]!.path, 'cairn-disk.json')).then(() => true, () => false)).toBe(false);
  });
});
