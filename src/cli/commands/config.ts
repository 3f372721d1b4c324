/**
 * `cairn config check FILE`: validate a node config as `cairn start` would, without starting
 * anything. Every problem is printed with the field it is about (`daemon.scrubb: unknown field`);
 * exit 0 when the file is good, 1 when it is not.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { loadNodeConfig } from '../../common/config.js';
import { CairnError } from '../../common/errors.js';
import { printJson } from '../output.js';
import { parseOptions } from '../usage.js';

export function register(program: Command): void {
  const config = program.command('config').description('node config files');
  config
    .command('check')
    .description('validate a node config file (every error names its field); exit 1 if it is bad')
    .argument('<file>', 'node config file (JSON)')
    .option('--json', 'print JSON: {file, ok, errors}')
    .action(async (file: string, raw: unknown) => {
      const o = parseOptions(z.object({ json: z.boolean().default(false) }), raw);
      try {
        const cfg = await loadNodeConfig(file);
        if (o.json) printJson({ file, ok: true, errors: [], nodeId: cfg.nodeId, clusterName: cfg.clusterName });
        else process.stdout.write(`${file}: ok (node ${cfg.nodeId} of cluster ${cfg.clusterName}, ${cfg.disks.length} disks${cfg.tls === undefined ? ', no tls section: the node would accept anyone' : ''})\n`);
      } catch (err) {
        if (!(err instanceof CairnError) || !o.json) throw err;
        printJson({ file, ok: false, errors: err.message.split('\n') });
        throw new CairnError(err.code, `${file}: not a valid node config`);
      }
    });
}
