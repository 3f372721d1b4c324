/**
 * In-process micro-benchmark of the metadata state machine alone: CPU per operation to
 * encode, decode and apply mkdir/create/rename/unlink and putFile of a 4 KiB file (in its binary
 * record, and as the JSON record it had before: `putFile-json`), OPS operations to an entry as the
 * service coalesces them (what every node of the cluster pays per operation, without Raft or
 * RPC). `npx tsx bench/meta-ops-apply.ts [OPS=64] [N=20000]`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetaStateMachine } from '../src/meta/state-machine.js';
import type { Op } from '../src/meta/ops.js';
import { encodeEntry, encodeEntryOps, encodeOp } from '../src/meta/entry.js';
import { EntryType, type Entry } from '../src/raft/types.js';

const dir = await mkdtemp(join(tmpdir(), 'cairn-apply-'));
const sm = await MetaStateMachine.open({ dataDir: dir });
let index = 1;
const perBatch = Number(process.argv[2] ?? 64);
/** An operation as the JSON record (opcode 0) that putFile was written as before its binary record. */
function jsonRecord(op: Op): Buffer {
  const json = Buffer.from(JSON.stringify(op));
  const out = Buffer.alloc(5 + json.length);
  out.writeUInt32LE(json.length, 1);
  json.copy(out, 5);
  return out;
}
async function run(name: string, n: number, op: (i: number) => Op, record: (op: Op) => Buffer = encodeOp): Promise<void> {
  const t0 = process.cpuUsage();
  const w0 = performance.now();
  let encodeUs = 0;
  for (let b = 0; b < n; b += perBatch) {
    const e0 = process.cpuUsage();
    const ops: Op[] = [];
    for (let i = b; i < Math.min(n, b + perBatch); i++) ops.push(op(i));
    // As the service proposes them: concurrent operations coalesced into one entry.
    const entries: Entry[] = [{ index: ++index, term: 1, type: EntryType.Normal, data: encodeEntryOps(ops.map(record), 1_700_000_000_000) }];
    const e1 = process.cpuUsage(e0);
    encodeUs += e1.user + e1.system;
    const res = ((await sm.apply(entries)) as Array<Array<{ ok: boolean }>>)[0]!;
    if (!res.every((r) => r.ok)) throw new Error(`${name}: ${JSON.stringify(res.find((r) => !r.ok))}`);
  }
  const t = process.cpuUsage(t0);
  process.stdout.write(`${name.padEnd(8)} ${(((t.user + t.system) - encodeUs) / n / 1000).toFixed(4)} ms CPU/op apply, encode ${(encodeUs / n / 1000).toFixed(4)}, wall ${((performance.now() - w0) / n).toFixed(4)} ms/op\n`);
}
const N = Number(process.argv[3] ?? 20000);
await sm.apply([{ index: ++index, term: 1, type: EntryType.Normal, data: encodeEntry({ op: 'mkdir', at: { path: '/d' }, mode: 0o755, uid: 0, gid: 0 }, 1) }]);
// (the directory is inode 2)
const d = 2;
for (let round = 0; round < 2; round++) {
  await run('mkdir', N, (i) => ({ op: 'mkdir', at: { parent: d, name: `d${round}-${i}` }, mode: 0o755, uid: 0, gid: 0 }));
  await run('create', N, (i) => ({ op: 'create', at: { parent: d, name: `f${round}-${i}` }, mode: 0o644, uid: 0, gid: 0, exclusive: true }));
  await run('rename', N, (i) => ({ op: 'rename', from: { parent: d, name: `f${round}-${i}` }, to: { parent: d, name: `r${round}-${i}` }, noReplace: false }));
  await run('unlink', N, (i) => ({ op: 'unlink', at: { parent: d, name: `r${round}-${i}` } }));
  const small = randomBytes(4096).toString('base64');
  const put = (prefix: string) => (i: number): Op => ({ op: 'putFile', at: { path: `/p/${prefix}${round}-${i}` }, mode: 0o644, uid: 0, gid: 0, dataB64: small, mkdirs: true, inlineBudget: 2 ** 40 });
  await run('putFile', N / 4, put('b'));
  await run('putFile-json', N / 4, put('j'), jsonRecord);
}
await sm.close();
await rm(dir, { recursive: true, force: true });
