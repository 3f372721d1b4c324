/**
 * Who may talk to a node: mutual TLS from the cluster's own CA (pki.ts) on both transports.
 *
 * A process has at most one TLS identity (its CA, certificate and key), set once at start-up:
 * `cairn start` sets the node's from its config, the CLI a client's from its credentials folder.
 * With an identity, every server the process starts requires a certificate of the same CA from
 * each connection, and every client connection (lane or gRPC) presents the identity and accepts
 * only a server whose certificate is a node certificate of the same CA. Without one (tests, a
 * config without a `tls` section) the process speaks plain TCP as before.
 *
 * What a peer may call depends on its certificate's kind: nodes call everything, clients every
 * service but Raft (NODE_ONLY_PREFIXES).
 */
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import type * as tls from 'node:tls';
import { join } from 'node:path';
import { CairnError } from '../common/errors.js';
import { subjectOf, type CertSubject, type PeerKind } from './pki.js';

export interface TlsIdentity {
  caPem: string;
  certPem: string;
  keyPem: string;
  subject: CertSubject;
  ca: X509Certificate;
}

/** Method paths only nodes may call (the Raft transport, the admin service, the peer port of the DFS cache). */
export const NODE_ONLY_PREFIXES = ['/cairn.raft.', '/cairn.admin.', '/cairn.peer.'];
/** The one method a join token's certificate may call. */
export const JOIN_METHOD = '/cairn.admin.Admin/Join';

export const PEER_KINDS: readonly PeerKind[] = ['node', 'client', 'join'];

export function mayCall(kind: PeerKind, path: string): boolean {
  if (kind === 'node') return true;
  if (kind === 'join') return path === JOIN_METHOD;
  return !NODE_ONLY_PREFIXES.some((p) => path.startsWith(p));
}

/** Build an identity from PEM text; EINVAL when the certificate is not from that CA. */
export function makeIdentity(caPem: string, certPem: string, keyPem: string, source: string): TlsIdentity {
  let ca: X509Certificate;
  let cert: X509Certificate;
  try {
    ca = new X509Certificate(caPem);
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new CairnError('EINVAL', `${source}: not a PEM certificate (${(err as Error).message})`);
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw new CairnError('EINVAL', `${source}: the certificate is not signed by the CA beside it`);
  return { caPem, certPem, keyPem, subject: subjectOf(cert), ca };
}

/** An identity with the cluster's CA only (a client that presents a token instead of a certificate). */
export function caOnlyIdentity(caPem: string, source: string): TlsIdentity {
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(caPem);
  } catch (err) {
    throw new CairnError('EINVAL', `${source}: not a PEM certificate (${(err as Error).message})`);
  }
  const s = subjectOf(ca, true);
  return { caPem, certPem: '', keyPem: '', subject: { clusterId: s.clusterId, kind: 'client', name: 'token' }, ca };
}

/** Read an identity from three files. */
export function loadIdentity(files: { caFile: string; certFile: string; keyFile: string }): TlsIdentity {
  const read = (f: string): string => {
    try {
      return readFileSync(f, 'utf8');
    } catch (err) {
      throw new CairnError('ENOENT', `${f}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  };
  return makeIdentity(read(files.caFile), read(files.certFile), read(files.keyFile), files.certFile);
}

/** The files of a credentials folder (as `cairn init` and `cairn local up` write them). */
export function credentialFiles(dir: string, name: string): { caFile: string; certFile: string; keyFile: string } {
  return { caFile: join(dir, 'ca.crt'), certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
}

let current: TlsIdentity | undefined;
const contexts = new WeakMap<TlsIdentity, tls.SecureContext>();

/** Set (or clear) this process's identity; servers started and connections made afterwards use it. */
export function setTlsIdentity(id: TlsIdentity | undefined): void {
  current = id;
}

export function tlsIdentity(): TlsIdentity | undefined {
  return current;
}

/**
 * Check a peer's certificate against the cluster's CA: issued by it, signature valid, in its
 * validity period, and a node or client certificate. Returns who it is; EACCES with the reason
 * otherwise.
 */
export function verifyPeer(id: TlsIdentity, peer: X509Certificate | undefined): CertSubject {
  if (peer === undefined) throw new CairnError('EACCES', 'no client certificate');
  if (!peer.checkIssued(id.ca) || !peer.verify(id.ca.publicKey)) {
    throw new CairnError('EACCES', `certificate "${peer.subject.replace(/\n/g, ', ')}" is not from this cluster's CA`);
  }
  const now = Date.now();
  if (now < Date.parse(peer.validFrom) || now > Date.parse(peer.validTo)) throw new CairnError('EACCES', `certificate "${peer.subject.replace(/\n/g, ', ')}" is expired or not yet valid`);
  const s = subjectOf(peer);
  if (s.clusterId !== id.subject.clusterId) throw new CairnError('EACCES', `certificate of cluster ${s.clusterId}, not ${id.subject.clusterId}`);
  return s;
}

/** TLS options of a server socket (the peer is verified afterwards with verifyPeer). */
export function serverTlsOptions(id: TlsIdentity): tls.TlsOptions {
  // ALPN h2 for gRPC clients (an HTTP/2 client over TLS insists on it); the lane offers none.
  return { key: id.keyPem, cert: id.certPem, ca: id.caPem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3', ALPNProtocols: ['h2'] };
}

/**
 * TLS options of a client connection: the CA verifies the chain; the server must hold a node
 * certificate of this cluster (names and addresses are not checked: any node of the cluster may
 * answer at any address, and the CA issues node certificates only to nodes).
 */
export function clientTlsOptions(id: TlsIdentity): tls.ConnectionOptions {
  // One secure context per identity (parsing the PEM key and certificates once, not per connection).
  // An identity without a certificate (a token client, tokens.ts) only checks the server.
  const own = id.certPem === '' ? {} : { key: id.keyPem, cert: id.certPem };
  let secureContext = contexts.get(id);
  if (secureContext === undefined) {
    secureContext = createSecureContext({ ...own, ca: id.caPem, minVersion: 'TLSv1.3' });
    contexts.set(id, secureContext);
  }
  return {
    secureContext,
    ...own,
    ca: id.caPem,
    minVersion: 'TLSv1.3',
    checkServerIdentity: (_host, cert) => {
      try {
        const x = new X509Certificate(cert.raw);
        const s = verifyPeer(id, x);
        if (s.kind !== 'node') return new Error(`the server's certificate is a ${s.kind} certificate, not a node's`);
        return undefined;
      } catch (err) {
        return err as Error;
      }
    },
  };
}
