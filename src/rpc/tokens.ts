/**
 * Client tokens: how a program without a certificate authenticates (`cairn token create --kind
 * client`). A token is `cairnct1.<id>.<secret>`; the cluster keeps only a record of it: its id,
 * name, scope, expiry and the SHA-256 of its secret, signed by the cluster's CA key, in the
 * file TOKENS_PATH of the cluster itself (so every node sees the same list). A node checks a
 * token against the record of its id: signature by its CA, hash, expiry. Whoever can write that
 * file can delete records (revoke) but cannot make one without the CA key.
 *
 * Scopes: "read" may call the methods that read (READ_METHOD_RE), "write" every method a
 * client certificate may call. Over the lane the token comes first on a TLS connection without
 * a client certificate (TOKEN_MAGIC, u16 length, the token), then the lane's own magic.
 */
import { createHash, createPrivateKey, randomBytes, sign, timingSafeEqual, verify, type X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { mayCall } from './security.js';

export const TOKEN_PREFIX = 'cairnct1.';
export const TOKEN_MAGIC = Buffer.from('CAIRNTK1', 'latin1');
/** Where the cluster keeps the token records (a file in the cluster: every node reads it). */
export const TOKENS_PATH = '/.cairn/client-tokens.json';

export const TOKEN_SCOPES = ['read', 'write'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

/** Methods a read-scoped token may call: looking, listing, reading, status. */
export const READ_METHOD_RE = /\/(Get|Stat|Lookup|List|Read|Cluster|CommitStatus|DiskStatus|Status|Watch)[A-Za-z]*$/;

export function scopeAllows(scope: TokenScope, path: string): boolean {
  if (!mayCall('client', path)) return false;
  return scope === 'write' || READ_METHOD_RE.test(path);
}

export const tokenRecordSchema = z.strictObject({
  id: z.string().regex(/^[0-9a-f]{16}$/),
  name: z.string().min(1).max(64),
  scope: z.enum(TOKEN_SCOPES),
  createdMs: z.number().int().min(0),
  expiresMs: z.number().int().min(0),
  /** SHA-256 of the secret, hex. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** ECDSA signature by the CA key over the fields above (recordBytes), base64. */
  sig: z.string().min(1).max(512),
});
export type TokenRecord = z.infer<typeof tokenRecordSchema>;
export const tokenFileSchema = z.array(tokenRecordSchema).max(10_000);

function recordBytes(r: Omit<TokenRecord, 'sig'>): Buffer {
  return Buffer.from(JSON.stringify([r.id, r.name, r.scope, r.createdMs, r.expiresMs, r.sha256]), 'utf8');
}

const sha = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

/** A new token and its signed record (the caller stores the record; the text is shown once). */
export function newClientToken(caKeyPem: string, o: { name: string; scope: TokenScope; ttlMs: number; nowMs?: number }): { text: string; record: TokenRecord } {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  const now = o.nowMs ?? Date.now();
  const base = { id, name: o.name, scope: o.scope, createdMs: now, expiresMs: now + o.ttlMs, sha256: sha(secret) };
  const sig = sign('sha256', recordBytes(base), createPrivateKey(caKeyPem)).toString('base64');
  return { text: `${TOKEN_PREFIX}${id}.${secret}`, record: tokenRecordSchema.parse({ ...base, sig }) };
}

/** Who a token is (name and scope), or EACCES saying why not. */
export function verifyToken(text: string, records: readonly TokenRecord[], ca: X509Certificate, nowMs = Date.now()): { name: string; scope: TokenScope } {
  const m = /^cairnct1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})$/.exec(text);
  if (m === null) throw new CairnError('EACCES', 'not a Cairn client token');
  const [, id, secret] = m as unknown as [string, string, string];
  const r = records.find((x) => x.id === id);
  if (r === undefined) throw new CairnError('EACCES', `token ${id} is not known to this cluster (revoked, or never made here)`);
  const { sig, ...base } = r;
  if (!verify('sha256', recordBytes(base), ca.publicKey, Buffer.from(sig, 'base64'))) throw new CairnError('EACCES', `token ${id}: its record is not signed by this cluster's CA`);
  const want = Buffer.from(r.sha256, 'hex');
  const got = createHash('sha256').update(secret, 'utf8').digest();
  if (!timingSafeEqual(want, got)) throw new CairnError('EACCES', `token ${id}: wrong secret`);
  if (nowMs > r.expiresMs) throw new CairnError('EACCES', `token ${id} (${r.name}) expired at ${new Date(r.expiresMs).toISOString()}`);
  return { name: r.name, scope: r.scope };
}

// ---- this process's view (a node: the records it last read; a client: the token it presents) ----

let records: TokenRecord[] = [];
let presented: string | undefined;

/** A node sets the records it read from TOKENS_PATH. */
export function setTokenRecords(r: TokenRecord[]): void {
  records = r;
}

export function tokenRecords(): readonly TokenRecord[] {
  return records;
}

/** A client sets the token it presents on connections without a client certificate. */
export function setClientToken(text: string | undefined): void {
  presented = text;
}

export function clientToken(): string | undefined {
  return presented;
}

/** The preamble a token client sends before the lane's magic. */
export function tokenPreamble(text: string): Buffer {
  const t = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(t.length);
  return Buffer.concat([TOKEN_MAGIC, len, t]);
}
