/**
 * The `replicated` durability level (docs/dfs-cache.md) on a real 3-node cluster with coherent
 * FUSE mounts on nodes 1 and 2: every write that returned on node 1 is also in a replica node's
 * log; after kill -9 of node 1 (its writes never committed: the handle stays open), the replica
 * commits them once the dead writer's lease has expired, and node 2 reads every acknowledged write.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { eventually, runCairn } from '../helpers/env.js';
import { startDfsCluster, type DfsCluster } from './cluster.js';

let c: DfsCluster;

beforeAll(async () => {
  c = await startDfsCluster('replicated');
}, 120_000);

afterAll(async () => {
  await c?.stop();
}, 60_000);

describe('replicated durability', () => {
  it('kill -9 of the writer loses no acknowledged write: the replica commits them after the lease expires', async () => {
    const [m1, m2] = c.mounts as [string, string];
    const a = join(m1, 'journal.txt');
    const b = join(m2, 'journal.txt');
    await writeFile(a, 'committed line\n');
    await eventually(() => stat(b).then(() => true, () => false), 20_000, 50);
    const fa = await open(a, 'a');
    let expected = 'committed line\n';
    try {
      for (let i = 0; i < 40; i++) {
        const line = `acknowledged ${i}\n`;
        await fa.write(line);
        expected += line;
      }
      await fa.truncate(Buffer.byteLength(expected) - 3); // a truncate is mirrored too
      expected = expected.slice(0, -3);
      // Where the dirty data lives: node 1, at the replicated level.
      const st = await runCairn(['status', '/journal.txt', '--endpoint', c.endpoints[2]!, '--json']);
      expect(st.code, st.stderr).toBe(0);
      expect(JSON.parse(st.stdout)).toMatchObject({ writer: c.endpoints[0], level: 'replicated' });
      expect(await readFile(b, 'utf8')).toBe(expected);
      await c.kill(0);
    } finally {
      await fa.close().catch(() => undefined);
    }
    // Nothing of it was committed by node 1 (the handle was open); the replica commits it once the lease is gone.
    await eventually(async () => (await readFile(b, 'utf8').catch(() => undefined)) === expected, 45_000, 250);
  });
});
