/** Long-running commands (`start`, `kv serve`, `chunk serve`) run until SIGTERM or SIGINT. */
import type { Logger } from '../common/log.js';

/** Resolves on the first SIGTERM or SIGINT (logged), removing both listeners. */
export function untilSignal(log: Logger): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      log.info({ sig }, 'shutting down');
      resolve(sig);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
