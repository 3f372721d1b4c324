/**
 * Log replication scenarios after the Raft paper (§5.3, §5.4.2): commit by majority, commit
 * of preceding entries, the figure-8 rule, the consistency check with its reject hint,
 * truncation of conflicts, repair of every follower log of figure 7, and the flow limits.
 */
import { describe, expect, it } from 'vitest';
import { CairnError } from '../../../src/common/errors.js';
import { EntryType, MessageType, Role, type Entry } from '../../../src/raft/types.js';
import { Network, bytes, entriesOfTerms, makeLeader, msg, soloNode, type TestNode } from './harness.js';

const termsOf = (es: Entry[]): number[] => es.map((e) => e.term);

describe('commit (§5.3, §5.4.2)', () => {
  // Cluster size, followers that acknowledge → committed?
  const cases: { size: number; acks: number[]; committed: boolean }[] = [
    { size: 1, acks: [], committed: true },
    { size: 3, acks: [], committed: false },
    { size: 3, acks: [2], committed: true },
    { size: 3, acks: [2, 3], committed: true },
    { size: 5, acks: [], committed: false },
    { size: 5, acks: [2], committed: false },
    { size: 5, acks: [2, 3], committed: true },
    { size: 5, acks: [2, 3, 4, 5], committed: true },
  ];
  for (const c of cases) {
    it(`cluster of ${c.size}: an entry acknowledged by ${JSON.stringify(c.acks)} is ${c.committed ? '' : 'not '}committed`, () => {
      const ids = Array.from({ length: c.size }, (_, i) => i + 1);
      const n = soloNode(1, ids);
      makeLeader(n);
      n.drain();
      n.rn.propose(bytes('x'));
      n.drain();
      const li = n.raft.log.lastIndex();
      for (const a of c.acks) n.rn.step(msg({ type: MessageType.AppResp, from: a, to: 1, term: n.raft.term, index: li }));
      n.drain();
      expect(n.raft.log.committed >= li).toBe(c.committed);
      expect(n.appliedData().includes('x')).toBe(c.committed);
    });
  }

  it('committing an entry commits every entry before it, of earlier terms too', () => {
    const n = soloNode(1, [1, 2, 3], { term: 2, log: entriesOfTerms([1, 2]) });
    makeLeader(n); // term 3, no-op at index 3
    n.rn.propose(bytes('x')); // index 4
    n.drain();
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 3, index: 4 }));
    n.drain();
    expect(n.raft.log.committed).toBe(4);
    expect(n.applied.map((e) => e.index)).toEqual([1, 2, 3, 4]);
  });

  it("figure 8: a leader does not commit an older term's entry by counting replicas", () => {
    // S1 leads term 4 with [1, 2]; the entry of term 2 at index 2 reaches S2 and S3 (a majority).
    const n = soloNode(1, [1, 2, 3, 4, 5], { term: 3, log: entriesOfTerms([1, 2]), commit: 1 });
    makeLeader(n);
    expect(n.raft.term).toBe(4);
    n.drain();
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 4, index: 2 }));
    n.rn.step(msg({ type: MessageType.AppResp, from: 3, to: 1, term: 4, index: 2 }));
    n.drain();
    expect(n.raft.log.committed).toBe(1); // stored on S1, S2, S3 — and still not committed
    // Once the leader's own no-op (index 3, term 4) is on a majority, both commit.
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 4, index: 3 }));
    n.rn.step(msg({ type: MessageType.AppResp, from: 3, to: 1, term: 4, index: 3 }));
    expect(n.raft.log.committed).toBe(3);
  });

  it('figure 8 (d): that uncommitted entry can indeed be overwritten by a later leader', () => {
    const net = new Network([1, 2, 3, 4, 5], {}, new Map([
      [1, { log: entriesOfTerms([1, 2]), term: 4 }],
      [2, { log: entriesOfTerms([1, 2]), term: 4 }],
      [3, { log: entriesOfTerms([1, 2]), term: 4 }],
      [4, { log: entriesOfTerms([1]), term: 4 }],
      [5, { log: entriesOfTerms([1, 3]), term: 4 }],
    ]));
    net.isolate(1);
    net.campaign(5); // S5's last term 3 beats [1, 2]: S2, S3, S4 vote for it
    expect(net.node(5).raft.role).toBe(Role.Leader);
    net.tickAll(1);
    for (const id of [2, 3, 4, 5]) expect(net.node(id).raft.log.termOrZero(2)).toBe(3);
  });
});

describe('the consistency check (§5.3)', () => {
  // Follower log [t1, t2], commit 1.
  const cases: { index: number; logTerm: number; reject: boolean; respIndex: number; hint?: [number, number] }[] = [
    { index: 0, logTerm: 0, reject: false, respIndex: 1 }, // below commit: answers its commit
    { index: 1, logTerm: 1, reject: false, respIndex: 1 },
    { index: 2, logTerm: 2, reject: false, respIndex: 2 },
    { index: 2, logTerm: 1, reject: true, respIndex: 2, hint: [1, 1] }, // term mismatch
    { index: 3, logTerm: 3, reject: true, respIndex: 3, hint: [2, 2] }, // missing entry
  ];
  for (const c of cases) {
    it(`append after (${c.index}, term ${c.logTerm}) is ${c.reject ? 'rejected with hint ' + JSON.stringify(c.hint) : 'accepted'}`, () => {
      const n = soloNode(2, [1, 2, 3], { term: 2, log: entriesOfTerms([1, 2]), commit: 1 });
      n.drain();
      n.rn.step(msg({ type: MessageType.App, from: 1, to: 2, term: 2, index: c.index, logTerm: c.logTerm, commit: 1 }));
      const resp = n.drain().find((m) => m.type === MessageType.AppResp)!;
      expect(resp.reject).toBe(c.reject);
      expect(resp.index).toBe(c.respIndex);
      if (c.hint) expect([resp.rejectHint, resp.logTerm]).toEqual(c.hint);
    });
  }

  // etcd's TestFollowerAppendEntries: follower log [t1, t2] (indexes 1, 2).
  const appends: { index: number; logTerm: number; ents: number[]; want: number[] }[] = [
    { index: 2, logTerm: 2, ents: [3], want: [1, 2, 3] },
    { index: 1, logTerm: 1, ents: [3, 4], want: [1, 3, 4] }, // conflict at 2: truncated
    { index: 0, logTerm: 0, ents: [1], want: [1, 2] }, // already there: nothing changes
    { index: 0, logTerm: 0, ents: [3], want: [3] }, // conflict at 1: everything replaced
  ];
  for (const a of appends) {
    it(`append ${JSON.stringify(a.ents)} after ${a.index} leaves the log ${JSON.stringify(a.want)}`, () => {
      const n = soloNode(2, [1, 2, 3], { term: 2, log: entriesOfTerms([1, 2]) });
      n.drain();
      n.rn.step(msg({ type: MessageType.App, from: 1, to: 2, term: 4, index: a.index, logTerm: a.logTerm, entries: entriesOfTerms(a.ents, a.index + 1) }));
      n.drain();
      expect(termsOf(n.storage.allEntries())).toEqual(a.want);
    });
  }
});

describe('figure 7: the leader repairs every divergent follower log', () => {
  const leaderLog = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
  const followers: Record<string, number[]> = {
    a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
    b: [1, 1, 1, 4],
    c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    e: [1, 1, 1, 4, 4, 4, 4],
    f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
  };
  for (const [name, log] of Object.entries(followers)) {
    it(`follower (${name}) ends with the leader's log`, () => {
      const net = new Network([1, 2, 3], {}, new Map([
        [1, { log: entriesOfTerms(leaderLog), term: 7 }],
        [2, { log: entriesOfTerms(log), term: 7 }],
        [3, { log: entriesOfTerms(leaderLog), term: 7 }],
      ]));
      net.campaign(1);
      expect(net.node(1).raft.role).toBe(Role.Leader);
      net.propose(1, 'x');
      net.tickAll(2);
      const want = net.node(1).storage.allEntries();
      expect(termsOf(want)).toEqual([...leaderLog, 8, 8]);
      const got = net.node(2).storage.allEntries();
      expect(termsOf(got)).toEqual(termsOf(want));
      expect(got.map((e) => Buffer.from(e.data).toString())).toEqual(want.map((e) => Buffer.from(e.data).toString()));
      expect(net.node(2).raft.log.committed).toBe(12);
    });
  }

  it('fast backtracking: repairing follower (f) takes a few round trips, not one per entry', () => {
    const net = new Network([1, 2, 3], {}, new Map([
      [1, { log: entriesOfTerms(leaderLog), term: 7 }],
      [2, { log: entriesOfTerms(followers.f!), term: 7 }],
      [3, { log: entriesOfTerms(leaderLog), term: 7 }],
    ]));
    net.campaign(1);
    const rejects = net.trace.filter((m) => m.type === MessageType.AppResp && m.from === 2 && m.reject);
    expect(rejects.length).toBeGreaterThan(0);
    expect(rejects.length).toBeLessThanOrEqual(3);
  });
});

describe('flow control', () => {
  it('the in-flight limit (messages) holds while nothing is acknowledged', () => {
    const n = soloNode(1, [1, 2, 3], {}, { maxInflightMsgs: 3, maxSizePerMsgBytes: 1 });
    makeLeader(n);
    n.drain();
    // Node 2 acknowledges the no-op: replicate state, pipelining on.
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 1, index: 1 }));
    n.drain();
    expect(n.rn.status().progress.get(2)?.state).toBe('replicate');
    let sent = 0;
    for (let i = 0; i < 20; i++) {
      n.rn.propose(bytes(`e${i}`));
      sent += n.drain().filter((m) => m.type === MessageType.App && m.to === 2 && m.entries.length > 0).length;
      expect(n.rn.status().progress.get(2)!.inflight).toBeLessThanOrEqual(3);
    }
    expect(sent).toBe(3);
    // An acknowledgement opens the window again, and the pipeline refills.
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 1, index: 3 }));
    const more = n.drain().filter((m) => m.type === MessageType.App && m.to === 2 && m.entries.length > 0);
    expect(more.length).toBe(2);
  });

  it('the in-flight limit (bytes) holds', () => {
    const maxInflightBytes = 200;
    const n = soloNode(1, [1, 2, 3], {}, { maxInflightMsgs: 100, maxInflightBytes, maxSizePerMsgBytes: 1000 });
    makeLeader(n);
    n.drain();
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 1, index: 1 }));
    n.drain();
    for (let i = 0; i < 30; i++) {
      n.rn.propose(new Uint8Array(34)); // 50 bytes each with overhead
      n.drain();
      expect(n.rn.status().progress.get(2)!.inflightBytes).toBeLessThanOrEqual(maxInflightBytes);
    }
    expect(n.rn.status().progress.get(2)!.inflightBytes).toBe(200);
  });

  it('batching: one append carries many entries up to maxSizePerMsgBytes', () => {
    const n = soloNode(1, [1, 2, 3], {}, { maxSizePerMsgBytes: 200 });
    makeLeader(n);
    for (let i = 0; i < 10; i++) n.rn.propose(new Uint8Array(34));
    n.drain();
    // Node 2 rejects the first append: the leader probes from the start with a full batch.
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 1, index: 1 }));
    const apps = n.drain().filter((m) => m.type === MessageType.App && m.to === 2);
    expect(apps.length).toBeGreaterThan(0);
    for (const a of apps) {
      const size = a.entries.reduce((s, e) => s + e.data.byteLength + 16, 0);
      expect(size).toBeLessThanOrEqual(200);
      expect(a.entries.length).toBeGreaterThan(1);
    }
  });

  it('proposals past maxUncommittedBytes are refused with EAGAIN', () => {
    const n = soloNode(1, [1, 2, 3], {}, { maxUncommittedBytes: 100 });
    makeLeader(n);
    n.rn.propose(new Uint8Array(60));
    let err: unknown;
    try {
      n.rn.propose(new Uint8Array(60));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('EAGAIN');
  });

  it('a follower that knows no leader refuses a proposal with ENOTLEADER; one that knows forwards it', () => {
    const n = soloNode(2, [1, 2, 3]);
    expect(() => n.rn.propose(bytes('x'))).toThrowError(expect.objectContaining({ code: 'ENOTLEADER' }));
    n.rn.step(msg({ type: MessageType.Heartbeat, from: 1, to: 2, term: 1 }));
    n.drain();
    n.rn.propose(bytes('x'));
    const fwd = n.drain().find((m) => m.type === MessageType.Prop)!;
    expect(fwd.to).toBe(1);
    expect(Buffer.from(fwd.entries[0]!.data).toString()).toBe('x');
  });
});

describe('lazy commit propagation (lazyCommit, what the driver runs)', () => {
  const commitAppends = (ms: ReturnType<TestNode['drain']>) => ms.filter((m) => m.type === MessageType.App);

  it('a commit rides on the next append instead of a round of empty appends; flushCommit and the tick send it alone', () => {
    const n = soloNode(1, [1, 2, 3], {}, { lazyCommit: true, heartbeatTicks: 5 });
    makeLeader(n);
    n.drain();
    const ack = (from: number, index: number) => n.rn.step(msg({ type: MessageType.AppResp, from, to: 1, term: n.raft.term, index }));
    let li = n.raft.log.lastIndex();
    ack(2, li);
    ack(3, li);
    n.drain();
    n.rn.propose(bytes('x'));
    n.drain();
    li = n.raft.log.lastIndex();
    // A majority holds x: it commits and applies on the leader, but no append goes out for it.
    ack(2, li);
    const afterAck = n.drain();
    expect(n.raft.log.committed).toBe(li);
    expect(n.appliedData()).toContain('x');
    expect(commitAppends(afterAck)).toEqual([]);
    expect(n.rn.hasUnsentCommit()).toBe(true);
    // The next proposal's appends carry the new commit index to both followers.
    n.rn.propose(bytes('y'));
    const withY = commitAppends(n.drain());
    expect(withY.map((m) => [m.to, m.commit]).sort()).toEqual([[2, li], [3, li]]);
    expect(n.rn.hasUnsentCommit()).toBe(false);
    // With no next write, flushCommit sends the commit index alone.
    const ly = n.raft.log.lastIndex();
    ack(2, ly);
    ack(3, ly);
    expect(commitAppends(n.drain())).toEqual([]);
    n.rn.flushCommit();
    const flushed = commitAppends(n.drain());
    expect(flushed.map((m) => [m.to, m.commit, m.entries.length]).sort()).toEqual([[2, ly, 0], [3, ly, 0]]);
    expect(n.rn.hasUnsentCommit()).toBe(false);
    // And so does the next tick when nobody calls flushCommit.
    n.rn.propose(bytes('z'));
    n.drain();
    const lz = n.raft.log.lastIndex();
    ack(2, lz);
    expect(commitAppends(n.drain())).toEqual([]);
    n.rn.tick();
    expect(commitAppends(n.drain()).map((m) => [m.to, m.commit]).sort()).toEqual([[2, lz], [3, lz]]);
  });

  it('without lazyCommit the leader broadcasts every commit advance at once', () => {
    const n = soloNode(1, [1, 2, 3], {}, { heartbeatTicks: 5 });
    makeLeader(n);
    n.drain();
    for (const from of [2, 3]) n.rn.step(msg({ type: MessageType.AppResp, from, to: 1, term: n.raft.term, index: n.raft.log.lastIndex() }));
    n.drain();
    n.rn.propose(bytes('x'));
    n.drain();
    const li = n.raft.log.lastIndex();
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: n.raft.term, index: li }));
    expect(commitAppends(n.drain()).map((m) => [m.to, m.commit]).sort()).toEqual([[2, li], [3, li]]);
    expect(n.rn.hasUnsentCommit()).toBe(false);
  });

  it('a cluster with lazyCommit converges: every node applies every write once writes stop', () => {
    const net = new Network([1, 2, 3], { lazyCommit: true });
    net.campaign(1);
    for (const v of ['a', 'b', 'c']) {
      net.node(1).rn.propose(bytes(v));
      net.deliver();
    }
    // The last commit index waits for a flush: followers have applied a and b, not yet c.
    expect(net.node(2).appliedData()).not.toContain('c');
    net.node(1).rn.flushCommit();
    net.deliver();
    for (const id of [1, 2, 3]) expect(net.node(id).appliedData().filter((d) => ['a', 'b', 'c'].includes(d))).toEqual(['a', 'b', 'c']);
  });
});

describe('lazy commit and forwarded proposals', () => {
  it('a commit that covers an entry a follower forwarded goes out at once', () => {
    const n = soloNode(1, [1, 2, 3], {}, { lazyCommit: true, heartbeatTicks: 5 });
    makeLeader(n);
    n.drain();
    for (const from of [2, 3]) n.rn.step(msg({ type: MessageType.AppResp, from, to: 1, term: n.raft.term, index: n.raft.log.lastIndex() }));
    n.drain();
    // Node 2 forwards a proposal: its client waits until node 2 applies it.
    n.rn.step(msg({ type: MessageType.Prop, from: 2, to: 1, term: 0, entries: [{ term: 0, index: 0, type: EntryType.Normal, data: bytes('fwd') }] }));
    n.drain();
    const li = n.raft.log.lastIndex();
    n.rn.step(msg({ type: MessageType.AppResp, from: 3, to: 1, term: n.raft.term, index: li }));
    const sent = n.drain().filter((m) => m.type === MessageType.App);
    expect(sent.map((m) => [m.to, m.commit]).sort()).toEqual([[2, li], [3, li]]);
    expect(n.rn.hasUnsentCommit()).toBe(false);
  });
});
