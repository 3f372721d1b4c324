/**
 * Failpoints: named places in the code where a test can make the process crash, fail or
 * stall, to prove that every step of a protocol survives it.
 *
 * Armed by the environment, read once at start-up:
 *
 *   CAIRN_FAILPOINTS="client.after-store=crash,client.before-hash=delay:200,x=error@3"
 *
 * Actions:
 *   crash        SIGKILL this process (the same as `kill -9` from outside: no exit handlers,
 *                no flushing of user-space buffers).
 *   error        throw CairnError('EIO', …) at that point.
 *   delay:MS     wait MS milliseconds, then go on.
 * A suffix `@N` fires the action only on the N-th time the point is reached (1-based);
 * without it, every time.
 *
 * Code calls `await failpoint('component.step')`. When nothing is armed this is one boolean
 * test and returns undefined (awaiting undefined costs one microtask, no timer, no lookup).
 * Tests in the same process may arm points with `armFailpoint` and must `disarmAllFailpoints`.
 */
import { CairnError } from './errors.js';

export type FailpointAction =
  | { kind: 'crash' }
  | { kind: 'error' }
  | { kind: 'delay'; delayMs: number };

interface Armed {
  action: FailpointAction;
  /** Fire only on this hit (1-based); undefined = every hit. */
  onHit: number | undefined;
  hits: number;
}

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,99}$/;
const armed = new Map<string, Armed>();
let anyArmed = false;

/** Parse one action text ("crash", "error", "delay:200", optionally "@N"). */
export function parseFailpointAction(text: string): { action: FailpointAction; onHit: number | undefined } {
  const [body = '', hitText] = text.split('@');
  let onHit: number | undefined;
  if (hitText !== undefined) {
    onHit = Number(hitText);
    if (!Number.isInteger(onHit) || onHit < 1) {
      throw new CairnError('EINVAL', `failpoint action "${text}": the hit after "@" must be a positive integer`);
    }
  }
  if (body === 'crash') return { action: { kind: 'crash' }, onHit };
  if (body === 'error') return { action: { kind: 'error' }, onHit };
  const m = /^delay:(\d{1,7})$/.exec(body);
  if (m) return { action: { kind: 'delay', delayMs: Number(m[1]) }, onHit };
  throw new CairnError('EINVAL', `failpoint action "${text}" is not one of crash, error, delay:MS (optionally followed by @N)`);
}

/** Parse a whole CAIRN_FAILPOINTS value; throws EINVAL naming the bad entry. */
export function parseFailpointSpec(spec: string): Map<string, { action: FailpointAction; onHit: number | undefined }> {
  const out = new Map<string, { action: FailpointAction; onHit: number | undefined }>();
  for (const raw of spec.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new CairnError('EINVAL', `CAIRN_FAILPOINTS entry "${entry}" must look like name=action`);
    const name = entry.slice(0, eq);
    if (!NAME_RE.test(name)) {
      throw new CairnError('EINVAL', `CAIRN_FAILPOINTS entry "${entry}": name must be lowercase letters, digits, ".", "_" or "-"`);
    }
    out.set(name, parseFailpointAction(entry.slice(eq + 1)));
  }
  return out;
}

/** Arm one failpoint in this process (tests). */
export function armFailpoint(name: string, actionText: string): void {
  const { action, onHit } = parseFailpointAction(actionText);
  armed.set(name, { action, onHit, hits: 0 });
  anyArmed = true;
}

export function disarmFailpoint(name: string): void {
  armed.delete(name);
  anyArmed = armed.size > 0;
}

export function disarmAllFailpoints(): void {
  armed.clear();
  anyArmed = false;
}

/** How many times an armed point has been reached (0 when not armed). */
export function failpointHits(name: string): number {
  return armed.get(name)?.hits ?? 0;
}

function fire(name: string, a: Armed): Promise<void> | undefined {
  a.hits += 1;
  if (a.onHit !== undefined && a.hits !== a.onHit) return undefined;
  switch (a.action.kind) {
    case 'crash':
      // Exactly what kill -9 does: nothing after this line runs, no handlers, no flush.
      process.kill(process.pid, 'SIGKILL');
      // SIGKILL to ourselves is delivered before kill() returns on Linux; never fall through.
      return process.exit(137);
    case 'error':
      throw new CairnError('EIO', `failpoint ${name} injected an error (CAIRN_FAILPOINTS)`);
    case 'delay':
      return new Promise((resolve) => setTimeout(resolve, (a.action as { delayMs: number }).delayMs));
  }
}

/** The failpoint itself: `await failpoint('client.after-store')`. */
export function failpoint(name: string): Promise<void> | undefined {
  if (!anyArmed) return undefined;
  const a = armed.get(name);
  if (a === undefined) return undefined;
  return fire(name, a);
}

// Arm from the environment once, at load. A malformed spec is a test bug: fail loudly.
const envSpec = process.env.CAIRN_FAILPOINTS;
if (envSpec !== undefined && envSpec.trim() !== '') {
  for (const [name, { action, onHit }] of parseFailpointSpec(envSpec)) {
    armed.set(name, { action, onHit, hits: 0 });
  }
  anyArmed = armed.size > 0;
}
