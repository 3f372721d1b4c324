/**
 * The wire form of a ConfChange inside an EntryType.ConfChange entry, and the pure rule that
 * applies one change to a configuration. One change at a time, no joint consensus.
 *
 * Form: UTF-8 JSON {"v":1,"type":0|1|2,"nodeId":N,"context":"<base64>"}; decode validates.
 */
import { CairnError } from '../../common/errors.js';
import { ConfChangeType, type ConfChange, type ConfState, type NodeId } from '../types.js';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export function encodeConfChange(cc: ConfChange): Uint8Array {
  const context = Buffer.from(cc.context.buffer, cc.context.byteOffset, cc.context.byteLength).toString('base64');
  return enc.encode(JSON.stringify({ v: 1, type: cc.type, nodeId: cc.nodeId, context }));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  let raw: unknown;
  try {
    raw = JSON.parse(dec.decode(data));
  } catch {
    throw new CairnError('ECORRUPT', 'raft: a ConfChange entry is not valid UTF-8 JSON; the log is damaged');
  }
  const o = raw as { v?: unknown; type?: unknown; nodeId?: unknown; context?: unknown };
  if (
    typeof raw !== 'object' || raw === null || o.v !== 1 ||
    (o.type !== ConfChangeType.AddNode && o.type !== ConfChangeType.RemoveNode && o.type !== ConfChangeType.AddLearner) ||
    typeof o.nodeId !== 'number' || !Number.isSafeInteger(o.nodeId) || o.nodeId <= 0 ||
    typeof o.context !== 'string'
  ) {
    throw new CairnError('ECORRUPT', 'raft: a ConfChange entry has missing or invalid fields; the log is damaged');
  }
  return { type: o.type, nodeId: o.nodeId, context: new Uint8Array(Buffer.from(o.context, 'base64')) };
}

export function cloneConf(cs: ConfState): ConfState {
  return { voters: [...cs.voters].sort((a, b) => a - b), learners: [...cs.learners].sort((a, b) => a - b) };
}

/**
 * The configuration after `cc`. Idempotent and tolerant of stale ids: adding a voter that
 * is one, removing an absent node, or adding as learner a node that is already a voter
 * change nothing (no demotion).
 */
export function applyToConf(cs: ConfState, cc: ConfChange): ConfState {
  const voters = new Set(cs.voters);
  const learners = new Set(cs.learners);
  const id: NodeId = cc.nodeId;
  switch (cc.type) {
    case ConfChangeType.AddNode:
      learners.delete(id);
      voters.add(id);
      break;
    case ConfChangeType.AddLearner:
      if (!voters.has(id)) learners.add(id);
      break;
    case ConfChangeType.RemoveNode:
      voters.delete(id);
      learners.delete(id);
      break;
  }
  return cloneConf({ voters: [...voters], learners: [...learners] });
}
