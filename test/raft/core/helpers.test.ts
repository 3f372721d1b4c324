/**
 * The small pure pieces of the core, table-driven: quorum arithmetic, the in-flight window,
 * the ConfChange codec and rule, and MemoryStorage's log/snapshot/compaction semantics.
 */
import { describe, expect, it } from 'vitest';
import { CompactedError, ConfChangeType, UnavailableError } from '../../../src/raft/types.js';
import { MemoryStorage, applyToConf, decodeConfChange, encodeConfChange } from '../../../src/raft/core/index.js';
import { Inflights } from '../../../src/raft/core/progress.js';
import { committedIndex, voteResult } from '../../../src/raft/core/quorum.js';
import { bytes, entriesOfTerms } from './harness.js';

describe('quorum', () => {
  const commits: { matches: number[]; want: number }[] = [
    { matches: [5], want: 5 },
    { matches: [5, 3, 1], want: 3 },
    { matches: [5, 5, 1, 1], want: 1 },
    { matches: [9, 8, 7, 2, 1], want: 7 },
  ];
  for (const c of commits) {
    it(`matches ${JSON.stringify(c.matches)} commit ${c.want}`, () => {
      const ids = c.matches.map((_, i) => i + 1);
      expect(committedIndex(ids, (id) => c.matches[id - 1]!)).toBe(c.want);
    });
  }

  it('vote outcomes', () => {
    const v = new Set([1, 2, 3, 4]);
    expect(voteResult(v, new Map([[1, true], [2, true]]))).toBe('pending');
    expect(voteResult(v, new Map([[1, true], [2, true], [3, true]]))).toBe('won');
    expect(voteResult(v, new Map([[1, true], [2, false], [3, false]]))).toBe('lost');
    expect(voteResult(v, new Map([[9, true], [8, true], [7, true]]))).toBe('pending'); // non-voters do not count
  });
});

describe('in-flight window', () => {
  it('is full by count or by bytes and frees in order', () => {
    const w = new Inflights(3, 100);
    w.add(1, 10);
    w.add(2, 10);
    expect(w.full()).toBe(false);
    w.add(3, 10);
    expect(w.full()).toBe(true);
    w.freeLE(2);
    expect([w.count(), w.bytes]).toEqual([1, 10]);
    w.add(4, 90);
    expect(w.full()).toBe(true); // 100 bytes
    w.freeFirstOne();
    expect([w.count(), w.bytes]).toEqual([1, 90]);
    expect(() => new Inflights(0, 0)).toThrow();
  });
});

describe('ConfChange', () => {
  it('round-trips and refuses damaged payloads', () => {
    const cc = { type: ConfChangeType.AddLearner, nodeId: 7, context: bytes('{"addr":"127.0.0.1:1"}') };
    expect(decodeConfChange(encodeConfChange(cc))).toEqual(cc);
    for (const bad of ['', 'null', '{"v":1}', '{"v":1,"type":5,"nodeId":1,"context":""}', '{"v":1,"type":0,"nodeId":0,"context":""}']) {
      expect(() => decodeConfChange(bytes(bad))).toThrowError(expect.objectContaining({ code: 'ECORRUPT' }));
    }
    expect(() => decodeConfChange(new Uint8Array([0xff, 0xfe]))).toThrowError(expect.objectContaining({ code: 'ECORRUPT' }));
  });

  const rules: { type: ConfChangeType; id: number; want: { voters: number[]; learners: number[] } }[] = [
    { type: ConfChangeType.AddNode, id: 4, want: { voters: [1, 2, 3, 4], learners: [5] } },
    { type: ConfChangeType.AddNode, id: 5, want: { voters: [1, 2, 3, 5], learners: [] } }, // promote
    { type: ConfChangeType.AddNode, id: 2, want: { voters: [1, 2, 3], learners: [5] } }, // already
    { type: ConfChangeType.AddLearner, id: 6, want: { voters: [1, 2, 3], learners: [5, 6] } },
    { type: ConfChangeType.AddLearner, id: 1, want: { voters: [1, 2, 3], learners: [5] } }, // no demotion
    { type: ConfChangeType.RemoveNode, id: 2, want: { voters: [1, 3], learners: [5] } },
    { type: ConfChangeType.RemoveNode, id: 5, want: { voters: [1, 2, 3], learners: [] } },
    { type: ConfChangeType.RemoveNode, id: 9, want: { voters: [1, 2, 3], learners: [5] } }, // stale id
  ];
  for (const r of rules) {
    it(`${ConfChangeType[r.type]} ${r.id} on voters [1,2,3] learners [5]`, () => {
      expect(applyToConf({ voters: [1, 2, 3], learners: [5] }, { type: r.type, nodeId: r.id, context: new Uint8Array(0) })).toEqual(r.want);
    });
  }
});

describe('MemoryStorage', () => {
  it('appends, truncates on overwrite, and reports its bounds', () => {
    const s = new MemoryStorage();
    s.append(entriesOfTerms([1, 1, 2]));
    expect([s.firstIndex(), s.lastIndex(), s.term(0), s.term(3)]).toEqual([1, 3, 0, 2]);
    s.append(entriesOfTerms([3], 2)); // replaces 2 and 3
    expect(s.allEntries().map((e) => e.term)).toEqual([1, 3]);
    expect(() => s.term(5)).toThrow(UnavailableError);
    expect(() => s.append(entriesOfTerms([3], 5))).toThrowError(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('limits entries by size but returns at least one', () => {
    const s = new MemoryStorage();
    s.append(entriesOfTerms([1, 1, 1, 1]));
    expect(s.entries(1, 5, 0).length).toBe(1);
    expect(s.entries(1, 5, Number.MAX_SAFE_INTEGER).length).toBe(4);
    expect(s.entries(2, 2, 100)).toEqual([]);
  });

  it('snapshots and compacts; the snapshot index keeps its term', () => {
    const s = new MemoryStorage({ conf: { voters: [1], learners: [] } });
    s.append(entriesOfTerms([1, 2, 2, 3]));
    s.createSnapshot(3, { voters: [1, 2], learners: [] }, bytes('state'));
    s.compact(3);
    expect([s.firstIndex(), s.lastIndex(), s.term(3)]).toEqual([4, 4, 2]);
    expect(() => s.term(2)).toThrow(CompactedError);
    expect(() => s.entries(3, 4, 100)).toThrow(CompactedError);
    expect(s.initialState().conf).toEqual({ voters: [1, 2], learners: [] });
    expect(() => s.createSnapshot(2, { voters: [1], learners: [] }, bytes(''))).toThrowError(expect.objectContaining({ code: 'ECOMPACTED' }));
    s.applySnapshot({ metadata: { index: 10, term: 5, conf: { voters: [1, 2, 3], learners: [] } }, data: bytes('x') });
    expect([s.firstIndex(), s.lastIndex(), s.term(10)]).toEqual([11, 10, 5]);
    s.append(entriesOfTerms([5, 5], 9)); // 9 is compacted: only 10 is kept... and it replaces nothing before 11
    expect(s.lastIndex()).toBe(10);
  });
});
