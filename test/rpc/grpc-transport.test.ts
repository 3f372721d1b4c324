/**
 * The plain-gRPC transport, end to end. Cairn's clients use the lane by default (docs/rpc.md);
 * with CAIRN_RPC=grpc every call — client to node, Raft between nodes — is grpc-js. This file
 * runs the metadata cluster tests (real node processes: writes on any node, linearizable
 * follower reads, watch resume across a leader change and a restart, restart of all nodes,
 * snapshot install) and the Raft kill -9 / SIGSTOP process tests with that setting, in this
 * test process and in every node it starts, so both transports stay real and tested.
 */
process.env.CAIRN_RPC = 'grpc';

await import('../meta/cluster.test.js');
await import('../raft/process.test.js');
