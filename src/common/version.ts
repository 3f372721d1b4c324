/**
 * Versions and the cluster version gate (docs/upgrade.md).
 *
 * Every node knows its own software version (CAIRN_VERSION, the package's) and tells its peers:
 * each Raft message batch carries it (proto/raft.proto MessageBatch.version), so the leader
 * hears every member's version within a heartbeat. The cluster's effective version is the
 * lowest version among its members (voters and learners); the leader writes it into the
 * replicated metadata (operation `clusterVersion`, key `m:clusterVersion`) once every member
 * is heard at it or above, and it only ever goes up. Until nothing was written, the cluster
 * version is BASE_VERSION: the release before versions were reported.
 *
 * A feature that writes something an older node cannot read — a new kind of metadata entry, a
 * new field that changes what apply does, a new RPC between nodes — is used only once the cluster
 * version reaches the release that brought it:
 *
 *     if (clusterSupports(ctx.meta, 'locks')) …        // or requireFeature(sm, 'locks') to refuse with EAGAIN
 *
 * where the source is the node's metadata state machine (anything with clusterVersion()). Add a
 * feature by adding one line to FEATURES with the release that understands it.
 */
import { CairnError } from './errors.js';

/** This build's version (package.json's; test/upgrade/version.test.ts checks they agree). */
export const CAIRN_VERSION = '0.2.0';

/** The version of a node that reports none: v0.1.0, the release before versions were reported. */
export const BASE_VERSION = '0.1.0';

/**
 * Features gated by the cluster version, with the first release whose every node understands
 * them. A feature is used only when the cluster version is at least its release.
 */
export const FEATURES = {
  /** The leader records the cluster version in the metadata (the `clusterVersion` operation itself). */
  clusterVersion: '0.2.0',
  /** Cluster-wide locks (new metadata operations). */
  locks: '0.2.0',
  /** New fields of lease operations (DFS cache coherence). */
  dfsLeases: '0.2.0',
  /** RPCs between nodes that v0.1.0 does not serve (DFS cache forwarding and invalidation). */
  peerRpc: '0.2.0',
  /** putFile as a binary metadata entry (opcode 9; v0.1.0 reads only the JSON form). */
  binaryPutFile: '0.2.0',
} as const satisfies Record<string, string>;
export type Feature = keyof typeof FEATURES;

/** How recently the leader must have heard a member's version for it to count. */
export const VERSION_HEARD_WITHIN_MS = 10_000;

/** major.minor.patch, no leading zeros, no pre-release (the form every version here takes). */
export const VERSION_PATTERN = /^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$/;
const SEMVER = VERSION_PATTERN;

/** Is `v` a version this module understands (major.minor.patch, no pre-release)? */
export function isVersion(v: string): boolean {
  return SEMVER.test(v);
}

function parts(v: string): [number, number, number] {
  const m = SEMVER.exec(v);
  if (m === null) throw new CairnError('EINVAL', `version ${JSON.stringify(v.slice(0, 40))} is not major.minor.patch`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** Negative when a < b, 0 when equal, positive when a > b. Throws EINVAL on a malformed version. */
export function compareVersions(a: string, b: string): number {
  const x = parts(a);
  const y = parts(b);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return 0;
}

/** What a peer put on the wire as its version: "" (a node before versions) is BASE_VERSION. */
export function reportedVersion(wire: string | undefined | null): string {
  if (wire === undefined || wire === null || wire === '') return BASE_VERSION;
  return wire;
}

/**
 * The effective version of a set of members: the lowest, or undefined when any member's version
 * is unknown (not heard recently) or malformed — the gate then stays where it is.
 */
export function effectiveVersion(versions: ReadonlyArray<string | undefined>): string | undefined {
  if (versions.length === 0) return undefined;
  let min: string | undefined;
  for (const v of versions) {
    if (v === undefined || !isVersion(v)) return undefined;
    if (min === undefined || compareVersions(v, min) < 0) min = v;
  }
  return min;
}

/** Anything that knows the cluster version (the node's MetaStateMachine). */
export interface ClusterVersionSource {
  clusterVersion(): string;
}

/** May the cluster use `feature` (every member runs a release that understands it)? */
export function clusterSupports(src: ClusterVersionSource | string, feature: Feature): boolean {
  const cv = typeof src === 'string' ? src : src.clusterVersion();
  return compareVersions(cv, FEATURES[feature]) >= 0;
}

/** Throw EAGAIN with a sentence naming the feature and what to do when the cluster may not use it yet. */
export function requireFeature(src: ClusterVersionSource | string, feature: Feature): void {
  const cv = typeof src === 'string' ? src : src.clusterVersion();
  if (compareVersions(cv, FEATURES[feature]) >= 0) return;
  throw new CairnError(
    'EAGAIN',
    `${feature} needs cluster version ${FEATURES[feature]}, and the cluster is at ${cv}: some node still runs an older release; finish the rolling upgrade (cairn status shows each node's version)`,
    { feature, clusterVersion: cv, needs: FEATURES[feature] },
  );
}

/**
 * What the leader should propose as the new cluster version, if anything: the effective version
 * of the members when it is above the current one (the cluster version never goes down).
 */
export function nextClusterVersion(current: string, memberVersions: ReadonlyArray<string | undefined>): string | undefined {
  const eff = effectiveVersion(memberVersions);
  if (eff === undefined || compareVersions(eff, current) <= 0) return undefined;
  // Never past this build: a leader does not vouch for releases it does not know.
  if (compareVersions(eff, CAIRN_VERSION) > 0) return compareVersions(CAIRN_VERSION, current) > 0 ? CAIRN_VERSION : undefined;
  return eff;
}
