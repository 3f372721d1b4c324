/**
 * The hedge of home shard puts (src/chunk/handoff.ts hedgeGroup), pure logic over fake puts: a
 * put that hangs (a paused node) is given up on once another put of its chunk has finished and
 * the hedge has passed; its address is then skipped (one probe at a time) until a put to it
 * succeeds again. The real-process check (SIGSTOP/SIGCONT) is in availability-disks.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { hedgeGroup, isSlowHome } from '../../src/chunk/handoff.js';

const slow = (address: string, why: string) => ({ address, why });

describe('hedged home puts', () => {
  it('gives up on a hung put after another finished, skips the address, and clears it when a probe succeeds', async () => {
    const a = `127.0.0.1:${10_000 + Math.floor(Math.random() * 50_000)}`;
    const g = hedgeGroup(20, slow);
    let release: (v: undefined) => void = () => undefined;
    const hung = new Promise<undefined>((r) => (release = r));
    let fastDone = false;
    const [r1, r2] = await Promise.all([
      g.run(a, () => hung),
      g.run('127.0.0.1:1', async () => {
        fastDone = true;
        return undefined;
      }),
    ]);
    expect(fastDone).toBe(true);
    expect(r2).toBeUndefined();
    expect(r1).toMatchObject({ address: a, why: expect.stringMatching(/did not store its shard within 20 ms of the others/) });
    expect(isSlowHome(a)).toBe(true);
    // The next chunk: no put is sent to it while its first put (the probe) is still out.
    let sent = 0;
    const r3 = await hedgeGroup(20, slow).run(a, async () => {
      sent++;
      return undefined;
    });
    expect(sent).toBe(0);
    expect(r3).toMatchObject({ why: expect.stringMatching(/skipped/) });
    // The node resumes: the hung put completes, the mark is cleared, puts go to it again.
    release(undefined);
    await hung;
    await new Promise((r) => setImmediate(r));
    expect(isSlowHome(a)).toBe(false);
    const r4 = await hedgeGroup(20, slow).run(a, async () => {
      sent++;
      return undefined;
    });
    expect(r4).toBeUndefined();
    expect(sent).toBe(1);
  });

  it('never gives up on a put while no other put of the chunk has finished (a slow cluster is not a slow node)', async () => {
    const g = hedgeGroup(5, slow);
    let release: (v: undefined) => void = () => undefined;
    const p = g.run('127.0.0.1:2', () => new Promise<undefined>((r) => (release = r)));
    let settled = false;
    void p.then(() => (settled = true));
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 10));
    expect(settled).toBe(false);
    release(undefined);
    expect(await p).toBeUndefined();
  });
});
