/**
 * Unmodified programs on a real FUSE mount of a real 3-node cluster: cp -r + diff -r of a real
 * tree, tar c/x keeping times, rsync -a twice (the second sends nothing), git init/add/commit,
 * clone and fsck, sqlite3 in DELETE and WAL modes, fio with verify; and kill -9 of a daemon
 * serving a strong mount: `cairn umount` clears the dead mount, the restarted daemon mounts
 * again and both databases pass PRAGMA integrity_check with every acknowledged row.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { REPO_ROOT, eventually, runCairn } from '../helpers/env.js';
import { isMounted, sh, startMountedCluster, type MountedCluster } from './helpers.js';

let c: MountedCluster;
let m1: string;
let m2: string;

beforeAll(async () => {
  c = await startMountedCluster();
  m1 = c.mounts[0]!;
  m2 = c.mounts[1]!;
}, 120_000);

afterAll(async () => {
  await c?.stop();
}, 60_000);

const TREE = join(REPO_ROOT, 'node_modules', 'commander');

describe('programs on the mount', () => {
  it('cp -r and diff -r of a real tree; tar c/x keeps times; rsync -a twice sends nothing the second time', async () => {
    await sh(`cp -r '${TREE}' '${m1}/tree'`, { timeoutMs: 120_000 });
    await sh(`diff -r '${TREE}' '${m1}/tree'`);
    await sh(`mkdir '${m1}/tarx' && tar cf - -C '${TREE}/..' commander | tar xf - -C '${m1}/tarx'`, { timeoutMs: 120_000 });
    await sh(`diff -r '${TREE}' '${m1}/tarx/commander'`);
    const mt = (p: string): Promise<string> => sh(`find '${p}' -type f -printf '%P %Ts\\n' | sort`); // tar keeps whole seconds
    expect(await mt(`${m1}/tarx/commander`)).toBe(await mt(TREE));
    await sh(`tar cf '${c.dir}/back.tar' -C '${m1}/tarx' commander`);
    await sh(`rsync -a '${TREE}/' '${m1}/rs/'`, { timeoutMs: 120_000 });
    const second = await sh(`rsync -ai --stats '${TREE}/' '${m1}/rs/'`);
    expect(second).toMatch(/Number of regular files transferred: 0/);
    expect(second.split('\n').filter((l) => /^[<>ch.][fdL]/.test(l) && !l.startsWith('.d'))).toEqual([]);
  }, 240_000);

  it('git init, add, commit, fsck, and clone of the repository on the mount', async () => {
    const g = `${m1}/repo`;
    await sh(`mkdir '${g}' && cd '${g}' && git init -q . && cp -r '${REPO_ROOT}/src/vfs' '${REPO_ROOT}/src/fuse' . && git add -A && git -c user.email=t@t -c user.name=t commit -qm one && git fsck --strict`, { timeoutMs: 120_000 });
    // A local clone hard-links the objects and checks each link's st_ino against its source
    // ("hardlink different from source" before st_ino was Cairn's inode).
    await sh(`cd '${m1}' && git clone -q repo clone && cd clone && git fsck --strict && test -z "$(git status --porcelain)"`, { timeoutMs: 120_000 });
    const obj = (await sh(`cd '${g}/.git/objects' && find . -type f -path './??/*' | sort | head -1`)).trim();
    expect(obj).not.toBe('');
    const [src, dst] = (await sh(`stat -c '%i' '${g}/.git/objects/${obj}' '${m1}/clone/.git/objects/${obj}'`)).trim().split('\n');
    expect(dst).toBe(src);
    expect(Number((await sh(`stat -c '%h' '${m1}/clone/.git/objects/${obj}'`)).trim())).toBeGreaterThanOrEqual(2);
    await sh(`diff -r '${REPO_ROOT}/src/vfs' '${m1}/clone/vfs'`);
  }, 240_000);

  it('fio with verify', async () => {
    const out = await sh(`fio --name=v --directory='${m1}' --size=8m --bs=4k --rw=randwrite --verify=crc32c --do_verify=1 --ioengine=psync --fsync=16 --verify_state_save=0 --output-format=terse`, { timeoutMs: 120_000 });
    expect(out.split(';')[4]).toBe('0'); // terse field 5: error
  }, 120_000);

  it('sqlite3 in DELETE and WAL modes survives kill -9 of the daemon serving a strong mount', async () => {
    const n = 30;
    for (const mode of ['delete', 'wal']) {
      const db = `${m2}/${mode}.db`;
      await sh(`sqlite3 '${db}' 'PRAGMA journal_mode=${mode}; CREATE TABLE t(a INTEGER, b BLOB);'`);
      for (let i = 0; i < n; i++) await sh(`sqlite3 '${db}' 'INSERT INTO t VALUES(${i}, randomblob(200));'`);
    }
    await c.kill(1);
    // A dead FUSE mount: "Transport endpoint is not connected" until cleared.
    expect(await isMounted(m2)).toBe(true);
    expect(await sh(`ls '${m2}' 2>&1; true`)).toMatch(/not connected/);
    const um = await runCairn(['umount', m2, '--endpoint', c.endpoints[1]!, '--json']);
    expect(um.code).toBe(0);
    expect(await isMounted(m2)).toBe(false);
    await c.start(1);
    await eventually(async () => (await runCairn(['mount', m2, '--mode', 'strong', '--endpoint', c.endpoints[1]!])).code === 0, 30_000, 500);
    for (const mode of ['delete', 'wal']) {
      const out = await sh(`sqlite3 '${m2}/${mode}.db' 'PRAGMA integrity_check; SELECT count(*) FROM t;'`);
      expect(out.trim().split('\n')).toEqual(['ok', String(n)]);
    }
    expect((await sh(`ls -a '${m2}'`)).split('\n').filter((x) => x.startsWith('.fuse_hidden'))).toEqual([]);
  }, 240_000);

  it('systemd\'s commands: a configured mount is waited for, cleared when its daemon died, and mounted again by the restarted daemon', async () => {
    const cfg = c.configs[0]!;
    const state = async (): Promise<string> => {
      const r = await runCairn(['mounts', '--config', cfg, '--json']);
      expect(r.code).toBe(0);
      return (JSON.parse(r.stdout) as { mounts: Array<{ dir: string; state: string }> }).mounts.map((m) => `${m.dir}=${m.state}`).join(',');
    };
    expect(await state()).toBe(`${m1}=up`);
    // a live mount is left alone by ExecStopPost's command
    const live = await runCairn(['umount', '--configured', '--config', cfg, '--json']);
    expect(live.code).toBe(0);
    expect(await isMounted(m1)).toBe(true);
    await c.kill(0);
    expect(await state()).toBe(`${m1}=dead`);
    const cleared = await runCairn(['umount', '--configured', '--config', cfg, '--json']);
    expect(cleared.code).toBe(0);
    expect(JSON.parse(cleared.stdout)).toEqual({ mounts: [{ dir: m1, state: 'dead', cleared: true }] });
    expect(await isMounted(m1)).toBe(false);
    const timeout = await runCairn(['mounts', '--config', cfg, '--wait', '1']);
    expect(timeout.code).not.toBe(0);
    expect(timeout.stderr).toMatch(/waited 1 s .*absent/);
    await c.start(0);
    const waited = await runCairn(['mounts', '--config', cfg, '--wait', '60', '--json'], { timeoutMs: 90_000 });
    expect(waited.code).toBe(0);
    expect(await state()).toBe(`${m1}=up`);
    await sh(`echo again > '${m1}/after-restart' && sync '${m1}/after-restart'`);
    expect((await sh(`cat '${m1}/after-restart'`)).trim()).toBe('again');
  }, 180_000);
});
