/**
 * Node configuration: one zod schema, one loader. A config file is JSON; every error names
 * the file and the field (e.g. "cairn.json: raft.electionTicks: must be greater than heartbeatTicks").
 *
 * Sections belong to the layers that read them (raft, meta, chunk, client); each layer
 * validates only through this schema so that a bad value is caught at start-up, not later.
 * Every object is strict (a misspelled field such as `daemon.scrubb` is an error naming it, never
 * silently ignored) and every duration has an upper bound (`durationMs`), so no value can overflow
 * a timer.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { CairnError } from './errors.js';

/** host:port on the loopback range or any address; the port must be a valid TCP port. */
export const addressSchema = z
  .string()
  .regex(/^[A-Za-z0-9.\-_:[\]]+:\d{1,5}$/, 'must be host:port')
  .refine((a) => {
    const port = Number(a.slice(a.lastIndexOf(':') + 1));
    return port > 0 && port < 65536;
  }, 'port must be 1..65535');

/** The longest duration any setting may have: a week (well below a timer's 2^31-1 ms limit). */
export const MAX_DURATION_MS = 7 * 24 * 60 * 60 * 1000;

/** A duration in milliseconds: an integer from min up to max (default: MAX_DURATION_MS). */
export function durationMs(min: number, max: number = MAX_DURATION_MS): z.ZodNumber {
  return z.number().int().min(min).max(max);
}

export const nodeIdSchema = z.number().int().min(1).max(0xffff_ffff);

export const peerSchema = z.strictObject({
  id: nodeIdSchema,
  address: addressSchema,
});

export const diskConfigSchema = z.strictObject({
  /** Directory (or mount point) that holds this disk's buckets. */
  path: z.string().min(1),
  /** Disk number within the machine (16 bits in the bucket id). */
  disk: z.number().int().min(0).max(0xffff),
  /** Capacity this disk offers to Cairn, in bytes. */
  capacityBytes: z.number().int().positive(),
  class: z.enum(['hdd', 'ssd']).default('hdd'),
});

export const raftConfigSchema = z
  .strictObject({
    tickMs: durationMs(1, 10_000).default(50),
    electionTicks: z.number().int().min(2).max(1000).default(20),
    heartbeatTicks: z.number().int().min(1).max(100).default(2),
    /** Take a snapshot after this many applied entries since the last one. */
    snapshotEntries: z.number().int().min(1).default(10_000),
    /** Entries kept behind a snapshot so that slightly lagging followers need no snapshot. */
    compactionMarginEntries: z.number().int().min(0).default(1_000),
    maxInflightMsgs: z.number().int().min(1).max(4096).default(256),
    maxSizePerMsgBytes: z.number().int().min(1024).default(1 << 20),
    preVote: z.boolean().default(true),
    checkQuorum: z.boolean().default(true),
  })
  .refine((r) => r.electionTicks > r.heartbeatTicks, {
    message: 'electionTicks must be greater than heartbeatTicks',
    path: ['electionTicks'],
  });

/**
 * What the node daemon runs besides Raft and meta (src/server): the diskmap controller, the file
 * service's write cache, and the background chunk GC and scrub. Every field has a default, so
 * the section may be left out.
 */
/** One FUSE mount of the node daemon (daemon.mounts). */
export const mountConfigSchema = z
  .object({
    /** Absolute path of the mount point (an existing directory). */
    dir: z.string().min(1).max(4096).regex(/^\//, 'must be an absolute path'),
    /** weak: fsync/close durable in this node's cache; strong: committed (default: daemon.file.mode). */
    mode: z.enum(['weak', 'strong']).optional(),
    /** Longest a cached name/attribute is served (ms) before asking the metadata again. */
    cacheTtlMs: durationMs(0, 60_000).default(1_000),
    /**
     * Kernel attribute/entry cache (seconds). Default: 0 with cluster-wide locks (a lock taken on
     * one node must not find another node's write hidden behind the kernel's cached pages or
     * names: docs/mount.md, "Locks and SQLite across nodes"), 1 with node-local locks.
     */
    attrTimeoutS: z.number().min(0).max(60).optional(),
    /** Let other users than the daemon's reach the mount (needs user_allow_other in /etc/fuse.conf). */
    allowOther: z.boolean().default(false),
    /**
     * The DFS cache's durability level (docs/dfs-cache.md): local (a write is acknowledged in this
     * node's cache: weak), replicated (in the caches of two nodes), committed (strong). Set, it also
     * turns the kernel's page and attribute caches off for this mount, so every read sees other nodes' writes.
     */
    durability: z.enum(['local', 'replicated', 'committed']).optional(),
    /** POSIX and flock locks: cluster-wide through the metadata, or node-local (docs/mount.md, "Locks"). */
    locks: z.enum(['cluster', 'node']).default('cluster'),
  })
  .strict();

export const daemonConfigSchema = z.strictObject({
  /**
   * Bucket size of the first diskmap this cluster builds (later epochs keep it). Default: the
   * largest power of two ≤ (smallest disk / 16), at most 64 GiB and at least 1 MiB.
   */
  bucketSizeBytes: z.number().int().min(1 << 20).optional(),
  /** How often the leader's diskmap controller and every node's cluster view refresh. */
  controllerIntervalMs: durationMs(50, 600_000).default(1_000),
  file: z
    .strictObject({
      /** Commit mode of uploads that do not say (cairn put --strong overrides). */
      mode: z.enum(['weak', 'strong']).default('weak'),
      cacheMaxBytes: z.number().int().min(1 << 20).default(1024 * 1024 * 1024),
      chunkSizeBytes: z.number().int().min(4096).max(64 * 1024 * 1024).default(4 * 1024 * 1024),
      idleCommitDelayMs: durationMs(0).default(2_000),
      /** Chunks fetched ahead of a sequential reader (0: none). */
      readAheadChunks: z.number().int().min(0).max(64).default(1),
      /** Files up to this size are stored inline in the metadata (0: never; at most 256 KiB). docs/meta.md */
      inlineMaxBytes: z.number().int().min(0).max(256 * 1024).default(64 * 1024),
      /** A commit stores only the bytes it changed (old chunks kept as slices, crowded windows compacted). docs/client.md */
      slices: z.boolean().default(true),
      /** How long a write lease lasts unrenewed (default 30 s): a dead writer's files are writable elsewhere this long after it died (docs/dfs-cache.md). */
      leaseTtlMs: durationMs(1_000, 600_000).optional(),
    })
    .default(() => ({ mode: 'weak' as const, cacheMaxBytes: 1024 * 1024 * 1024, chunkSizeBytes: 4 * 1024 * 1024, idleCommitDelayMs: 2_000, readAheadChunks: 1, inlineMaxBytes: 64 * 1024, slices: true })),
  /** FUSE mounts the daemon makes at start (src/fuse, docs/mount.md); `cairn mount` adds more. */
  mounts: z.array(mountConfigSchema).default([]),
  /**
   * Total bytes of inline file content the metadata may hold (on the metadata SSD of every node);
   * past it, small files go to chunks (docs/meta.md, "Inline small files").
   */
  inlineBudgetBytes: z.number().int().min(0).default(1024 * 1024 * 1024),
  gc: z
    .strictObject({
      enabled: z.boolean().default(true),
      intervalMs: durationMs(100).default(10 * 60_000),
      /** Unreferenced shards younger than this are kept (a commit in flight is never collected). */
      graceMs: durationMs(0).default(60 * 60_000),
    })
    .default(() => ({ enabled: true, intervalMs: 10 * 60_000, graceMs: 60 * 60_000 })),
  scrub: z
    .strictObject({
      enabled: z.boolean().default(true),
      intervalMs: durationMs(100).default(60 * 60_000),
      rateBytesPerSec: z.number().int().min(1).default(32 * 1024 * 1024),
    })
    .default(() => ({ enabled: true, intervalMs: 60 * 60_000, rateBytesPerSec: 32 * 1024 * 1024 })),
  /** Availability (src/server/catch-up.ts, repair-job.ts, docs/chunk.md "A node or disk down"). */
  repair: z
    .strictObject({
      /** How often each node sends the guest shards it holds home (catch-up). */
      catchUpIntervalMs: durationMs(100).default(5_000),
      /** A node down this long (or a failed disk at once) has its shards rebuilt elsewhere; a reboot must not start a rebuild. */
      downGraceMs: durationMs(0).default(600_000),
      /** Rebuild throttle: payload bytes read per second by one node's repair. */
      rateBytesPerSec: z.number().int().min(1).default(64 * 1024 * 1024),
    })
    .default(() => ({ catchUpIntervalMs: 5_000, downGraceMs: 600_000, rateBytesPerSec: 64 * 1024 * 1024 })),
  /** The metadata copies on every data disk (src/server/meta-copy.ts, docs/recovery.md). */
  metaCopy: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** The disk copies' tails are appended (and fsynced) this often: how far behind they may be. */
      flushIntervalMs: durationMs(10, 60_000).default(200),
      /** A new generation (a full snapshot on every disk) after this many tail entries. */
      snapshotEveryEntries: z.number().int().min(100).default(50_000),
      /** Generations kept per disk. */
      keep: z.number().int().min(1).max(16).default(2),
    })
    .default(() => ({ enabled: true, flushIntervalMs: 200, snapshotEveryEntries: 50_000, keep: 2 })),
});
export type DaemonConfig = z.infer<typeof daemonConfigSchema>;

export const nodeConfigSchema = z.strictObject({
  clusterName: z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes'),
  nodeId: nodeIdSchema,
  /** gRPC address this node listens on (raft, meta, chunk services share it). */
  listen: addressSchema,
  /** Address other nodes use to reach this one (defaults to listen). */
  advertise: addressSchema.optional(),
  /** Initial voters of the metadata Raft group, this node included (bootstrap only). */
  peers: z.array(peerSchema).min(1),
  /** Where the Raft log and the metadata database live (the SSD). */
  dataDir: z.string().min(1),
  /** The node's write cache (the SSD). */
  cacheDir: z.string().min(1),
  /** Position of this machine in the topology (8 bits each in the bucket id). */
  location: z
    .strictObject({
      dc: z.number().int().min(0).max(255).default(0),
      row: z.number().int().min(0).max(255).default(0),
      rack: z.number().int().min(0).max(255).default(0),
      machine: z.number().int().min(0).max(255),
    }),
  disks: z.array(diskConfigSchema).default([]),
  raft: raftConfigSchema.default(() => raftConfigSchema.parse({})),
  /**
   * Mutual TLS from the cluster's CA (written by `cairn init` / `cairn join` / `cairn local up`):
   * the node serves only peers with a certificate of that CA and presents its own. Without it the
   * node accepts anyone who can reach its port (and `cairn status` says so).
   */
  tls: z
    .strictObject({
      caFile: z.string().min(1),
      certFile: z.string().min(1),
      keyFile: z.string().min(1),
      /** The CA's key, on members that may issue certificates and join tokens (`cairn token create`). */
      caKeyFile: z.string().min(1).optional(),
    })
    .optional(),
  /** Added by `cairn join`: start with an empty membership and wait to be added (never bootstrap). */
  join: z.boolean().optional(),
  /** Prometheus /metrics on this address, if set. */
  metricsListen: addressSchema.optional(),
  /**
   * The read-only HTTPS status page, /status.json and /metrics on this address, if set
   * (src/server/status-page.ts). anonymous: serve without a client certificate or token (only
   * on 127.0.0.1 or a management network: docs/operations.md).
   */
  /**
   * A unix socket for programs on this machine (src/rpc/lane.ts listenLaneUnix): client calls
   * without TLS, admitted by the file's permissions: mode "0600" (the node's user only) or
   * "0660" (and group `gid`).
   */
  localSocket: z
    .strictObject({
      path: z.string().min(1).max(100),
      mode: z.enum(['0600', '0660']).default('0600'),
      gid: z.number().int().min(0).optional(),
    })
    .optional(),
  statusPage: z
    .strictObject({
      listen: addressSchema,
      anonymous: z.boolean().default(false),
      refreshSeconds: z.number().int().min(1).max(3600).default(5),
    })
    .optional(),
  daemon: daemonConfigSchema.default(() => daemonConfigSchema.parse({})),
});

export type NodeConfig = z.infer<typeof nodeConfigSchema>;
export type RaftConfig = z.infer<typeof raftConfigSchema>;

/** Turn a zod error into one readable sentence per issue, naming the source and field. */
export function formatZodError(source: string, err: z.ZodError): string {
  const field = (path: PropertyKey[]): string => (path.length > 0 ? path.map(String).join('.') : '(root)');
  return err.issues
    .flatMap((i) =>
      i.code === 'unrecognized_keys'
        ? i.keys.map((k) => `${source}: ${field([...i.path, k])}: unknown field (misspelled? it is not a setting of ${i.path.length > 0 ? field(i.path) : 'the config'})`)
        : [`${source}: ${field(i.path)}: ${i.message}`],
    )
    .join('\n');
}

/** Validate any value against a schema; bad input becomes one EINVAL CairnError. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown, source: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new CairnError('EINVAL', formatZodError(source, r.error));
  return r.data;
}

/** Read and validate a JSON file against a schema. */
export async function loadJsonFile<S extends z.ZodType>(schema: S, path: string): Promise<z.infer<S>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CairnError('ENOENT', `${path}: cannot read config file (${(err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CairnError('EINVAL', `${path}: not valid JSON (${(err as Error).message})`);
  }
  return parseWith(schema, json, path);
}

export async function loadNodeConfig(path: string): Promise<NodeConfig> {
  return loadJsonFile(nodeConfigSchema, path);
}
