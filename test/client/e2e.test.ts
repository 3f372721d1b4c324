/**
 * The commit pipeline end to end against the REAL services: a 3-node metadata cluster (Raft
 * over gRPC on 127.0.0.1, started in-process with startNode, as `cairn start` runs it) and
 * three chunk servers with directory disks (erasure coding 2+1), through src/client/adapters.ts.
 * Covers: strong-mode commit read back by another node's client, one-chunk rewrite and
 * append-only-new-chunks, dedup, weak mode with restart, and a chunk server lost during a commit
 * (visible, not durable, until it is back).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CairnFs } from '../../src/client/index.js';
import { eventually, tempDir } from '../helpers/env.js';
import { startRealServices, type RealServices } from './helpers/real-services.js';

const CHUNK = 256 * 1024;

let base: { path: string; remove: () => Promise<void> };
let svc: RealServices;
const started: CairnFs[] = [];

async function client(cache: string, mode: 'weak' | 'strong' = 'weak'): Promise<CairnFs> {
  const fs = await CairnFs.start(
    { cacheDir: join(base.path, cache), mode, chunker: { kind: 'fixed', sizeBytes: CHUNK }, retryBaseMs: 20, idleCommitDelayMs: 100, durableTimeoutMs: 30_000 },
    { meta: svc.meta, chunks: svc.chunks },
  );
  started.push(fs);
  return fs;
}

beforeAll(async () => {
  base = await tempDir('cairn-client-e2e-');
  svc = await startRealServices(base.path);
}, 60_000);

afterAll(async () => {
  for (const fs of started.splice(0)) await fs.shutdown();
  await svc?.close();
  await base?.remove();
});

describe('client pipeline against the real metadata cluster and chunk servers', () => {
  it('strong mode: close returns durable; another node reads it; rewrite stores one chunk; append only new ones', async () => {
    const fs = await client('a', 'strong');
    const data = randomBytes(3 * CHUNK + 1000);
    const fd = await fs.open('/e2e-strong', { create: true });
    await fs.write(fd, data);
    await fs.close(fd);
    const l1 = await svc.metaClient.layout('/e2e-strong');
    expect(l1.attr.size).toBe(data.length);
    expect(l1.extents.map((e) => e.length)).toEqual([CHUNK, CHUNK, CHUNK, 1000]);
    expect((await svc.metaClient.commitStatus(l1.attr.ino, l1.attr.version)).state).toBe('durable');

    const reader = await client('b');
    const r = await reader.open('/e2e-strong');
    expect((await reader.read(r, 4 * CHUNK, 0)).equals(data)).toBe(true);
    await reader.close(r);

    const fd2 = await fs.open('/e2e-strong', { write: true });
    const page = randomBytes(4096);
    await fs.write(fd2, page, CHUNK + 8192);
    await fs.append(fd2, Buffer.from('appended'));
    await fs.close(fd2);
    const l2 = await svc.metaClient.layout('/e2e-strong');
    const changed = l2.extents.filter((e) => !l1.extents.some((o) => o.offset === e.offset && o.chunkHash === e.chunkHash));
    expect(changed.map((e) => e.offset)).toEqual([CHUNK, 3 * CHUNK + 1000]);
    page.copy(data, CHUNK + 8192);
    const expected = Buffer.concat([data, Buffer.from('appended')]);
    const reader2 = await client('c');
    const r2 = await reader2.open('/e2e-strong');
    expect((await reader2.read(r2, 5 * CHUNK, 0)).equals(expected)).toBe(true);
    await reader2.close(r2);
  });

  it('weak mode: the idle commit installs the version; a copy dedups to the same chunks', async () => {
    const fs = await client('d');
    const data = randomBytes(2 * CHUNK);
    for (const p of ['/e2e-w1', '/e2e-w2']) {
      const fd = await fs.open(p, { create: true });
      await fs.write(fd, data);
      await fs.close(fd);
    }
    await eventually(async () => (await fs.commitStatus('/e2e-w1')).pendingBytes === 0 && (await fs.commitStatus('/e2e-w2')).pendingBytes === 0, 30_000);
    const a = await svc.metaClient.layout('/e2e-w1');
    const b = await svc.metaClient.layout('/e2e-w2');
    expect(a.extents.map((e) => e.chunkHash)).toEqual(b.extents.map((e) => e.chunkHash));
    await eventually(async () => (await svc.metaClient.commitStatus(b.attr.ino, b.attr.version)).state === 'durable', 30_000);
  });

  it('readers on another node during a commit see the old or the new version, never a mix', async () => {
    const fs = await client('g');
    const A = randomBytes(6 * CHUNK);
    const fd = await fs.open('/e2e-concurrent', { create: true });
    await fs.write(fd, A);
    await fs.commit(fd, 'durable');
    const B = Buffer.from(A);
    for (let i = 0; i < 6; i += 2) randomBytes(4096).copy(B, i * CHUNK + 100); // three chunks change
    await fs.write(fd, B.subarray(0, 6 * CHUNK), 0);
    const reader = await client('h');
    let done = false;
    const seen = { a: 0, b: 0 };
    const reads = (async () => {
      while (!done || seen.b === 0) {
        const r = await reader.open('/e2e-concurrent');
        const got = await reader.read(r, 7 * CHUNK, 0);
        await reader.close(r);
        if (got.equals(A)) seen.a++;
        else if (got.equals(B)) seen.b++;
        else throw new Error('a reader saw a mix of two versions');
      }
    })();
    await fs.commit(fd, 'durable');
    done = true;
    await reads;
    expect(seen.b).toBeGreaterThan(0);
    await fs.close(fd);
  });

  it('a chunk server lost during a commit: visible (readable from k shards) but not durable until it is back', async () => {
    const fs = await client('e');
    await svc.chunkCluster.stopNode(2);
    const data = randomBytes(CHUNK + 5);
    const fd = await fs.open('/e2e-degraded', { create: true });
    await fs.write(fd, data);
    const st = await fs.commit(fd, 'visible');
    expect(st.state).toBe('visible');
    const l = await svc.metaClient.layout('/e2e-degraded');
    expect(l.attr.size).toBe(data.length);
    expect((await svc.metaClient.commitStatus(l.attr.ino, l.attr.version)).state).toBe('visible');
    const reader = await client('f');
    const r = await reader.open('/e2e-degraded');
    expect((await reader.read(r, 2 * CHUNK, 0)).equals(data)).toBe(true);
    await reader.close(r);
    await svc.chunkCluster.startNode(2);
    await fs.commit(fd, 'durable');
    expect((await svc.metaClient.commitStatus(l.attr.ino, l.attr.version)).state).toBe('durable');
    await fs.close(fd);
  });
});
