/**
 * The previous tagged release, ready to run beside this tree: `git archive` of the tag into a
 * fresh temp dir, with node_modules reused from this tree when every package the release's
 * lockfile names is installed here at the same version (a symlink; the usual case, ~0.2 s), and
 * `npm ci --prefer-offline` in the release's folder otherwise (~65 s here: native addons build).
 * A clone without the tag fails with a message that says how to fetch it; it is never skipped.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT, tempDir } from '../helpers/env.js';

const run = promisify(execFile);

/** The release the mixed-version test runs against (the previous one). */
export const PREVIOUS_RELEASE_TAG = 'v0.1.0';
/** Its commit: a clone that has main's history but not its tags (a plain `git clone --no-tags`) still finds it. */
export const PREVIOUS_RELEASE_COMMIT = '06c5f2e5169ac1403793dbb2ae2ef69d32d7b46e';

export interface Release {
  tag: string;
  commit: string;
  /** Folder holding the release's source tree (src/cli/main.ts) and a node_modules. */
  dir: string;
  /** How node_modules was provided: 'reused' (symlink to this tree's) or 'npm ci'. */
  modules: 'reused' | 'npm ci';
  remove(): Promise<void>;
}

type Lock = { packages?: Record<string, { version?: string }> };

/**
 * Packages of the release's lockfile that this tree's lockfile lacks or holds at another version
 * (the root entry — the project's own version — excluded).
 */
export function lockDifferences(release: Lock, here: Lock): string[] {
  const out: string[] = [];
  for (const [path, p] of Object.entries(release.packages ?? {})) {
    if (path === '') continue;
    const mine = here.packages?.[path];
    if (mine === undefined || mine.version !== p.version) out.push(`${path}@${p.version ?? '?'} (here: ${mine?.version ?? 'absent'})`);
  }
  return out;
}

export async function prepareRelease(tag = PREVIOUS_RELEASE_TAG, knownCommit: string | undefined = tag === PREVIOUS_RELEASE_TAG ? PREVIOUS_RELEASE_COMMIT : undefined): Promise<Release> {
  let commit: string | undefined;
  for (const ref of [tag, knownCommit]) {
    if (ref === undefined || commit !== undefined) continue;
    try {
      commit = (await run('git', ['-C', REPO_ROOT, 'rev-parse', '--verify', '--quiet', `${ref}^{commit}`])).stdout.trim();
    } catch {
      // not in this clone: try the next name of the release
    }
  }
  if (commit === undefined || commit === '') {
    throw new Error(
      `the tag ${tag} is missing from this clone: the mixed-version upgrade test runs the previous release built from it. ` +
        `Fetch the tags (git fetch --tags; in CI a checkout with full history and tags) and run it again.`,
    );
  }
  const t = await tempDir(`cairn-release-${tag}-`);
  try {
    const tar = join(t.path, 'release.tar');
    await run('git', ['-C', REPO_ROOT, 'archive', '--format=tar', '-o', tar, commit]);
    const dir = join(t.path, 'tree');
    await run('mkdir', ['-p', dir]);
    await run('tar', ['-xf', tar, '-C', dir]);
    const releaseLock = JSON.parse(await readFile(join(dir, 'package-lock.json'), 'utf8')) as Lock;
    const hereLock = JSON.parse(await readFile(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as Lock;
    const diff = lockDifferences(releaseLock, hereLock);
    let modules: Release['modules'];
    if (diff.length === 0) {
      await symlink(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
      modules = 'reused';
    } else {
      await run('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: dir, maxBuffer: 64 << 20, timeout: 300_000 });
      modules = 'npm ci';
    }
    return { tag, commit, dir, modules, remove: t.remove };
  } catch (err) {
    await t.remove();
    throw err;
  }
}
