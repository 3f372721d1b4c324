/**
 * What the CLI prints: aligned plain-text tables for people, JSON for scripts (--json).
 * Everything goes to stdout; diagnostics go to stderr.
 */

export type Cell = string | number | bigint | boolean | null | undefined;

function cellText(c: Cell): string {
  if (c === null || c === undefined) return '-';
  return String(c);
}

/** Render rows as an aligned table with a header line. Numbers are right-aligned. */
export function formatTable(headers: string[], rows: Cell[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => cellText(r[i]).length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || typeof r[i] === 'bigint'));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (numeric[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(r.map(cellText)))].join('\n');
}

export function printTable(headers: string[], rows: Cell[][]): void {
  process.stdout.write(`${formatTable(headers, rows)}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(
    `${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`,
  );
}

/** Human-readable byte count (binary units). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}
