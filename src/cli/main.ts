#!/usr/bin/env node
/**
 * `cairn`: the one command-line program. Each command group lives in src/cli/commands/
 * and registers itself on the program; this file only wires them and maps errors to
 * exit codes: 0 ok, 1 failure, 2 usage error.
 */
import './threadpool.js'; // first: sizes libuv's thread pool before anything uses it
import { Command, CommanderError } from 'commander';
import { CairnError } from '../common/errors.js';
import { COMMANDS } from './commands/index.js';
import { useClientCredentials } from './credentials.js';

/** Commands that run, make or check nodes and set up their own TLS identity (or none). */
const OWN_CREDENTIALS = new Set(['start', 'serve', 'up', 'init', 'join', 'check', 'create']);

export function buildProgram(): Command {
  const program = new Command('cairn')
    .description('Cairn: a distributed file system for small clusters')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const register of COMMANDS) register(program);
  // Client commands present the credentials they find (src/cli/credentials.ts); the commands
  // that run or make nodes set up their own.
  program.hook('preAction', (_program, action) => {
    if (!OWN_CREDENTIALS.has(action.name())) useClientCredentials();
  });
  // Every subcommand inherits exitOverride so that usage errors reach our handler.
  const walk = (c: Command): void => {
    c.exitOverride();
    c.commands.forEach(walk);
  };
  walk(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end with exit code 0; anything else is a usage error.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof CairnError) {
      process.stderr.write(`cairn: ${err.code}: ${err.message}\n`);
      return err.code === 'EINVAL' && err.details?.usage === true ? 2 : 1;
    }
    // A system error (a local file that cannot be read or written) is a sentence, not a stack.
    const sys = err as NodeJS.ErrnoException | undefined;
    if (typeof sys?.code === 'string' && /^E[A-Z]+$/.test(sys.code) && typeof sys.message === 'string') {
      process.stderr.write(`cairn: ${sys.code}: ${sys.message.replace(/^E[A-Z]+: /, '')}\n`);
      return 1;
    }
    process.stderr.write(`cairn: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}

const isEntry = process.argv[1] !== undefined && /[\\/]cli[\\/]main\.(js|ts)$/.test(process.argv[1]);
if (isEntry) {
  // `cairn status | head`: a reader that goes away is the end of the output, not an error.
  for (const out of [process.stdout, process.stderr]) {
    out.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`cairn: ${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
