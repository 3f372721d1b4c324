/**
 * `cairn recover --disks D1,D2,… --dir OUT [--dry-run] [--json]`: rebuild a cluster from its data
 * disks alone (src/server/recover.ts, docs/recovery.md). Offline: run it with every node stopped.
 * Exit 0 when every file the copy knows is intact, 1 when something is unrecoverable or refused.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { CairnError } from '../../common/errors.js';
import { printJson } from '../output.js';
import { parseOptions } from '../usage.js';

const recoverSchema = z.object({
  disks: z.string().min(1),
  dir: z.string().min(1).optional(),
  dryRun: z.boolean().default(false),
  basePort: z.coerce.number().int().min(1).max(65535).optional(),
  verify: z.boolean().default(true),
  json: z.boolean().default(false),
});

export function register(program: Command): void {
  program
    .command('recover')
    .description('rebuild the cluster from its data disks alone when every metadata/Raft directory is lost (offline)')
    .requiredOption('--disks <paths>', 'comma-separated data disk directories (mount points) of the cluster')
    .option('--dir <dir>', 'where to write the recovered node directories and configs (required unless --dry-run)')
    .option('--dry-run', 'print the report without writing anything')
    .option('--base-port <n>', 'listen on 127.0.0.1:<n>+i instead of the addresses the nodes had')
    .option('--no-verify', 'skip reading every referenced chunk (faster; the report then trusts the shard headers)')
    .option('--json', 'print the report as JSON')
    .action(async (raw: unknown) => {
      const o = parseOptions(recoverSchema, raw);
      if (!o.dryRun && o.dir === undefined) throw new CairnError('EINVAL', 'recover needs --dir OUT (or --dry-run)', { usage: true });
      const { recover, summarize } = await import('../../server/recover.js');
      const report = await recover({
        disks: o.disks.split(',').map((d) => d.trim()).filter((d) => d !== ''),
        outDir: o.dir ?? '',
        dryRun: o.dryRun,
        basePort: o.basePort,
        verify: o.verify,
      });
      if (o.json) printJson(report);
      else process.stdout.write(summarize(report));
      if (report.filesUnrecoverable.length > 0) {
        throw new CairnError('ECORRUPT', `${report.filesUnrecoverable.length} file(s) could not be recovered intact (listed in the report)`);
      }
    });
}
