/**
 * A client of the KV service (proto/kv.proto) over a list of endpoints: each call goes to the
 * preferred endpoint and moves on to the next when a node is unreachable or has no leader.
 */
import { call, makeClient, type grpc } from '../../rpc/grpc.js';
import { CairnError } from '../../common/errors.js';
import { KvServiceCtor } from './service.js';

export interface KvStatus {
  id: number;
  leader: number;
  role: string;
  term: number;
  commit: number;
  applied: number;
  voters: number[];
  learners: number[];
  snapshot_index: number;
  first_index: number;
  last_index: number;
  address: string;
}

const RETRY_CODES = new Set(['EUNAVAIL', 'ENOTLEADER', 'ETIMEDOUT', 'ECANCELED']);

export class KvClient {
  private readonly clients: grpc.Client[];
  private next = 0;

  constructor(readonly endpoints: string[], private readonly timeoutMs = 5000) {
    if (endpoints.length === 0) throw new CairnError('EINVAL', 'at least one endpoint is needed');
    this.clients = endpoints.map((e) => makeClient(KvServiceCtor, e));
  }

  /** Call one method on a given endpoint (index into endpoints), no failover. */
  on<Res>(i: number, method: string, req: unknown): Promise<Res> {
    return call<unknown, Res>(this.clients[i]!, method, req, this.timeoutMs);
  }

  private async any<Res>(method: string, req: unknown): Promise<Res> {
    let last: unknown;
    for (let n = 0; n < this.clients.length; n++) {
      const i = (this.next + n) % this.clients.length;
      try {
        const r = await this.on<Res>(i, method, req);
        this.next = i;
        return r;
      } catch (err) {
        last = err;
        if (!(err instanceof CairnError) || !RETRY_CODES.has(err.code)) throw err;
      }
    }
    throw last;
  }

  async put(key: string, value: Buffer): Promise<void> {
    await this.any('Put', { key, value });
  }

  async get(key: string, linearizable = true): Promise<Buffer | undefined> {
    const r = await this.any<{ found: boolean; value: Buffer }>('Get', { key, linearizable });
    return r.found ? r.value : undefined;
  }

  async cas(key: string, expect: Buffer | null, value: Buffer): Promise<{ ok: boolean; current: Buffer | undefined }> {
    const r = await this.any<{ ok: boolean; found: boolean; current: Buffer }>('Cas', {
      key,
      expect_absent: expect === null,
      expect: expect ?? Buffer.alloc(0),
      value,
    });
    return { ok: r.ok, current: r.found ? r.current : undefined };
  }

  async delete(key: string): Promise<boolean> {
    return (await this.any<{ deleted: boolean }>('Delete', { key })).deleted;
  }

  status(i: number): Promise<KvStatus> {
    return this.on<KvStatus>(i, 'Status', {});
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}
