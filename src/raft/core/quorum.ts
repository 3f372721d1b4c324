/**
 * Majority arithmetic over one set of voters (no joint consensus: one change at a time).
 */
import type { NodeId } from '../types.js';

export type VoteResult = 'won' | 'lost' | 'pending';

export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** The largest index that a majority of voters has matched; 0 without voters. */
export function committedIndex(voters: Iterable<NodeId>, matchOf: (id: NodeId) => number): number {
  const matches: number[] = [];
  for (const id of voters) matches.push(matchOf(id));
  if (matches.length === 0) return 0;
  matches.sort((a, b) => b - a);
  return matches[quorumSize(matches.length) - 1]!;
}

/** Outcome of a vote given the answers so far (only voters' answers count). */
export function voteResult(voters: ReadonlySet<NodeId>, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === true) granted++;
    else if (v === false) rejected++;
  }
  const q = quorumSize(voters.size);
  if (voters.size === 0) return 'pending';
  if (granted >= q) return 'won';
  if (voters.size - rejected < q) return 'lost';
  return 'pending';
}

/** Does `acks` hold a majority of `voters`? */
export function hasQuorum(voters: ReadonlySet<NodeId>, acks: ReadonlySet<NodeId>): boolean {
  let n = 0;
  for (const id of voters) if (acks.has(id)) n++;
  return voters.size > 0 && n >= quorumSize(voters.size);
}
