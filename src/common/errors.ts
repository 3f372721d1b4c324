/**
 * Errors that cross a module or process boundary: a POSIX-style code name and a sentence
 * a person can act on. The gRPC layer maps them to status codes and back (src/rpc).
 */

export const ERROR_CODES = [
  'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ENOTEMPTY', 'EINVAL', 'ENAMETOOLONG', 'EACCES', 'EPERM',
  'ESTALE', 'EIO', 'ENOSPC', 'EAGAIN', 'EBUSY', 'ETIMEDOUT', 'ECONNREFUSED', 'EXDEV', 'ELOOP', 'EFBIG',
  'ENOTLEADER', 'ECOMPACTED', 'ECONFLICT', 'EFENCED', 'ECORRUPT', 'EUNAVAIL', 'ECANCELED', 'EUNSAFE',
  'EINTR',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

const CODE_SET: ReadonlySet<string> = new Set(ERROR_CODES);

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && CODE_SET.has(s);
}

export class CairnError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'CairnError';
    this.code = code;
    this.details = details;
  }

  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

/** Shorthand: throw new CairnError(code, message). */
export function fail(code: ErrorCode, message: string, details?: Record<string, unknown>): never {
  throw new CairnError(code, message, details);
}

/** Invariant check that stays on in production: a crash beats silent corruption. */
export function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(`invariant violated: ${message}`);
}

/** Node's own fs errors carry .code; this tells whether an unknown error is one. */
export function errnoCode(err: unknown): string | undefined {
  if (err !== null && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}
