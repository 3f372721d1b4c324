/**
 * Leadership transfer (Raft thesis §3.10) and snapshots (§7): transfer to an up-to-date
 * node, to a lagging one (caught up first), its timeout, proposals refused meanwhile; a
 * follower behind the compacted log receives the leader's snapshot and catches up.
 */
import { describe, expect, it } from 'vitest';
import { MessageType, Role } from '../../../src/raft/types.js';
import { Network, bytes } from './harness.js';

describe('leadership transfer', () => {
  it('to an up-to-date node: it wins the next term at once', () => {
    const net = new Network([1, 2, 3], { checkQuorum: true });
    net.campaign(1);
    net.propose(1, 'x');
    net.tick(1); // commit index reaches everyone
    net.node(1).rn.transferLeadership(2);
    net.deliver();
    expect(net.node(2).raft.role).toBe(Role.Leader);
    expect(net.node(2).raft.term).toBe(2);
    expect(net.node(1).raft.role).toBe(Role.Follower);
    expect(net.trace.some((m) => m.type === MessageType.TimeoutNow && m.to === 2)).toBe(true);
    net.propose(2, 'y');
    net.tick(2);
    expect(net.node(1).appliedData()).toEqual(['x', 'y']);
  });

  it('to a lagging node: the leader catches it up first, then hands over', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.isolate(3);
    net.propose(1, 'a');
    net.propose(1, 'b');
    net.heal();
    expect(net.node(3).raft.log.lastIndex()).toBe(1);
    net.node(1).rn.transferLeadership(3);
    net.deliver();
    expect(net.node(3).raft.role).toBe(Role.Leader);
    const timeoutNowAt = net.trace.findIndex((m) => m.type === MessageType.TimeoutNow);
    const catchUp = net.trace.findIndex((m) => m.type === MessageType.App && m.to === 3 && m.entries.length > 0);
    expect(catchUp).toBeGreaterThanOrEqual(0);
    expect(catchUp).toBeLessThan(timeoutNowAt);
  });

  it('times out after an election timeout; proposals are refused while it runs', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.isolate(3);
    net.propose(1, 'a');
    net.node(1).rn.transferLeadership(3); // 3 cannot catch up: it is cut off
    net.deliver();
    expect(net.node(1).rn.status().leadTransferee).toBe(3);
    expect(() => net.node(1).rn.propose(bytes('dropped'))).toThrowError(expect.objectContaining({ code: 'ENOTLEADER' }));
    for (let i = 0; i < 10; i++) net.tick(1);
    expect(net.node(1).rn.status().leadTransferee).toBe(0);
    expect(net.node(1).raft.role).toBe(Role.Leader);
    net.propose(1, 'after');
    expect(net.node(1).appliedData()).toEqual(['a', 'after']);
  });

  it('a transfer to a learner or an unknown node is ignored', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.node(1).rn.transferLeadership(9);
    net.deliver();
    expect(net.node(1).rn.status().leadTransferee).toBe(0);
    expect(net.node(1).raft.role).toBe(Role.Leader);
  });
});

describe('snapshots', () => {
  it('a follower behind the compacted log gets a snapshot and catches up', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.isolate(3);
    for (let i = 0; i < 10; i++) net.propose(1, `e${i}`);
    const leader = net.node(1);
    const applied = leader.rn.status().applied;
    expect(applied).toBe(11);
    leader.storage.createSnapshot(applied, leader.rn.status().conf, bytes('state@11'));
    leader.storage.compact(applied);
    expect(leader.storage.firstIndex()).toBe(12);
    net.propose(1, 'after');
    net.heal();
    net.tickAll(3);
    const snaps = net.trace.filter((m) => m.type === MessageType.Snap && m.to === 3);
    expect(snaps.length).toBe(1);
    expect(snaps[0]!.snapshot!.metadata.index).toBe(11);
    const f = net.node(3);
    expect(f.storage.snapshot().metadata.index).toBe(11);
    expect(Buffer.from(f.storage.snapshot().data).toString()).toBe('state@11');
    expect(f.raft.log.lastIndex()).toBe(12);
    expect(f.raft.log.committed).toBe(12);
    expect(f.appliedData()).toEqual(['after']); // the rest came inside the snapshot
    expect(net.node(1).rn.status().progress.get(3)?.state).toBe('replicate');
  });

  it('a lost snapshot is retried after the transport reports the failure', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.isolate(3);
    for (let i = 0; i < 5; i++) net.propose(1, `e${i}`);
    const leader = net.node(1);
    leader.storage.createSnapshot(6, leader.rn.status().conf, bytes('s'));
    leader.storage.compact(6);
    // Let 3 answer heartbeats (so the leader knows it is alive) but lose snapshots.
    net.heal();
    net.dropTypes.add(MessageType.Snap);
    net.tickAll(3);
    expect(net.node(3).storage.snapshot().metadata.index).toBe(0);
    net.dropTypes.clear();
    net.tickAll(3);
    expect(net.node(3).storage.snapshot().metadata.index).toBe(6);
    expect(net.node(3).raft.log.committed).toBe(6);
  });
});
