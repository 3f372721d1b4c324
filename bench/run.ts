/**
 * `npm run bench [-- --quick] [-- --only NAME]`: runs every benchmark suite listed in
 * bench/suites.ts and prints its tables (also saved under bench/results/).
 */
import '../src/cli/threadpool.js'; // first: the thread pool of a node daemon (16), as the product runs
import { parseArgs } from 'node:util';
import { SUITES } from './suites.js';
import { report } from './table.js';

const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, only: { type: 'string' }, help: { type: 'boolean', default: false } },
});
if (values.help) {
  process.stdout.write(`usage: npm run bench -- [--quick] [--only SUITE]\nsuites: ${SUITES.map((s) => s.name).join(', ')}\n`);
  process.exit(0);
}
const chosen = values.only ? SUITES.filter((s) => s.name === values.only) : SUITES;
if (chosen.length === 0) {
  process.stderr.write(`no suite named ${values.only}; suites: ${SUITES.map((s) => s.name).join(', ')}\n`);
  process.exit(2);
}
for (const s of chosen) {
  process.stdout.write(`\n# suite ${s.name}\n`);
  const tables = await s.run({ quick: values.quick ?? false });
  await report(s.name, tables);
}
