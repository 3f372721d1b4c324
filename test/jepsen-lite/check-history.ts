/**
 * `npm run check-history -- --model register|kv|path|dir FILE [--format auto|jepsen-kv|jepsen-etcd|cairn]`
 * Checks one recorded history for linearizability and prints `linearizable` or `not linearizable`
 * (with the smallest failing window it can show). Exit codes: 0 linearizable, 1 not linearizable,
 * 2 usage error or unreadable/malformed file, 3 undecided (the search budget ran out).
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { CairnError, errnoCode } from '../../src/common/errors.js';
import { checkWithModel, formatResult, type CheckResult } from './checker/check.js';
import { FORMATS, pairEvents, parseHistory, type Format } from './checker/history.js';
import { MODELS, type ModelName } from './checker/models.js';

const USAGE = `usage: npm run check-history -- --model register|kv|path|dir FILE [options]

Checks a recorded history for linearizability.

options:
  --model NAME       register (read/write/cas), kv (get/put/append per key),
                     path (Cairn versioned path register: read/write/cas per path),
                     dir (names in a directory: create/unlink/rename/readdir per directory)
  --format FMT       auto (default), jepsen-kv, jepsen-etcd, cairn
  --timeout-s N      give up after N seconds (default 300): exit 3
  --max-configs N    per-key bound on remembered configurations (default 2000000;
                     bounds memory), then the key is undecided: exit 3
  --all-keys         after a key fails, keep checking the others
  --json             print the result as JSON
  -h, --help         this text

exit codes: 0 linearizable, 1 not linearizable, 2 usage error or bad file, 3 undecided`;

export interface CheckFileOptions {
  readonly model: ModelName;
  readonly format?: Format | 'auto';
  readonly deadlineMs?: number;
  readonly allKeys?: boolean;
  readonly maxConfigs?: number;
}

/** Read, parse and check one history file. Throws CairnError(EINVAL/ENOENT) for bad input. */
export async function checkFile(file: string, opts: CheckFileOptions): Promise<CheckResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    throw new CairnError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot read ${file}: ${(err as Error).message}`);
  }
  const { events } = parseHistory(text, file, opts.format ?? 'auto');
  return checkWithModel(opts.model, pairEvents(events), { deadlineMs: opts.deadlineMs, allKeys: opts.allKeys, maxConfigs: opts.maxConfigs });
}

function usage(message: string): never {
  process.stderr.write(`check-history: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        model: { type: 'string' },
        format: { type: 'string', default: 'auto' },
        'timeout-s': { type: 'string', default: '300' },
        json: { type: 'boolean', default: false },
        'all-keys': { type: 'boolean', default: false },
        'max-configs': { type: 'string', default: '2000000' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    usage((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const model = values.model;
  if (model === undefined) usage('--model is required');
  if (!(model in MODELS)) usage(`unknown model ${JSON.stringify(model)} (register, kv, path or dir)`);
  const format = values.format;
  if (format !== 'auto' && !(FORMATS as readonly string[]).includes(format)) usage(`unknown format ${JSON.stringify(format)}`);
  const timeoutS = Number(values['timeout-s']);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) usage('--timeout-s must be a positive number');
  const maxConfigs = Number(values['max-configs']);
  if (!Number.isInteger(maxConfigs) || maxConfigs <= 0) usage('--max-configs must be a positive integer');
  if (positionals.length !== 1) usage(positionals.length === 0 ? 'a history FILE is required' : 'give exactly one FILE');

  let result: CheckResult;
  try {
    result = await checkFile(positionals[0]!, { model: model as ModelName, format: format as Format | 'auto', deadlineMs: timeoutS * 1000, allKeys: values['all-keys'], maxConfigs });
  } catch (err) {
    if (err instanceof CairnError) {
      process.stderr.write(`check-history: ${err.code}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
  } else {
    process.stdout.write(`${formatResult(result)}\n`);
  }
  return result.verdict === 'linearizable' ? 0 : result.verdict === 'not linearizable' ? 1 : 3;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`check-history: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(70);
    },
  );
}
