/**
 * The diskmap's public API: build a placement map from a topology, map keys to placement
 * groups, plan changes (growth, drain, repair), analyse failures, (de)serialize the document.
 * Pure logic, no I/O.
 */
export * from './types.js';
export * from './bucket-id.js';
export { parseTopology, topologyToJson, topologyFileSchema, parseSize, resolveDiskRef, resolveMachineRef, diskEntries, diskLabel, type TopologyFile } from './topology.js';
export {
  chooseRedundancy,
  schemeText,
  widthOf,
  toleranceOf,
  dataShardsOf,
  CANDIDATE_SCHEMES,
  DEFAULT_BUCKET_SIZE_BYTES,
  ROUTINE_DISK_SHARE,
  HEADROOM_COST_LIMIT,
} from './redundancy.js';
export { buildDiskmap, groupForKey, keyHashOfPath, vslotOf } from './build.js';
export {
  planChange,
  planDrain,
  planRepair,
  planReplace,
  planNodeDrain,
  planRemove,
  summarizePlan,
  withDiskState,
  repairOutlook,
  type PlanResult,
  type PlanOptions,
  type PlanSummary,
  type NewDisk,
  type RepairOutlook,
} from './plan.js';
export { analyzeFailure, type FailureReport, type WriteState } from './failure.js';
export { serializeDiskmap, parseDiskmap, diskmapToJson, diskmapJsonSchema, schemeSchema, type DiskmapJson } from './serialize.js';
export { movementBetween, type MovementStats } from './movement.js';
export { planDegradedWrite, handoffBucketOf, downDiskKeys, survivalOf, type DegradedWrite, type HandoffSlot, type Survival } from './handoff.js';
export { HANDOFF_BUCKET, bucketsOf, type Headroom } from './layout.js';
