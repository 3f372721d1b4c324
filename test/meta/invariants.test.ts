/**
 * Property test of the namespace: random sequences of mkdir/create/symlink/link/unlink/rmdir/
 * rename/putFile over a small set of paths, applied to two real LevelDB state machines in different
 * batch sizes, and coalesced several to an entry. After every sequence the databases are identical and the namespace invariants
 * hold: every entry points at a live inode of its type, link counts and directory sizes match
 * the entries, every directory has exactly one name and reaches the root (no cycles).
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MetaStateMachine, type Inode } from '../../src/meta/state-machine.js';
import type { Op } from '../../src/meta/ops.js';
import { encodeEntry } from '../../src/meta/entry.js';
import { EntryType } from '../../src/raft/types.js';
import { tempDir } from '../helpers/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const PATHS = ['/a', '/b', '/a/c', '/b/c', '/a/d', '/a/c/e', '/b/c/e'];
const pathArb = fc.constantFrom(...PATHS);
const own = { mode: 0o755, uid: 0, gid: 0 };
// Weighted towards mkdir and rename, so that deep trees and cross-directory moves happen often.
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: pathArb.map((p) => ({ op: 'mkdir', at: { path: p }, ...own }) as Op), weight: 5 },
  pathArb.map((p) => ({ op: 'create', at: { path: p }, ...own, exclusive: true }) as Op),
  pathArb.map((p) => ({ op: 'symlink', at: { path: p }, target: 'x', uid: 0, gid: 0 }) as Op),
  fc.tuple(pathArb, pathArb).map(([a, b]) => ({ op: 'link', node: { path: a }, at: { path: b } }) as Op),
  pathArb.map((p) => ({ op: 'unlink', at: { path: p } }) as Op),
  // A whole small file over whatever is there (parents made): the inline write path.
  fc.tuple(pathArb, fc.boolean()).map(([p, mk]) => ({ op: 'putFile', at: { path: p }, ...own, dataB64: Buffer.from(p).toString('base64'), mkdirs: mk, inlineBudget: 1 << 20 }) as Op),
  pathArb.map((p) => ({ op: 'rmdir', at: { path: p } }) as Op),
  {
    arbitrary: fc.tuple(pathArb, pathArb, fc.boolean()).map(([a, b, n]) => ({ op: 'rename', from: { path: a }, to: { path: b }, noReplace: n }) as Op),
    weight: 4,
  },
);

async function open(): Promise<MetaStateMachine> {
  const d = await tempDir('cairn-meta-prop-');
  const sm = await MetaStateMachine.open({ dataDir: d.path });
  cleanups.push(async () => {
    await sm.close();
    await d.remove();
  });
  return sm;
}

function checkInvariants(dump: Array<[string, string]>): void {
  const inodes = new Map<number, Inode>();
  const dirents: Array<{ parent: number; name: string; ino: number; type: string }> = [];
  const orphans = new Set<number>();
  for (const [k, v] of dump) {
    if (k.startsWith('i:')) {
      const i = JSON.parse(v) as Inode;
      inodes.set(i.ino, i);
    } else if (k.startsWith('d:')) {
      const [p, name] = k.slice(2).split('\0');
      const d = JSON.parse(v) as { ino: number; type: string };
      dirents.push({ parent: parseInt(p!, 16), name: name!, ino: d.ino, type: d.type });
    } else if (k.startsWith('o:')) orphans.add(parseInt(k.slice(2), 16));
  }
  const links = new Map<number, number>();
  const entries = new Map<number, number>();
  const subdirs = new Map<number, number>();
  for (const d of dirents) {
    const i = inodes.get(d.ino);
    expect(i, `entry ${d.name} points at a live inode`).toBeDefined();
    expect(i!.type).toBe(d.type);
    expect(inodes.get(d.parent)?.type).toBe('dir');
    links.set(d.ino, (links.get(d.ino) ?? 0) + 1);
    entries.set(d.parent, (entries.get(d.parent) ?? 0) + 1);
    if (d.type === 'dir') {
      subdirs.set(d.parent, (subdirs.get(d.parent) ?? 0) + 1);
      expect(i!.parent).toBe(d.parent);
      expect(i!.name).toBe(d.name);
    }
  }
  for (const i of inodes.values()) {
    if (i.type === 'dir') {
      expect(i.size).toBe(entries.get(i.ino) ?? 0);
      expect(i.nlink).toBe(2 + (subdirs.get(i.ino) ?? 0));
      if (i.ino !== 1) expect(links.get(i.ino)).toBe(1);
      let cur = i.ino;
      for (let depth = 0; cur !== 1; depth++) {
        expect(depth).toBeLessThan(100); // reaches the root: no cycle
        cur = inodes.get(cur)!.parent;
      }
    } else {
      expect(i.nlink).toBe(links.get(i.ino) ?? 0);
      if (i.nlink === 0) expect(orphans.has(i.ino)).toBe(true);
    }
  }
}

describe('namespace invariants under random operations', () => {
  it('hold, and two state machines agree byte for byte', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 60 }), fc.integer({ min: 1, max: 9 }), async (ops, batch) => {
        const a = await open();
        const b = await open();
        const entries = ops.map((op, i) => ({ term: 1, index: i + 1, type: EntryType.Normal, data: encodeEntry(op, 1000 + i) }));
        for (const e of entries) await a.apply([e]);
        for (let i = 0; i < entries.length; i += batch) await b.apply(entries.slice(i, i + batch));
        const da = await a.dump();
        expect(await b.dump()).toEqual(da);
        // The same operations coalesced `batch` to an entry (one clock reading per entry) give
        // the same per-operation results and the same database as one entry per operation
        // with those clock readings; only the applied index differs.
        const c = await open();
        const d = await open();
        const rc: unknown[] = [];
        const rd: unknown[] = [];
        for (let i = 0; i < ops.length; i += batch) {
          const group = ops.slice(i, i + batch);
          const [res] = await c.apply([{ term: 1, index: i / batch + 1, type: EntryType.Normal, data: encodeEntry(group, 1000 + i) }]);
          rc.push(...(res as unknown[]));
          for (let j = 0; j < group.length; j++) {
            const [one] = await d.apply([{ term: 1, index: i + j + 1, type: EntryType.Normal, data: encodeEntry(group[j]!, 1000 + i) }]);
            rd.push(...(one as unknown[]));
          }
        }
        expect(rc).toEqual(rd);
        const strip = (x: Array<[string, string]>): Array<[string, string]> => x.filter(([k]) => k !== 'm:applied');
        expect(strip(await c.dump())).toEqual(strip(await d.dump()));
        checkInvariants(da);
        // the watch log numbers every successful change without gaps
        const evs = await a.events(1, 10_000);
        expect(evs.map((e) => e.revision)).toEqual(Array.from({ length: evs.length }, (_, i) => i + 1));
      }),
      { numRuns: 40 },
    );
  });
});
