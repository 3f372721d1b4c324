/**
 * What the metadata service needs from Raft: propose an entry (resolves with the state
 * machine's result for it) and a linearizable read barrier. RaftNode (src/raft/node.ts)
 * provides both; LocalReplicator is a single-node stand-in that applies straight to the
 * real LevelDB state machine, for unit tests of the service logic and the one-node tools.
 */
import type { Entry } from '../raft/types.js';
import { EntryType } from '../raft/types.js';
import type { StateMachine } from '../raft/types.js';

export interface Replicator {
  /** Replicate `data` as one entry; resolves with apply()'s result for it once applied locally. */
  propose(data: Uint8Array): Promise<unknown>;
  /** Resolves once the local state machine has applied everything committed when it was called. */
  readIndex(): Promise<void>;
  /** Whether this node leads (leases are granted by the leader's clock). Optional. */
  isLeader?(): boolean;
}

/** Proposals waiting for the single-node apply loop; beyond this, propose() waits. */
const LOCAL_QUEUE_MAX = 4096;

/** A one-node "log": proposals are numbered and applied in batches (group commit). */
export class LocalReplicator implements Replicator {
  private nextIndex = 0;
  private queue: Array<{ data: Uint8Array; resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];
  private running = false;
  private idle: Promise<void> = Promise.resolve();

  constructor(private readonly sm: StateMachine, private readonly term = 1) {}

  async propose(data: Uint8Array): Promise<unknown> {
    if (this.nextIndex === 0) this.nextIndex = (await this.sm.appliedIndex()) + 1;
    while (this.queue.length >= LOCAL_QUEUE_MAX) await this.idle;
    return new Promise((resolve, reject) => {
      this.queue.push({ data, resolve, reject });
      if (!this.running) this.idle = this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, 1024);
        const entries: Entry[] = batch.map((p) => ({ term: this.term, index: this.nextIndex++, type: EntryType.Normal, data: p.data }));
        try {
          const results = await this.sm.apply(entries);
          batch.forEach((p, i) => p.resolve(results[i]));
        } catch (err) {
          batch.forEach((p) => p.reject(err));
        }
      }
    } finally {
      this.running = false;
    }
  }

  async readIndex(): Promise<void> {
    await this.idle;
  }

  isLeader(): boolean {
    return true;
  }
}
