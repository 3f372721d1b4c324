/**
 * The KV state machine the driver applies to, on real LevelDB: results of put/cas/delete
 * within one batch, the applied index across reopen, snapshot → restore into another node,
 * and a damaged snapshot stream that leaves the old state untouched; reads and later batches
 * that see a batch still queued for LevelDB (apply() returns before its write lands).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KvStateMachine } from '../../src/raft/kv/state-machine.js';
import { encodeCommand, type KvCommand } from '../../src/raft/kv/commands.js';
import { EntryType, type Entry } from '../../src/raft/types.js';
import { tempDir } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function open(): Promise<{ dir: string; sm: KvStateMachine }> {
  const t = await tempDir('cairn-kvsm-');
  cleanups.push(t.remove);
  const sm = await KvStateMachine.open(t.path);
  cleanups.push(() => sm.close());
  return { dir: t.path, sm };
}

let nextIndex = 1;
const entries = (cmds: KvCommand[], term = 1): Entry[] =>
  cmds.map((c) => ({ index: nextIndex++, term, type: EntryType.Normal, data: encodeCommand(c) }));
const b = (s: string): Buffer => Buffer.from(s);

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of chunks) out.push(c);
  return out;
}
async function* replay(parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

describe('KvStateMachine', () => {
  it('applies a batch in order, with cas and delete seeing earlier writes of the same batch', async () => {
    nextIndex = 1;
    const { dir, sm } = await open();
    const res = await sm.apply([
      ...entries([
        { op: 'put', key: 'a', value: b('1') },
        { op: 'cas', key: 'a', expect: b('1'), value: b('2') },
        { op: 'cas', key: 'a', expect: b('1'), value: b('3') },
        { op: 'cas', key: 'n', expect: null, value: b('new') },
        { op: 'delete', key: 'n' },
        { op: 'delete', key: 'n' },
      ]),
      { index: nextIndex++, term: 1, type: EntryType.Normal, data: new Uint8Array(0) }, // a leader's no-op
    ]);
    expect(res).toEqual([
      { op: 'put' },
      { op: 'cas', ok: true, current: null },
      { op: 'cas', ok: false, current: b('2') },
      { op: 'cas', ok: true, current: null },
      { op: 'delete', deleted: true },
      { op: 'delete', deleted: false },
      undefined,
    ]);
    expect(sm.get('a')?.toString()).toBe('2');
    expect(sm.get('n')).toBeUndefined();
    expect(await sm.appliedIndex()).toBe(7);
    await sm.close();
    const again = await KvStateMachine.open(dir);
    cleanups.push(() => again.close());
    expect(await again.appliedIndex()).toBe(7);
    expect(again.get('a')?.toString()).toBe('2');
  });

  it('serves the values of batches still queued for LevelDB to reads and to later batches', async () => {
    nextIndex = 1;
    const { dir, sm } = await open();
    await sm.apply(entries([{ op: 'put', key: 'gone', value: b('old') }]));
    await sm.flush();
    // No event-loop turn passes between these calls, so none of these batches has landed yet
    // (LevelDB's completion needs one): what the reads see comes from the queued batches.
    await sm.apply(entries([{ op: 'put', key: 'a', value: b('1') }, { op: 'delete', key: 'gone' }]));
    expect(sm.get('a')?.toString()).toBe('1');
    expect(sm.get('gone')).toBeUndefined();
    const res = await sm.apply(
      entries([
        { op: 'cas', key: 'a', expect: b('1'), value: b('2') },
        { op: 'delete', key: 'gone' },
        { op: 'cas', key: 'gone', expect: null, value: b('back') },
      ]),
    );
    expect(res).toEqual([{ op: 'cas', ok: true, current: null }, { op: 'delete', deleted: false }, { op: 'cas', ok: true, current: null }]);
    expect(sm.get('a')?.toString()).toBe('2');
    expect(sm.get('gone')?.toString()).toBe('back');
    expect(await sm.appliedIndex()).toBe(6);
    await sm.flush();
    expect(sm.get('a')?.toString()).toBe('2');
    await sm.close();
    const again = await KvStateMachine.open(dir);
    cleanups.push(() => again.close());
    expect(await again.appliedIndex()).toBe(6);
    expect(again.get('a')?.toString()).toBe('2');
    expect(again.get('gone')?.toString()).toBe('back');
  });

  it('streams a snapshot that restores the same state and applied index elsewhere', async () => {
    nextIndex = 1;
    const src = await open();
    const many: KvCommand[] = Array.from({ length: 3000 }, (_, i) => ({ op: 'put', key: `k${i}`, value: Buffer.alloc(200, i % 251) }));
    await src.sm.apply(entries(many, 4));
    const snap = await src.sm.snapshot();
    expect(snap).toMatchObject({ index: 3000, term: 4 });
    const parts = await collect(snap.chunks);
    expect(parts.length).toBeGreaterThan(1); // really streamed in pieces
    const dst = await open();
    await dst.sm.apply(entries([{ op: 'put', key: 'stale', value: b('x') }]));
    await dst.sm.restore({ index: 3000, term: 4, conf: { voters: [1], learners: [] } }, replay(parts));
    expect(await dst.sm.appliedIndex()).toBe(3000);
    expect(dst.sm.get('stale')).toBeUndefined();
    expect(dst.sm.get('k2999')).toEqual(Buffer.alloc(200, 2999 % 251));
    // The restored database is the one a reopen finds.
    await dst.sm.close();
    const re = await KvStateMachine.open(dst.dir);
    cleanups.push(() => re.close());
    expect(await re.appliedIndex()).toBe(3000);
    expect(re.get('k0')).toEqual(Buffer.alloc(200, 0));
  });

  it('keeps its old state when a snapshot stream is damaged', async () => {
    nextIndex = 1;
    const src = await open();
    await src.sm.apply(entries([{ op: 'put', key: 'x', value: b('from-leader') }]));
    const parts = await collect((await src.sm.snapshot()).chunks);
    const whole = Buffer.concat(parts);
    const dst = await open();
    await dst.sm.apply(entries([{ op: 'put', key: 'mine', value: b('kept') }]));
    const before = await dst.sm.appliedIndex();
    await expect(dst.sm.restore({ index: 1, term: 1, conf: { voters: [1], learners: [] } }, replay([whole.subarray(0, whole.length - 3)]))).rejects.toMatchObject({
      code: 'ECORRUPT',
    });
    const bad = Buffer.from(whole);
    bad.write('XXXX', 0);
    await expect(dst.sm.restore({ index: 1, term: 1, conf: { voters: [1], learners: [] } }, replay([bad]))).rejects.toMatchObject({ code: 'ECORRUPT' });
    expect(dst.sm.get('mine')?.toString()).toBe('kept');
    expect(await dst.sm.appliedIndex()).toBe(before);
  });
});
