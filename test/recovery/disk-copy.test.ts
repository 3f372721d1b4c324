/**
 * The metadata copies on data disks, piece by piece: the tail format (a torn or damaged record
 * ends the tail there, never a wrong entry), and the copier over a real state machine and real
 * disk directories — a generation is a snapshot plus the entries applied after it, it becomes a
 * database again with every directory, damage is detected, old generations are pruned.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/env.js';
import { MetaStateMachine } from '../../src/meta/state-machine.js';
import { encodeEntry } from '../../src/meta/entry.js';
import type { Op } from '../../src/meta/ops.js';
import { EntryType, type Entry } from '../../src/raft/types.js';
import { ChunkStore } from '../../src/chunk/store.js';
import { AppliedFeed, MetaCopier, META_COPY_DEFAULTS } from '../../src/server/meta-copy.js';
import { COPY_DIR, checkCopy, decodeTail, encodeTailRecord, listCopies, materializeCopy, TAIL_FILE } from '../../src/meta/disk-copy.js';
import { logger } from '../../src/common/log.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('tail records', () => {
  const entries: Entry[] = [1, 2, 3].map((i) => ({ index: 10 + i, term: 2, type: EntryType.Normal, data: Buffer.from(`entry ${i}`) }));
  const bytes = Buffer.concat(entries.map(encodeTailRecord));

  it('round-trips entries', () => {
    const t = decodeTail(bytes);
    expect(t.torn).toBeUndefined();
    expect(t.entries.map((e) => [e.index, e.term, Buffer.from(e.data).toString()])).toEqual([[11, 2, 'entry 1'], [12, 2, 'entry 2'], [13, 2, 'entry 3']]);
  });

  it('a torn last record (crash mid-append) ends the tail before it', () => {
    const t = decodeTail(bytes.subarray(0, bytes.length - 3));
    expect(t.entries.map((e) => e.index)).toEqual([11, 12]);
    expect(t.torn).toMatch(/partial record/);
  });

  it('a flipped bit fails the record\'s CRC: the tail stops there', () => {
    const b = Buffer.from(bytes);
    const second = encodeTailRecord(entries[0]!).length;
    b[second + 30]! ^= 0x10;
    const t = decodeTail(b);
    expect(t.entries.map((e) => e.index)).toEqual([11]);
    expect(t.torn).toMatch(/CRC-32/);
  });

  it('zeros after the records (the writer preallocates) end the tail cleanly', () => {
    const t = decodeTail(Buffer.concat([bytes, Buffer.alloc(4096)]));
    expect(t.entries.map((e) => e.index)).toEqual([11, 12, 13]);
    expect(t.torn).toBeUndefined();
  });

  it('a gap in the indexes ends the tail', () => {
    const t = decodeTail(Buffer.concat([encodeTailRecord(entries[0]!), encodeTailRecord(entries[2]!)]));
    expect(t.entries.map((e) => e.index)).toEqual([11]);
    expect(t.torn).toMatch(/gap/);
  });
});

describe('MetaCopier over a real state machine and disks', () => {
  async function setup(cfg: Partial<typeof META_COPY_DEFAULTS> = {}) {
    const dir = await tempDir('cairn-copy-');
    const sm = await MetaStateMachine.open({ dataDir: join(dir.path, 'data') });
    const disks = [join(dir.path, 'disk0'), join(dir.path, 'disk1')];
    for (const [i, d] of disks.entries()) await ChunkStore.formatDisk(d, { dc: 0, row: 0, rack: 0, machine: 0, disk: i });
    const store = await ChunkStore.open(disks);
    const feed = new AppliedFeed();
    const wrapped = feed.wrap(sm);
    const copier = new MetaCopier({ clusterName: 'unit', nodeId: 1, meta: sm, store, feed, cfg: { ...META_COPY_DEFAULTS, ...cfg }, log: logger('test') });
    copier.attach();
    let index = 0;
    const apply = async (ops: Op[]): Promise<void> => {
      await wrapped.apply(ops.map((op) => ({ index: ++index, term: 3, type: EntryType.Normal, data: encodeEntry(op, 1_000 + index) })));
    };
    cleanups.push(async () => {
      await copier.stop();
      await store.close();
      await sm.close();
      await dir.remove();
    });
    return { dir, sm, disks, copier, apply, last: () => index };
  }

  it('writes nothing before the cluster has a diskmap, then a snapshot plus a tail that rebuilds the database', async () => {
    const h = await setup();
    await h.apply([{ op: 'mkdir', at: { path: '/early' }, mode: 0o755, uid: 0, gid: 0 }]);
    await h.copier.step();
    expect(await listCopies(h.disks[0]!)).toEqual([]);
    await h.apply([{ op: 'diskmapPropose', expectedEpoch: 0, documentJson: '{"epoch":1}', diffJson: '{"added":[]}' }]);
    await h.copier.step(); // the first generation: a snapshot at the current index
    const snapAt = h.last();
    for (let i = 0; i < 20; i++) await h.apply([{ op: 'mkdir', at: { path: `/d${i}` }, mode: 0o755, uid: 0, gid: 0 }]);
    await h.copier.step(); // the tail
    expect(h.copier.copiedIndex).toBe(h.last());
    for (const d of h.disks) {
      const [c] = await listCopies(d);
      expect(c!.problems).toEqual([]);
      expect(c!.manifest!.snapshotIndex).toBe(snapAt);
      expect(c!.manifest!.clusterName).toBe('unit');
      expect(c!.manifest!.diskmapEpoch).toBe(1);
      expect(c!.tailEntries).toBe(20);
      expect(c!.lastIndex).toBe(h.last());
    }
    const [copy] = await listCopies(h.disks[1]!);
    const out = join(h.dir.path, 'restored');
    const got = await materializeCopy(copy!, out);
    expect(got.index).toBe(h.last());
    const sm2 = await MetaStateMachine.open({ dataDir: out });
    try {
      const names = (await sm2.readdir({ ino: 1 }, '', 100)).entries.map((e) => e.name).sort();
      expect(names).toEqual(['d0', 'd1', 'd10', 'd11', 'd12', 'd13', 'd14', 'd15', 'd16', 'd17', 'd18', 'd19', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9', 'early']);
      // The database as a whole: every key of the source is in the copy.
      expect(await sm2.dump()).toEqual(await h.sm.dump());
    } finally {
      await sm2.close();
    }
    // A torn append after a crash (a record's first bytes over the zeros written ahead of the
    // records): the copy still checks, up to its last whole record.
    const tailPath = join(copy!.dir, TAIL_FILE);
    const tailBytes = await readFile(tailPath);
    const end = decodeTail(tailBytes).entries.reduce((n, e) => n + encodeTailRecord(e).length, 0);
    expect(tailBytes.length).toBeGreaterThan(end); // preallocated
    Buffer.from([0, 0, 0, 50, 1, 2]).copy(tailBytes, end);
    await writeFile(tailPath, tailBytes);
    const torn = await checkCopy(h.disks[1]!, copy!.dir.slice(copy!.dir.lastIndexOf('/') + 1));
    expect(torn.problems).toEqual([]);
    expect(torn.lastIndex).toBe(h.last());
    expect(torn.tailTorn).toMatch(/fails its CRC-32|partial/);
    // A damaged manifest is refused.
    const mf = join(copy!.dir, 'manifest.json');
    await writeFile(mf, (await readFile(mf, 'utf8')).replace('"nodeId": 1', '"nodeId": 2'));
    expect((await checkCopy(h.disks[1]!, copy!.dir.slice(copy!.dir.lastIndexOf('/') + 1))).problems.join()).toMatch(/checksum/);
  });

  it('starts a new generation when the tail is long enough and keeps only `keep` of them', async () => {
    const h = await setup({ snapshotEveryEntries: 5, keep: 2 });
    await h.apply([{ op: 'diskmapPropose', expectedEpoch: 0, documentJson: '{"epoch":1}', diffJson: '{}' }]);
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 6; i++) await h.apply([{ op: 'mkdir', at: { path: `/r${round}-${i}` }, mode: 0o755, uid: 0, gid: 0 }]);
      await h.copier.step();
    }
    await h.copier.step();
    for (const d of h.disks) {
      const gens = (await readdir(join(d, COPY_DIR))).filter((n) => n.startsWith('g'));
      expect(gens.length).toBe(2);
      const [newest] = await listCopies(d);
      expect(newest!.problems).toEqual([]);
      expect(newest!.lastIndex).toBe(h.last());
    }
  });
});
