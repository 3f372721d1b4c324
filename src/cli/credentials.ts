/**
 * Where the CLI keeps and finds TLS credentials (src/rpc/security.ts, src/rpc/pki.ts).
 *
 * Written by `cairn init`, `cairn join` and `cairn local up`, every file private (0600 in 0700
 * folders):
 *   <dir>/ca/ca.crt, ca.key            the cluster's CA (only on the machine that ran init)
 *   <node dir>/tls/ca.crt, node.crt, node.key   a node's identity (the config's `tls` section)
 *   <dir>/client/ca.crt, client.crt, client.key a client's identity (an admin's CLI)
 *
 * A client command finds its credentials in $CAIRN_CREDENTIALS (a folder as above; "none": plain
 * TCP), else ./.cairn-local/client (what `npm start` made), else /var/lib/cairn/client (what
 * `cairn init --dir /var/lib/cairn` made on an appliance's first machine; root only), else
 * /etc/cairn/client (copied there by the owner).
 *
 * Without a certificate: $CAIRN_TOKEN (a client token, `cairn token create --kind client`) with
 * the cluster's CA from $CAIRN_CA (a ca.crt file; else the credentials folder's ca.crt). An
 * --endpoint unix:/path talks to a node's local socket (file permissions, no TLS).
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { mkdirDurable, writeFileDurable } from '../common/durable.js';
import { CairnError } from '../common/errors.js';
import { createCa, issueCert, type KeyAndCert } from '../rpc/pki.js';
import { caOnlyIdentity, credentialFiles, loadIdentity, setTlsIdentity, type TlsIdentity } from '../rpc/security.js';
import { setClientToken } from '../rpc/tokens.js';

export interface IdentityFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Make a CA for a new cluster and keep it in <dir>/ca. */
export async function writeNewCa(dir: string, clusterId: string): Promise<KeyAndCert> {
  const ca = createCa(clusterId);
  await mkdirDurable(join(dir, 'ca'));
  await writeFileDurable(join(dir, 'ca', 'ca.key'), ca.keyPem);
  await writeFileDurable(join(dir, 'ca', 'ca.crt'), ca.certPem);
  return ca;
}

/** The CA kept in <dir>/ca, or undefined if there is none. */
export async function readCa(dir: string): Promise<KeyAndCert | undefined> {
  try {
    return { keyPem: await readFile(join(dir, 'ca', 'ca.key'), 'utf8'), certPem: await readFile(join(dir, 'ca', 'ca.crt'), 'utf8') };
  } catch {
    return undefined;
  }
}

/** Write an identity (already issued) into a folder as ca.crt, <name>.crt, <name>.key. */
export async function writeIdentity(dir: string, caCertPem: string, who: KeyAndCert, fileName: 'node' | 'client'): Promise<IdentityFiles> {
  const files = credentialFiles(resolve(dir), fileName);
  await mkdirDurable(dir);
  await writeFileDurable(files.caFile, caCertPem);
  await writeFileDurable(files.keyFile, who.keyPem);
  await writeFileDurable(files.certFile, who.certPem);
  return files;
}

/** Issue a certificate of the CA and write it into a folder. */
export async function issueInto(dir: string, ca: KeyAndCert, o: { kind: 'node' | 'client'; name: string; ips?: string[] }): Promise<IdentityFiles> {
  return writeIdentity(dir, ca.certPem, issueCert(ca, o), o.kind);
}

/** The credentials folder a client command uses (see the header), or undefined for none. */
export function clientCredentialsDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const given = env.CAIRN_CREDENTIALS;
  if (given !== undefined && given !== '') return given === 'none' ? undefined : resolve(given);
  for (const d of [resolve('.cairn-local', 'client'), '/var/lib/cairn/client', '/etc/cairn/client']) {
    if (existsSync(join(d, 'client.crt'))) return d;
  }
  return undefined;
}

/** Load and set this process's client identity from its credentials folder (if any). */
export function useClientCredentials(env: NodeJS.ProcessEnv = process.env): TlsIdentity | undefined {
  const token = env.CAIRN_TOKEN;
  if (token !== undefined && token !== '') {
    const caFile = env.CAIRN_CA ?? (clientCredentialsDir(env) !== undefined ? join(clientCredentialsDir(env)!, 'ca.crt') : undefined);
    if (caFile === undefined || !existsSync(caFile)) throw new CairnError('ENOENT', 'CAIRN_TOKEN is set but the cluster\'s CA is not found: set CAIRN_CA to its ca.crt');
    const id = caOnlyIdentity(readFileSync(caFile, 'utf8'), caFile);
    setTlsIdentity(id);
    setClientToken(token.trim());
    return id;
  }
  const dir = clientCredentialsDir(env);
  if (dir === undefined) return undefined;
  if (!existsSync(join(dir, 'client.crt'))) {
    throw new CairnError('ENOENT', `${dir}: no client.crt there (CAIRN_CREDENTIALS names a folder with ca.crt, client.crt and client.key; "none" for no TLS)`);
  }
  const id = loadIdentity(credentialFiles(dir, 'client'));
  setTlsIdentity(id);
  return id;
}
