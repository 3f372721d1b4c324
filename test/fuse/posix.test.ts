/**
 * POSIX through a real FUSE mount served by a real node daemon of a real 3-node cluster: each
 * operation with its errors, the cases programs rely on (unlinked open file, rename over an
 * open file, truncate of an open file, O_APPEND, O_EXCL, RENAME_NOREPLACE, UTIME_OMIT),
 * permissions as a local file system, and a file written through one node's mount read
 * through another's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fsp from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { startMountedCluster, sh, type MountedCluster } from './helpers.js';
import { eventually } from '../helpers/env.js';

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

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

describe('FUSE mount: operations and their errors', () => {
  it('lookup, create, read, write, stat, and the errno of each failure', async () => {
    const d = join(m1, 'ops');
    await fsp.mkdir(d);
    expect(await code(fsp.mkdir(d))).toBe('EEXIST');
    expect(await code(fsp.stat(join(d, 'nope')))).toBe('ENOENT');
    await fsp.writeFile(join(d, 'f'), 'hello');
    expect(await fsp.readFile(join(d, 'f'), 'utf8')).toBe('hello');
    expect((await fsp.stat(join(d, 'f'))).size).toBe(5);
    expect(await code(fsp.readdir(join(d, 'f')))).toBe('ENOTDIR');
    expect(await code(fsp.writeFile(join(d, 'f', 'x'), ''))).toBe('ENOTDIR');
    expect(await code(fsp.readFile(d))).toBe('EISDIR');
    expect(await code(fsp.writeFile(join(d, 'x'.repeat(256)), ''))).toBe('ENAMETOOLONG');
    expect(await code(fsp.rmdir(join(m1, 'ops')))).toBe('ENOTEMPTY');
    expect(await code(fsp.unlink(d))).toMatch(/EISDIR|EPERM/);
    expect(await code(fsp.rmdir(join(d, 'f')))).toBe('ENOTDIR');
    expect(await code(fsp.open(join(d, 'f'), constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY))).toBe('EEXIST');
    // O_TRUNC
    await fsp.writeFile(join(d, 'f'), 'ab');
    expect(await fsp.readFile(join(d, 'f'), 'utf8')).toBe('ab');
  });

  it('mkdir, rmdir, symlink, readlink, link, rename (replace and RENAME_NOREPLACE), readdir', async () => {
    const d = join(m1, 'ns');
    await fsp.mkdir(join(d, 'sub'), { recursive: true });
    await fsp.writeFile(join(d, 'a'), 'A');
    await fsp.writeFile(join(d, 'b'), 'B');
    await fsp.symlink('a', join(d, 'ln'));
    expect(await fsp.readlink(join(d, 'ln'))).toBe('a');
    expect(await fsp.readFile(join(d, 'ln'), 'utf8')).toBe('A');
    expect(await code(fsp.readlink(join(d, 'a')))).toBe('EINVAL');
    await fsp.link(join(d, 'a'), join(d, 'hard'));
    expect((await fsp.stat(join(d, 'hard'))).nlink).toBe(2);
    expect(await fsp.readFile(join(d, 'hard'), 'utf8')).toBe('A');
    // st_ino is Cairn's inode (use_ino): one number for both links, in readdir too, and the
    // same through node 2's mount (libfuse's own node ids would differ per name and per mount)
    const ino = (await fsp.stat(join(d, 'a'))).ino;
    expect((await fsp.stat(join(d, 'hard'))).ino).toBe(ino);
    expect((await fsp.stat(join(m2, 'ns', 'hard'))).ino).toBe(ino);
    expect((await sh(`ls -i '${d}'`)).split('\n').filter((l) => / (a|hard)$/.test(l)).map((l) => Number(l.trim().split(' ')[0]))).toEqual([ino, ino]);
    expect((await fsp.stat(join(d, 'sub'))).ino).not.toBe(ino);
    // rename replacing b
    await fsp.rename(join(d, 'a'), join(d, 'b'));
    expect(await fsp.readFile(join(d, 'b'), 'utf8')).toBe('A');
    expect(await code(fsp.stat(join(d, 'a')))).toBe('ENOENT');
    // RENAME_NOREPLACE through mv --no-clobber's renameat2 (coreutils mv -n uses it)
    await fsp.writeFile(join(d, 'c'), 'C');
    const py = `import ctypes,os,sys;l=ctypes.CDLL(None,use_errno=True);r=l.renameat2(-100,b'${join(d, 'c')}',-100,b'${join(d, 'b')}',1);print(ctypes.get_errno() if r else 0)`;
    expect((await sh(`python3 -c "${py}"`)).trim()).toBe('17');
    expect(await fsp.readFile(join(d, 'b'), 'utf8')).toBe('A');
    // rename of a directory onto a non-empty one
    await fsp.mkdir(join(d, 'full'));
    await fsp.writeFile(join(d, 'full', 'x'), '');
    expect(await code(fsp.rename(join(d, 'sub'), join(d, 'full')))).toBe('ENOTEMPTY');
    await fsp.rmdir(join(d, 'sub'));
    expect((await fsp.readdir(d)).sort()).toEqual(['b', 'c', 'full', 'hard', 'ln']);
  });

  it('setattr: chmod, chown, utimes with UTIME_OMIT, truncate; statfs reports space', async () => {
    const f = join(m1, 'attrs');
    await fsp.writeFile(f, 'x'.repeat(100));
    await fsp.chmod(f, 0o640);
    await fsp.chown(f, 1234, 5678);
    await fsp.truncate(f, 10);
    await fsp.utimes(f, new Date('2001-02-03T04:05:06Z'), new Date('2002-03-04T05:06:07Z'));
    // touch -m: mtime now, atime omitted (UTIME_OMIT)
    await sh(`touch -a -d '2010-01-01T00:00:00Z' '${f}'`);
    const st = await fsp.stat(f);
    expect(st.mode & 0o7777).toBe(0o640);
    expect([st.uid, st.gid]).toEqual([1234, 5678]);
    expect(st.mtime.toISOString()).toBe('2002-03-04T05:06:07.000Z');
    expect(st.atime.toISOString()).toBe('2010-01-01T00:00:00.000Z');
    expect(st.size).toBe(10);
    const sf = await fsp.statfs(m1);
    expect(sf.blocks * sf.bsize).toBeGreaterThan(0);
    expect(sf.bavail).toBeGreaterThan(0);
    expect(sf.bavail).toBeLessThanOrEqual(sf.blocks);
  });

  it('fallocate (allocate, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE; EOPNOTSUPP otherwise) and copy_file_range', async () => {
    const f = join(m1, 'falloc');
    await fsp.writeFile(f, Buffer.alloc(8192, 0x61));
    await sh(`fallocate -l 65536 '${f}'`); // mode 0: the size grows, the new range reads as zeros
    let b = await fsp.readFile(f);
    expect(b.length).toBe(65536);
    expect(b.subarray(0, 8192).every((x) => x === 0x61)).toBe(true);
    expect(b.subarray(8192).every((x) => x === 0)).toBe(true);
    await sh(`fallocate -n -o 65536 -l 65536 '${f}'`); // KEEP_SIZE: no change
    expect((await fsp.stat(f)).size).toBe(65536);
    await sh(`fallocate -p -o 1000 -l 2000 '${f}'`); // PUNCH_HOLE (with KEEP_SIZE): zeros, same size
    b = await fsp.readFile(f);
    expect(b.length).toBe(65536);
    expect([b[999], b[1000], b[2999], b[3000]]).toEqual([0x61, 0, 0, 0x61]);
    await sh(`fallocate -z -o 4000 -l 100000 '${f}'`); // ZERO_RANGE past the end: zeros, and the size grows
    b = await fsp.readFile(f);
    expect(b.length).toBe(104000);
    expect([b[3999], b[4000], b[8191]]).toEqual([0x61, 0, 0]);
    await expect(sh(`fallocate -c -o 0 -l 4096 '${f}'`)).rejects.toThrow(/not supported/i); // COLLAPSE_RANGE
    // copy_file_range between two handles, at offsets, through the VFS (not the kernel's fallback)
    const src = join(m1, 'cfr-src');
    const dst = join(m1, 'cfr-dst');
    const data = Buffer.from(Array.from({ length: 1_200_000 }, (_, i) => (i * 7 + (i >> 9)) & 0xff));
    await fsp.writeFile(src, data);
    const copied = await sh(
      `python3 -c "import os\na=os.open('${src}',os.O_RDONLY)\nb=os.open('${dst}',os.O_WRONLY|os.O_CREAT,0o644)\nn=0\nwhile n<1100000:\n  k=os.copy_file_range(a,b,1100000-n,1000+n,5+n)\n  assert k>0\n  n+=k\nprint(n)"`,
    );
    expect(copied.trim()).toBe('1100000');
    const out = await fsp.readFile(dst);
    expect(out.length).toBe(1_100_005);
    expect(out.subarray(0, 5).every((x) => x === 0)).toBe(true);
    expect(out.subarray(5).equals(data.subarray(1000, 1_101_000))).toBe(true);
    // overlapping ranges of one file through two hard links (two kernel inodes): EINVAL, no smear
    await fsp.link(src, join(m1, 'cfr-link'));
    const overlap = await sh(
      `python3 -c "import os\na=os.open('${src}',os.O_RDONLY)\nb=os.open('${join(m1, 'cfr-link')}',os.O_WRONLY)\ntry:\n  print(os.copy_file_range(a,b,4096,0,1000))\nexcept OSError as e:\n  print(e.errno)"`,
    );
    expect(overlap.trim()).toBe('22');
    expect((await fsp.readFile(src)).equals(data)).toBe(true);
    const metrics = await (await fetch(c.metricsUrl)).text();
    expect(metrics).toMatch(/cairn_vfs_ops_total\{op="copy_file_range",result="ok"\} [1-9]/);
    expect(metrics).toMatch(/cairn_vfs_ops_total\{op="fallocate",result="ok"\} [1-9]/);
  });

  it('xattrs: set, get, list, remove, and ENODATA', async () => {
    const f = join(m1, 'xa');
    await fsp.writeFile(f, '');
    const py = (s: string): Promise<string> => sh(`python3 -c "import os; ${s}"`);
    const absent = (path: string, name: string): Promise<string> =>
      py(`
try:
    print(os.getxattr('${path}', '${name}').decode())
except OSError as e:
    print(e.errno)`);
    expect((await absent(f, 'user.k')).trim()).toBe('61'); // the VFS now caches "absent"
    await py(`os.setxattr('${f}', 'user.k', b'v1')`);
    expect((await py(`print(os.getxattr('${f}', 'user.k').decode())`)).trim()).toBe('v1');
    expect((await py(`print(os.listxattr('${f}'))`)).trim()).toBe("['user.k']");
    await py(`os.removexattr('${f}', 'user.k')`);
    expect((await py(`
try:
    os.getxattr('${f}', 'user.k')
except OSError as e:
    print(e.errno)`)).trim()).toBe('61');
    // set through node 2: node 1's cached "absent" gives way (watch feed, or the TTL)
    expect((await absent(f, 'user.n2')).trim()).toBe('61');
    await py(`os.setxattr('${join(m2, 'xa')}', 'user.n2', b'from2')`);
    await eventually(async () => (await absent(f, 'user.n2')).trim() === 'from2', 20_000, 100);
  });

  it('permissions are enforced as a local file system (default_permissions)', async () => {
    const d = join(m1, 'perm');
    await fsp.mkdir(d, { mode: 0o755 });
    await fsp.writeFile(join(d, 'secret'), 's');
    await fsp.chown(join(d, 'secret'), 1234, 1234);
    await fsp.chmod(join(d, 'secret'), 0o600);
    await fsp.chown(d, 1234, 1234);
    // root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: mode bits and owners decide, as on ext4
    // (the mount is the daemon's user's: without allow_other no other uid may enter it at all)
    const noDac = (s: string): Promise<string> => sh(`setpriv --bounding-set=-dac_override,-dac_read_search bash -c '${s} 2>&1; echo rc=$?'`);
    expect(await noDac(`cat ${join(d, 'secret')}`)).toMatch(/Permission denied[\s\S]*rc=1/);
    expect(await noDac(`touch ${join(d, 'new')}`)).toMatch(/Permission denied[\s\S]*rc=1/);
    await fsp.chmod(join(d, 'secret'), 0o644);
    expect(await noDac(`cat ${join(d, 'secret')}`)).toBe('src=0\n');
    await fsp.chmod(d, 0o777);
    expect(await noDac(`touch ${join(d, 'new')}`)).toBe('rc=0\n');
  });
});

describe('FUSE mount: what programs rely on', () => {
  it('an unlinked open file stays readable and writable until closed', async () => {
    const f = join(m1, 'unlinked');
    await fsp.writeFile(f, 'still here');
    const h = await fsp.open(f, 'r+');
    await fsp.unlink(f);
    expect(await code(fsp.stat(f))).toBe('ENOENT');
    const b = Buffer.alloc(10);
    await h.read(b, 0, 10, 0);
    expect(b.toString()).toBe('still here');
    await h.write('STILL', 0);
    await h.read(b, 0, 10, 0);
    expect(b.toString()).toBe('STILL here');
    await h.close();
    // the unlink is real at once: no .fuse_hidden file is left behind (sqlite's journal case:
    // close, then unlink before the kernel's asynchronous release is handled)
    expect((await fsp.readdir(m1)).filter((n) => n.startsWith('.fuse_hidden'))).toEqual([]);
    for (let i = 0; i < 10; i++) {
      await fsp.writeFile(join(m1, 'race'), 'x');
      await fsp.unlink(join(m1, 'race'));
    }
    expect((await fsp.readdir(m1)).filter((n) => n.startsWith('.fuse_hidden') || n === 'race')).toEqual([]);
  });

  it('rename over an open file: the open handle keeps the old file', async () => {
    const a = join(m1, 'ro-a');
    const b = join(m1, 'ro-b');
    await fsp.writeFile(a, 'new');
    await fsp.writeFile(b, 'old');
    const h = await fsp.open(b, 'r');
    await fsp.rename(a, b);
    const buf = Buffer.alloc(3);
    await h.read(buf, 0, 3, 0);
    expect(buf.toString()).toBe('old');
    await h.close();
    expect(await fsp.readFile(b, 'utf8')).toBe('new');
  });

  it('truncate of an open file, and concurrent O_APPEND writers on one node', async () => {
    const f = join(m1, 'tr');
    await fsp.writeFile(f, '0123456789');
    const h = await fsp.open(f, 'r+');
    await fsp.truncate(f, 4);
    await h.write('ab', 6);
    await h.close();
    expect(await fsp.readFile(f)).toEqual(Buffer.from('0123\0\0ab'));
    const g = join(m1, 'app');
    const hs = await Promise.all([fsp.open(g, 'a'), fsp.open(g, 'a'), fsp.open(g, 'a')]);
    await Promise.all(hs.map(async (x, i) => {
      for (let k = 0; k < 20; k++) await x.write(`${i}${k % 10}\n`);
    }));
    for (const x of hs) await x.close();
    const lines = (await fsp.readFile(g, 'utf8')).trim().split('\n');
    expect(lines.length).toBe(60);
    expect(new Set(lines.map((l) => l[0]))).toEqual(new Set(['0', '1', '2']));
  });

  it('a large directory lists every entry once (stable offsets across pages)', async () => {
    const d = join(m1, 'big');
    await fsp.mkdir(d);
    const n = 1_050;
    const names = Array.from({ length: n }, (_, i) => `e${i}`);
    for (let i = 0; i < n; i += 50) await Promise.all(names.slice(i, i + 50).map((x) => fsp.mkdir(join(d, x))));
    const listed = (await sh(`ls -f '${d}'`)).split('\n').filter((x) => x.startsWith('e'));
    expect(listed.length).toBe(n);
    expect(new Set(listed).size).toBe(n);
  }, 120_000);

  it('mmap: shared writable mapping written, read back after munmap', async () => {
    const f = join(m1, 'mm');
    await fsp.writeFile(f, Buffer.alloc(8192));
    await sh(`python3 -c "
import mmap,os
fd=os.open('${f}',os.O_RDWR)
m=mmap.mmap(fd,8192)
m[100:105]=b'hello'
m.flush();m.close();os.close(fd)"`);
    const b = await fsp.readFile(f);
    expect(b.subarray(100, 105).toString()).toBe('hello');
  });

  it('a name created or removed through another node shows up (negative and positive entries are not kept)', async () => {
    const f1 = join(m1, 'later');
    const f2 = join(m2, 'later');
    expect(await code(fsp.stat(f1))).toBe('ENOENT'); // node 1 caches "absent"
    await fsp.writeFile(f2, 'made on node 2');
    await eventually(async () => (await code(fsp.stat(f1))) === 'ok', 20_000, 100);
    await fsp.unlink(f2);
    await eventually(async () => (await code(fsp.stat(f1))) === 'ENOENT', 20_000, 100);
  });

  it('a file written through one node\'s mount is read through another\'s after close (strong mount)', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
    await fsp.writeFile(join(m2, 'shared.bin'), data);
    const back = await fsp.readFile(join(m1, 'shared.bin'));
    expect(back.equals(data)).toBe(true);
  }, 60_000);
});
