/**
 * The cluster's own certificate authority, with nothing but node:crypto: ECDSA P-256 keys and
 * X.509 v3 certificates encoded here in DER (node:crypto parses certificates but cannot make
 * them). `cairn init` makes the CA; every node and client certificate is signed by it.
 *
 * A certificate says who holds it in its subject: O = "cairn:<cluster id>", OU = the kind
 * ("node" or "client"), CN = the name ("node-3", "client-admin"). The TLS layer (security.ts)
 * trusts only the cluster's CA, so a certificate of another cluster fails the handshake; the kind
 * decides what a peer may call (only nodes speak Raft).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { CairnError } from '../common/errors.js';

/** node: a member; client: an owner's CLI or program; join: a join token (may only ask to join). */
export type PeerKind = 'node' | 'client' | 'join';

export interface KeyAndCert {
  /** PEM, PKCS#8. */
  keyPem: string;
  /** PEM. */
  certPem: string;
}

export interface CertSubject {
  clusterId: string;
  kind: PeerKind;
  name: string;
}

// ---- DER ----------------------------------------------------------------------------------

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const seq = (...c: Buffer[]): Buffer => tlv(0x30, ...c);
const set = (...c: Buffer[]): Buffer => tlv(0x31, ...c);
const octets = (b: Buffer): Buffer => tlv(0x04, b);
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const explicit = (n: number, c: Buffer): Buffer => tlv(0xa0 + n, c);

function bits(b: Buffer, unused = 0): Buffer {
  return tlv(0x03, Buffer.from([unused]), b);
}

function integer(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, (v[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const group: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) group.unshift((v & 0x7f) | 0x80);
    out.push(...group);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  const y = d.getUTCFullYear();
  return y >= 1950 && y < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`, 'latin1')) : tlv(0x18, Buffer.from(`${iso}Z`, 'latin1'));
}

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  organization: '2.5.4.10',
  orgUnit: '2.5.4.11',
  commonName: '2.5.4.3',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
};

function name(s: { clusterId: string; kind: string; name: string }): Buffer {
  const rdn = (o: string, v: string): Buffer => set(seq(oid(o), utf8(v)));
  return seq(rdn(OID.organization, `cairn:${s.clusterId}`), rdn(OID.orgUnit, s.kind), rdn(OID.commonName, s.name));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

function keyId(spki: Buffer): Buffer {
  return createHash('sha1').update(spki).digest();
}

interface CertRequest {
  subject: { clusterId: string; kind: string; name: string };
  issuer: { clusterId: string; kind: string; name: string };
  subjectKey: KeyObject;
  issuerKey: KeyObject;
  issuerSpki: Buffer;
  ca: boolean;
  kind: PeerKind | 'ca';
  validMs: number;
  ips: string[];
  dns: string[];
}

function makeCert(r: CertRequest): string {
  const spki = (r.subjectKey.type === 'public' ? r.subjectKey : createPublicKey(r.subjectKey)).export({ type: 'spki', format: 'der' });
  const now = Date.now();
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  const sigAlg = seq(oid(OID.ecdsaWithSha256));
  const exts: Buffer[] = [
    extension(OID.basicConstraints, true, r.ca ? seq(bool(true)) : seq()),
    // CA: keyCertSign + cRLSign; leaf: digitalSignature.
    extension(OID.keyUsage, true, r.ca ? bits(Buffer.from([0x06]), 1) : bits(Buffer.from([0x80]), 7)),
    extension(OID.subjectKeyId, false, octets(keyId(spki))),
    extension(OID.authorityKeyId, false, seq(tlv(0x80, keyId(r.issuerSpki)))),
  ];
  if (r.kind === 'node') exts.push(extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))));
  if (r.kind === 'client' || r.kind === 'join') exts.push(extension(OID.extKeyUsage, false, seq(oid(OID.clientAuth))));
  const alt: Buffer[] = [
    ...r.dns.map((d) => tlv(0x82, Buffer.from(d, 'latin1'))),
    ...r.ips.map((ip) => tlv(0x87, ipBytes(ip))),
  ];
  if (alt.length > 0) exts.push(extension(OID.subjectAltName, false, seq(...alt)));
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))),
    integer(serial),
    sigAlg,
    name(r.issuer),
    seq(time(new Date(now - 60 * 60_000)), time(new Date(now + r.validMs))),
    name(r.subject),
    spki,
    explicit(3, seq(...exts)),
  );
  const sig = sign('sha256', tbs, r.issuerKey);
  const der = seq(tbs, sigAlg, bits(sig));
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
}

function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (isIPv6(ip)) {
    const [head, tail] = ip.split('::') as [string, string | undefined];
    const h = head === '' ? [] : head.split(':');
    const t = tail === undefined || tail === '' ? [] : tail.split(':');
    const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
    return b;
  }
  throw new CairnError('EINVAL', `${ip} is not an IP address`);
}

function newKey(): { key: KeyObject; pem: string } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { key: privateKey, pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/** A new certificate authority for a cluster (valid 20 years). */
export function createCa(clusterId: string): KeyAndCert {
  const { key, pem } = newKey();
  const who = { clusterId, kind: 'ca', name: `cairn-ca-${clusterId}` };
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return { keyPem: pem, certPem: makeCert({ subject: who, issuer: who, subjectKey: key, issuerKey: key, issuerSpki: spki, ca: true, kind: 'ca', validMs: 20 * 365 * 86_400_000, ips: [], dns: [] }) };
}

/**
 * A node, client or join certificate signed by the CA (valid 10 years unless validMs says), for a
 * new key or for a public key its holder made (`publicKeyPem`: then keyPem is empty). Nodes name
 * the addresses they serve on (ips/dns) for tools that check them; Cairn's own clients check the
 * CA and the kind.
 */
export function issueCert(
  ca: KeyAndCert,
  o: { kind: PeerKind; name: string; ips?: string[]; dns?: string[]; validMs?: number; publicKeyPem?: string },
): KeyAndCert {
  const caCert = new X509Certificate(ca.certPem);
  const caSubject = subjectOf(caCert, true);
  const caKey = createPrivateKey(ca.keyPem);
  const made = o.publicKeyPem === undefined ? newKey() : undefined;
  const subjectKey = made?.key ?? createPublicKey(o.publicKeyPem!);
  const issuer = { clusterId: caSubject.clusterId, kind: 'ca', name: caSubject.name };
  return {
    keyPem: made?.pem ?? '',
    certPem: makeCert({
      subject: { clusterId: caSubject.clusterId, kind: o.kind, name: o.name },
      issuer,
      subjectKey,
      issuerKey: caKey,
      issuerSpki: caCert.publicKey.export({ type: 'spki', format: 'der' }),
      ca: false,
      kind: o.kind,
      validMs: o.validMs ?? 10 * 365 * 86_400_000,
      ips: o.ips ?? [],
      dns: o.dns ?? [],
    }),
  };
}

/** A new key pair for a node that asks the cluster for a certificate (cairn join). */
export function newKeyPair(): { keyPem: string; publicKeyPem: string } {
  const { key, pem } = newKey();
  return { keyPem: pem, publicKeyPem: createPublicKey(key).export({ type: 'spki', format: 'pem' }) as string };
}

/** Who a certificate names (its cluster, kind and name); EACCES for a certificate Cairn did not make. */
export function subjectOf(cert: X509Certificate | string | Buffer, allowCa = false): CertSubject {
  const c = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
  const fields = new Map<string, string>();
  for (const line of c.subject.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) fields.set(line.slice(0, i), line.slice(i + 1));
  }
  const org = fields.get('O') ?? '';
  const kind = fields.get('OU') ?? '';
  const cn = fields.get('CN') ?? '';
  if (!org.startsWith('cairn:') || !(kind === 'node' || kind === 'client' || kind === 'join' || (allowCa && kind === 'ca'))) {
    throw new CairnError('EACCES', `certificate "${c.subject.replace(/\n/g, ', ')}" is not a Cairn ${allowCa ? 'CA, node or client' : 'node or client'} certificate`);
  }
  return { clusterId: org.slice('cairn:'.length), kind: kind as PeerKind, name: cn };
}
