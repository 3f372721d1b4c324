/**
 * The list of command groups. Each module exports `register(program)` and owns one
 * group (`cairn diskmap …`, `cairn put …`). Add a group by adding a line here.
 */
import type { Command } from 'commander';

export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [];
COMMANDS.push((await import('./kv.js')).register);
COMMANDS.push((await import('./chunk.js')).register);
COMMANDS.push((await import('./diskmap.js')).register);
COMMANDS.push((await import('./server.js')).register);
COMMANDS.push((await import('./meta.js')).register);
COMMANDS.push((await import('./local.js')).register);
COMMANDS.push((await import('./files.js')).register);
