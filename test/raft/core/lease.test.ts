/**
 * Lease reads (optional, off by default): the leader answers ReadIndex at once while a
 * majority acknowledged a heartbeat sent less than leaseTicks ago; the followers' side of the
 * lease (check-quorum) keeps any other node from winning an election before it has expired.
 */
import { describe, expect, it } from 'vitest';
import { MessageType, Role } from '../../../src/raft/types.js';
import { Network, bytes, soloNode, text } from './harness.js';

const LEASE = { checkQuorum: true, leaseReads: true, preVote: true } as const;

describe('lease reads', () => {
  it('need check-quorum', () => {
    expect(() => soloNode(1, [1, 2, 3], {}, { leaseReads: true })).toThrowError(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => soloNode(1, [1, 2, 3], {}, { leaseReads: true, checkQuorum: true, leaseTicks: 10 })).toThrowError(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('a leader with a fresh lease answers without a heartbeat round', () => {
    const net = new Network([1, 2, 3], LEASE);
    for (const n of net.nodes.values()) for (let i = 0; i < 10; i++) n.rn.tick(); // past the start-up lease
    net.campaign(1);
    net.propose(1, 'x');
    net.tickAll(1); // a heartbeat round: acknowledgements carry its send tick
    const before = net.trace.length;
    net.node(1).rn.readIndex(bytes('r'));
    net.deliver();
    expect(net.node(1).readStates.map((r) => [r.index, text(r.context)])).toEqual([[2, 'r']]);
    expect(net.trace.slice(before).filter((m) => m.type === MessageType.Heartbeat)).toEqual([]);
  });

  it('an isolated leader loses its lease before anyone else can be elected', () => {
    const net = new Network([1, 2, 3], LEASE);
    for (const n of net.nodes.values()) for (let i = 0; i < 10; i++) n.rn.tick();
    net.campaign(1);
    net.propose(1, 'x');
    net.tickAll(1);
    expect(net.node(1).raft.leaseValid()).toBe(true);
    net.isolate(1);
    let leaseTicksLeft = 0;
    let newLeaderAt = -1;
    for (let t = 0; t < 100 && newLeaderAt < 0; t++) {
      net.tickAll(1);
      if (net.node(1).raft.leaseValid()) leaseTicksLeft = t + 1;
      for (const id of [2, 3]) {
        if (net.node(id).raft.role === Role.Leader) {
          newLeaderAt = t;
          expect(net.node(1).raft.leaseValid()).toBe(false);
        }
      }
    }
    expect(newLeaderAt).toBeGreaterThan(0);
    expect(leaseTicksLeft).toBeGreaterThan(0);
    expect(leaseTicksLeft).toBeLessThan(newLeaderAt);
    // Without the lease the isolated leader falls back to a round it cannot complete.
    net.node(1).rn.readIndex(bytes('late'));
    net.deliver();
    expect(net.node(1).readStates.map((r) => text(r.context))).not.toContain('late');
  });

  it('a restarted follower keeps its side of the lease for an election timeout', () => {
    const n = soloNode(2, [1, 2, 3], { term: 1 }, LEASE);
    n.rn.step({ type: MessageType.Vote, from: 3, to: 2, term: 2, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, context: new Uint8Array(0) });
    expect(n.raft.term).toBe(1); // just started: no vote
    for (let i = 0; i < 10; i++) n.rn.tick();
    n.rn.step({ type: MessageType.Vote, from: 3, to: 2, term: 2, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, context: new Uint8Array(0) });
    expect(n.raft.term).toBe(2);
    expect(n.raft.vote).toBe(3);
  });

  it('a leadership transfer ends the lease', () => {
    const net = new Network([1, 2, 3], LEASE);
    for (const n of net.nodes.values()) for (let i = 0; i < 10; i++) n.rn.tick();
    net.campaign(1);
    net.tickAll(1);
    expect(net.node(1).raft.leaseValid()).toBe(true);
    net.dropTypes.add(MessageType.TimeoutNow);
    net.node(1).rn.transferLeadership(2);
    net.deliver();
    expect(net.node(1).raft.leaseValid()).toBe(false);
    net.tickAll(12); // the transfer is abandoned, but the TimeoutNow may still arrive late
    expect(net.node(1).raft.role).toBe(Role.Leader);
    expect(net.node(1).raft.leaseValid()).toBe(false);
  });
});
