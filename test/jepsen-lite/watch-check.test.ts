/**
 * The watch-feed checker on hand-built runs: a clean run passes, and each way a feed can break
 * (a missed event, a repeat, events out of order, an event outside the prefix or not in the log,
 * an acknowledged write lost, a change applied twice, an invented event, revisions against real
 * time, nodes that disagree, a watcher that never caught up, a compaction too early) is named.
 */
import { describe, expect, it } from 'vitest';
import { checkWatch, eventIdentity, formatWatchResult, underPrefix, type FeedEvent, type FeedWrite, type WatchCheckInput, type WatcherLog } from './checker/watch.js';

const ROOT = '/w';

function ev(revision: number, kind: string, path: string, version = 0): FeedEvent {
  return { revision, kind, path, ino: 100 + revision, version };
}

/** r10 create /w/p0/a, r11 create /w/p1/b, r12 truncate /w/p0/a@1, r13 unlink /w/p1/b. */
const LOG: FeedEvent[] = [ev(10, 'create', '/w/p0/a'), ev(11, 'create', '/w/p1/b'), ev(12, 'truncate', '/w/p0/a', 1), ev(13, 'unlink', '/w/p1/b')];

function write(e: FeedEvent, i: number, outcome: FeedWrite['outcome'] = 'ok'): FeedWrite {
  // Sequential in time: write i runs in [10i, 10i + 5].
  return { id: eventIdentity(e), outcome, invokeNs: BigInt(10 * i), ...(outcome === 'ok' ? { completeNs: BigInt(10 * i + 5) } : {}), process: i };
}

function watcher(w: number, prefix: string, events: FeedEvent[], progress = 13, extra: Partial<WatcherLog> = {}): WatcherLog {
  return { watcher: w, prefix, fromRevision: 10, events: events.map((e, i) => ({ ...e, session: 1 + (i % 2), node: 1 + (i % 3) })), progress, sessions: 2, compacted: [], ...extra };
}

function input(over: Partial<WatchCheckInput> = {}): WatchCheckInput {
  return {
    root: ROOT,
    fromRevision: 10,
    targetRevision: 13,
    writes: LOG.map((e, i) => write(e, i)),
    watchers: [watcher(0, '/w/p0', [LOG[0]!, LOG[2]!]), watcher(1, '/w/p1', [LOG[1]!, LOG[3]!]), watcher(2, '/w', LOG)],
    references: [1, 2, 3].map((node) => ({ node, events: LOG, upTo: 13 })),
    maxEvents: 100_000,
    ...over,
  };
}

function anomalies(i: WatchCheckInput): string {
  const r = checkWatch(i);
  expect(r.valid).toBe(false);
  return r.anomalies.join('\n');
}

describe('watch-feed checker', () => {
  it('accepts a clean run and counts it', () => {
    const r = checkWatch(input());
    expect(r.anomalies).toEqual([]);
    expect(r.valid).toBe(true);
    expect(r.stats).toMatchObject({ writes: 4, acknowledged: 4, events: 4, watchers: 3, delivered: 8 });
    expect(formatWatchResult(r).split('\n')[0]).toMatch(/^valid: watch feed; 4 writes/);
  });

  it('prefix matching is by whole path components', () => {
    expect(underPrefix({ path: '/w/p1/x' }, '/w/p1')).toBe(true);
    expect(underPrefix({ path: '/w/p10/x' }, '/w/p1')).toBe(false);
    expect(underPrefix({ path: '/w/p0/x', newPath: '/w/p1/y' }, '/w/p1')).toBe(true);
  });

  it('names a missed event', () => {
    const a = anomalies(input({ watchers: [watcher(0, '/w/p0', [LOG[2]!])] }));
    expect(a).toContain('watcher missed an event');
    expect(a).toContain('r10 create /w/p0/a');
  });

  it('names an event seen twice and events out of order', () => {
    expect(anomalies(input({ watchers: [watcher(0, '/w/p0', [LOG[0]!, LOG[2]!, LOG[2]!])] }))).toContain('watcher saw an event twice');
    expect(anomalies(input({ watchers: [watcher(0, '/w/p0', [LOG[2]!, LOG[0]!])] }))).toContain('watcher saw events out of order');
  });

  it('names an event outside the prefix, one the log lacks, and one that differs from the log', () => {
    expect(anomalies(input({ watchers: [watcher(0, '/w/p0', [LOG[0]!, LOG[1]!, LOG[2]!])] }))).toContain('outside its prefix');
    expect(anomalies(input({ watchers: [watcher(0, '/w/p0', [LOG[0]!, ev(11, 'create', '/w/p0/zz'), LOG[2]!])] }))).toContain('different event than the log has');
    expect(anomalies(input({ targetRevision: 13, watchers: [watcher(2, '/w', [...LOG.slice(0, 3), ev(12.5, 'create', '/w/p0/ghost'), LOG[3]!])] }))).toContain('the log does not have');
  });

  it('names a watcher that did not catch up, and a compaction of a revision that should be kept', () => {
    expect(anomalies(input({ watchers: [watcher(0, '/w/p0', [LOG[0]!], 10)] }))).toContain('did not catch up');
    const a = anomalies(input({ watchers: [watcher(0, '/w/p0', [LOG[2]!], 13, { compacted: [{ asked: 10, firstRevision: 12 }] })] }));
    expect(a).toContain('ECOMPACTED for a revision that should be kept');
    expect(a).not.toContain('missed'); // the compacted range is excused from the gap check
  });

  it('names an acknowledged write that is not in the log, and tolerates an unknown one either way', () => {
    const log = LOG.filter((e) => e.revision !== 11);
    const refs = [1, 2, 3].map((node) => ({ node, events: log, upTo: 13 }));
    const watchers = [watcher(2, '/w', log)];
    expect(anomalies(input({ references: refs, watchers }))).toContain('acknowledged write lost');
    const writes = LOG.map((e, i) => write(e, i, i === 1 ? 'info' : 'ok'));
    expect(checkWatch(input({ references: refs, watchers, writes })).anomalies).toEqual([]);
    expect(checkWatch(input({ writes })).stats.unknownApplied).toBe(1);
  });

  it('names a change applied twice, a failed write that took effect, and an event no write explains', () => {
    const twice = [...LOG, ev(14, 'create', '/w/p0/a')];
    const refs = [1, 2, 3].map((node) => ({ node, events: twice, upTo: 14 }));
    expect(anomalies(input({ targetRevision: 14, references: refs, watchers: [watcher(2, '/w', twice, 14)] }))).toContain('change applied more than once');
    expect(anomalies(input({ writes: LOG.map((e, i) => write(e, i, i === 3 ? 'fail' : 'ok')) }))).toContain('failed write took effect');
    expect(anomalies(input({ writes: LOG.slice(0, 3).map((e, i) => write(e, i)) }))).toContain('event without a write');
  });

  it('names revisions that contradict real time', () => {
    // The write that got r10 began after the one that got r12 was acknowledged.
    const writes = LOG.map((e, i) => write(e, i === 0 ? 5 : i));
    expect(anomalies(input({ writes }))).toContain('revision order contradicts real time');
  });

  it('names nodes that disagree or lag', () => {
    const other = LOG.map((e) => (e.revision === 12 ? { ...e, version: 2 } : e));
    const refs = [{ node: 1, events: LOG, upTo: 13 }, { node: 2, events: other, upTo: 13 }, { node: 3, events: LOG.slice(0, 2), upTo: 11 }];
    const a = anomalies(input({ references: refs }));
    expect(a).toContain('nodes disagree');
    expect(a).toContain('n3 delivered up to r11');
  });
});
