/**
 * Where a small durable write's time goes: a 3-node cluster of real `cairn start` processes with
 * /metrics, and lone writes (1 in flight) and concurrent ones (16) — mkdir, putFile of an empty
 * file and of a 4 KiB file (the inline small-file write), and the file service's strong put of a
 * 4 KiB file. For each phase it prints the client's latency beside the per-stage latencies the
 * nodes measured (their histograms' change over the phase, p50/p99 interpolated in the buckets):
 *
 *   service     leader: the metadata request, received to answered (cairn_meta_request_seconds)
 *   propose     leader: propose() to the entry applied there (cairn_raft_propose_seconds)
 *   persist     a Ready written to the Raft log and fsynced (cairn_raft_persist_seconds, sync)
 *   append rtt  leader: entries sent to a follower until its ack (network + the follower's fsync)
 *   apply       a batch of committed entries applied to the state machine
 *
 * Run alone: `npx tsx bench/put-stages.ts [--quick]`; or as the "put-stages" suite of `npm run bench`.
 */
import { report, type BenchSuite, type BenchTable } from './table.js';
import { phase, startLocalCluster } from './local-cluster.js';
import { MetaClient } from '../src/meta/client.js';
import { FileClient } from '../src/server/file-client.js';

interface OneHist {
  buckets: Array<[number, number]>;
  count: number;
  sum: number;
}
type Hist = Map<string, OneHist>;

/** The histograms of one /metrics page: key = name + labels (without le). */
function parseHistograms(text: string): Hist {
  const out: Hist = new Map();
  for (const line of text.split('\n')) {
    const m = /^(cairn_[a-z_]+)_(bucket|count|sum)(\{[^}]*\})? ([0-9.e+-]+|\+Inf|NaN)$/.exec(line);
    if (m === null) continue;
    const [, name, part, labels = '', value] = m;
    let le = '';
    const rest = labels.replace(/,?le="([^"]*)"/, (_all, v: string) => {
      le = v;
      return '';
    }).replace('{,', '{');
    const key = `${name}${rest === '{}' ? '' : rest}`;
    let h = out.get(key);
    if (h === undefined) out.set(key, (h = { buckets: [], count: 0, sum: 0 }));
    if (part === 'bucket') h.buckets.push([le === '+Inf' ? Infinity : Number(le), Number(value)]);
    else if (part === 'count') h.count = Number(value);
    else h.sum = Number(value);
  }
  return out;
}

async function scrape(addr: string): Promise<Hist> {
  const res = await fetch(`http://${addr}/metrics`);
  return parseHistograms(await res.text());
}

/** Quantile (seconds) of the observations between two scrapes, linear within a bucket. */
function quantile(before: OneHist | undefined, after: OneHist, q: number): number {
  const base = new Map<number, number>((before?.buckets ?? []).map(([le, c]) => [le, c]));
  const cum = after.buckets.map(([le, c]) => [le, c - (base.get(le) ?? 0)] as [number, number]).sort((a, b) => a[0] - b[0]);
  const total = cum.length > 0 ? cum[cum.length - 1]![1] : 0;
  if (total === 0) return NaN;
  const want = q * total;
  let prevLe = 0;
  let prevC = 0;
  for (const [le, c] of cum) {
    if (c >= want) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (want - prevC)) / Math.max(1e-12, c - prevC);
    }
    prevLe = le;
    prevC = c;
  }
  return prevLe;
}

const STAGES: Array<{ stage: string; key: string; where: 'leader' | 'followers' }> = [
  { stage: 'service (leader; batch at 16)', key: 'cairn_meta_request_seconds{method="METHOD"}', where: 'leader' },
  { stage: 'propose→applied (leader)', key: 'cairn_raft_propose_seconds', where: 'leader' },
  { stage: 'log write + fsync (leader)', key: 'cairn_raft_persist_seconds{sync="true"}', where: 'leader' },
  { stage: 'append → ack (leader)', key: 'cairn_raft_append_rtt_seconds', where: 'leader' },
  { stage: 'log write + fsync (followers)', key: 'cairn_raft_persist_seconds{sync="true"}', where: 'followers' },
  { stage: 'apply (leader)', key: 'cairn_raft_apply_seconds', where: 'leader' },
  { stage: 'apply (followers)', key: 'cairn_raft_apply_seconds', where: 'followers' },
];

export const putStagesSuite: BenchSuite = {
  name: 'put-stages',
  async run({ quick }): Promise<BenchTable[]> {
    const cluster = await startLocalCluster(3, { metrics: true });
    const meta = new MetaClient({ endpoints: cluster.endpoints });
    const rows: Array<Array<string | number>> = [];
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    try {
      let leader = 0;
      const deadline = Date.now() + 60_000;
      while (leader === 0) {
        try {
          leader = (await meta.status()).leaderId;
        } catch (err) {
          if (Date.now() > deadline) throw err;
        }
        if (leader === 0) await new Promise((r) => setTimeout(r, 100));
      }
      const fc = new FileClient(cluster.endpoints[leader - 1]!);
      const small = Buffer.alloc(4096, 0x61);
      // Warm-up (not measured): cold code after start runs at half speed.
      await meta.mkdir('/w');
      await phase(quick ? 200 : 600, 4, (i) => meta.putFile(`/w/p${i}`, small));
      await phase(quick ? 200 : 600, 1, (i) => meta.mkdir(`/w/d${i}`));
      for (;;) {
        try {
          await fc.put('/w/fs0', [small], { mode: 'strong' });
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      await phase(quick ? 100 : 300, 1, (i) => fc.put(`/w/fs${i}`, [small], { mode: 'strong' }));
      const n = quick ? 500 : 2000;
      const phases: Array<{ name: string; method: string; conc: number; op: (i: number) => Promise<unknown> }> = [];
      for (const conc of [1, 16]) {
        // Concurrent writes reach the leader as Batch requests (MetaClient coalesces them).
        const m = (single: string): string => (conc === 1 ? single : 'batch');
        phases.push({ name: 'mkdir', method: m('mkdir'), conc, op: (i) => meta.mkdir(`/m${conc}-${i}`) });
        phases.push({ name: 'putFile 0 B', method: m('putFile'), conc, op: (i) => meta.putFile(`/e${conc}-${i}`, Buffer.alloc(0)) });
        phases.push({ name: 'putFile 4 KiB', method: m('putFile'), conc, op: (i) => meta.putFile(`/p${conc}-${i}`, small) });
        phases.push({ name: 'file service put 4 KiB strong', method: m('putFile'), conc, op: (i) => fc.put(`/f${conc}-${i}`, [small], { mode: 'strong' }) });
      }
      for (const p of phases) {
        const before = await Promise.all(cluster.metricsAddresses.map(scrape));
        const cpu0 = sum(cluster.cpuMs());
        const r = await phase(n, p.conc, p.op);
        const cpu = (sum(cluster.cpuMs()) - cpu0) / n;
        const after = await Promise.all(cluster.metricsAddresses.map(scrape));
        rows.push([`${p.name} (client)`, p.conc, r.opsPerSec, r.p50, r.p99, +cpu.toFixed(2)]);
        for (const s of STAGES) {
          const key = s.key.replace('METHOD', p.method);
          const nodes = s.where === 'leader' ? [leader - 1] : [0, 1, 2].filter((i) => i !== leader - 1);
          const q50: number[] = [];
          const q99: number[] = [];
          let count = 0;
          for (const i of nodes) {
            const a = after[i]!.get(key);
            if (a === undefined) continue;
            const b = before[i]!.get(key);
            count += a.count - (b?.count ?? 0);
            q50.push(quantile(b, a, 0.5) * 1000);
            q99.push(quantile(b, a, 0.99) * 1000);
          }
          const fmt = (xs: number[]): string => (xs.length === 0 || xs.every((x) => Number.isNaN(x)) ? '-' : xs.map((x) => x.toFixed(2)).join('/'));
          rows.push([`  ${s.stage}`, '', `${count}×`, fmt(q50), fmt(q99), '']);
        }
      }
      fc.close();
    } finally {
      meta.close();
      await cluster.stop();
    }
    return [
      {
        title: 'where a small durable write\'s time goes (3 real node processes, fsync on; stage latencies from the nodes\' histograms)',
        headers: ['phase / stage', 'in flight', 'ops/s or count', 'p50 ms', 'p99 ms', 'server CPU ms/op'],
        rows,
        notes: [
          'stage rows: the change of each node\'s histogram over the phase, quantiles interpolated within buckets (0.1 ms wide at best); followers: one figure per follower',
          'count: observations (a Ready, an apply batch or an append carries several writes when they are concurrent)',
          'server CPU: user + system of the 3 node processes per operation (10 ms clock ticks); all share 2 cores with the client',
        ],
      },
    ];
  },
};

const isMain = process.argv[1] !== undefined && /bench[\\/]put-stages\.ts$/.test(process.argv[1]);
if (isMain) {
  putStagesSuite.run({ quick: process.argv.includes('--quick') }).then(
    (tables) => report('put-stages', tables),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
