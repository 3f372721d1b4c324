import { describe, it, expect, afterEach } from 'vitest';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurable, mkdirDurable } from '../../src/common/durable.js';
import { parseWith, nodeConfigSchema, loadNodeConfig } from '../../src/common/config.js';
import { CairnError } from '../../src/common/errors.js';
import { formatTable } from '../../src/cli/output.js';
import { tempDir, runCairn, REPO_ROOT } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

describe('durable writes', () => {
  it('replaces a file atomically and leaves no temporary behind', async () => {
    const d = await tempDir();
    cleanups.push(d.remove);
    await mkdirDurable(join(d.path, 'a', 'b'));
    const p = join(d.path, 'a', 'b', 'f');
    await writeFileDurable(p, 'one');
    await writeFileDurable(p, 'two');
    expect(await readFile(p, 'utf8')).toBe('two');
    expect(await readdir(join(d.path, 'a', 'b'))).toEqual(['f']);
  });
});

describe('config validation', () => {
  const good = {
    clusterName: 'demo',
    nodeId: 1,
    listen: '127.0.0.1:7001',
    peers: [{ id: 1, address: '127.0.0.1:7001' }],
    dataDir: '/tmp/x',
    cacheDir: '/tmp/y',
    location: { machine: 1 },
  };

  it('fills defaults for a minimal config', () => {
    const c = parseWith(nodeConfigSchema, good, 'cairn.json');
    expect(c.raft.electionTicks).toBeGreaterThan(c.raft.heartbeatTicks);
    expect(c.location.dc).toBe(0);
  });

  it('names the file and the field of a bad value', () => {
    expect(() => parseWith(nodeConfigSchema, { ...good, listen: 'nope' }, 'cairn.json')).toThrow(/cairn\.json: listen: must be host:port/);
    expect(() => parseWith(nodeConfigSchema, { ...good, raft: { electionTicks: 2, heartbeatTicks: 5 } }, 'c.json')).toThrow(
      /c\.json: raft\.electionTicks/,
    );
  });

  it('reports unreadable and malformed files as errors, not crashes', async () => {
    const d = await tempDir();
    cleanups.push(d.remove);
    const p = join(d.path, 'bad.json');
    await writeFile(p, '{ not json');
    await expect(loadNodeConfig(p)).rejects.toThrow(CairnError);
    await expect(loadNodeConfig(p)).rejects.toThrow(/not valid JSON/);
    await expect(loadNodeConfig(join(d.path, 'missing.json'))).rejects.toThrow(/cannot read config file/);
  });
});

describe('cli output', () => {
  it('aligns columns and right-aligns numbers', () => {
    const t = formatTable(['name', 'n'], [['a', 1], ['bbb', 100]]);
    expect(t.split('\n')).toEqual(['name    n', '----  ---', 'a       1', 'bbb   100']);
  });
});

describe('cairn command', () => {
  it('prints help with exit 0 and rejects unknown commands with exit 2', async () => {
    const help = await runCairn(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Usage: cairn/);
    const bad = await runCairn(['no-such-command']);
    expect(bad.code).toBe(2);
  });
});

describe('ops example config', () => {
  it('is a valid node config', async () => {
    const c = await loadNodeConfig(join(REPO_ROOT, 'ops', 'config', 'cairn.json.example'));
    expect(c.peers.map((p) => p.id)).toEqual([1, 2, 3]);
    expect(c.disks).toHaveLength(3);
  });
});
