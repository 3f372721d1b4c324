/**
 * The repair job's progress document (src/server/repair-job.ts): published in the registry by the
 * node that runs the job, read by `cairn status` and `cairn repair status`. Kept apart from the
 * job so that clients read it without loading the chunk layer.
 */
import { z } from 'zod';

export const repairProgressSchema = z
  .object({
    state: z.enum(['idle', 'counting', 'repairing', 'done', 'waiting']),
    /** Disk keys being rebuilt. */
    lost: z.array(z.string().max(200)).max(4096),
    /** One sentence: why (which disks, which nodes), or what it waits for. */
    reason: z.string().max(2000),
    chunksTotal: z.number().int().min(0),
    chunksDone: z.number().int().min(0),
    shardsRebuilt: z.number().int().min(0),
    bytesTotal: z.number().int().min(0),
    bytesDone: z.number().int().min(0),
    rateBytesPerSec: z.number().min(0),
    etaSec: z.number().min(0).nullable(),
    startedAtMs: z.number().int().min(0),
    updatedAtMs: z.number().int().min(0),
    cursorIno: z.number().int().min(0),
    failures: z.number().int().min(0),
  })
  .strict();
export type RepairProgress = z.infer<typeof repairProgressSchema>;

export function idleProgress(reason = 'every disk is up'): RepairProgress {
  const now = Date.now();
  return { state: 'idle', lost: [], reason, chunksTotal: 0, chunksDone: 0, shardsRebuilt: 0, bytesTotal: 0, bytesDone: 0, rateBytesPerSec: 0, etaSec: null, startedAtMs: now, updatedAtMs: now, cursorIno: 0, failures: 0 };
}

