/**
 * The Raft transport's input checks: malformed messages from the network are rejected with a
 * clear error and never reach the core; a node that received them keeps working. Also the
 * proposal envelope, the packed message batch (wire.ts) and the KV command codec round-trip
 * and reject damaged bytes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { checkWireMessage } from '../../src/raft/transport.js';
import { RaftNode, unwrapEnvelope, wrapEnvelope } from '../../src/raft/node.js';
import { KvStateMachine } from '../../src/raft/kv/state-machine.js';
import { decodeCommand, encodeCommand } from '../../src/raft/kv/commands.js';
import { grpc, makeClient, serviceOf, fromServiceError } from '../../src/rpc/grpc.js';
import { MessageType, EntryType, type Message } from '../../src/raft/types.js';
import { decodeBatch, encodeBatch } from '../../src/raft/wire.js';
import fc from 'fast-check';
import { eventually, freePort, tempDir } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const good = (): Record<string, unknown> => ({
  type: MessageType.App,
  from: 2,
  to: 1,
  term: 3,
  log_term: 2,
  index: 10,
  entries: [{ term: 3, index: 11, type: 0, data: Buffer.from('x') }],
  commit: 9,
  reject: false,
  reject_hint: 0,
  snapshot: null,
  context: Buffer.alloc(0),
});

describe('checkWireMessage', () => {
  it('accepts a well-formed message and maps its fields', () => {
    const m = checkWireMessage(good(), 1, false);
    expect(typeof m).toBe('object');
    expect(m).toMatchObject({ type: 'App', from: 2, to: 1, logTerm: 2, rejectHint: 0, entries: [{ index: 11, term: 3 }] });
  });

  it.each([
    ['unknown type', { type: 'Bogus' }],
    ['local-only type', { type: MessageType.Hup }],
    ['snapshot on the message stream', { type: MessageType.Snap }],
    ['negative term', { term: -1 }],
    ['fractional index', { index: 1.5 }],
    ['no sender', { from: 0 }],
    ['wrong recipient', { to: 7 }],
    ['non-boolean reject', { reject: 'yes' }],
    ['context not bytes', { context: 'abc' }],
    ['entries not a list', { entries: {} }],
    ['entry with bad type', { entries: [{ term: 1, index: 1, type: 9, data: Buffer.alloc(0) }] }],
    ['entry with string data', { entries: [{ term: 1, index: 1, type: 0, data: 'x' }] }],
  ])('rejects %s', (_name, patch) => {
    expect(typeof checkWireMessage({ ...good(), ...patch }, 1, false)).toBe('string');
  });

  it('requires snapshot metadata on a Snap header', () => {
    expect(typeof checkWireMessage({ ...good(), type: MessageType.Snap }, 1, true)).toBe('string');
    const ok = checkWireMessage({ ...good(), type: MessageType.Snap, snapshot: { index: 5, term: 2, conf: { voters: [1, 2], learners: [] } } }, 1, true);
    expect(ok).toMatchObject({ snapshot: { metadata: { index: 5, term: 2 } } });
  });
});

const WIRE_TYPES = [
  MessageType.Prop, MessageType.App, MessageType.AppResp, MessageType.Vote, MessageType.VoteResp, MessageType.PreVote,
  MessageType.PreVoteResp, MessageType.Heartbeat, MessageType.HeartbeatResp, MessageType.TransferLeader,
  MessageType.TimeoutNow, MessageType.ReadIndex, MessageType.ReadIndexResp,
];
const count = fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.constant(Number.MAX_SAFE_INTEGER), fc.integer({ min: 0, max: 2 ** 40 }));
const bytes = fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a));
const arbMessage = (to: number): fc.Arbitrary<Message> =>
  fc.record({
    type: fc.constantFrom(...WIRE_TYPES),
    from: fc.integer({ min: 1, max: 2 ** 40 }),
    to: fc.constant(to),
    term: count,
    logTerm: count,
    index: count,
    entries: fc.array(fc.record({ term: count, index: count, type: fc.constantFrom(EntryType.Normal, EntryType.ConfChange), data: bytes }), { maxLength: 5 }),
    commit: count,
    reject: fc.boolean(),
    rejectHint: count,
    context: bytes,
  });

describe('packed message batches (wire.ts)', () => {
  it('round-trip any batch of messages', () => {
    fc.assert(
      fc.property(fc.array(arbMessage(3), { maxLength: 6 }), (msgs) => {
        const got = decodeBatch(encodeBatch(msgs), 3);
        expect(got).toEqual(msgs);
      }),
      { numRuns: 300 },
    );
  });

  it('copy entry data out of the network buffer', () => {
    const packed = encodeBatch([{ ...(checkWireMessage(good(), 1, false) as Message) }]);
    const got = decodeBatch(packed, 1) as Message[];
    packed.fill(0);
    expect(Buffer.from(got[0]!.entries[0]!.data).toString()).toBe('x');
  });

  it('reject every truncation, trailing bytes and bad fields with a sentence, never a throw', () => {
    const msgs = [checkWireMessage(good(), 1, false) as Message, { ...(checkWireMessage(good(), 1, false) as Message), context: Buffer.from('ctx') }];
    const packed = encodeBatch(msgs);
    for (let n = 0; n < packed.length; n++) expect(typeof decodeBatch(packed.subarray(0, n), 1)).toBe('string');
    expect(typeof decodeBatch(Buffer.concat([packed, Buffer.from([0])]), 1)).toBe('string');
    expect(decodeBatch(packed, 2)).toMatch(/reached node 2/);
    const patch = (off: number, v: number): Buffer => {
      const b = Buffer.from(packed);
      b[off] = v;
      return b;
    };
    expect(decodeBatch(patch(0, 9), 1)).toMatch(/version/);
    expect(decodeBatch(patch(5, 0), 1)).toMatch(/type 0/); // Hup: local only
    expect(decodeBatch(patch(5, 9), 1)).toMatch(/type 9/); // Snap: its own stream
    expect(decodeBatch(patch(6, 2), 1)).toMatch(/flags/);
    expect(decodeBatch(patch(7, 0xff), 1)).toMatch(/safe integer/);
    expect(decodeBatch(patch(1, 0xff), 1)).toMatch(/claims/);
    // A random mess of bytes never throws.
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
      const r = decodeBatch(Buffer.from(a), 1);
      expect(typeof r === 'string' || Array.isArray(r)).toBe(true);
    }));
    expect(() => encodeBatch([{ ...msgs[0]!, type: MessageType.Snap }])).toThrow(/does not travel/);
  });
});

describe('codecs', () => {
  it('round-trips the proposal envelope', () => {
    const env = wrapEnvelope(7, 2 ** 40 + 5, Buffer.from('payload'));
    const u = unwrapEnvelope(env)!;
    expect(u.proposer).toBe(7);
    expect(u.req).toBe(2 ** 40 + 5);
    expect(Buffer.from(u.payload).toString()).toBe('payload');
    expect(unwrapEnvelope(new Uint8Array(0))).toBeUndefined();
  });

  it('round-trips KV commands and rejects damaged ones', () => {
    const c = decodeCommand(encodeCommand({ op: 'cas', key: 'k', expect: null, value: Buffer.from('v') }));
    expect(c.op).toBe('cas');
    expect(c.expect).toBeNull();
    expect(c.value.toString()).toBe('v');
    expect(() => decodeCommand(Buffer.from([9, 0, 1, 65]))).toThrow(/unknown op/);
    expect(() => decodeCommand(Buffer.from([1, 0, 50, 65]))).toThrow(/key length/);
    expect(() => encodeCommand({ op: 'put', key: '', value: Buffer.alloc(0) })).toThrow(/key/);
  });
});

describe('a node receiving malformed messages', () => {
  it('rejects them with EINVAL and keeps serving', async () => {
    const dir = await tempDir('cairn-raftwire-');
    cleanups.push(dir.remove);
    const address = `127.0.0.1:${await freePort()}`;
    const sm = await KvStateMachine.open(`${dir.path}/kv`);
    const node = await RaftNode.start({
      id: 1,
      dataDir: dir.path,
      listen: address,
      peers: [{ id: 1, address }],
      raft: { tickMs: 10, electionTicks: 10, heartbeatTicks: 1 },
      stateMachine: sm,
    });
    cleanups.push(() => node.stop());
    await eventually(() => node.isLeader());

    const Raft = serviceOf('raft.proto', 'cairn.raft.Raft');
    const client = makeClient<grpc.Client>(Raft, address);
    cleanups.push(async () => client.close());
    const sendBatch = (batch: unknown): Promise<unknown> =>
      new Promise((resolve, reject) => {
        const s = (client as unknown as { Send: Function }).Send((err: grpc.ServiceError | null, r: unknown) =>
          err ? reject(fromServiceError(err)) : resolve(r),
        ) as grpc.ClientWritableStream<unknown>;
        s.write(batch);
        s.end();
      });
    await expect(sendBatch({ from: 2, messages: [{ ...good(), to: 9 }] })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(sendBatch({ from: 2, messages: [{ ...good(), type: MessageType.Hup }] })).rejects.toMatchObject({ code: 'EINVAL' });
    // The packed form (what Cairn sends): damaged bytes, or a message for another node.
    const packed = encodeBatch([checkWireMessage(good(), 1, false) as Message]);
    await expect(sendBatch({ from: 2, messages: [], packed: packed.subarray(0, packed.length - 1) })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(sendBatch({ from: 2, messages: [], packed: encodeBatch([{ ...(checkWireMessage(good(), 1, false) as Message), to: 9 }]) })).rejects.toMatchObject({
      code: 'EINVAL',
    });
    // A message from a higher term that is well-formed but from a stranger does not crash it either.
    await sendBatch({ from: 5, messages: [{ ...good(), from: 5, term: 1 }] });
    // A malformed command that got committed is an error result, not a crash.
    expect(await node.propose(Buffer.from([9, 0, 1, 65]))).toMatchObject({ op: 'error', message: expect.stringContaining('unknown op') });
    const r = await node.propose(encodeCommand({ op: 'put', key: 'still', value: Buffer.from('alive') }));
    expect(r).toEqual({ op: 'put' });
    expect(sm.get('still')?.toString()).toBe('alive');
  });
});
