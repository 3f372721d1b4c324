/** Long-running commands (`start`, `kv serve`, `chunk serve`) run until SIGTERM or SIGINT. */
import type { Logger } from '../common/log.js';

/**
 * Resolves on the first SIGTERM or SIGINT (logged). The listeners stay for the rest of the
 * process's life: a later signal, while the command is stopping, is logged and ignored instead of
 * falling back to the default action (which would end the process in the middle of its clean stop).
 * Call it before the work starts, so that a signal during start-up also stops the command cleanly.
 */
export function untilSignal(log: Logger): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let first: NodeJS.Signals | undefined;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (first !== undefined) {
        log.warn({ sig, first }, 'already stopping; send SIGKILL to end the process at once');
        return;
      }
      first = sig;
      log.info({ sig }, 'shutting down');
      resolve(sig);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
