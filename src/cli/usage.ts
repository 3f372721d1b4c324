/** Helpers for validating CLI arguments: a bad argument is a usage error (exit 2). */
import type { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { formatZodError } from '../common/config.js';

export function usageError(message: string): CairnError {
  return new CairnError('EINVAL', message, { usage: true });
}

/** Parse CLI options with a zod schema; failures are usage errors naming the option. */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw usageError(formatZodError('option', r.error));
  return r.data;
}
