/** The benchmark suites `npm run bench` runs, in order. Add a suite with one line. */
import type { BenchSuite } from './table.js';

export const SUITES: BenchSuite[] = [];
SUITES.push((await import('./chunk.js')).chunkSuite);
SUITES.push((await import('./client.js')).clientSuite);
SUITES.push((await import('./meta-ops.js')).metaOpsSuite);
SUITES.push((await import('./diskmap.js')).diskmapSuite);
SUITES.push((await import('./files.js')).filesSuite);
SUITES.push((await import('./checker.js')).checkerSuite);
SUITES.push((await import('./recovery.js')).recoverySuite);
SUITES.push((await import('./rpc-tls.js')).rpcTlsSuite);
SUITES.push((await import('./put-stages.js')).putStagesSuite);
SUITES.push((await import('./dfs.js')).dfsSuite);
SUITES.push((await import('./avail.js')).availSuite);
SUITES.push((await import('./locks.js')).locksSuite);
