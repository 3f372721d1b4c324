/**
 * The KV gRPC service (proto/kv.proto) served by each node of a KV Raft group. Writes are
 * proposed through the local RaftNode (a follower's proposal travels to the leader inside
 * Raft); linearizable gets wait on the local node's ReadIndex barrier and then read the
 * local state machine, so followers serve them without forwarding; serializable gets read
 * the local state at once.
 */
import { z } from 'zod';
import { serviceOf, unary, type grpc } from '../../rpc/grpc.js';
import { CairnError } from '../../common/errors.js';
import type { RaftNode } from '../node.js';
import type { KvStateMachine } from './state-machine.js';
import { encodeCommand, MAX_KEY_BYTES, MAX_VALUE_BYTES, type KvResult } from './commands.js';

export const KvServiceCtor = serviceOf('kv.proto', 'cairn.kv.Kv');

const keySchema = z.string().min(1).max(MAX_KEY_BYTES);
const valueSchema = z.instanceof(Buffer).refine((b) => b.length <= MAX_VALUE_BYTES, `at most ${MAX_VALUE_BYTES} bytes`);
const putSchema = z.object({ key: keySchema, value: valueSchema });
const getSchema = z.object({ key: keySchema, linearizable: z.boolean() });
const casSchema = z.object({ key: keySchema, expect_absent: z.boolean(), expect: valueSchema, value: valueSchema });
const delSchema = z.object({ key: keySchema });

export function kvService(
  nodeOf: () => RaftNode | undefined,
  sm: KvStateMachine,
): { service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
  const node = (): RaftNode => {
    const n = nodeOf();
    if (n === undefined) throw new CairnError('EUNAVAIL', 'the raft node is starting; retry');
    return n;
  };
  return {
    service: KvServiceCtor.service,
    impl: {
      Put: unary(putSchema, async (req) => {
        const n = node();
        const r = (await n.propose(encodeCommand({ op: 'put', key: req.key, value: req.value }))) as KvResult;
        if (r.op === 'error') throw new CairnError('EIO', `kv: ${r.message}`);
        return { node: n.id };
      }),
      Get: unary(getSchema, async (req) => {
        const n = node();
        if (req.linearizable) await n.readIndex();
        const v = sm.get(req.key);
        return { found: v !== undefined, value: v ?? Buffer.alloc(0), node: n.id };
      }),
      Cas: unary(casSchema, async (req) => {
        const r = (await node().propose(
          encodeCommand({ op: 'cas', key: req.key, expect: req.expect_absent ? null : req.expect, value: req.value }),
        )) as KvResult;
        if (r.op !== 'cas') throw new CairnError('EIO', `kv: unexpected result for cas (${r.op === 'error' ? r.message : r.op})`);
        return { ok: r.ok, found: r.current !== null, current: r.current ?? Buffer.alloc(0) };
      }),
      Delete: unary(delSchema, async (req) => {
        const r = (await node().propose(encodeCommand({ op: 'delete', key: req.key }))) as KvResult;
        return { deleted: r.op === 'delete' && r.deleted };
      }),
      Status: unary(z.object({}).loose(), async () => {
        const s = node().status();
        return {
          id: s.id,
          leader: s.leader,
          role: String(s.role),
          term: s.term,
          commit: s.commit,
          applied: s.applied,
          voters: s.conf.voters,
          learners: s.conf.learners,
          snapshot_index: s.snapshotIndex,
          first_index: s.firstIndex,
          last_index: s.lastIndex,
          address: s.address,
        };
      }),
    },
  };
}
