/**
 * The one way Cairn speaks gRPC: proto files under proto/ loaded with @grpc/proto-loader,
 * every request validated with zod before a handler sees it, and errors carried as a
 * POSIX-style code (metadata "cairn-code") plus a readable message.
 *
 * Servers bind to an explicit host:port (port 0 picks a free one, for tests). The same port also
 * speaks the lane (src/rpc/lane.ts), Cairn's own framing of the same services: `call()` and
 * the stream helpers below use it for clients made with `makeClient`, unless CAIRN_RPC=grpc.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { z } from 'zod';
import { CairnError, type ErrorCode } from '../common/errors.js';
import { formatZodError } from '../common/config.js';
import { tokenRecords, verifyToken } from './tokens.js';
import { cairnErrorFromMetadata, laneClientStream, laneEnabled, laneMethods, laneServerStream, laneUnary, listenLaneAndGrpc, type ListenSecurity } from './lane.js';
import { clientTlsOptions, mayCall, PEER_KINDS, serverTlsOptions, tlsIdentity, verifyPeer } from './security.js';
import type { PeerKind } from './pki.js';

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
  const fromMd = err.metadata === undefined ? undefined : cairnErrorFromMetadata(err.metadata, err.details);
  if (fromMd !== undefined) return fromMd;
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
  /** Whether the port requires mutual TLS (this process has a node identity: security.ts). */
  secure: boolean;
  /** Stop accepting; let open calls finish for up to graceMs (default 2 s), then cut them. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Start a server on host:port with the given services (port 0: any free port). The port speaks
 * gRPC and the lane; both run the same handlers.
 */
export async function startServer(
  address: string,
  services: Array<{ service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation }>,
): Promise<StartedServer> {
  const options = {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  };
  // One grpc-js server per kind of peer behind one port: a node's connections reach every
  // service, a client's every service but the node-only ones (Raft, admin), a join token's only
  // the admin service. Without TLS every peer counts as a node.
  const servedTo = (kind: PeerKind): typeof services => services.filter((s) => Object.values(s.service).every((d) => mayCall(kind, d.path)));
  const servers = Object.fromEntries(
    PEER_KINDS.map((kind) => {
      const srv = new grpc.Server(options);
      for (const s of servedTo(kind)) srv.addService(s.service, s.impl);
      return [kind, { srv, injector: srv.createConnectionInjector(grpc.ServerCredentials.createInsecure()) }];
    }),
  ) as Record<PeerKind, { srv: grpc.Server; injector: ReturnType<grpc.Server['createConnectionInjector']> }>;
  const server = servers.node.srv;
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i);
  const wanted = Number(address.slice(i + 1));
  if (!(i > 0 && Number.isInteger(wanted) && wanted >= 0 && wanted < 65536)) {
    throw new CairnError('EINVAL', `listen address ${JSON.stringify(address)} is not host:port`);
  }
  const id = tlsIdentity();
  const security: ListenSecurity | undefined =
    id === undefined || id.subject.kind !== 'node'
      ? undefined
      : {
          tlsOptions: serverTlsOptions(id),
          verify: (socket) => verifyPeer(id, socket.getPeerX509Certificate()).kind,
          verifyToken: (text) => verifyToken(text, tokenRecords(), id.ca),
        };
  const listener = await listenLaneAndGrpc(
    host.replace(/^\[|\]$/g, ''),
    wanted,
    {
      node: laneMethods(services),
      client: laneMethods(servedTo('client')),
      join: new Map([...laneMethods(services)].filter(([path]) => mayCall('join', path))),
    },
    (socket, kind) => servers[kind].injector.injectConnection(socket),
    security,
  );
  const shutdown = (srv: grpc.Server, graceMs: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        srv.forceShutdown();
        resolve();
      }, graceMs);
      srv.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  let stopping: Promise<void> | undefined;
  return {
    server,
    port: listener.port,
    address: `${host}:${listener.port}`,
    secure: security !== undefined,
    stop: (graceMs = 2000) =>
      (stopping ??= Promise.all([listener.close(graceMs), ...PEER_KINDS.map((k) => shutdown(servers[k].srv, graceMs))]).then(() => {
        for (const k of PEER_KINDS) servers[k].injector.destroy();
      })),
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

const clientAddress = new WeakMap<grpc.Client, string>();

/**
 * Make a client for a service at an address: with this process's TLS identity (security.ts) when
 * it has one — the lane uses the same — else plain TCP.
 */
export function makeClient<C extends grpc.Client>(ctor: grpc.ServiceClientConstructor, address: string): C {
  const id = tlsIdentity();
  const creds =
    id === undefined
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(Buffer.from(id.caPem), id.certPem === '' ? null : Buffer.from(id.keyPem), id.certPem === '' ? null : Buffer.from(id.certPem), {
          checkServerIdentity: clientTlsOptions(id).checkServerIdentity as (host: string, cert: import('node:tls').PeerCertificate) => Error | undefined,
        });
  // The TLS server name is not an address (RFC 6066); the server's certificate is checked by CA and kind.
  const c = new ctor(address, creds, id === undefined ? CLIENT_OPTIONS : { ...CLIENT_OPTIONS, 'grpc.ssl_target_name_override': 'cairn-node' }) as unknown as C;
  clientAddress.set(c, address);
  return c;
}

type ClientMethod = Function & Partial<grpc.MethodDefinition<unknown, unknown>>;

function methodOf(client: grpc.Client, method: string): ClientMethod | undefined {
  const fn = (client as unknown as Record<string, ClientMethod>)[method];
  return typeof fn === 'function' ? fn : undefined;
}

/** The lane address of a client, when its calls should go over the lane. */
function laneOf(client: grpc.Client, fn: ClientMethod): string | undefined {
  if (!laneEnabled() || typeof fn.path !== 'string' || fn.requestSerialize === undefined) return undefined;
  return clientAddress.get(client);
}

/** Call a unary method as a promise with a deadline; errors come back as CairnError. */
export function call<Req, Res>(client: grpc.Client, method: string, req: Req, timeoutMs = 5000): Promise<Res> {
  const fn = methodOf(client, method);
  if (fn === undefined) return Promise.reject(new CairnError('EINVAL', `no rpc method ${method}`));
  const lane = laneOf(client, fn);
  if (lane !== undefined) return laneUnary(lane, fn as grpc.MethodDefinition<unknown, unknown>, req, timeoutMs) as Promise<Res>;
  return new Promise<Res>((resolve, reject) => {
    fn.call(client, req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) => {
      if (err) reject(fromServiceError(err));
      else resolve(res);
    });
  });
}

/** What a client-streaming call returns: grpc-js's ClientWritableStream, or the lane's same shape. */
export type ClientStreamCall = import('node:stream').Writable & { cancel(): void };
/** What a server-streaming call returns: grpc-js's ClientReadableStream, or the lane's same shape. */
export type ServerStreamCall = import('node:stream').Readable & { cancel(): void };

/**
 * Open a client-streaming call (write messages, end(); the callback gets the reply or a
 * grpc ServiceError, to turn into a CairnError with fromServiceError).
 */
export function openClientStream(
  client: grpc.Client,
  method: string,
  opts: { deadline?: Date | number },
  callback: (err: grpc.ServiceError | null, value?: unknown) => void,
): ClientStreamCall {
  const fn = methodOf(client, method);
  if (fn === undefined) throw new CairnError('EINVAL', `no rpc method ${method}`);
  const lane = laneOf(client, fn);
  if (lane !== undefined) return laneClientStream(lane, fn as grpc.MethodDefinition<unknown, unknown>, opts, callback);
  return fn.call(client, opts, callback) as ClientStreamCall;
}

/** Open a server-streaming call ('data' per message, 'end', 'error' with a grpc ServiceError). */
export function openServerStream(client: grpc.Client, method: string, req: unknown, opts: { deadline?: Date | number } = {}): ServerStreamCall {
  const fn = methodOf(client, method);
  if (fn === undefined) throw new CairnError('EINVAL', `no rpc method ${method}`);
  const lane = laneOf(client, fn);
  if (lane !== undefined) return laneServerStream(lane, fn as grpc.MethodDefinition<unknown, unknown>, req, opts);
  return fn.call(client, req, opts) as ServerStreamCall;
}
