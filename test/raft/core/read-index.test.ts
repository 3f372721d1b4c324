/**
 * ReadIndex scenarios (Raft thesis §6.4): a new leader answers only after committing an
 * entry of its term; a heartbeat round carrying the request's context confirms leadership;
 * many reads share a round; a single voter answers at once; followers ask the leader; and a
 * duplicated or delayed confirmation never confirms a read on a deposed leader.
 */
import { describe, expect, it } from 'vitest';
import { MessageType, Role } from '../../../src/raft/types.js';
import { Network, bytes, makeLeader, msg, soloNode, text } from './harness.js';

describe('ReadIndex', () => {
  it('a new leader waits for its first commit before answering', () => {
    const n = soloNode(1, [1, 2, 3], { term: 1 });
    makeLeader(n);
    n.drain();
    n.rn.readIndex(bytes('r1'));
    let out = n.drain();
    expect(out.filter((m) => m.type === MessageType.Heartbeat)).toEqual([]); // no round yet
    expect(n.readStates).toEqual([]);
    // The no-op of term 2 (index 1) commits: now the read gets a confirmation round.
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 2, index: 1 }));
    out = n.drain();
    const hbs = out.filter((m) => m.type === MessageType.Heartbeat);
    expect(hbs.map((m) => text(m.context))).toEqual(['r1', 'r1']);
    expect(n.readStates).toEqual([]);
    n.rn.step(msg({ type: MessageType.HeartbeatResp, from: 3, to: 1, term: 2, context: bytes('r1') }));
    n.drain();
    expect(n.readStates.map((r) => [r.index, text(r.context)])).toEqual([[1, 'r1']]);
  });

  it('many reads share one confirmation round', () => {
    const n = soloNode(1, [1, 2, 3], { term: 1 });
    makeLeader(n);
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 2, index: 1 }));
    n.drain();
    n.rn.readIndex(bytes('a'));
    n.rn.readIndex(bytes('b'));
    n.rn.readIndex(bytes('c'));
    n.rn.readIndex(bytes('d'));
    let rounds = n.drain().filter((m) => m.type === MessageType.Heartbeat && m.to === 2).map((m) => text(m.context));
    expect(rounds).toEqual(['a']);
    n.rn.step(msg({ type: MessageType.HeartbeatResp, from: 2, to: 1, term: 2, context: bytes('a') }));
    rounds = n.drain().filter((m) => m.type === MessageType.Heartbeat && m.to === 2).map((m) => text(m.context));
    expect(rounds).toEqual(['d']); // b, c and d ride on one round
    n.rn.step(msg({ type: MessageType.HeartbeatResp, from: 3, to: 1, term: 2, context: bytes('d') }));
    n.drain();
    expect(n.readStates.map((r) => text(r.context))).toEqual(['a', 'b', 'c', 'd']);
  });

  it('a single voter answers at once', () => {
    const net = new Network([1]);
    net.campaign(1);
    net.propose(1, 'x');
    net.node(1).rn.readIndex(bytes('r'));
    net.deliver();
    expect(net.node(1).readStates.map((r) => [r.index, text(r.context)])).toEqual([[2, 'r']]);
  });

  it('a follower asks the leader and gets the read index back', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.propose(1, 'x');
    net.node(3).rn.readIndex(bytes('f'));
    net.deliver();
    expect(net.node(3).readStates.map((r) => [r.index, text(r.context)])).toEqual([[2, 'f']]);
    expect(net.node(1).readStates).toEqual([]);
    expect(net.trace.some((m) => m.type === MessageType.ReadIndexResp && m.to === 3)).toBe(true);
  });

  it('a duplicated acknowledgement from one follower does not make a quorum', () => {
    const n = soloNode(1, [1, 2, 3, 4, 5], { term: 1 });
    makeLeader(n);
    n.rn.step(msg({ type: MessageType.AppResp, from: 2, to: 1, term: 2, index: 1 }));
    n.rn.step(msg({ type: MessageType.AppResp, from: 3, to: 1, term: 2, index: 1 }));
    n.drain();
    n.rn.readIndex(bytes('r'));
    n.drain();
    for (let i = 0; i < 3; i++) n.rn.step(msg({ type: MessageType.HeartbeatResp, from: 2, to: 1, term: 2, context: bytes('r') }));
    n.drain();
    expect(n.readStates).toEqual([]);
    n.rn.step(msg({ type: MessageType.HeartbeatResp, from: 4, to: 1, term: 2, context: bytes('r') }));
    n.drain();
    expect(n.readStates.length).toBe(1);
  });

  it('a duplicated or delayed confirmation never confirms a read on a deposed leader', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    net.propose(1, 'x');
    // Read r1 is confirmed; keep copies of its confirmations to replay them late.
    const late: ReturnType<typeof msg>[] = [];
    net.filter = (m) => {
      if (m.type === MessageType.HeartbeatResp && m.context.byteLength > 0) late.push({ ...m });
      return true;
    };
    net.node(1).rn.readIndex(bytes('r1'));
    net.deliver();
    expect(net.node(1).readStates.map((r) => text(r.context))).toEqual(['r1']);
    expect(late.length).toBe(2);
    // Node 1 is cut off; 2 and 3 elect a new leader that commits (and acknowledges) a write.
    net.filter = undefined;
    net.isolate(1);
    net.campaign(2);
    expect(net.node(2).raft.role).toBe(Role.Leader);
    net.propose(2, 'y');
    expect(net.node(2).appliedData()).toEqual(['x', 'y']);
    // Node 1 still believes it leads; a read asked now must never be answered by it.
    expect(net.node(1).raft.role).toBe(Role.Leader);
    net.node(1).rn.readIndex(bytes('r2'));
    net.deliver();
    for (const m of late) net.node(1).rn.step(m); // the old confirmations, duplicated and late
    // and a late confirmation of the current term from before the partition, re-labelled r2
    net.node(1).rn.step({ ...late[0]!, context: bytes('r1') });
    net.deliver();
    expect(net.node(1).readStates.map((r) => text(r.context))).toEqual(['r1']);
    // Once it hears of the new term it steps down and the read is dropped, never answered.
    net.heal();
    net.tickAll(3);
    expect(net.node(1).raft.role).toBe(Role.Follower);
    expect(net.node(1).readStates.map((r) => text(r.context))).toEqual(['r1']);
  });
});
