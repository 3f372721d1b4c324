/**
 * One process per disk (src/chunk/disk-lock.ts), with real processes: a disk held by another
 * live process is reported failed with the holder named, and nothing on it is touched; a lock
 * left by a process that is gone, or a torn lock file, is taken over.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChunkStore } from '../../src/chunk/store.js';
import { DISK_LOCK_FILE, procStat } from '../../src/chunk/disk-lock.js';
import { tempDir } from '../helpers/env.js';

const children: ChildProcess[] = [];
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL');
      await once(c, 'exit');
    }
  }
  for (const f of cleanups.splice(0)) await f();
});

async function disk(): Promise<string> {
  const dir = await tempDir('cairn-disk-lock-');
  cleanups.push(() => dir.remove());
  const path = join(dir.path, 'disk0');
  await ChunkStore.formatDisk(path, { dc: 0, row: 0, rack: 0, machine: 1, disk: 0 });
  return path;
}

/** A live process that is not this one. */
async function otherProcess(): Promise<ChildProcess> {
  const c = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  children.push(c);
  await once(c, 'spawn');
  return c;
}

describe('disk lock', () => {
  it('is taken by the process that opens a disk, again by the same process, and released by close()', async () => {
    const path = await disk();
    const a = await ChunkStore.open([path]);
    expect(a.diskStatus()[0]!.state).toBe('ok');
    expect(JSON.parse(await readFile(join(path, DISK_LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    const b = await ChunkStore.open([path]);
    expect(b.diskStatus()[0]!.state).toBe('ok');
    await b.close();
    expect(await readdir(path)).not.toContain(DISK_LOCK_FILE);
  });

  it('leaves alone a disk another live process holds, and takes it over once that process is gone', async () => {
    const path = await disk();
    const holder = await otherProcess();
    await writeFile(join(path, DISK_LOCK_FILE), JSON.stringify({ pid: holder.pid, host: hostname(), sinceMs: Date.now() }));
    // Its temporary files must survive our attempt.
    await writeFile(join(path, 'tmp', 'in-flight.part'), 'half a shard');
    const s = await ChunkStore.open([path]);
    const st = s.diskStatus()[0]!;
    expect(st.state).toBe('failed');
    expect(st.reason).toContain(`in use by process ${holder.pid}`);
    expect(await readdir(join(path, 'tmp'))).toEqual(['in-flight.part']);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const t = await ChunkStore.open([path]);
    expect(t.diskStatus()[0]!.state).toBe('ok');
    expect(JSON.parse(await readFile(join(path, DISK_LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    await t.close();
  });

  it('takes over the lock of a holder killed with kill -9 that its parent has not reaped yet (a zombie)', async () => {
    const path = await disk();
    // sh starts the holder in the background, then becomes `sleep`, which never reaps it.
    const parent = spawn('sh', ['-c', `"${process.execPath}" -e "setInterval(() => {}, 1000)" & echo $!; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(parent);
    const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
    const pid = Number(line.toString().trim());
    const st = procStat(pid);
    expect(st).toBeTruthy();
    await writeFile(join(path, DISK_LOCK_FILE), JSON.stringify({ pid, host: hostname(), sinceMs: Date.now(), startTicks: st!.startTicks }));
    const before = await ChunkStore.open([path]);
    expect(before.diskStatus()[0]!.state).toBe('failed'); // alive: left alone
    process.kill(pid, 'SIGKILL');
    for (;;) {
      const now = procStat(pid);
      if (now?.state === 'Z') break; // killed, not reaped: kill(pid, 0) still succeeds
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(() => process.kill(pid, 0)).not.toThrow();
    // The store that found it busy serves it again at its next disk check: never failed for good.
    const st2 = await before.checkDisks();
    expect(st2[0]!.state).toBe('ok');
    expect(JSON.parse(await readFile(join(path, DISK_LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    await before.close();
  });

  it('takes over a lock whose pid now belongs to another process (started at another time)', async () => {
    const path = await disk();
    const other = await otherProcess();
    const st = procStat(other.pid!);
    expect(st).toBeTruthy();
    await writeFile(join(path, DISK_LOCK_FILE), JSON.stringify({ pid: other.pid, host: hostname(), sinceMs: Date.now(), startTicks: st!.startTicks + 1 }));
    const s = await ChunkStore.open([path]);
    expect(s.diskStatus()[0]!.state).toBe('ok');
    await s.close();
    // The same pid with its true start time is a live holder.
    await writeFile(join(path, DISK_LOCK_FILE), JSON.stringify({ pid: other.pid, host: hostname(), sinceMs: Date.now(), startTicks: st!.startTicks }));
    const t = await ChunkStore.open([path]);
    expect(t.diskStatus()[0]!.state).toBe('failed');
  });

  it('takes over a torn lock file', async () => {
    const path = await disk();
    await writeFile(join(path, DISK_LOCK_FILE), '{"pid": 12');
    const s = await ChunkStore.open([path]);
    expect(s.diskStatus()[0]!.state).toBe('ok');
    await s.close();
  });
});
