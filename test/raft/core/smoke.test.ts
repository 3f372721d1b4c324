/**
 * Smoke scenarios for the Raft core: a leader is elected, replicates, commits and applies
 * on every node; a single-node cluster commits alone; a follower's forwarded requests can be
 * taken out of its pending messages ahead of its Ready.
 */
import { describe, expect, it } from 'vitest';
import { MessageType, Role } from '../../../src/raft/types.js';
import { Network } from './harness.js';

describe('raft core smoke', () => {
  it('elects a leader and replicates a proposal to every node', () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    expect(net.node(1).raft.role).toBe(Role.Leader);
    expect(net.node(2).raft.lead).toBe(1);
    net.propose(1, 'hello');
    net.propose(2, 'forwarded');
    for (const id of [1, 2, 3]) {
      net.tick(1); // a heartbeat carries the latest commit index
      expect(net.node(id).appliedData()).toEqual(['hello', 'forwarded']);
    }
    const st = net.node(1).rn.status();
    expect(st.commit).toBe(3);
    expect(st.progress.get(2)?.match).toBe(3);
  });

  it("takes a follower's forwarded proposals and reads ahead of its Ready, and they commit like any other", () => {
    const net = new Network([1, 2, 3]);
    net.campaign(1);
    const f = net.node(2);
    f.rn.propose(new TextEncoder().encode('early'));
    f.rn.readIndex(new Uint8Array([7]));
    const fwd = f.rn.takeForwarded();
    expect(fwd.map((m) => [m.type, m.to, m.term])).toEqual([
      [MessageType.Prop, 1, 0],
      [MessageType.ReadIndex, 1, 0],
    ]);
    // Nothing is left for the Ready to send twice.
    expect(f.drain().filter((m) => m.type === MessageType.Prop || m.type === MessageType.ReadIndex)).toEqual([]);
    expect(f.rn.takeForwarded()).toEqual([]);
    net.deliver(fwd);
    net.tickAll(1);
    for (const id of [1, 2, 3]) expect(net.node(id).appliedData()).toEqual(['early']);
    expect(f.readStates.map((r) => Array.from(r.context))).toEqual([[7]]);
  });

  it('a single voter elects itself and commits at once', () => {
    const net = new Network([1]);
    net.campaign(1);
    expect(net.node(1).raft.role).toBe(Role.Leader);
    net.propose(1, 'x');
    expect(net.node(1).appliedData()).toEqual(['x']);
  });
});
