/**
 * The deterministic Raft simulator in `npm test`: 500 seeds (3 and 5 nodes alternating),
 * each a run of faults and client operations with the safety checks after every step and
 * the durability check after healing. A failure names the command that replays the seed.
 */
import { describe, expect, it } from 'vitest';
import { nodesForSeed, runSimulation, SimFailure } from './sim.js';

const SEEDS = 500;
const STEPS = 400;
const BATCH = 100;

describe('raft simulator', () => {
  for (let start = 1; start <= SEEDS; start += BATCH) {
    it(`seeds ${start}..${start + BATCH - 1} keep every safety property`, () => {
      const failures: string[] = [];
      let acked = 0;
      let released = 0;
      for (let seed = start; seed < start + BATCH; seed++) {
        const nodes = nodesForSeed(seed);
        try {
          const st = runSimulation({ seed, nodes, steps: STEPS, traceEvents: 0 });
          acked += st.acked;
          released += st.readsReleased;
        } catch (err) {
          const why = err instanceof SimFailure ? err.message : String(err instanceof Error ? err.stack : err);
          failures.push(`${why}\n  replay: npm run sim -- --seeds 1 --start ${seed} --nodes ${nodes} --steps ${STEPS} --trace`);
        }
      }
      expect(failures).toEqual([]);
      // The runs did real work: proposals were acknowledged and reads released.
      expect(acked).toBeGreaterThan(BATCH * 10);
      expect(released).toBeGreaterThan(BATCH * 10);
    });
  }

  it('is deterministic: the same seed gives the same run', () => {
    const a = runSimulation({ seed: 4242, nodes: 5, steps: 300, traceEvents: 0 });
    const b = runSimulation({ seed: 4242, nodes: 5, steps: 300, traceEvents: 0 });
    expect(a).toEqual(b);
  });
});
