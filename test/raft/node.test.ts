/**
 * The Raft driver with its real parts: three (or four) RaftNodes in one process, each with
 * its own LevelDB log and KV state machine in a temp dir, talking gRPC over 127.0.0.1.
 * Election, proposals and reads, leader loss, snapshot catch-up after compaction,
 * membership changes and leadership transfer; every committed entry applied exactly once and in
 * order under concurrent proposals (some are applied while a later write is in flight); the
 * stage histograms (propose, fsynced log writes, append round trips, applies) count what happened.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RaftNode, type RaftPeer } from '../../src/raft/node.js';
import { KvStateMachine } from '../../src/raft/kv/state-machine.js';
import { encodeCommand } from '../../src/raft/kv/commands.js';
import type { RaftConfig } from '../../src/common/config.js';
import type { Entry, StateMachine } from '../../src/raft/types.js';
import { eventually, freePort, tempDir } from '../helpers/env.js';
import { registry } from '../../src/common/metrics.js';

interface Member {
  id: number;
  dir: string;
  address: string;
  node: RaftNode | undefined;
  sm: KvStateMachine | undefined;
}

const RAFT: Partial<RaftConfig> = { tickMs: 10, electionTicks: 15, heartbeatTicks: 2 };
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function member(id: number): Promise<Member> {
  const t = await tempDir(`cairn-raftnode-${id}-`);
  cleanups.push(t.remove);
  return { id, dir: t.path, address: `127.0.0.1:${await freePort()}`, node: undefined, sm: undefined };
}

async function startMember(m: Member, peers: RaftPeer[], raft: Partial<RaftConfig>, join = false): Promise<RaftNode> {
  const sm = await KvStateMachine.open(`${m.dir}/kv`);
  m.sm = sm;
  m.node = await RaftNode.start({ id: m.id, dataDir: m.dir, listen: m.address, peers, raft, stateMachine: sm, join, proposeTimeoutMs: 5000 });
  const node = m.node;
  cleanups.push(() => node.stop());
  return node;
}

async function stopMember(m: Member): Promise<void> {
  await m.node?.stop();
  m.node = undefined;
  m.sm = undefined;
}

async function cluster(n: number, raft: Partial<RaftConfig> = RAFT): Promise<{ members: Member[]; peers: RaftPeer[] }> {
  const members = await Promise.all(Array.from({ length: n }, (_, i) => member(i + 1)));
  const peers = members.map((m) => ({ id: m.id, address: m.address }));
  await Promise.all(members.map((m) => startMember(m, peers, raft)));
  return { members, peers };
}

async function leaderOf(members: Member[]): Promise<Member> {
  return eventually(() => {
    const live = members.filter((m) => m.node !== undefined);
    const l = live.find((m) => m.node!.isLeader());
    // Every live node must agree on the leader.
    return l !== undefined && live.every((m) => m.node!.leaderId() === l.id) ? l : undefined;
  }, 20_000);
}

const put = (node: RaftNode, key: string, value: string): Promise<unknown> =>
  node.propose(encodeCommand({ op: 'put', key, value: Buffer.from(value) }));
const local = (m: Member, key: string): string | undefined => m.sm?.get(key)?.toString();

/** Observations so far of a histogram (summed over its labels; `sync` picks one label value). */
async function observed(name: string, sync?: string): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (m === undefined) return 0;
  const { values } = await m.get();
  return values
    .filter((v) => (v as { metricName?: string }).metricName === `${name}_count` && (sync === undefined || v.labels.sync === sync))
    .reduce((a, v) => a + v.value, 0);
}

describe('RaftNode over real gRPC', () => {
  it('elects a leader, replicates proposals from any node and serves linearizable reads on followers', async () => {
    const { members } = await cluster(3);
    const leader = await leaderOf(members);
    const follower = members.find((m) => m !== leader)!;
    expect(await put(leader.node!, 'a', '1')).toEqual({ op: 'put' });
    // A follower's proposal is forwarded to the leader and resolves on the follower.
    expect(await put(follower.node!, 'b', '2')).toEqual({ op: 'put' });
    const cas = await follower.node!.propose(encodeCommand({ op: 'cas', key: 'a', expect: Buffer.from('1'), value: Buffer.from('3') }));
    expect(cas).toMatchObject({ op: 'cas', ok: true });
    for (const m of members) {
      await m.node!.readIndex();
      expect(local(m, 'a')).toBe('3');
      expect(local(m, 'b')).toBe('2');
    }
    // Many concurrent writes (group commit) all resolve and are all readable; the stage
    // histograms time each proposal, the fsynced log writes, the appends' round trips and applies.
    const stages = ['cairn_raft_propose_seconds', 'cairn_raft_append_rtt_seconds', 'cairn_raft_apply_seconds'];
    const before = await Promise.all(stages.map((n) => observed(n)));
    const fsyncsBefore = await observed('cairn_raft_persist_seconds', 'true');
    await Promise.all(Array.from({ length: 200 }, (_, i) => put(members[i % 3]!.node!, `k${i}`, `v${i}`)));
    const after = await Promise.all(stages.map((n) => observed(n)));
    expect(after[0]! - before[0]!).toBe(200);
    expect(after[1]! - before[1]!).toBeGreaterThan(0);
    expect(after[2]! - before[2]!).toBeGreaterThan(0);
    expect((await observed('cairn_raft_persist_seconds', 'true')) - fsyncsBefore).toBeGreaterThan(0);
    await follower.node!.readIndex();
    for (let i = 0; i < 200; i++) expect(local(follower, `k${i}`)).toBe(`v${i}`);
    const s = follower.node!.status();
    expect(s.conf.voters).toEqual([1, 2, 3]);
    expect(s.leader).toBe(leader.id);
  });

  it('applies every committed entry exactly once and in order on every node under concurrent proposals', async () => {
    const ms = await Promise.all([1, 2, 3].map((id) => member(id)));
    const peers = ms.map((m) => ({ id: m.id, address: m.address }));
    const seen = new Map<number, number[]>();
    for (const m of ms) {
      const sm = await KvStateMachine.open(`${m.dir}/kv`);
      m.sm = sm;
      const indexes: number[] = [];
      seen.set(m.id, indexes);
      // The state machine as the driver sees it, recording the index of every entry it is given.
      const recording: StateMachine = {
        appliedIndex: () => sm.appliedIndex(),
        apply: (entries: Entry[]) => {
          for (const e of entries) indexes.push(e.index);
          return sm.apply(entries);
        },
        snapshot: () => sm.snapshot(),
        restore: (meta, chunks) => sm.restore(meta, chunks),
        close: () => sm.close(),
      };
      m.node = await RaftNode.start({ id: m.id, dataDir: m.dir, listen: m.address, peers, raft: RAFT, stateMachine: recording, proposeTimeoutMs: 5000 });
      const node = m.node;
      cleanups.push(() => node.stop());
    }
    await leaderOf(ms);
    const results = await Promise.all(Array.from({ length: 600 }, (_, i) => put(ms[i % 3]!.node!, `o${i % 50}`, `v${i}`)));
    expect(results.every((r) => (r as { op: string }).op === 'put')).toBe(true);
    const last = Math.max(...ms.map((m) => m.node!.status().commit));
    await eventually(() => ms.every((m) => m.node!.appliedIndex() >= last));
    const first = seen.get(1)![0];
    for (const m of ms) {
      const got = seen.get(m.id)!;
      // Strictly consecutive: nothing skipped, nothing applied twice, nothing out of order.
      for (let i = 1; i < got.length; i++) expect(got[i]).toBe(got[i - 1]! + 1);
      expect(got[got.length - 1]).toBeGreaterThanOrEqual(last);
      expect(got[0]).toBe(first);
    }
    // The nodes agree on the final state of every key.
    for (let k = 0; k < 50; k++) {
      const values = new Set(ms.map((m) => local(m, `o${k}`)));
      expect(values.size).toBe(1);
    }
  });

  it('elects a new leader when the leader stops and loses no acknowledged entry', async () => {
    const { members, peers } = await cluster(3);
    const leader = await leaderOf(members);
    const acked: string[] = [];
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        await put(leader.node!, `x${i}`, `v${i}`);
        acked.push(`x${i}`);
      }),
    );
    await stopMember(leader);
    const rest = members.filter((m) => m !== leader);
    const next = await leaderOf(rest);
    expect(next.id).not.toBe(leader.id);
    await put(next.node!, 'after', 'yes');
    for (const m of rest) {
      await m.node!.readIndex();
      for (const k of acked) expect(local(m, k)).toBe(`v${k.slice(1)}`);
    }
    // The old leader comes back as a follower and catches up.
    await startMember(leader, peers, RAFT);
    await eventually(() => local(leader, 'after') === 'yes');
    expect(leader.node!.isLeader()).toBe(false);
  });

  it('brings a node that was down while the log was compacted back through a snapshot', async () => {
    const raft = { ...RAFT, snapshotEntries: 40, compactionMarginEntries: 5 };
    const { members, peers } = await cluster(3, raft);
    const leader = await leaderOf(members);
    const lagger = members.find((m) => m !== leader)!;
    await put(leader.node!, 'first', '1');
    await eventually(() => local(lagger, 'first') === '1');
    const laggerApplied = lagger.node!.appliedIndex();
    await stopMember(lagger);
    for (let i = 0; i < 150; i++) await put(leader.node!, `s${i}`, `v${i}`);
    // Every live node has compacted past what the lagger holds, whoever leads when it returns.
    await eventually(() => members.every((m) => m.node === undefined || m.node.status().firstIndex > laggerApplied + 1));
    await startMember(lagger, peers, raft);
    await eventually(() => local(lagger, 's149') === 'v149', 20_000);
    // The state machine is restored before the log records the snapshot: wait for both.
    await eventually(() => lagger.node!.status().snapshotIndex > laggerApplied);
    for (let i = 0; i < 150; i++) expect(local(lagger, `s${i}`)).toBe(`v${i}`);
    // It keeps replicating after the snapshot.
    await put(leader.node!, 'later', 'ok');
    await eventually(() => local(lagger, 'later') === 'ok');
  });

  it('adds a learner, promotes it, transfers leadership to it and removes a voter', async () => {
    const { members, peers } = await cluster(3);
    const leader = await leaderOf(members);
    for (let i = 0; i < 20; i++) await put(leader.node!, `m${i}`, `v${i}`);
    const fourth = await member(4);
    await startMember(fourth, peers, RAFT, true);
    const cs1 = await leader.node!.addLearner(4, fourth.address);
    expect(cs1.learners).toEqual([4]);
    await eventually(() => local(fourth, 'm19') === 'v19');
    const cs2 = await leader.node!.promote(4);
    expect(cs2.voters).toEqual([1, 2, 3, 4]);
    expect(cs2.learners).toEqual([]);
    await eventually(() => fourth.node!.status().conf.voters.includes(4));
    // Leadership transfer to the new voter.
    await leader.node!.transferLeadership(4);
    const all = [...members, fourth];
    expect((await leaderOf(all)).id).toBe(4);
    // Remove the old leader; the group keeps working without it.
    const cs3 = await fourth.node!.remove(leader.id);
    expect(cs3.voters).not.toContain(leader.id);
    await put(fourth.node!, 'post-remove', 'ok');
    for (const m of all.filter((x) => x !== leader)) {
      await m.node!.readIndex();
      expect(local(m, 'post-remove')).toBe('ok');
    }
  });

  it('rejects proposals clearly when there is no quorum', async () => {
    const { members } = await cluster(3);
    const leader = await leaderOf(members);
    for (const m of members.filter((x) => x !== leader)) await stopMember(m);
    await expect(leader.node!.propose(encodeCommand({ op: 'put', key: 'q', value: Buffer.from('1') }), { timeoutMs: 300 })).rejects.toMatchObject({
      code: expect.stringMatching(/ETIMEDOUT|ENOTLEADER/),
    });
    await expect(leader.node!.readIndex({ timeoutMs: 300 })).rejects.toMatchObject({ code: expect.stringMatching(/ETIMEDOUT|ENOTLEADER/) });
  });
});
