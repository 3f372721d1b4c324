/**
 * The diskmap's public API: build a placement map from a topology, map keys to placement
 * groups, plan changes (growth, drain, repair), analyse failures, (de)serialize the document.
 * Pure logic, no I/O.
 */
export * from './types.js';
export * from './bucket-id.js';
