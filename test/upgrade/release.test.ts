/**
 * How the mixed-version test gets the previous release (release.ts): a missing tag is a failure
 * that says what to fetch, and node_modules is reused only when the release's lockfile is
 * satisfied by this tree's packages.
 */
import { describe, expect, it } from 'vitest';
import { lockDifferences, prepareRelease } from './release.js';

describe('the previous release', () => {
  it('fails with what to do when the tag is missing', async () => {
    await expect(prepareRelease('v0.0.0-no-such-tag')).rejects.toThrow(/tag v0\.0\.0-no-such-tag is missing from this clone.*git fetch --tags/);
  });

  it('reuses node_modules only when every package of the release is here at its version', () => {
    const release = { packages: { '': { version: '0.1.0' }, 'node_modules/zod': { version: '4.6.7' }, 'node_modules/a/node_modules/b': { version: '1.0.0' } } };
    const same = { packages: { '': { version: '0.2.0' }, 'node_modules/zod': { version: '4.6.7' }, 'node_modules/a/node_modules/b': { version: '1.0.0' }, 'node_modules/new': { version: '2.0.0' } } };
    expect(lockDifferences(release, same)).toEqual([]);
    const bumped = { packages: { ...same.packages, 'node_modules/zod': { version: '4.7.0' } } };
    expect(lockDifferences(release, bumped)).toEqual(['node_modules/zod@4.6.7 (here: 4.7.0)']);
    const { 'node_modules/a/node_modules/b': _gone, ...rest } = same.packages;
    expect(lockDifferences(release, { packages: rest })).toEqual(['node_modules/a/node_modules/b@1.0.0 (here: absent)']);
  });
});
