/**
 * The bytes of a metadata entry (src/meta/entry.ts): every operation kind round-trips through
 * format 2, any flipped bit or cut is caught (never decoded as other operations), a bad
 * operation record fails alone, and format-1 JSON entries still decode.
 */
import { describe, expect, it } from 'vitest';
import { CairnError } from '../../src/common/errors.js';
import { decodeEntry, encodeCheckedOp, encodeEntry, encodeEntryOps, encodeOp } from '../../src/meta/entry.js';
import { validateOp, type Op } from '../../src/meta/ops.js';

const own = { mode: 0o755, uid: 7, gid: 8 };
const ALL: Op[] = [
  { op: 'mkdir', at: { path: '/a/b' }, ...own },
  { op: 'mkdir', at: { parent: 12, name: 'é-ü ✓' }, ...own },
  { op: 'create', at: { parent: 1, name: 'f' }, ...own, mode: 0o644, exclusive: true },
  { op: 'create', at: { path: '/x' }, ...own, exclusive: false },
  { op: 'symlink', at: { path: '/l' }, target: '../some/where', uid: 1, gid: 2 },
  { op: 'link', node: { ino: 99 }, at: { parent: 3, name: 'h' } },
  { op: 'link', node: { path: '/x' }, at: { path: '/y' } },
  { op: 'unlink', at: { parent: 4, name: 'g' } },
  { op: 'rmdir', at: { path: '/a' } },
  { op: 'rename', from: { path: '/a' }, to: { parent: 5, name: 'b' }, noReplace: true },
  { op: 'setattr', node: { ino: 5 } },
  { op: 'setattr', node: { path: '/x' }, mode: 0o600, uid: 0, gid: 4_000_000_000, mtimeMs: 1_700_000_000_123, atimeMs: 0 },
  { op: 'setattr', node: { parent: 1, name: 'x' }, gid: 3 },
  { op: 'truncate', node: { ino: 9 }, size: 10, expectedVersion: 2, fence: 3 },
  { op: 'setxattr', node: { ino: 9 }, name: 'user.k', valueB64: Buffer.from('v').toString('base64'), flag: 'create' },
  { op: 'removexattr', node: { path: '/x' }, name: 'user.k' },
  {
    op: 'commit', ino: 9, expectedVersion: 0, fence: 1, size: 100,
    extents: [{ offset: 0, length: 100, chunkHash: 'ab'.repeat(16), scheme: 'ec2+1', pg: 4 }],
  },
  { op: 'markDurable', ino: 9, version: 1 },
  { op: 'leaseAcquire', ino: 9, holder: 'w', ttlMs: 1000 },
  { op: 'leaseExpire', inos: [9, 10] },
  { op: 'nodeRegister', nodeId: 2, recordJson: '{"a":1}' },
  { op: 'create', at: { parent: 1, name: 'up' }, ...own, mode: 0o644, exclusive: true, lease: { holder: 'client-1', ttlMs: 30_000 } },
  {
    op: 'commit', ino: 9, expectedVersion: 1, fence: 2, size: 4, durable: true,
    extents: [{ offset: 0, length: 4, chunkHash: 'cd'.repeat(16), scheme: 'r3', pg: 1 }],
  },
  { op: 'putFile', at: { path: '/s/f' }, mode: 0o640, uid: 3, gid: 4, dataB64: Buffer.from('small file\n').toString('base64'), mkdirs: true, inlineBudget: 2 ** 40 },
  { op: 'putFile', at: { parent: 7, name: 'e' }, ...own, dataB64: '', mtimeMs: 1_700_000_000_999, mkdirs: false, inlineBudget: 0 },
];

describe('metadata entry format 2', () => {
  it('round-trips every operation kind, alone and all in one entry', () => {
    for (const op of ALL) {
      const valid = validateOp(op);
      const d = decodeEntry(encodeEntry(valid, 1_234));
      expect(d).toEqual({ format: 2, nowMs: 1_234, ops: [valid] });
    }
    const d = decodeEntry(encodeEntry(ALL.map(validateOp), 5));
    expect(d.ops).toEqual(ALL.map(validateOp));
  });

  it('catches every flipped bit and every cut', () => {
    const data = encodeEntry([ALL[1]!, ALL[9]!, ALL[11]!], 77);
    for (let i = 0; i < data.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Buffer.from(data);
        bad[i]! ^= 1 << bit;
        expect(() => decodeEntry(bad), `byte ${i} bit ${bit}`).toThrow(CairnError);
      }
    }
    for (let n = 0; n < data.length; n++) expect(() => decodeEntry(data.subarray(0, n)), `cut at ${n}`).toThrow(CairnError);
  });

  it('fails a bad operation record alone: the others still decode', () => {
    // encodeOp trusts its input (the service validates first): a bad name gets through it,
    // and the decoder refuses that record only.
    const good = validateOp(ALL[2]!);
    const badName: Op = { op: 'mkdir', at: { parent: 1, name: '..' }, ...own };
    const badMode = encodeOp({ op: 'mkdir', at: { parent: 1, name: 'm' }, ...own });
    badMode.writeUInt32LE(0o10000, badMode.length - 12); // mode is followed by uid and gid
    const d = decodeEntry(encodeEntryOps([encodeOp(good), encodeOp(badName), badMode, encodeOp(good)], 1));
    expect(d.ops[0]).toEqual(good);
    expect(d.ops[1]).toMatchObject({ code: 'EINVAL' });
    expect(d.ops[2]).toMatchObject({ code: 'EINVAL' });
    expect(d.ops[3]).toEqual(good);
  });

  it('checks a request operation as strictly as the zod operation schema', () => {
    const long = 'é'.repeat(128); // 256 bytes
    const cases: Array<[Op, string]> = [
      [{ op: 'mkdir', at: { parent: 1, name: long }, ...own }, 'ENAMETOOLONG'],
      [{ op: 'mkdir', at: { path: `/a/${long}` }, ...own }, 'ENAMETOOLONG'],
      [{ op: 'create', at: { path: `/${'a/'.repeat(2100)}x` }, ...own, exclusive: true }, 'ENAMETOOLONG'],
      [{ op: 'mkdir', at: { path: '/a/../b' }, ...own }, 'EINVAL'],
      [{ op: 'mkdir', at: { path: '/' }, ...own }, 'EINVAL'],
      [{ op: 'unlink', at: { parent: 1, name: 'a\0b' } }, 'EINVAL'],
      [{ op: 'rename', from: { path: '/a' }, to: { parent: 1, name: '\uFFFD' }, noReplace: false }, 'EINVAL'],
      [{ op: 'setattr', node: { path: 'relative' }, mode: 1 }, 'EINVAL'],
      [{ op: 'symlink', at: { path: '/l' }, target: '', uid: 0, gid: 0 }, 'EINVAL'],
      [{ op: 'setxattr', node: { ino: 1 }, name: '', valueB64: '', flag: 'any' }, 'EINVAL'], // zod path
    ];
    for (const [op, code] of cases) {
      expect(() => encodeCheckedOp(op), JSON.stringify(op).slice(0, 60)).toThrow(expect.objectContaining({ code }));
      expect(() => validateOp(op)).toThrow(expect.objectContaining({ code }));
    }
    for (const op of ALL) expect(decodeEntry(encodeEntryOps([encodeCheckedOp(op)], 1)).ops).toEqual([validateOp(op)]);
  });

  it('writes putFile as raw bytes (opcode 9), as JSON when asked, and checks it as the zod schema does', () => {
    const data = Buffer.alloc(4096, 0xab);
    const op: Op = { op: 'putFile', at: { path: '/x/y' }, ...own, dataB64: data.toString('base64'), mkdirs: true, inlineBudget: 1 << 20 };
    const bin = encodeCheckedOp(op);
    const json = encodeCheckedOp(op, { binaryPutFile: false });
    expect(bin[0]).toBe(9);
    expect(json[0]).toBe(0);
    expect(bin.length).toBeLessThan(data.length + 64); // the content as raw bytes, not base64
    expect(json.length).toBeGreaterThan((data.length * 4) / 3);
    expect(decodeEntry(encodeEntryOps([bin, json], 1)).ops).toEqual([validateOp(op), validateOp(op)]);
    const cases: Array<[Op, string]> = [
      [{ ...op, dataB64: 'YQ' }, 'EINVAL'], // not canonical (no padding)
      [{ ...op, dataB64: Buffer.alloc(256 * 1024 + 3).toString('base64') }, 'EINVAL'], // past INLINE_MAX_BYTES
      [{ ...op, mode: 0o10000 }, 'EINVAL'],
      [{ ...op, at: { parent: 1, name: 'a/b' } }, 'EINVAL'],
      [{ ...op, at: { path: `/${'x'.repeat(256)}` } }, 'ENAMETOOLONG'],
    ];
    for (const [bad, code] of cases) {
      expect(() => encodeCheckedOp(bad), JSON.stringify(bad).slice(0, 60)).toThrow(expect.objectContaining({ code }));
      expect(() => validateOp(bad)).toThrow(expect.objectContaining({ code }));
    }
    // A record whose data length runs past its end, or with unknown flags, fails alone.
    const cut = Buffer.from(bin);
    cut.writeUInt32LE(data.length + 1, cut.length - data.length - 4);
    const flags = Buffer.from(bin);
    const flagAt = 5 + 1 + 4 + '/x/y'.length + 12; // record header, ref kind, path length + bytes, mode, uid, gid
    expect(flags[flagAt]).toBe(1);
    flags[flagAt] = 4;
    const d = decodeEntry(encodeEntryOps([cut, flags, json], 1));
    expect(d.ops[0]).toMatchObject({ code: 'EINVAL' });
    expect(d.ops[1]).toMatchObject({ code: 'EINVAL' });
    expect(d.ops[2]).toEqual(validateOp(op));
  });

  it('still decodes format-1 JSON entries and refuses garbage', () => {
    const legacy = Buffer.from(JSON.stringify({ v: 1, nowMs: 42, op: ALL[0] }));
    expect(decodeEntry(legacy)).toEqual({ format: 1, nowMs: 42, ops: [ALL[0]] });
    expect(() => decodeEntry(Buffer.from('{"v":1,"nowMs":42,"op":{"op":"mkdir"}}'))).toThrow(CairnError);
    expect(() => decodeEntry(Buffer.from([9, 0, 0]))).toThrow(CairnError);
    expect(() => encodeEntryOps([], 1)).toThrow(CairnError);
  });
});
