/**
 * Smoke scenarios for the Raft core: a leader is elected, replicates, commits and applies
 * on every node; a single-node cluster commits alone.
 */
import { describe, expect, it } from 'vitest';
import { Role } from '../../../src/raft/types.js';
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

  it('a single voter elects itself and commits at once', () => {
    const net = new Network([1]);
    net.campaign(1);
    expect(net.node(1).raft.role).toBe(Role.Leader);
    net.propose(1, 'x');
    expect(net.node(1).appliedData()).toEqual(['x']);
  });
});
