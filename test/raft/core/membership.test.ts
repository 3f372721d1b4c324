/**
 * Membership changes, one at a time (Raft thesis §4.1–4.3): learners receive the log but
 * neither vote nor count; promotion; one change in flight and none before the leader has
 * committed in its term; removing the leader hands over safely; a removed node cannot
 * disrupt the cluster; stale ids are ignored.
 */
import { describe, expect, it } from 'vitest';
import { ConfChangeType, MessageType, Role, type ConfChange, type NodeId } from '../../../src/raft/types.js';
import { MemoryStorage } from '../../../src/raft/core/index.js';
import { Network, TestNode, bytes, msg } from './harness.js';

const cc = (type: ConfChangeType, nodeId: NodeId): ConfChange => ({ type, nodeId, context: new Uint8Array(0) });

/** A 3-voter network plus node 4 that starts empty (no conf) and joins later. */
function withJoiner(o = {}): Network {
  const net = new Network([1, 2, 3], { bootstrap: true, ...o });
  net.nodes.set(4, new TestNode(4, new MemoryStorage(), o));
  return net;
}

describe('membership', () => {
  it('a learner receives the log but does not count toward commit', () => {
    const net = withJoiner();
    net.campaign(1);
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddLearner, 4));
    net.deliver();
    net.tickAll(2);
    expect(net.node(1).rn.status().conf).toEqual({ voters: [1, 2, 3], learners: [4] });
    expect(net.node(4).rn.status().conf).toEqual({ voters: [1, 2, 3], learners: [4] });
    expect(net.node(4).raft.log.lastIndex()).toBe(net.node(1).raft.log.lastIndex());
    // With both other voters cut off, the learner's acknowledgement does not commit anything.
    net.isolate(2);
    net.isolate(3);
    const before = net.node(1).raft.log.committed;
    net.propose(1, 'x');
    expect(net.node(4).raft.log.lastIndex()).toBe(before + 1);
    expect(net.node(1).raft.log.committed).toBe(before);
    // A learner never campaigns.
    for (let i = 0; i < 50; i++) net.node(4).rn.tick();
    expect(net.node(4).raft.role).toBe(Role.Follower);
  });

  it('a promoted learner votes and counts', () => {
    const net = withJoiner();
    net.campaign(1);
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddLearner, 4));
    net.deliver();
    net.tickAll(2);
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddNode, 4));
    net.deliver();
    net.tickAll(2);
    expect(net.node(1).rn.status().conf).toEqual({ voters: [1, 2, 3, 4], learners: [] });
    // Quorum is 3 of 4 now: with 3 and 4 cut off, nothing commits.
    net.isolate(3);
    net.isolate(4);
    const before = net.node(1).raft.log.committed;
    net.propose(1, 'x');
    expect(net.node(1).raft.log.committed).toBe(before);
    net.heal();
    net.tickAll(2);
    expect(net.node(1).raft.log.committed).toBe(before + 1);
  });

  it('one change at a time, and none before the leader commits in its term', () => {
    const net = withJoiner();
    net.campaign(1);
    const n1 = net.node(1).rn;
    expect(n1.status().role).toBe(Role.Leader);
    // Cut the followers: the next change stays pending.
    net.isolate(1);
    n1.proposeConfChange(cc(ConfChangeType.AddLearner, 4));
    net.deliver();
    expect(() => n1.proposeConfChange(cc(ConfChangeType.AddLearner, 5))).toThrowError(expect.objectContaining({ code: 'EBUSY' }));
    net.heal();
    net.tickAll(2);
    n1.proposeConfChange(cc(ConfChangeType.AddLearner, 5)); // accepted once the first is applied
    // A fresh leader of a new term refuses until its no-op commits.
    const solo = new Network([1, 2, 3]);
    solo.isolate(1);
    solo.campaign(1);
    const l = solo.node(1);
    l.rn.step(msg({ type: MessageType.VoteResp, from: 2, to: 1, term: l.raft.term }));
    expect(l.raft.role).toBe(Role.Leader);
    expect(() => l.rn.proposeConfChange(cc(ConfChangeType.AddLearner, 4))).toThrowError(expect.objectContaining({ code: 'EBUSY' }));
  });

  it('invalid changes are refused with a clear code', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.tick(1);
    const n1 = net.node(1).rn;
    expect(() => n1.proposeConfChange(cc(ConfChangeType.AddNode, 2))).toThrowError(expect.objectContaining({ code: 'EEXIST' }));
    expect(() => n1.proposeConfChange(cc(ConfChangeType.RemoveNode, 7))).toThrowError(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('removing the leader is safe: it hands over, steps down, and never campaigns again', () => {
    const net = new Network([1, 2, 3], { checkQuorum: true, preVote: true });
    net.campaign(1);
    net.propose(1, 'before');
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.RemoveNode, 1));
    net.deliver();
    net.tickAll(3);
    expect(net.node(1).raft.role).toBe(Role.Follower);
    expect(net.node(1).rn.status().conf.voters).toEqual([2, 3]);
    const leaders = [2, 3].filter((id) => net.node(id).raft.role === Role.Leader);
    expect(leaders.length).toBe(1);
    const l = leaders[0]!;
    net.propose(l, 'after');
    net.tickAll(2);
    for (const id of [2, 3]) expect(net.node(id).appliedData()).toEqual(['before', 'after']);
    const term = net.node(l).raft.term;
    for (let i = 0; i < 100; i++) net.node(1).rn.tick();
    net.deliver();
    expect(net.node(1).raft.role).toBe(Role.Follower);
    expect(net.node(l).raft.term).toBe(term);
  });

  it('a membership change replaces the leader: add a node, promote it, remove the old leader', () => {
    const net = withJoiner({ checkQuorum: true, preVote: true });
    net.campaign(1);
    net.propose(1, 'a');
    const change = (c: ConfChange) => {
      const l = [...net.nodes.values()].find((n) => n.raft.role === Role.Leader)!;
      l.rn.proposeConfChange(c);
      net.deliver();
      net.tickAll(3);
    };
    change(cc(ConfChangeType.AddLearner, 4));
    change(cc(ConfChangeType.AddNode, 4));
    change(cc(ConfChangeType.RemoveNode, 1));
    const leaders = [...net.nodes.values()].filter((n) => n.raft.role === Role.Leader);
    expect(leaders.length).toBe(1);
    expect(leaders[0]!.id).not.toBe(1);
    net.propose(leaders[0]!.id, 'b');
    net.tickAll(2);
    for (const id of [2, 3, 4]) {
      expect(net.node(id).rn.status().conf).toEqual({ voters: [2, 3, 4], learners: [] });
      // Node 4 started from the bootstrap snapshot and got both through the log.
      expect(net.node(id).appliedData()).toEqual(['a', 'b']);
      expect(net.node(id).raft.log.committed).toBe(leaders[0]!.raft.log.committed);
    }
  });

  it('a removed node that missed its removal cannot disrupt the cluster', () => {
    const net = new Network([1, 2, 3, 4]); // no pre-vote, no check-quorum: only the member check protects
    net.campaign(1);
    net.isolate(4);
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.RemoveNode, 4));
    net.deliver();
    net.tickAll(2);
    expect(net.node(1).rn.status().conf.voters).toEqual([1, 2, 3]);
    // Node 4 still believes it is a voter and campaigns with ever higher terms.
    for (let i = 0; i < 200; i++) net.node(4).rn.tick();
    net.deliver();
    expect(net.node(4).raft.term).toBeGreaterThan(5);
    net.heal();
    for (let i = 0; i < 30; i++) {
      net.node(4).rn.tick();
      net.tickAll(1);
    }
    expect(net.node(1).raft.role).toBe(Role.Leader);
    expect(net.node(1).raft.term).toBe(1);
    net.propose(1, 'still fine');
    net.tickAll(1);
    expect(net.node(3).appliedData()).toEqual(['still fine']);
  });

  it('a learner is promoted only once it follows the log', () => {
    const net = withJoiner();
    net.campaign(1);
    net.cutLink(1, 4); // 4 never hears from the leader
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddLearner, 4));
    net.deliver();
    net.tickAll(2);
    expect(() => net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddNode, 4))).toThrowError(expect.objectContaining({ code: 'EBUSY' }));
    net.heal();
    net.tickAll(3);
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddNode, 4));
    net.deliver();
    net.tickAll(2);
    expect(net.node(4).rn.status().conf.voters).toEqual([1, 2, 3, 4]);
  });

  it('a new voter that has not received anything yet still votes, so the cluster is not stuck', () => {
    const net = withJoiner();
    net.campaign(1);
    net.cutLink(1, 4);
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddNode, 4)); // straight to voter: quorum is 3 of 4
    net.deliver();
    net.tickAll(2);
    expect(net.node(2).rn.status().conf.voters).toEqual([1, 2, 3, 4]);
    expect(net.node(4).rn.status().conf.voters).toEqual([]);
    // The leader is lost: 2 and 3 need node 4's vote, though 4 knows no configuration yet.
    net.isolate(1);
    for (let i = 0; i < 60 && ![2, 3].some((id) => net.node(id).raft.role === Role.Leader); i++) net.tickAll(1);
    const l = [2, 3].find((id) => net.node(id).raft.role === Role.Leader);
    expect(l).toBeDefined();
    net.tickAll(3);
    expect(net.node(4).rn.status().conf.voters).toEqual([1, 2, 3, 4]); // caught up by snapshot
  });

  it('a joining voter that adopted a removed node\'s higher term is still brought in', () => {
    const net = withJoiner(); // no pre-vote, no check-quorum
    net.campaign(1);
    net.cutLink(1, 4);
    net.node(1).rn.proposeConfChange(cc(ConfChangeType.AddNode, 4));
    net.deliver();
    net.tickAll(2);
    // A removed node (id 9, unknown here) campaigns at term 50; node 4 knows no conf and votes.
    net.node(4).rn.step(msg({ type: MessageType.Vote, from: 9, to: 4, term: 50, index: 100, logTerm: 40 }));
    net.node(4).drain();
    expect(net.node(4).raft.term).toBe(50);
    net.heal();
    net.tickAll(60);
    expect(net.node(4).rn.status().conf.voters).toEqual([1, 2, 3, 4]);
    const leaders = [...net.nodes.values()].filter((n) => n.raft.role === Role.Leader);
    expect(leaders.length).toBe(1);
    expect(leaders[0]!.raft.term).toBeGreaterThan(50);
  });

  it('messages from a stale id are ignored by the leader', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    const n1 = net.node(1).rn;
    n1.step(msg({ type: MessageType.AppResp, from: 9, to: 1, term: 1, index: 100 }));
    n1.step(msg({ type: MessageType.HeartbeatResp, from: 9, to: 1, term: 1, context: bytes('x') }));
    net.deliver();
    expect(n1.status().role).toBe(Role.Leader);
    expect(n1.status().progress.has(9)).toBe(false);
  });
});
