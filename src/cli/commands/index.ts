/**
 * The list of command groups. Each module exports `register(program)` and owns one
 * group (`cairn diskmap …`, `cairn put …`). Add a group by adding a line here.
 */
import type { Command } from 'commander';
import { register as kv } from './kv.js';
import { register as chunk } from './chunk.js';
import { register as diskmap } from './diskmap.js';
import { register as server } from './server.js';
import { register as meta } from './meta.js';
import { register as local } from './local.js';
import { register as files } from './files.js';
import { register as mount } from './mount.js';
import { register as repair } from './repair.js';
import { register as recover } from './recover.js';
import { register as config } from './config.js';
import { register as disk } from './disk.js';
import { register as init } from './init.js';

export type RegisterCommand = (program: Command) => void;

// Order is the order of `cairn --help`: everyday commands first, development tools last.
export const COMMANDS: RegisterCommand[] = [local, init, server, files, mount, repair, disk, meta, config, diskmap, chunk, kv, recover];
