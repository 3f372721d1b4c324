/**
 * Election scenarios after the Raft paper (§5.1, §5.2, §5.4.1), in the spirit of etcd's
 * raft paper tests: term rules, one vote per term, the up-to-date check, vote rounds in
 * clusters of 1, 3 and 5, randomized timeouts, pre-vote and check-quorum.
 */
import { describe, expect, it } from 'vitest';
import { MessageType, NONE, Role, type NodeId } from '../../../src/raft/types.js';
import { Network, entriesOfTerms, makeLeader, msg, soloNode, seededRandom } from './harness.js';

describe('terms (§5.1)', () => {
  const roles = [Role.Follower, Role.Candidate, Role.Leader] as const;
  for (const role of roles) {
    it(`a ${role} that sees a higher term becomes a follower of that term`, () => {
      const n = soloNode(1, [1, 2, 3], { term: 1 });
      if (role === Role.Candidate) n.rn.campaign();
      if (role === Role.Leader) makeLeader(n);
      n.drain();
      const higher = n.raft.term + 3;
      n.rn.step(msg({ type: MessageType.App, from: 2, to: 1, term: higher, index: 0, logTerm: 0 }));
      expect(n.raft.role).toBe(Role.Follower);
      expect(n.raft.term).toBe(higher);
      expect(n.raft.lead).toBe(2);
    });
  }

  it('a message of a stale term is ignored', () => {
    const n = soloNode(1, [1, 2, 3], { term: 5 });
    n.drain();
    n.rn.step(msg({ type: MessageType.App, from: 2, to: 1, term: 3, index: 0, logTerm: 0, entries: entriesOfTerms([3]) }));
    expect(n.raft.term).toBe(5);
    expect(n.raft.lead).toBe(NONE);
    expect(n.raft.log.lastIndex()).toBe(0);
    expect(n.drain()).toEqual([]); // with neither pre-vote nor check-quorum, a stale append gets no answer
    n.rn.step(msg({ type: MessageType.Vote, from: 2, to: 1, term: 4, index: 10, logTerm: 4 }));
    expect(n.raft.vote).toBe(NONE);
    expect(n.raft.term).toBe(5);
    // A stale candidate is refused and told the current term, so that it can catch up.
    const out = n.drain();
    expect(out.map((m) => [m.type, m.to, m.term, m.reject])).toEqual([[MessageType.VoteResp, 2, 5, true]]);
  });
});

describe('voting (§5.2, §5.4.1)', () => {
  it('votes at most once per term, first come first served', () => {
    const n = soloNode(1, [1, 2, 3], { term: 1 });
    n.drain();
    n.rn.step(msg({ type: MessageType.Vote, from: 2, to: 1, term: 2, index: 0, logTerm: 0 }));
    n.rn.step(msg({ type: MessageType.Vote, from: 3, to: 1, term: 2, index: 0, logTerm: 0 }));
    n.rn.step(msg({ type: MessageType.Vote, from: 2, to: 1, term: 2, index: 0, logTerm: 0 })); // a retry
    const resps = n.drain().filter((m) => m.type === MessageType.VoteResp);
    expect(resps.map((m) => [m.to, m.reject])).toEqual([[2, false], [3, true], [2, false]]);
    expect(n.raft.vote).toBe(2);
    expect(n.storage.hardState().vote).toBe(2); // persisted before the answer goes out
  });

  // Voter's log: terms [1, 1] (last index 2, last term 1).
  const cases: { index: number; logTerm: number; grant: boolean; why: string }[] = [
    { index: 2, logTerm: 1, grant: true, why: 'same last term, same length' },
    { index: 3, logTerm: 1, grant: true, why: 'same last term, longer' },
    { index: 1, logTerm: 1, grant: false, why: 'same last term, shorter' },
    { index: 1, logTerm: 2, grant: true, why: 'higher last term, shorter' },
    { index: 3, logTerm: 0, grant: false, why: 'lower last term, longer' },
  ];
  for (const c of cases) {
    it(`voter ${c.grant ? 'grants' : 'refuses'} a candidate whose log is ${c.why}`, () => {
      const n = soloNode(1, [1, 2], { term: 1, log: entriesOfTerms([1, 1]) });
      n.drain();
      n.rn.step(msg({ type: MessageType.Vote, from: 2, to: 1, term: 3, index: c.index, logTerm: c.logTerm }));
      const resp = n.drain().find((m) => m.type === MessageType.VoteResp)!;
      expect(resp.reject).toBe(!c.grant);
    });
  }

  // Vote rounds: yes/no answers of the other voters → the candidate's role.
  const rounds: { size: number; votes: Record<number, boolean>; role: Role }[] = [
    { size: 1, votes: {}, role: Role.Leader },
    { size: 3, votes: { 2: true, 3: true }, role: Role.Leader },
    { size: 3, votes: { 2: true }, role: Role.Leader },
    { size: 3, votes: { 2: false, 3: false }, role: Role.Follower },
    { size: 3, votes: { 2: false }, role: Role.Candidate },
    { size: 3, votes: {}, role: Role.Candidate },
    { size: 5, votes: { 2: true, 3: true, 4: true, 5: true }, role: Role.Leader },
    { size: 5, votes: { 2: true, 3: true }, role: Role.Leader },
    { size: 5, votes: { 2: false, 3: false, 4: false }, role: Role.Follower },
    { size: 5, votes: { 2: true, 3: false, 4: false }, role: Role.Candidate },
    { size: 5, votes: { 2: true }, role: Role.Candidate },
    { size: 5, votes: {}, role: Role.Candidate },
  ];
  for (const r of rounds) {
    it(`cluster of ${r.size} with answers ${JSON.stringify(r.votes)} → ${r.role}`, () => {
      const ids = Array.from({ length: r.size }, (_, i) => i + 1);
      const n = soloNode(1, ids, { term: 1 });
      n.rn.campaign();
      const asked = n.drain().filter((m) => m.type === MessageType.Vote);
      expect(asked.map((m) => m.to).sort()).toEqual(ids.filter((i) => i !== 1));
      expect(asked.every((m) => m.term === 2)).toBe(true);
      for (const [from, yes] of Object.entries(r.votes)) {
        n.rn.step(msg({ type: MessageType.VoteResp, from: Number(from), to: 1, term: 2, reject: !yes }));
      }
      expect(n.raft.role).toBe(r.role);
    });
  }

  it('a candidate behind in terms learns the voter\'s term from the refusal and wins next time', () => {
    const net = new Network([1, 2], {}, new Map([
      [1, { log: entriesOfTerms([1, 1]), term: 3 }],
      [2, { log: entriesOfTerms([1]), term: 10 }],
    ]));
    net.campaign(1); // asks for term 4; node 2 is at 10
    expect(net.node(1).raft.term).toBe(10);
    expect(net.node(1).raft.role).toBe(Role.Follower);
    net.campaign(1);
    expect(net.node(1).raft.role).toBe(Role.Leader);
    expect(net.node(1).raft.term).toBe(11);
  });

  it('a follower campaigns after its election timeout; randomized timeouts rarely collide', () => {
    // etcd's TestFollowersElectionTimeoutNonconflict: how often do two followers time out at once?
    let conflicts = 0;
    const rounds = 1000;
    const rand = seededRandom(99);
    for (let round = 0; round < rounds; round++) {
      const ids = [1, 2, 3, 4, 5];
      const nodes = ids.map((id) => soloNode(id, ids, {}, { random: rand }));
      let fired = 0;
      for (let t = 0; fired === 0 && t < 1000; t++) {
        for (const n of nodes) {
          n.rn.tick();
          if (n.raft.role === Role.Candidate) fired++;
        }
      }
      expect(fired).toBeGreaterThan(0);
      if (fired > 1) conflicts++;
    }
    expect(conflicts / rounds).toBeLessThan(0.3);
  });

  it('the election timeout is drawn from [electionTicks, 2*electionTicks)', () => {
    const seen = new Set<number>();
    const n = soloNode(1, [1, 2, 3], {}, { random: seededRandom(5) });
    for (let i = 0; i < 500; i++) {
      n.raft.becomeFollower(n.raft.term, NONE);
      seen.add(n.raft.randomizedElectionTimeout);
    }
    expect(Math.min(...seen)).toBe(10);
    expect(Math.max(...seen)).toBe(19);
  });
});

describe('pre-vote and check-quorum', () => {
  it('a rejoining partitioned node does not depose a healthy leader (pre-vote)', () => {
    const net = new Network([1, 2, 3], { preVote: true });
    net.campaign(1);
    net.propose(1, 'a');
    net.isolate(3);
    net.propose(1, 'b'); // node 3 misses it: its log is behind now
    // Node 3 times out again and again while cut off; pre-vote keeps its term.
    for (let i = 0; i < 100; i++) net.tick(3);
    expect(net.node(3).raft.term).toBe(1);
    net.heal();
    net.tickAll(50);
    expect(net.node(1).raft.role).toBe(Role.Leader);
    expect(net.node(1).raft.term).toBe(1);
    expect(net.node(3).raft.lead).toBe(1);
    expect(net.node(3).appliedData()).toEqual(['a', 'b']);
  });

  it('without pre-vote the same node does depose the leader (what pre-vote prevents)', () => {
    const net = new Network([1, 2, 3], { preVote: false });
    net.campaign(1);
    net.propose(1, 'a');
    net.isolate(3);
    net.propose(1, 'b');
    for (let i = 0; i < 100; i++) net.tick(3);
    expect(net.node(3).raft.term).toBeGreaterThan(1);
    net.heal();
    net.tickAll(50);
    expect(net.node(1).raft.term).toBeGreaterThan(1); // the healthy leader's term was disrupted
    expect(net.node(3).raft.role).not.toBe(Role.Leader); // but the stale log cannot win
  });

  it('a leader that loses its quorum steps down after an election timeout (check-quorum)', () => {
    const net = new Network([1, 2, 3], { checkQuorum: true });
    net.campaign(1);
    net.isolate(1);
    for (let i = 0; i < 10; i++) {
      expect(net.node(1).raft.role).toBe(Role.Leader);
      net.tick(1);
    }
    for (let i = 0; i < 10 && net.node(1).raft.role === Role.Leader; i++) net.tick(1);
    expect(net.node(1).raft.role).toBe(Role.Follower);
  });

  it('with check-quorum, a follower that hears from its leader ignores vote requests (lease)', () => {
    const n = soloNode(2, [1, 2, 3], { term: 1 }, { checkQuorum: true });
    n.rn.step(msg({ type: MessageType.Heartbeat, from: 1, to: 2, term: 1 }));
    n.drain();
    n.rn.step(msg({ type: MessageType.Vote, from: 3, to: 2, term: 2, index: 5, logTerm: 1 }));
    expect(n.raft.term).toBe(1);
    expect(n.drain().filter((m) => m.type === MessageType.VoteResp)).toEqual([]);
    // Past the election timeout the lease is over.
    for (let i = 0; i < 10; i++) n.raft.electionElapsed++;
    n.rn.step(msg({ type: MessageType.Vote, from: 3, to: 2, term: 2, index: 5, logTerm: 1 }));
    expect(n.drain().find((m) => m.type === MessageType.VoteResp)?.reject).toBe(false);
  });

  it('a node that is not a voter never campaigns, and its vote requests are ignored', () => {
    const learner = soloNode(4, [1, 2, 3], { learners: [4] });
    for (let i = 0; i < 100; i++) learner.rn.tick();
    expect(learner.raft.role).toBe(Role.Follower);
    expect(learner.raft.term).toBe(0);
    const voter = soloNode(1, [1, 2, 3]);
    voter.rn.step(msg({ type: MessageType.Vote, from: 9 as NodeId, to: 1, term: 50, index: 100, logTerm: 50 }));
    expect(voter.raft.term).toBe(0);
    expect(voter.drain()).toEqual([]);
  });
});
