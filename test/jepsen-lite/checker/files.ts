/**
 * The files checker: given every strong-mode upload a client made (its bytes' SHA-256, its outcome)
 * and what each node served for each path after the faults healed, decide durability (an
 * acknowledged file reads back byte for byte, as its last acknowledged upload or a later-or-unknown
 * one) and convergence (every node serves the same bytes). Pure logic, no I/O.
 */

export interface FilePut {
  readonly path: string;
  readonly process: number;
  /** ok: acknowledged (committed in strong mode); info: unknown; fail: certainly not applied. */
  readonly outcome: 'ok' | 'info' | 'fail';
  readonly size: number;
  readonly sha256: string;
  readonly invokeNs: bigint;
  readonly completeNs?: bigint;
  /** For acknowledged uploads: the commit state the service reported (strong mode promises `durable`). */
  readonly state?: string;
  /** For uploads that failed: the error code the service answered. */
  readonly error?: string;
}

/**
 * Error codes that tell a caller the upload did not happen (unlike EUNAVAIL or ETIMEDOUT). The
 * harness still treats every failed upload as unknown; one of these that took effect anyway is
 * reported as a misreported outcome (a warning: nothing acknowledged was lost).
 */
export const DEFINITE_ERRORS: ReadonlySet<string> = new Set(['ENOENT', 'EEXIST', 'EINVAL', 'EISDIR', 'ENOTDIR', 'EACCES', 'EPERM', 'ECONFLICT', 'ENOSPC', 'EFBIG', 'ENAMETOOLONG']);

export interface FileRead {
  readonly path: string;
  readonly node: number;
  /** ok: bytes read (their size and hash); absent: ENOENT; error: no answer within the bound. */
  readonly outcome: 'ok' | 'absent' | 'error';
  readonly size?: number;
  readonly sha256?: string;
  readonly error?: string;
}

/** A read through another node right after an acknowledged upload, while the faults go on. */
export interface FileReadback {
  readonly path: string;
  readonly node: number;
  readonly process: number;
  /** SHA-256 of the upload just acknowledged. */
  readonly expected: string;
  readonly invokeNs: bigint;
  /** ok: these bytes; absent: ENOENT. (Reads that failed otherwise are not checked: unavailability.) */
  readonly outcome: 'ok' | 'absent';
  readonly size?: number;
  readonly sha256?: string;
}

export interface FilesCheckResult {
  readonly valid: boolean;
  readonly anomalies: readonly string[];
  /** Findings that break no durability promise (an upload that answered a definite error yet took effect). */
  readonly warnings: readonly string[];
  readonly stats: {
    readonly files: number;
    readonly puts: number;
    readonly acknowledged: number;
    readonly unknown: number;
    readonly reads: number;
    readonly readbacks: number;
    readonly bytesVerified: number;
  };
}

const SHOWN_MAX = 20;

export function checkFiles(puts: readonly FilePut[], reads: readonly FileRead[], nodes: readonly number[], readbacks: readonly FileReadback[] = []): FilesCheckResult {
  const anomalies: string[] = [];
  let hidden = 0;
  const add = (t: string): void => {
    if (anomalies.length < SHOWN_MAX) anomalies.push(t);
    else hidden++;
  };
  const putsByPath = new Map<string, FilePut[]>();
  for (const p of puts) {
    const list = putsByPath.get(p.path) ?? [];
    list.push(p);
    putsByPath.set(p.path, list);
  }
  const readsByPath = new Map<string, FileRead[]>();
  for (const r of reads) {
    const list = readsByPath.get(r.path) ?? [];
    list.push(r);
    readsByPath.set(r.path, list);
  }
  let bytesVerified = 0;
  for (const p of puts) {
    if (p.outcome === 'ok' && p.state !== undefined && p.state !== 'durable') {
      add(`${p.path}: a strong upload (process ${p.process}) was acknowledged in state ${p.state}, not durable`);
    }
  }
  for (const [path, list] of putsByPath) {
    const oks = list.filter((p) => p.outcome === 'ok' && p.completeNs !== undefined);
    const lastOk = oks.reduce<FilePut | undefined>((a, b) => (a === undefined || b.completeNs! > a.completeNs! ? b : a), undefined);
    // An unknown upload may take effect any time after its invocation, so after the last acknowledged one too.
    const acceptable = new Map<string, FilePut>();
    if (lastOk !== undefined) acceptable.set(lastOk.sha256, lastOk);
    for (const p of list) if (p.outcome === 'info') acceptable.set(p.sha256, p);
    const describe = (): string => (lastOk !== undefined ? `the last acknowledged upload (${lastOk.size} bytes, sha256 ${lastOk.sha256.slice(0, 16)}…, process ${lastOk.process})` : 'no acknowledged upload');
    const rs = readsByPath.get(path) ?? [];
    for (const node of nodes) {
      const r = rs.find((x) => x.node === node);
      if (r === undefined) {
        if (lastOk !== undefined) add(`${path}: never read through n${node}`);
        continue;
      }
      if (r.outcome === 'error') add(`${path}: n${node} did not serve it after healing (${r.error ?? 'error'}); expected ${describe()}`);
      else if (r.outcome === 'absent') {
        if (lastOk !== undefined) add(`${path}: acknowledged file lost — n${node} says ENOENT; expected ${describe()}`);
      } else {
        const match = acceptable.get(r.sha256 ?? '');
        if (match === undefined) {
          const older = list.find((p) => p.sha256 === r.sha256);
          add(
            `${path}: n${node} served ${r.size} bytes (sha256 ${(r.sha256 ?? '').slice(0, 16)}…) ` +
              (older !== undefined ? `of an upload overwritten by a later acknowledged one (process ${older.process}, ${older.outcome}); ` : 'that no upload wrote; ') +
              `expected ${describe()}`,
          );
        } else if (match.size !== r.size) add(`${path}: n${node} served ${r.size} bytes with the hash of a ${match.size}-byte upload`);
        else bytesVerified += r.size ?? 0;
      }
    }
    const answers = new Set(rs.filter((r) => r.outcome !== 'error').map((r) => (r.outcome === 'ok' ? r.sha256 : 'absent')));
    if (answers.size > 1) add(`${path}: nodes disagree after healing: ${rs.map((r) => `n${r.node}=${r.outcome === 'ok' ? `${r.sha256?.slice(0, 12)}…` : r.outcome}`).join(' ')}`);
  }
  for (const path of readsByPath.keys()) if (!putsByPath.has(path)) add(`${path}: read but never written (harness error)`);
  const warnings: string[] = [];
  for (const p of puts) {
    if (p.outcome === 'ok' || p.error === undefined || !DEFINITE_ERRORS.has(p.error)) continue;
    const landed = (readsByPath.get(p.path) ?? []).filter((r) => r.outcome === 'ok' && r.sha256 === p.sha256);
    if (landed.length > 0) {
      warnings.push(`${p.path}: the upload of process ${p.process} answered ${p.error}, yet its ${p.size} bytes are the file (read through ${landed.map((r) => `n${r.node}`).join(', ')}): a misreported failure`);
    }
  }
  // Reads right after an acknowledged upload, through another node: that upload's bytes (or an
  // earlier upload with unknown outcome that landed late) — never ENOENT, never older bytes.
  for (const rb of readbacks) {
    const late = (putsByPath.get(rb.path) ?? []).filter((p) => p.outcome === 'info' && p.invokeNs < rb.invokeNs).map((p) => p.sha256);
    if (rb.outcome === 'absent') add(`${rb.path}: stale read — n${rb.node} said ENOENT right after the upload was acknowledged (process ${rb.process})`);
    else if (rb.sha256 !== rb.expected && !late.includes(rb.sha256 ?? '')) {
      const older = (putsByPath.get(rb.path) ?? []).find((p) => p.sha256 === rb.sha256);
      add(`${rb.path}: stale read — n${rb.node} served ${older !== undefined ? 'an older version' : 'bytes no upload wrote'} (${rb.size} bytes) right after the upload was acknowledged (process ${rb.process})`);
    } else bytesVerified += rb.size ?? 0;
  }
  if (hidden > 0) anomalies.push(`… and ${hidden} more`);
  return {
    valid: anomalies.length === 0,
    anomalies,
    warnings,
    stats: {
      files: putsByPath.size,
      puts: puts.length,
      acknowledged: puts.filter((p) => p.outcome === 'ok').length,
      unknown: puts.filter((p) => p.outcome === 'info').length,
      reads: reads.length,
      readbacks: readbacks.length,
      bytesVerified,
    },
  };
}

export function formatFilesResult(r: FilesCheckResult): string {
  const s = r.stats;
  const head = `${r.valid ? 'valid' : 'INVALID'}: files; ${s.files} files, ${s.puts} strong uploads (${s.acknowledged} acknowledged, ${s.unknown} unknown), ` +
    `${s.readbacks} reads through another node during the faults, ${s.reads} final reads, ${s.bytesVerified} bytes verified by SHA-256`;
  return [head, ...r.anomalies, ...r.warnings.map((w) => `warning: ${w}`)].join('\n');
}
