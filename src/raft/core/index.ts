/**
 * The pure Raft protocol core: RawNode (events in, Ready out), MemoryStorage, and the
 * helpers a driver needs (ConfChange encoding). No timers, sockets, disk, clock or
 * Math.random anywhere below this folder.
 */
export { RawNode, type Status, type ProgressStatus } from './rawnode.js';
export { MemoryStorage, type MemoryStorageInit } from './memory-storage.js';
export { encodeConfChange, decodeConfChange, applyToConf } from './confchange.js';
export { makeMessage, CAMPAIGN_TRANSFER, MAX_PENDING_READS } from './raft.js';
export type { ProgressState } from './progress.js';
