/**
 * Cluster-wide locks through real FUSE mounts of a real 3-process cluster (node 1: weak mount,
 * node 2: strong mount): POSIX fcntl locks (a perl helper: F_SETLK, F_SETLKW, F_GETLK) and
 * flock(1) taken on one node hold against the other, a blocked F_SETLKW is woken when the holder
 * on the other node closes, and is interrupted by a signal; sqlite3 (rollback journal, DELETE)
 * on two nodes: each row A inserted is read by B as soon as A's transaction returned, both write
 * without losing a row, integrity_check is ok on both; a killed node's locks go away.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { eventually } from '../helpers/env.js';
import { sh, startMountedCluster, type MountedCluster } from './helpers.js';

let c: MountedCluster;
let m1: string;
let m2: string;
let lk: string;

/** fcntl from perl: FILE getlk|setlk|setlkw r|w|u START LEN [hold]; prints OK, LK type start len pid, or ERR code. */
const PERL = `use strict; use Fcntl; $| = 1;
my ($file, $cmd, $type, $start, $len, $hold) = @ARGV;
open(my $fh, '+<', $file) or die "open $file: $!";
my %t = (r => F_RDLCK, w => F_WRLCK, u => F_UNLCK);
my %c = (getlk => F_GETLK, setlk => F_SETLK, setlkw => F_SETLKW);
my $fl = pack('s s x4 q q i x4', $t{$type}, 0, $start, $len, 0);
$SIG{ALRM} = sub {};
alarm($ENV{ALARM}) if $ENV{ALARM};
if (!fcntl($fh, $c{$cmd}, $fl)) { print "ERR ", (($!{EAGAIN} || $!{EACCES}) ? "EAGAIN" : $!{EINTR} ? "EINTR" : "$!"), "\\n"; exit 1; }
alarm(0);
if ($cmd eq 'getlk') { my ($ty, $wh, $s, $l, $p) = unpack('s s x4 q q i x4', $fl); print "LK $ty $s $l $p\\n"; } else { print "OK\\n"; }
if ($hold) { my $x = <STDIN>; }
`;

beforeAll(async () => {
  c = await startMountedCluster();
  m1 = c.mounts[0]!;
  m2 = c.mounts[1]!;
  lk = join(c.dir, 'lk.pl');
  await writeFile(lk, PERL);
}, 240_000);

afterAll(async () => {
  await c?.stop();
}, 60_000);

/** Run the helper to completion; its output line (ERR … too). */
async function fcntl(args: string, env = ''): Promise<string> {
  return (await sh(`${env} perl '${lk}' ${args}; true`, { timeoutMs: 60_000 })).trim();
}

/** Start a holder that keeps its lock until stdin closes; resolves once its first line is out. */
async function holder(cmd: string, args: string[]): Promise<{ p: ChildProcessWithoutNullStreams; first: string; done: Promise<number | null> }> {
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const done = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const first = await new Promise<string>((resolve, reject) => {
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    p.once('exit', (code) => reject(new Error(`${cmd} exited with ${code} before its first line: ${out}`)));
  });
  return { p, first, done };
}

describe('locks across nodes', () => {
  it('POSIX locks: a lock on node 1 holds on node 2 (F_SETLK, F_GETLK); F_SETLKW waits, is interrupted by a signal, and is woken by the close', async () => {
    await sh(`head -c 4096 /dev/zero > '${m1}/posix'`);
    await eventually(async () => (await sh(`test -e '${m2}/posix' && echo y || true`)).trim() === 'y', 10_000, 100);
    const h = await holder('perl', [lk, `${m1}/posix`, 'setlk', 'w', '0', '100', 'hold']);
    expect(h.first).toBe('OK');
    expect(await fcntl(`'${m2}/posix' setlk w 50 10`)).toBe('ERR EAGAIN');
    expect(await fcntl(`'${m2}/posix' setlk r 0 1`)).toBe('ERR EAGAIN');
    expect(await fcntl(`'${m2}/posix' setlk w 100 10`)).toBe('OK');
    expect(await fcntl(`'${m2}/posix' getlk w 0 0`)).toBe(`LK 1 0 100 ${h.p.pid}`);
    expect(await fcntl(`'${m2}/posix' getlk w 200 10`)).toMatch(/^LK 2 /);
    // A blocked F_SETLKW: SIGALRM (handled) makes it fail with EINTR instead of hanging.
    expect(await fcntl(`'${m2}/posix' setlkw w 0 10`, 'ALARM=1')).toBe('ERR EINTR');
    // A blocked F_SETLKW is granted once the holder closes the file (unlock at close).
    const waiter = fcntl(`'${m2}/posix' setlkw w 0 10`);
    const early = await Promise.race([waiter, new Promise((r) => setTimeout(() => r('still waiting'), 300))]);
    expect(early).toBe('still waiting');
    h.p.stdin.end();
    await h.done;
    expect(await waiter).toBe('OK');
  }, 120_000);

  it('flock: an exclusive flock on node 1 keeps node 2 out (also shared), a timed wait gives up, and the last close releases it', async () => {
    await sh(`touch '${m1}/fl'`);
    await eventually(async () => (await sh(`test -e '${m2}/fl' && echo y || true`)).trim() === 'y', 10_000, 100);
    const h = await holder('flock', ['-x', `${m1}/fl`, '-c', 'echo held; read x']);
    expect(h.first).toBe('held');
    expect((await sh(`flock -n -x '${m2}/fl' true; echo $?`)).trim()).toBe('1');
    expect((await sh(`flock -n -s '${m2}/fl' true; echo $?`)).trim()).toBe('1');
    // -w: a blocking flock(2) cut short by SIGALRM (EINTR), exit 1.
    expect((await sh(`flock -w 1 -x '${m2}/fl' true; echo $?`, { timeoutMs: 30_000 })).trim()).toBe('1');
    const waiter = sh(`flock -w 30 -x '${m2}/fl' echo got`, { timeoutMs: 60_000 });
    h.p.stdin.end();
    await h.done;
    expect((await waiter).trim()).toBe('got');
    // Shared locks share, on both nodes.
    const s = await holder('flock', ['-s', `${m1}/fl`, '-c', 'echo held; read x']);
    expect((await sh(`flock -n -s '${m2}/fl' echo shared`)).trim()).toBe('shared');
    s.p.stdin.end();
    await s.done;
  }, 120_000);

  it('sqlite3 (DELETE journal) on two nodes: B reads each row as soon as A returned; the nodes take turns, then write at once; integrity_check ok on both', async () => {
    const a = `${m1}/shared.db`;
    const b = `${m2}/shared.db`;
    await sh(`sqlite3 '${a}' 'PRAGMA journal_mode=delete; CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v BLOB);'`);
    const n = 8;
    for (let i = 1; i <= n; i++) {
      await sh(`sqlite3 '${a}' "PRAGMA busy_timeout=20000; INSERT INTO t(who, v) VALUES('a', randomblob(300));"`);
      // No waiting, no retry: the row is there the moment A's transaction returned.
      expect((await sh(`sqlite3 '${b}' "PRAGMA busy_timeout=20000; SELECT count(*) FROM t WHERE who='a';"`)).trim().split('\n').pop()).toBe(String(i));
    }
    // The nodes take turns writing, each through the locks...
    const k = 3;
    for (let i = 0; i < k; i++) {
      await sh(`sqlite3 '${b}' "PRAGMA busy_timeout=20000; INSERT INTO t(who, v) VALUES('b', randomblob(300));"`);
      await sh(`sqlite3 '${a}' "PRAGMA busy_timeout=20000; INSERT INTO t(who, v) VALUES('a2', randomblob(300));"`);
    }
    // ...then both write at once, serialized by the cluster-wide locks (with the kernel caching
    // pages or names across a lock, this lost transactions: the mounts' attrTimeoutS default is 0).
    const writer = async (db: string, who: string, n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await sh(`sqlite3 '${db}' "PRAGMA busy_timeout=30000; INSERT INTO t(who, v) VALUES('${who}', randomblob(300));"`, { timeoutMs: 60_000 });
    };
    await Promise.all([writer(a, 'a2', k), writer(b, 'b', k)]);
    for (const db of [a, b]) {
      const out = (await sh(`sqlite3 '${db}' "PRAGMA busy_timeout=20000; PRAGMA integrity_check; SELECT who, count(*) FROM t GROUP BY who ORDER BY who;"`)).trim().split('\n');
      expect(out.slice(-4)).toEqual(['ok', `a|${n}`, `a2|${2 * k}`, `b|${2 * k}`]);
    }
  }, 240_000);

  it('the locks of a killed node go away after its session ttl; the other node then gets the lock', async () => {
    await sh(`touch '${m2}/dead'`);
    await eventually(async () => (await sh(`test -e '${m1}/dead' && echo y || true`)).trim() === 'y', 10_000, 100);
    const h = await holder('perl', [lk, `${m1}/dead`, 'setlk', 'w', '0', '0', 'hold']);
    expect(h.first).toBe('OK');
    expect(await fcntl(`'${m2}/dead' setlk w 0 1`)).toBe('ERR EAGAIN');
    await c.kill(0);
    h.p.kill('SIGKILL');
    // Session ttl 10 s + 1 s margin + the 2 s sweep: F_SETLKW on node 2 is granted within that.
    expect(await fcntl(`'${m2}/dead' setlkw w 0 1`)).toBe('OK');
    await c.start(0);
  }, 120_000);
});
