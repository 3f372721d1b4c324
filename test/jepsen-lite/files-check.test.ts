/**
 * The files checker on hand-built runs: acknowledged uploads that read back byte for byte pass;
 * a lost file, bytes of an overwritten version, bytes nobody wrote, a node that does not answer
 * and nodes that disagree are each named; unknown uploads may or may not have taken effect.
 */
import { describe, expect, it } from 'vitest';
import { checkFiles, formatFilesResult, type FilePut, type FileRead } from './checker/files.js';

const NODES = [1, 2, 3];

function put(path: string, sha256: string, i: number, outcome: FilePut['outcome'] = 'ok', size = 10): FilePut {
  return { path, process: i, outcome, size, sha256, invokeNs: BigInt(10 * i), ...(outcome === 'ok' ? { completeNs: BigInt(10 * i + 5) } : {}) };
}

function readAll(path: string, sha256: string | undefined, size = 10): FileRead[] {
  return NODES.map((node) => (sha256 === undefined ? { path, node, outcome: 'absent' as const } : { path, node, outcome: 'ok' as const, sha256, size }));
}

describe('files checker', () => {
  const puts = [put('/f/a', 'a1', 0), put('/f/a', 'a2', 1), put('/f/b', 'b1', 2), put('/f/c', 'c1', 3, 'info')];

  it('accepts acknowledged files read back as their last acknowledged upload, and an unknown upload either way', () => {
    const r = checkFiles(puts, [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', undefined)], NODES);
    expect(r.anomalies).toEqual([]);
    expect(r.valid).toBe(true);
    expect(r.stats).toMatchObject({ files: 3, puts: 4, acknowledged: 3, unknown: 1, reads: 9, bytesVerified: 60 });
    expect(checkFiles(puts, [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', 'c1')], NODES).valid).toBe(true);
    expect(formatFilesResult(r)).toMatch(/^valid: files; 3 files/);
  });

  it('an unknown upload after the last acknowledged one may win', () => {
    const more = [...puts, put('/f/b', 'b2', 4, 'info')];
    expect(checkFiles(more, [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b2'), ...readAll('/f/c', undefined)], NODES).valid).toBe(true);
  });

  it('names a lost file, an overwritten version, bytes nobody wrote, and a wrong size', () => {
    const lost = checkFiles(puts, [...readAll('/f/a', 'a2'), ...readAll('/f/b', undefined), ...readAll('/f/c', undefined)], NODES);
    expect(lost.valid).toBe(false);
    expect(lost.anomalies.join('\n')).toContain('/f/b: acknowledged file lost');
    const stale = checkFiles(puts, [...readAll('/f/a', 'a1'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', undefined)], NODES);
    expect(stale.anomalies.join('\n')).toContain('overwritten by a later acknowledged one');
    const junk = checkFiles(puts, [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'zz'), ...readAll('/f/c', undefined)], NODES);
    expect(junk.anomalies.join('\n')).toContain('that no upload wrote');
    const short = checkFiles(puts, [...readAll('/f/a', 'a2', 9), ...readAll('/f/b', 'b1'), ...readAll('/f/c', undefined)], NODES);
    expect(short.anomalies.join('\n')).toContain('9 bytes with the hash of a 10-byte upload');
  });

  it('names a strong upload acknowledged before it was durable', () => {
    const early = [...puts.slice(0, 2), { ...put('/f/b', 'b1', 2), state: 'visible' }, puts[3]!];
    const r = checkFiles(early, [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', undefined)], NODES);
    expect(r.anomalies.join('\n')).toContain('acknowledged in state visible, not durable');
  });

  it('names a stale read through another node right after an acknowledged upload', () => {
    const finals = [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', undefined)];
    const rb = { path: '/f/a', node: 2, process: 600_000, expected: 'a2', invokeNs: 16n };
    expect(checkFiles(puts, finals, NODES, [{ ...rb, outcome: 'ok', sha256: 'a2', size: 10 }]).valid).toBe(true);
    expect(checkFiles(puts, finals, NODES, [{ ...rb, outcome: 'ok', sha256: 'a1', size: 10 }]).anomalies.join('\n')).toContain('stale read — n2 served an older version');
    expect(checkFiles(puts, finals, NODES, [{ ...rb, outcome: 'absent' }]).anomalies.join('\n')).toContain('stale read — n2 said ENOENT');
    // An earlier upload with unknown outcome may land late.
    const withLate = [put('/f/a', 'a0', 0, 'info'), ...puts];
    expect(checkFiles(withLate, finals, NODES, [{ ...rb, outcome: 'ok', sha256: 'a0', size: 10 }]).valid).toBe(true);
  });

  it('warns of an upload that answered a definite error yet took effect, without failing the run', () => {
    const misreported = [...puts.slice(0, 3), { ...put('/f/c', 'c1', 3, 'info'), error: 'ENOENT' }];
    const r = checkFiles(misreported, [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', 'c1')], NODES);
    expect(r.valid).toBe(true);
    expect(r.warnings.join('\n')).toContain('/f/c: the upload of process 3 answered ENOENT, yet its 10 bytes are the file');
    expect(formatFilesResult(r)).toContain('warning: /f/c');
    // EUNAVAIL is an honest unknown: no warning.
    const honest = [...puts.slice(0, 3), { ...put('/f/c', 'c1', 3, 'info'), error: 'EUNAVAIL' }];
    expect(checkFiles(honest, [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', 'c1')], NODES).warnings).toEqual([]);
  });

  it('names a node that did not answer and nodes that disagree', () => {
    const reads = [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', undefined)];
    reads[0] = { path: '/f/a', node: 1, outcome: 'error', error: 'EUNAVAIL' };
    expect(checkFiles(puts, reads, NODES).anomalies.join('\n')).toContain('n1 did not serve it');
    const split = [...readAll('/f/a', 'a2'), ...readAll('/f/b', 'b1'), ...readAll('/f/c', undefined)];
    split[6] = { path: '/f/c', node: 1, outcome: 'ok', sha256: 'c1', size: 10 };
    expect(checkFiles(puts, split, NODES).anomalies.join('\n')).toContain('/f/c: nodes disagree');
  });
});
