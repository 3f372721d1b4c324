/**
 * The replica logs of the `replicated` level (src/peer/replica.ts) on a real directory: a log is
 * replayed only once the writer's lease is gone and only over a version it knows of (the one the
 * writer sat on, or the one a commit intent announced); a log the file moved past is set aside; a
 * torn last record is dropped; a mirror that is not a fresh start needs a log in memory.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendFile, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { logger } from '../../src/common/log.js';
import { ReplicaStore, type ReplicaOp, type ReplayTarget } from '../../src/peer/replica.js';
import { tempDir } from '../helpers/env.js';

let dir: { path: string; remove: () => Promise<void> };
let store: ReplicaStore;

beforeEach(async () => {
  dir = await tempDir('cairn-replica-');
  store = new ReplicaStore(join(dir.path, 'r'), logger('test'));
  await store.init();
});

afterEach(async () => {
  await store.close();
  await dir.remove();
});

function target(o: { lease?: boolean; version: number | null }): ReplayTarget & { applied: ReplicaOp[][] } {
  const applied: ReplicaOp[][] = [];
  return {
    applied,
    leaseOf: async () => (o.lease === true ? { token: 1 } : null),
    versionOf: async () => o.version,
    apply: async (_id, ops) => {
      applied.push(ops);
    },
  };
}

const w = (offset: number, text: string): ReplicaOp => ({ kind: 'write', offset, data: Buffer.from(text) });

describe('replica logs', () => {
  it('are replayed, in the writer\'s order, only once no lease is live, over the version the writer sat on', async () => {
    await store.mirror('7', 'n1:1', 3, 4, true, w(0, 'hello'));
    await store.mirror('7', 'n1:1', 3, 4, false, { kind: 'truncate', size: 2 });
    await store.mirror('7', 'n1:1', 3, 4, false, w(2, 'y!'));
    const live = target({ lease: true, version: 4 });
    expect(await store.takeOver(live)).toBe(0);
    expect(live.applied).toEqual([]);
    const gone = target({ version: 4 });
    expect(await store.takeOver(gone)).toBe(1);
    expect(gone.applied).toEqual([[w(0, 'hello'), { kind: 'truncate', size: 2 }, w(2, 'y!')]]);
    expect(await readdir(join(dir.path, 'r'))).toEqual([]); // replayed: the log is gone
  });

  it('a commit intent makes the announced version acceptable too; a version past both sets the log aside', async () => {
    await store.mirror('8', 'n1:1', 1, 10, true, w(0, 'a'));
    await store.intent('8', 11);
    const committed = target({ version: 11 });
    expect(await store.takeOver(committed)).toBe(1);
    await store.mirror('9', 'n1:1', 1, 10, true, w(0, 'b'));
    const moved = target({ version: 12 });
    expect(await store.takeOver(moved)).toBe(0);
    expect(moved.applied).toEqual([]);
    expect(await readdir(join(dir.path, 'r'))).toEqual(['9.log.stale']);
  });

  it('drops a torn last record, and refuses a mirror that is not a fresh start without a log', async () => {
    await store.mirror('5', 'n1:1', 1, 0, true, w(0, 'whole'));
    await appendFile(join(dir.path, 'r', '5.log'), Buffer.from([40, 0, 0, 0, 9, 0, 0, 0, 123])); // a record cut short
    const parsed = ReplicaStore.parse(await readFile(join(dir.path, 'r', '5.log')));
    expect(parsed.ops).toEqual([w(0, 'whole')]);
    expect(parsed).toMatchObject({ known: 0, writer: 'n1:1', token: 1 });
    await expect(store.mirror('6', 'n1:1', 1, 0, false, w(0, 'x'))).rejects.toMatchObject({ code: 'EAGAIN' });
  });

  it('the writer\'s release deletes the log (everything was committed)', async () => {
    await store.mirror('4', 'n1:1', 1, 0, true, w(0, 'x'));
    await store.released('4', 'n2:1'); // another node's release: not this log's writer
    expect(await readdir(join(dir.path, 'r'))).toEqual(['4.log']);
    await store.released('4', 'n1:1');
    expect(await readdir(join(dir.path, 'r'))).toEqual([]);
  });
});
