/** `cairn diskmap` as a real process: tables, --json, a bad file (exit 1), bad arguments (exit 2). */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT, runCairn, spawnCairn, tempDir } from '../helpers/env.js';
import { parseDiskmap } from '../../src/diskmap/index.js';

const example = (n: string): string => join(REPO_ROOT, 'examples', 'topologies', n);

describe('cairn diskmap', () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await tempDir('cairn-diskmap-cli-');
  });
  afterAll(async () => {
    await dir.remove();
  });

  it('show prints the redundancy, disks and groups of an example', async () => {
    const r = await runCairn(['diskmap', 'show', example('three-disk-box.json')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/redundancy: +EC 2\+1/);
    expect(r.stdout).toMatch(/box1\/0 +hdd +active/);
    expect(r.stdout).toMatch(/placement groups \(87/);
    expect(r.stdout).toMatch(/repair: +a lost disk cannot be rebuilt elsewhere .* degraded until the disk is replaced/);
  });

  it('show --json parses and validates as a diskmap document', async () => {
    const r = await runCairn(['diskmap', 'show', example('three-machines-two-disks.json'), '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { redundancy: { chosen: { scheme: unknown } }; diskmap: unknown };
    expect(j.redundancy.chosen.scheme).toEqual({ kind: 'ec', k: 4, m: 2 });
    const dm = parseDiskmap(j.diskmap);
    expect(dm.epoch).toBe(1);
    expect(dm.failureDomain).toBe('machine');
  });

  it('plan grows a map from a file and writes the next epoch; explain-failure reads it', async () => {
    const out = join(dir.path, 'next.json');
    const bigger = join(dir.path, 'bigger.json');
    const t = JSON.parse(await readFile(example('three-disk-box.json'), 'utf8')) as { machines: { disks: unknown[] }[] };
    t.machines[0]?.disks.push({ disk: 3, capacity: '6TB', incarnation: '77aa' });
    await writeFile(bigger, JSON.stringify(t));
    const r = await runCairn(['diskmap', 'plan', example('three-disk-box.json'), bigger, '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/plan: epoch 1 → 2/);
    expect(r.stdout).toMatch(/data crossing disks: 2\d\.\d%/);
    const next = parseDiskmap(await readFile(out, 'utf8'));
    expect(next.epoch).toBe(2);
    const f = await runCairn(['diskmap', 'explain-failure', out, '--disk', 'box1/3', '--json']);
    expect(f.code).toBe(0);
    const rep = JSON.parse(f.stdout) as { lostGroups: number[]; degradedGroups: number[] };
    expect(rep.lostGroups).toEqual([]);
    expect(rep.degradedGroups.length).toBeGreaterThan(0);
  });

  it('plan refuses removing a disk that holds data (exit 1, says to drain)', async () => {
    const smaller = join(dir.path, 'smaller.json');
    const t = JSON.parse(await readFile(example('three-machines-two-disks.json'), 'utf8')) as { machines: { disks: unknown[] }[] };
    t.machines[1]?.disks.pop();
    await writeFile(smaller, JSON.stringify(t));
    const r = await runCairn(['diskmap', 'plan', example('three-machines-two-disks.json'), smaller]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ENOTEMPTY: plan refused/);
    expect(r.stderr).toMatch(/drain it first/);
  });

  it('a bad topology file is exit 1 with the file and field named', async () => {
    const bad = join(dir.path, 'bad.json');
    await writeFile(bad, JSON.stringify({ machines: [{ machine: 1, disks: [{ disk: 0, capacity: 'lots' }] }] }));
    const r = await runCairn(['diskmap', 'show', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${bad}: machines.0.disks.0.capacity`);
    const missing = await runCairn(['diskmap', 'show', join(dir.path, 'nope.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/ENOENT: .*nope\.json: cannot read/);
  });

  it('bad arguments are usage errors (exit 2)', async () => {
    const r = await runCairn(['diskmap', 'show', example('three-disk-box.json'), '--scheme', 'lots']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--scheme "lots"/);
  });

  it('a reader that closes the pipe early (diskmap show | head) ends it quietly: exit 0, no EPIPE trace', async () => {
    const child = spawnCairn(['diskmap', 'show', example('four-machines-24-disks.json'), '--json']);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout?.once('data', () => child.stdout?.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(stderr).not.toMatch(/EPIPE/);
    expect(code).toBe(0);
  });

  // The rest in-process through the same entry point (spawning costs ~2 s of CPU each here).
  it('more usage errors, and --help on each command', async () => {
    const { main } = await import('../../src/cli/main.js');
    const outSpy = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const errSpy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await main(['diskmap', 'show'])).toBe(2);
      expect(await main(['diskmap', 'explain-failure', example('three-disk-box.json')])).toBe(2);
      expect(await main(['diskmap', 'plan', example('three-disk-box.json')])).toBe(2);
      expect(await main(['diskmap', 'show', example('three-disk-box.json'), '--groups', '-3'])).toBe(2);
      expect(await main(['diskmap', 'frobnicate'])).toBe(2);
      expect(await main(['diskmap', 'plan', example('three-disk-box.json'), '--replace', 'box1/0'])).toBe(2);
      expect(await main(['diskmap', 'plan', example('three-disk-box.json'), '--replace', 'box1/0', '--with', 'nonsense'])).toBe(2);
      expect(await main(['diskmap', 'show', example('three-disk-box.json'), '--headroom', 'lots'])).toBe(2);
      expect(await main(['diskmap', 'plan', example('three-disk-box.json'), '--replace', 'box1/0', '--with', 'box1/0:6TB'])).toBe(1);
      expect(errSpy.mock.calls.map((c) => String(c[0])).join('')).toMatch(/mark it failed first/);
      // plan --replace shows where the bytes go.
      outSpy.mockClear();
      expect(await main(['diskmap', 'plan', example('three-machines-two-disks.json'), '--replace', 'node1/0', '--with', 'node1/5:6TB:77aa'])).toBe(0);
      const text = outSpy.mock.calls.map((c) => String(c[0])).join('');
      expect(text).toMatch(/bytes to move: at most/);
      expect(text).toMatch(/from: node1\/0 \d+/);
      expect(text).toMatch(/to: +node1\/5 \d+/);
      const notJson = join(dir.path, 'not-json.json');
      await writeFile(notJson, '{ not json');
      expect(await main(['diskmap', 'show', notJson])).toBe(1);
      expect(errSpy.mock.calls.map((c) => String(c[0])).join('')).toMatch(/not-json\.json: not valid JSON/);
      for (const sub of ['show', 'plan', 'explain-failure']) {
        outSpy.mockClear();
        expect(await main(['diskmap', sub, '--help'])).toBe(0);
        expect(outSpy.mock.calls.map((c) => String(c[0])).join('')).toMatch(new RegExp(`Usage: cairn diskmap ${sub}`));
      }
    } finally {
      outSpy.mockRestore();
      errSpy.mockRestore();
    }
  });
});
