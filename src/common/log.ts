/**
 * Structured logging for every Cairn module: one pino root, one child per component.
 *
 * Library code never writes to stdout: logs go to stderr (fd 2) so that CLI output
 * (tables, JSON) stays machine-readable. The level comes from CAIRN_LOG_LEVEL
 * (trace|debug|info|warn|error|fatal|silent), default "info".
 */
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);

function levelFromEnv(): string {
  const raw = process.env.CAIRN_LOG_LEVEL;
  if (raw === undefined || raw === '') return 'info';
  return LEVELS.has(raw) ? raw : 'info';
}

let root: Logger | undefined;

/** The process-wide root logger (created on first use). */
export function rootLogger(): Logger {
  root ??= pino({ level: levelFromEnv(), base: { pid: process.pid } }, pino.destination({ fd: 2, sync: false }));
  return root;
}

/** A child logger for one component, e.g. logger('raft', { node: 2 }). */
export function logger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}
