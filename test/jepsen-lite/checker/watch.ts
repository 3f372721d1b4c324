/**
 * The watch-feed checker: given the writes clients made (with their outcomes and times), what every
 * watcher received across its reconnections, and the event log each node serves after healing,
 * decide whether the feed kept its promise — every change of a watcher's prefix delivered exactly
 * once, in revision order, with no gap, no duplicate and nothing invented — and whether the log
 * itself matches the acknowledged writes (ok writes exactly once, unknown ones at most once, no
 * event without a write, revisions ordered as the writes were in real time). Pure logic, no I/O.
 */

/** An event as the harness stores it (a subset of the meta WatchEvent). */
export interface FeedEvent {
  readonly revision: number;
  readonly kind: string;
  readonly path: string;
  readonly newPath?: string;
  readonly ino: number;
  readonly version: number;
}

/** A write a client made; `id` is the identity of the event it must cause (see eventIdentity). */
export interface FeedWrite {
  readonly id: string;
  /** ok: acknowledged (must appear exactly once); info: unknown (at most once); fail: must not appear. */
  readonly outcome: 'ok' | 'info' | 'fail';
  readonly invokeNs: bigint;
  /** Completion time; undefined for unknown outcomes (they may take effect any time after invoke). */
  readonly completeNs?: bigint;
  readonly process: number;
}

export interface WatcherLog {
  readonly watcher: number;
  /** The subtree it watched. */
  readonly prefix: string;
  /** The first revision it asked for. */
  readonly fromRevision: number;
  /** Everything it received, in the order received (across all sessions). */
  readonly events: readonly (FeedEvent & { readonly session: number; readonly node: number })[];
  /** The revision up to which it was told everything had been delivered, at the end. */
  readonly progress: number;
  readonly sessions: number;
  /** ECOMPACTED answers it got (resume revision asked, oldest revision kept). */
  readonly compacted: readonly { readonly asked: number; readonly firstRevision: number }[];
}

/** The event log of the watched root as one node serves it after healing. */
export interface ReferenceLog {
  readonly node: number;
  readonly events: readonly FeedEvent[];
  /** Revision up to which the node said it had delivered everything. */
  readonly upTo: number;
}

export interface WatchCheckInput {
  /** Root under which all writes happen and every watcher's prefix lies. */
  readonly root: string;
  readonly fromRevision: number;
  /** Revision of the last change after healing (the leader's, read linearizably). */
  readonly targetRevision: number;
  readonly writes: readonly FeedWrite[];
  readonly watchers: readonly WatcherLog[];
  readonly references: readonly ReferenceLog[];
  /** The watch log's length: a compaction is legitimate only beyond it. */
  readonly maxEvents: number;
}

export interface WatchCheckResult {
  readonly valid: boolean;
  readonly anomalies: readonly string[];
  readonly stats: {
    readonly writes: number;
    readonly acknowledged: number;
    readonly unknown: number;
    readonly unknownApplied: number;
    readonly events: number;
    readonly watchers: number;
    readonly sessions: number;
    readonly delivered: number;
  };
}

/** Anomalies listed per kind before the rest are only counted. */
const ANOMALIES_SHOWN_PER_KIND = 10;

/** The identity of the change an event reports: the same for the write that caused it. */
export function eventIdentity(e: Pick<FeedEvent, 'kind' | 'path' | 'version' | 'newPath'>): string {
  if (e.kind === 'truncate' || e.kind === 'commit') return `${e.kind} ${e.path}@${e.version}`;
  if (e.kind === 'rename') return `rename ${e.path} -> ${e.newPath ?? ''}`;
  return `${e.kind} ${e.path}`;
}

export function underPrefix(e: Pick<FeedEvent, 'path' | 'newPath'>, prefix: string): boolean {
  if (prefix === '' || prefix === '/') return true;
  const p = prefix.replace(/\/+$/, '');
  const under = (x: string | undefined): boolean => x !== undefined && (x === p || x.startsWith(`${p}/`));
  return under(e.path) || under(e.newPath);
}

function sameEvent(a: FeedEvent, b: FeedEvent): boolean {
  return a.revision === b.revision && a.kind === b.kind && a.path === b.path && (a.newPath ?? '') === (b.newPath ?? '') && a.ino === b.ino && a.version === b.version;
}

function show(e: FeedEvent): string {
  return `r${e.revision} ${eventIdentity(e)} (ino ${e.ino})`;
}

class Anomalies {
  private readonly byKind = new Map<string, string[]>();
  private readonly counts = new Map<string, number>();
  add(kind: string, text: string): void {
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    const list = this.byKind.get(kind) ?? [];
    if (list.length < ANOMALIES_SHOWN_PER_KIND) list.push(text);
    this.byKind.set(kind, list);
  }
  lines(): string[] {
    const out: string[] = [];
    for (const [kind, list] of this.byKind) {
      const n = this.counts.get(kind)!;
      out.push(`${kind}: ${n}`);
      for (const t of list) out.push(`  ${t}`);
      if (n > list.length) out.push(`  … and ${n - list.length} more`);
    }
    return out;
  }
  get empty(): boolean {
    return this.counts.size === 0;
  }
}

export function checkWatch(input: WatchCheckInput): WatchCheckResult {
  const an = new Anomalies();

  // 1. The reference: every node serves the same log of the root, complete up to the target.
  const ref = input.references[0];
  const refByRev = new Map<number, FeedEvent>();
  if (ref === undefined) an.add('no reference log', 'no node served the event log after healing');
  else {
    let last = input.fromRevision - 1;
    for (const e of ref.events) {
      if (e.revision <= last) an.add('reference log out of order', `n${ref.node}: ${show(e)} after r${last}`);
      last = Math.max(last, e.revision);
      if (!underPrefix(e, input.root)) an.add('reference log outside its root', `n${ref.node}: ${show(e)}`);
      refByRev.set(e.revision, e);
    }
  }
  for (const r of input.references) {
    if (r.upTo < input.targetRevision) an.add('node behind after healing', `n${r.node} delivered up to r${r.upTo}, the leader is at r${input.targetRevision}`);
    if (r === ref) continue;
    const mine = new Map(r.events.map((e) => [e.revision, e]));
    for (const [rev, e] of refByRev) {
      if (rev > r.upTo) continue;
      const m = mine.get(rev);
      if (m === undefined) an.add('nodes disagree', `n${r.node} lacks ${show(e)} that n${ref!.node} has`);
      else if (!sameEvent(m, e)) an.add('nodes disagree', `r${rev}: n${ref!.node} has ${show(e)}, n${r.node} has ${show(m)}`);
    }
    for (const [rev, m] of mine) {
      if (!refByRev.has(rev) && rev <= ref!.upTo) an.add('nodes disagree', `n${r.node} has ${show(m)} that n${ref!.node} lacks`);
    }
  }

  // 2. The log against the writes: acknowledged exactly once, unknown at most once, nothing invented.
  const writeById = new Map<string, FeedWrite>();
  for (const w of input.writes) {
    if (writeById.has(w.id)) an.add('harness: two writes with one identity', w.id);
    writeById.set(w.id, w);
  }
  const revsById = new Map<string, number[]>();
  for (const e of refByRev.values()) {
    const id = eventIdentity(e);
    const list = revsById.get(id) ?? [];
    list.push(e.revision);
    revsById.set(id, list);
  }
  let unknownApplied = 0;
  for (const w of input.writes) {
    const revs = revsById.get(w.id) ?? [];
    if (revs.length > 1) an.add('change applied more than once', `${w.id} (process ${w.process}, ${w.outcome}) at revisions ${revs.join(', ')}`);
    if (w.outcome === 'ok' && revs.length === 0) an.add('acknowledged write lost', `${w.id} (process ${w.process}) is in no node's event log`);
    if (w.outcome === 'fail' && revs.length > 0) an.add('failed write took effect', `${w.id} (process ${w.process}) at r${revs[0]}`);
    if (w.outcome === 'info' && revs.length > 0) unknownApplied++;
  }
  for (const [id, revs] of revsById) {
    if (!writeById.has(id)) an.add('event without a write', `r${revs.join(', r')} ${id}`);
  }

  // 3. Revision order follows real time: a write acknowledged before another began has the lower revision.
  const applied = input.writes
    .map((w) => ({ w, rev: revsById.get(w.id)?.[0] }))
    .filter((x): x is { w: FeedWrite; rev: number } => x.rev !== undefined);
  const byInvoke = [...applied].sort((a, b) => (a.w.invokeNs < b.w.invokeNs ? -1 : a.w.invokeNs > b.w.invokeNs ? 1 : 0));
  const byComplete = applied.filter((x) => x.w.outcome === 'ok' && x.w.completeNs !== undefined)
    .sort((a, b) => (a.w.completeNs! < b.w.completeNs! ? -1 : a.w.completeNs! > b.w.completeNs! ? 1 : 0));
  let ci = 0;
  let maxDone: { w: FeedWrite; rev: number } | undefined;
  for (const b of byInvoke) {
    while (ci < byComplete.length && byComplete[ci]!.w.completeNs! < b.w.invokeNs) {
      if (maxDone === undefined || byComplete[ci]!.rev > maxDone.rev) maxDone = byComplete[ci];
      ci++;
    }
    if (maxDone !== undefined && maxDone.rev >= b.rev) {
      an.add('revision order contradicts real time', `${maxDone.w.id} was acknowledged (r${maxDone.rev}) before ${b.w.id} began, which got r${b.rev}`);
    }
  }

  // 4. Every watcher: strictly increasing revisions, only its prefix, each event as the log has it,
  //    and every event of its prefix in the range it covered — exactly once.
  let sessions = 0;
  let delivered = 0;
  for (const w of input.watchers) {
    sessions += w.sessions;
    delivered += w.events.length;
    const name = `watcher ${w.watcher} (${w.prefix})`;
    let last = w.fromRevision - 1;
    const got = new Set<number>();
    for (const e of w.events) {
      if (got.has(e.revision)) an.add('watcher saw an event twice', `${name}: ${show(e)} again in session ${e.session} from n${e.node}`);
      else if (e.revision <= last) an.add('watcher saw events out of order', `${name}: ${show(e)} after r${last} (session ${e.session}, n${e.node})`);
      got.add(e.revision);
      last = Math.max(last, e.revision);
      if (!underPrefix(e, w.prefix)) an.add('watcher saw an event outside its prefix', `${name}: ${show(e)} from n${e.node}`);
      const r = refByRev.get(e.revision);
      if (r === undefined) {
        if (ref !== undefined && e.revision <= ref.upTo) an.add('watcher saw an event the log does not have', `${name}: ${show(e)} from n${e.node}`);
      } else if (!sameEvent(r, e)) an.add('watcher saw a different event than the log has', `${name}: ${show(e)} from n${e.node}; the log has ${show(r)}`);
    }
    const covered = Math.max(w.progress, last);
    if (covered < input.targetRevision) an.add('watcher did not catch up after healing', `${name} reached r${covered}, the leader is at r${input.targetRevision}`);
    for (const c of w.compacted) {
      if (input.targetRevision - c.asked < input.maxEvents) {
        an.add('ECOMPACTED for a revision that should be kept', `${name} asked for r${c.asked}; the node said the oldest kept is r${c.firstRevision} (the log keeps ${input.maxEvents})`);
      }
    }
    const excused = (rev: number): boolean => w.compacted.some((c) => rev >= c.asked && rev < c.firstRevision);
    for (const [rev, e] of refByRev) {
      if (rev < w.fromRevision || rev > covered || got.has(rev) || !underPrefix(e, w.prefix) || excused(rev)) continue;
      an.add('watcher missed an event', `${name} never received ${show(e)} although it was told everything up to r${covered} was delivered`);
    }
  }

  const unknown = input.writes.filter((w) => w.outcome === 'info').length;
  return {
    valid: an.empty,
    anomalies: an.lines(),
    stats: {
      writes: input.writes.length,
      acknowledged: input.writes.filter((w) => w.outcome === 'ok').length,
      unknown,
      unknownApplied,
      events: refByRev.size,
      watchers: input.watchers.length,
      sessions,
      delivered,
    },
  };
}

export function formatWatchResult(r: WatchCheckResult): string {
  const s = r.stats;
  const head = `${r.valid ? 'valid' : 'INVALID'}: watch feed; ${s.writes} writes (${s.acknowledged} acknowledged, ${s.unknown} unknown of which ${s.unknownApplied} took effect), ` +
    `${s.events} events in the log; ${s.watchers} watchers, ${s.sessions} sessions, ${s.delivered} events delivered`;
  return [head, ...r.anomalies].join('\n');
}
