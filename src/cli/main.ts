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

export function buildProgram(): Command {
  const program = new Command('cairn')
    .description('Cairn: a distributed file system for small clusters')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const register of COMMANDS) register(program);
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
    process.stderr.write(`cairn: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}

const isEntry = process.argv[1] !== undefined && /[\\/]cli[\\/]main\.(js|ts)$/.test(process.argv[1]);
if (isEntry) {
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
