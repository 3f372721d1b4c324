/**
 * The client tokens a node accepts (src/rpc/tokens.ts): their signed records live in the cluster
 * at TOKENS_PATH; each node reads that file at start and every few seconds and hands the records
 * to its listener (setTokenRecords). `cairn token create --kind client` adds a record.
 */
import { CairnError } from '../common/errors.js';
import { tlsIdentity } from '../rpc/security.js';
import { TOKENS_PATH, setTokenRecords, tokenFileSchema, type TokenRecord } from '../rpc/tokens.js';
import { FileClient } from './file-client.js';
import type { NodeServiceFactory } from './services.js';

/** How often a node reads the token records again (a new token works on every node within this). */
export const TOKEN_REFRESH_MS = 3_000;

/** The records in the cluster ([] when there are none yet); records that do not parse are dropped. */
export async function readTokenRecords(c: FileClient): Promise<TokenRecord[]> {
  try {
    const { data } = await c.get(TOKENS_PATH);
    const parts: Buffer[] = [];
    for await (const b of data) parts.push(b);
    const r = tokenFileSchema.safeParse(JSON.parse(Buffer.concat(parts).toString('utf8')));
    return r.success ? r.data : [];
  } catch (err) {
    if (err instanceof CairnError && err.code === 'ENOENT') return [];
    if (err instanceof SyntaxError) return [];
    throw err;
  }
}

/** Add a record (dropping expired ones), durably. */
export async function addTokenRecord(c: FileClient, record: TokenRecord): Promise<void> {
  const now = Date.now();
  const kept = (await readTokenRecords(c)).filter((r) => r.expiresMs > now && r.id !== record.id);
  await c.put(TOKENS_PATH, [Buffer.from(`${JSON.stringify([...kept, record], null, 1)}\n`)], { mode: 'strong', mkdirs: true });
}

/** Remove a record (and expired ones); whether it was there. */
export async function removeTokenRecord(c: FileClient, id: string): Promise<boolean> {
  const now = Date.now();
  const all = await readTokenRecords(c);
  if (!all.some((r) => r.id === id)) return false;
  const kept = all.filter((r) => r.expiresMs > now && r.id !== id);
  await c.put(TOKENS_PATH, [Buffer.from(`${JSON.stringify(kept, null, 1)}\n`)], { mode: 'strong', mkdirs: true });
  return true;
}

/** Reads the records into this process's listener while the node runs (only with TLS: tokens need it). */
export const tokenBookFactory: NodeServiceFactory = async (ctx) => {
  let timer: NodeJS.Timeout | undefined;
  let client: FileClient | undefined;
  let stopped = false;
  const log = ctx.log.child({ component: 'tokens' });
  const load = async (): Promise<void> => {
    const r = ctx.raft();
    if (r === undefined || stopped) return;
    client ??= new FileClient(r.listenAddress);
    try {
      setTokenRecords(await readTokenRecords(client));
    } catch (err) {
      log.debug({ err: (err as Error).message }, 'token records not read this time');
    }
  };
  const loop = (): void => {
    timer = setTimeout(() => void load().finally(() => !stopped && loop()), TOKEN_REFRESH_MS);
    timer.unref();
  };
  return {
    name: 'tokens',
    definitions: [],
    started: () => {
      if (tlsIdentity() === undefined) return;
      void load();
      loop();
    },
    stop: async () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      client?.close();
    },
  };
};
