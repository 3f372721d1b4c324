/** Client tokens (src/rpc/tokens.ts): signed records, hashed secrets, expiry, scopes. Pure logic. */
import { describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { createCa } from '../../src/rpc/pki.js';
import { newClientToken, scopeAllows, verifyToken } from '../../src/rpc/tokens.js';

describe('client tokens', () => {
  const ca = createCa('tok-test');
  const other = createCa('tok-other');
  const caCert = new X509Certificate(ca.certPem);

  it('a token is accepted until it expires, and only with its own secret and a record signed by the CA', () => {
    const t = newClientToken(ca.keyPem, { name: 'bot', scope: 'read', ttlMs: 60_000, nowMs: 1_000_000 });
    expect(t.record.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(t.record)).not.toContain(t.text.split('.')[2]);
    expect(verifyToken(t.text, [t.record], caCert, 1_000_000 + 59_000)).toEqual({ name: 'bot', scope: 'read' });
    expect(() => verifyToken(t.text, [t.record], caCert, 1_000_000 + 61_000)).toThrow(/expired/);
    expect(() => verifyToken(`${t.text.slice(0, -3)}abc`, [t.record], caCert, 1_000_000)).toThrow(/wrong secret/);
    expect(() => verifyToken(t.text, [], caCert, 1_000_000)).toThrow(/not known/);
    expect(() => verifyToken('hello', [t.record], caCert)).toThrow(/not a Cairn client token/);
    // A record edited to live longer, or signed by another cluster's CA, is refused.
    expect(() => verifyToken(t.text, [{ ...t.record, expiresMs: t.record.expiresMs + 1e9 }], caCert, 1_000_000)).toThrow(/not signed by this cluster's CA/);
    const forged = newClientToken(other.keyPem, { name: 'bot', scope: 'write', ttlMs: 60_000 });
    expect(() => verifyToken(forged.text, [forged.record], caCert)).toThrow(/not signed/);
  });

  it('scopes: read may look and read, write may write; neither may speak Raft or admin', () => {
    expect(scopeAllows('read', '/cairn.file.Files/Get')).toBe(true);
    expect(scopeAllows('read', '/cairn.file.Files/Cluster')).toBe(true);
    expect(scopeAllows('read', '/cairn.meta.Meta/Readdir')).toBe(true);
    expect(scopeAllows('read', '/cairn.file.Files/Put')).toBe(false);
    expect(scopeAllows('read', '/cairn.meta.Meta/Unlink')).toBe(false);
    expect(scopeAllows('write', '/cairn.file.Files/Put')).toBe(true);
    expect(scopeAllows('write', '/cairn.raft.Raft/Append')).toBe(false);
    expect(scopeAllows('write', '/cairn.admin.Admin/Join')).toBe(false);
  });
});
