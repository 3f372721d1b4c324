/**
 * The one way Cairn speaks gRPC: proto files under proto/ loaded with @grpc/proto-loader,
 * every request validated with zod before a handler sees it, and errors carried as a
 * POSIX-style code (metadata "cairn-code") plus a readable message.
 *
 * Servers bind to an explicit host:port (port 0 picks a free one, for tests).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { z } from 'zod';
import { CairnError, isErrorCode, type ErrorCode } from '../common/errors.js';
import { formatZodError } from '../common/config.js';

export { grpc };

const PROTO_DIR = (() => {
  // src/rpc/grpc.ts and dist/src/rpc/grpc.js both sit two levels below the repo root.
  const here = dirname(fileURLToPath(import.meta.url));
  const up = here.includes(`${'/'}dist${'/'}`) ? join(here, '..', '..', '..') : join(here, '..', '..');
  return join(up, 'proto');
})();

/** Largest message either side accepts (bulk data is streamed in pieces below this). */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

const cache = new Map<string, grpc.GrpcObject>();

/** Load proto/<file> and return its package object. */
export function loadProto(file: string): grpc.GrpcObject {
  let obj = cache.get(file);
  if (obj === undefined) {
    const def = protoLoader.loadSync(join(PROTO_DIR, file), {
      keepCase: true,
      longs: Number,
      enums: String,
      bytes: Buffer,
      defaults: true,
      oneofs: true,
      includeDirs: [PROTO_DIR],
    });
    obj = grpc.loadPackageDefinition(def);
    cache.set(file, obj);
  }
  return obj;
}

/** Look up a service (e.g. "cairn.raft.Raft") in a loaded proto. */
export function serviceOf(file: string, qualifiedName: string): grpc.ServiceClientConstructor {
  let cur: unknown = loadProto(file);
  for (const part of qualifiedName.split('.')) cur = (cur as Record<string, unknown>)[part];
  if (typeof cur !== 'function') throw new Error(`no service ${qualifiedName} in proto/${file}`);
  return cur as grpc.ServiceClientConstructor;
}

const TO_STATUS: Partial<Record<ErrorCode, grpc.status>> = {
  ENOENT: grpc.status.NOT_FOUND,
  EEXIST: grpc.status.ALREADY_EXISTS,
  EINVAL: grpc.status.INVALID_ARGUMENT,
  ENAMETOOLONG: grpc.status.INVALID_ARGUMENT,
  EACCES: grpc.status.PERMISSION_DENIED,
  EPERM: grpc.status.PERMISSION_DENIED,
  EAGAIN: grpc.status.UNAVAILABLE,
  EUNAVAIL: grpc.status.UNAVAILABLE,
  ENOTLEADER: grpc.status.UNAVAILABLE,
  ETIMEDOUT: grpc.status.DEADLINE_EXCEEDED,
  ENOSPC: grpc.status.RESOURCE_EXHAUSTED,
  ECONFLICT: grpc.status.ABORTED,
  EFENCED: grpc.status.FAILED_PRECONDITION,
  ESTALE: grpc.status.FAILED_PRECONDITION,
  ECOMPACTED: grpc.status.OUT_OF_RANGE,
  ECORRUPT: grpc.status.DATA_LOSS,
  EIO: grpc.status.DATA_LOSS,
  ECANCELED: grpc.status.CANCELLED,
};

/** Turn any thrown value into a gRPC error that keeps the Cairn code. */
export function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  const md = new grpc.Metadata();
  if (err instanceof CairnError) {
    md.set('cairn-code', err.code);
    if (err.details !== undefined) md.set('cairn-details', JSON.stringify(err.details));
    return { code: TO_STATUS[err.code] ?? grpc.status.UNKNOWN, details: err.message, metadata: md };
  }
  md.set('cairn-code', 'EIO');
  return { code: grpc.status.INTERNAL, details: `internal error: ${(err as Error)?.message ?? String(err)}`, metadata: md };
}

/** Turn a gRPC client error back into a CairnError (transport failures become EUNAVAIL/ETIMEDOUT). */
export function fromServiceError(err: grpc.ServiceError): CairnError {
  const code = err.metadata?.get('cairn-code')[0];
  if (isErrorCode(code)) {
    const raw = err.metadata.get('cairn-details')[0];
    let details: Record<string, unknown> | undefined;
    if (typeof raw === 'string') {
      try {
        details = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        details = undefined;
      }
    }
    return new CairnError(code, err.details, details);
  }
  if (err.code === grpc.status.DEADLINE_EXCEEDED) return new CairnError('ETIMEDOUT', err.details || 'deadline exceeded');
  if (err.code === grpc.status.UNAVAILABLE) return new CairnError('EUNAVAIL', err.details || 'peer unavailable');
  if (err.code === grpc.status.CANCELLED) return new CairnError('ECANCELED', err.details || 'cancelled');
  return new CairnError('EIO', `rpc failed (${grpc.status[err.code] ?? err.code}): ${err.details}`);
}

/** A unary handler: validates the request with the schema, maps thrown errors. */
export function unary<S extends z.ZodType, Res>(
  schema: S,
  fn: (req: z.infer<S>, call: grpc.ServerUnaryCall<unknown, Res>) => Promise<Res>,
): grpc.handleUnaryCall<unknown, Res> {
  return (call, callback) => {
    const parsed = schema.safeParse(call.request);
    if (!parsed.success) {
      callback(toServiceError(new CairnError('EINVAL', formatZodError('request', parsed.error))));
      return;
    }
    fn(parsed.data, call).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toServiceError(err)),
    );
  };
}

export interface StartedServer {
  server: grpc.Server;
  port: number;
  address: string;
  stop(): Promise<void>;
}

/** Start a gRPC server on host:port with the given services (port 0: any free port). */
export async function startServer(
  address: string,
  services: Array<{ service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation }>,
): Promise<StartedServer> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  for (const s of services) server.addService(s.service, s.impl);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  const host = address.slice(0, address.lastIndexOf(':'));
  return {
    server,
    port,
    address: `${host}:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      }),
  };
}

/** Channel options every Cairn client uses. */
export const CLIENT_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2_000,
};

/** Make a client for a service at an address (insecure; Cairn runs on a trusted cluster network). */
export function makeClient<C extends grpc.Client>(ctor: grpc.ServiceClientConstructor, address: string): C {
  return new ctor(address, grpc.credentials.createInsecure(), CLIENT_OPTIONS) as unknown as C;
}

/** Call a unary method as a promise with a deadline; errors come back as CairnError. */
export function call<Req, Res>(client: grpc.Client, method: string, req: Req, timeoutMs = 5000): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    const fn = (client as unknown as Record<string, Function>)[method];
    if (typeof fn !== 'function') {
      reject(new CairnError('EINVAL', `no rpc method ${method}`));
      return;
    }
    fn.call(client, req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) => {
      if (err) reject(fromServiceError(err));
      else resolve(res);
    });
  });
}
