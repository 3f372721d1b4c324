/**
 * The durable Raft log on a real LevelDB in a temp dir: append, conflicting overwrite,
 * compaction, reopen after close, hard state across reopen, and damaged bytes on disk.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { DiskStorage, entryKey } from '../../src/raft/storage.js';
import { CompactedError, EntryType, UnavailableError, type Entry } from '../../src/raft/types.js';
import { tempDir } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function fresh(opts = {}): Promise<{ dir: string; s: DiskStorage }> {
  const t = await tempDir('cairn-raftlog-');
  const s = await DiskStorage.open(t.path, opts);
  cleanups.push(async () => {
    await s.close();
    await t.remove();
  });
  return { dir: t.path, s };
}

const ent = (index: number, term: number, text = `e${index}t${term}`): Entry => ({
  index,
  term,
  type: EntryType.Normal,
  data: Buffer.from(text),
});

const texts = (es: Entry[]): string[] => es.map((e) => Buffer.from(e.data).toString());

describe('DiskStorage', () => {
  it('appends entries and reads them back with terms and bounds', async () => {
    const { s } = await fresh();
    expect(s.firstIndex()).toBe(1);
    expect(s.lastIndex()).toBe(0);
    await s.persist({ entries: [ent(1, 1), ent(2, 1), ent(3, 2)], hardState: { term: 2, vote: 1, commit: 2 }, sync: true });
    expect(s.lastIndex()).toBe(3);
    expect(s.term(3)).toBe(2);
    expect(s.term(0)).toBe(0);
    expect(texts(s.entries(1, 4, 1 << 20))).toEqual(['e1t1', 'e2t1', 'e3t2']);
    // maxBytes limits the answer but always returns at least one entry.
    expect(s.entries(1, 4, 1)).toHaveLength(1);
    expect(() => s.term(4)).toThrow(UnavailableError);
    expect(() => s.entries(2, 5, 100)).toThrow(UnavailableError);
  });

  it('overwrites a conflicting suffix and deletes what was after it', async () => {
    const { dir, s } = await fresh();
    await s.persist({ entries: [1, 2, 3, 4, 5].map((i) => ent(i, 1)), sync: true });
    await s.persist({ entries: [ent(3, 2), ent(4, 2)], sync: true });
    expect(s.lastIndex()).toBe(4);
    expect(texts(s.entries(1, 5, 1 << 20))).toEqual(['e1t1', 'e2t1', 'e3t2', 'e4t2']);
    await expect(s.persist({ entries: [ent(7, 2)], sync: true })).rejects.toMatchObject({ code: 'EINVAL' });
    await s.close();
    const r = await DiskStorage.open(dir);
    cleanups.push(() => r.close());
    expect(r.lastIndex()).toBe(4);
    expect(texts(r.entries(1, 5, 1 << 20))).toEqual(['e1t1', 'e2t1', 'e3t2', 'e4t2']);
  });

  it('keeps hard state, conf and peers across close and reopen', async () => {
    const { dir, s } = await fresh();
    await s.bootstrap([3, 1, 2]);
    await s.persist({ entries: [ent(2, 1), ent(3, 1)], hardState: { term: 5, vote: 2, commit: 3 }, sync: true });
    await s.setPeers(new Map([[1, '127.0.0.1:1'], [2, '127.0.0.1:2']]));
    await s.close();
    const r = await DiskStorage.open(dir);
    cleanups.push(() => r.close());
    expect(r.initialState()).toEqual({ hardState: { term: 5, vote: 2, commit: 3 }, conf: { voters: [1, 2, 3], learners: [] } });
    expect(r.firstIndex()).toBe(2);
    expect(r.lastIndex()).toBe(3);
    expect(r.term(1)).toBe(1);
    expect(r.snapshot().metadata.index).toBe(1);
    expect(r.peerAddresses().get(2)).toBe('127.0.0.1:2');
  });

  it('compacts below a snapshot and reads old entries from disk past the memory cache', async () => {
    const { dir, s } = await fresh({ cacheEntries: 4 });
    await s.persist({ entries: Array.from({ length: 20 }, (_, i) => ent(i + 1, 1 + Math.floor(i / 10))), sync: true });
    // Entries 1..16 are no longer cached: they come from LevelDB.
    expect(texts(s.entries(2, 4, 1 << 20))).toEqual(['e2t1', 'e3t1']);
    await s.createSnapshot({ index: 15, term: 2, conf: { voters: [1], learners: [] } }, 12);
    expect(s.firstIndex()).toBe(13);
    expect(s.term(12)).toBe(2);
    expect(() => s.term(11)).toThrow(CompactedError);
    expect(() => s.entries(12, 14, 100)).toThrow(CompactedError);
    expect(texts(s.entries(13, 21, 1 << 20))).toHaveLength(8);
    await s.close();
    const raw = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    expect(await raw.get(entryKey(12))).toBeUndefined();
    expect(await raw.get(entryKey(13))).toBeDefined();
    await raw.close();
    const r = await DiskStorage.open(dir);
    cleanups.push(() => r.close());
    expect(r.firstIndex()).toBe(13);
    expect(r.lastIndex()).toBe(20);
    expect(r.snapshot().metadata).toEqual({ index: 15, term: 2, conf: { voters: [1], learners: [] } });
  });

  it('installing a snapshot replaces the whole log', async () => {
    const { s } = await fresh();
    await s.persist({ entries: [ent(1, 1), ent(2, 1)], sync: true });
    await s.persist({ snapshot: { index: 50, term: 4, conf: { voters: [1, 2], learners: [3] } }, entries: [ent(51, 4)], sync: true });
    expect(s.firstIndex()).toBe(51);
    expect(s.lastIndex()).toBe(51);
    expect(s.term(50)).toBe(4);
    expect(s.initialState().conf).toEqual({ voters: [1, 2], learners: [3] });
  });

  it('reports damaged bytes on disk with ECORRUPT', async () => {
    const { dir, s } = await fresh();
    await s.persist({ entries: [ent(1, 1), ent(2, 1)], sync: true });
    await s.close();
    const raw = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const v = (await raw.get(entryKey(2)))!;
    v[v.length - 1]! ^= 0xff;
    await raw.put(entryKey(2), v);
    await raw.close();
    await expect(DiskStorage.open(dir)).rejects.toMatchObject({ code: 'ECORRUPT', message: expect.stringContaining('entry 2') });

    const raw2 = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await raw2.put(entryKey(2), Buffer.from('xy'));
    await raw2.close();
    await expect(DiskStorage.open(dir)).rejects.toMatchObject({ code: 'ECORRUPT', message: expect.stringContaining('truncated') });

    const raw3 = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await raw3.del(entryKey(2));
    await raw3.put(Buffer.from('h'), Buffer.from('{"term":"x"}'));
    await raw3.close();
    await expect(DiskStorage.open(dir)).rejects.toMatchObject({ code: 'ECORRUPT', message: expect.stringContaining("'h'") });
  });
});
