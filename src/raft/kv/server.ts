/**
 * One node of a KV Raft group (the dev daemon behind `cairn kv serve`): the KV state machine
 * under <dataDir>/kv, the Raft log under <dataDir>/raft, the Raft and KV gRPC services on the
 * node's listen address.
 */
import { join } from 'node:path';
import type { NodeConfig } from '../../common/config.js';
import { RaftNode } from '../node.js';
import { KvStateMachine } from './state-machine.js';
import { kvService } from './service.js';

export interface KvNode {
  node: RaftNode;
  sm: KvStateMachine;
  stop(): Promise<void>;
}

export async function startKvNode(cfg: NodeConfig, opts: { join?: boolean } = {}): Promise<KvNode> {
  const sm = await KvStateMachine.open(join(cfg.dataDir, 'kv'));
  let node: RaftNode | undefined;
  try {
    node = await RaftNode.start({
      id: cfg.nodeId,
      dataDir: cfg.dataDir,
      listen: cfg.listen,
      advertise: cfg.advertise,
      peers: cfg.peers,
      join: opts.join,
      raft: cfg.raft,
      stateMachine: sm,
      services: [kvService(() => node, sm)],
    });
  } catch (err) {
    await sm.close().catch(() => undefined);
    throw err;
  }
  const n = node;
  return { node: n, sm, stop: () => n.stop() };
}
