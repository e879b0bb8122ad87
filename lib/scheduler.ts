/**
 * Which chunk to ask which peer for. Pure state, no I/O.
 *
 * - Rarest first: among the chunks a peer has that nobody is fetching, pick
 *   one held by the fewest live peers; among those, a random one, so
 *   several downloaders spread over different chunks.
 * - Load follows throughput: the coordinator keeps a queue of requests
 *   outstanding per peer, sized from that peer's measured rate
 *   (rate_meter.ts), and asks for a new chunk each time one completes; so a
 *   fast peer both gets more requests at once and gets them more often.
 * - Endgame: once every missing chunk is already requested, an idle peer
 *   asks for an in-flight chunk too (at most ENDGAME_COPIES requesters per
 *   chunk, but a peer with nothing in flight may add one more); the first
 *   copy wins and the others are cancelled.
 *
 * A pick costs about the same at chunk 10 as at chunk 200 000: the chunks
 * still to ask for are kept grouped by how many peers have them, so `next`
 * looks at the rarest group first instead of scanning the whole file
 * (which made a download's picks cost O(chunks²): 22 s of CPU at 65 536).
 *
 * @module
 */

import { Bitfield } from "./bitfield.ts";

const NONE: readonly string[] = Object.freeze([]);

/** Requests outstanding per peer before its rate is measured. */
export const DEFAULT_PIPELINE = 4;
/** Most peers asked for the same chunk in endgame. */
export const ENDGAME_COPIES = 2;

interface PeerState {
  has: Bitfield;
  inflight: Set<number>;
  /**
   * The scheduler's {@link Scheduler} `#entered` count when a look through
   * every pickable chunk found none this peer has; -1 when unknown. Until
   * a chunk becomes pickable again or the peer gains one, there is no
   * need to look again (a partial source with nothing new would otherwise
   * cost a full look on every completed chunk).
   */
  nothingAt: number;
}

/** Chunk scheduling state for one download. */
export class Scheduler {
  readonly done: Bitfield;
  #peers = new Map<string, PeerState>();
  #availability: Uint32Array;
  /** How many peers each chunk is requested from (which ones: each peer's `inflight`). */
  #requested: Uint8Array;
  /**
   * The pickable chunks (missing, requested of no one), by availability:
   * `#pickable[a]` holds those that `a` peers have, in no order.
   */
  #pickable: number[][] = [[]];
  /** Where each chunk sits in its `#pickable` group; -1 when it is in none. */
  #slot: Int32Array;
  /** How many times a chunk has become pickable: tells when a peer's `nothingAt` is stale. */
  #entered = 0;
  /** Chunks requested of someone and not done: where endgame looks. */
  #flying = new Set<number>();
  #random: () => number;

  constructor(total: number, done?: Bitfield, random: () => number = Math.random) {
    this.done = done ?? new Bitfield(total);
    this.#availability = new Uint32Array(total);
    this.#requested = new Uint8Array(total);
    this.#slot = new Int32Array(total).fill(-1);
    this.#random = random;
    for (let i = 0; i < total; i++) if (!this.done.has(i)) this.#enter(i);
  }

  get total(): number {
    return this.done.size;
  }

  get complete(): boolean {
    return this.done.complete;
  }

  /**
   * Whether every missing chunk is asked of some peer: the download's last
   * chunks (endgame). A dropped peer's chunks can make it false again.
   */
  get endgame(): boolean {
    return this.#flying.size === this.total - this.done.count;
  }

  get peerCount(): number {
    return this.#peers.size;
  }

  /** Requests outstanding to `peer`. */
  inflight(peer: string): number {
    return this.#peers.get(peer)?.inflight.size ?? 0;
  }

  addPeer(peer: string, has: Bitfield): void {
    this.removePeer(peer);
    this.#peers.set(peer, { has, inflight: new Set(), nothingAt: -1 });
    for (let i = 0; i < has.size; i++) if (has.has(i)) this.#adjust(i, 1);
  }

  /**
   * What `peer` has, as it now says: adds it, or replaces what it was taken
   * to have (a source the tracker lists as complete is asked for chunks
   * before its BITFIELD comes) and keeps its requests in flight. One it
   * turns out to lack it refuses, and {@link failed} takes it back.
   */
  setHas(peer: string, has: Bitfield): void {
    const p = this.#peers.get(peer);
    if (!p) return this.addPeer(peer, has);
    for (let i = 0; i < has.size; i++) {
      const now = has.has(i);
      if (now !== p.has.has(i)) this.#adjust(i, now ? 1 : -1);
    }
    p.has = has;
    p.nothingAt = -1;
  }

  /** A peer announced a new chunk (HAVE). */
  peerGained(peer: string, index: number): void {
    const p = this.#peers.get(peer);
    if (p && index < p.has.size && p.has.set(index)) {
      this.#adjust(index, 1);
      p.nothingAt = -1;
    }
  }

  /** Forgets a peer; its outstanding chunks become requestable again. */
  removePeer(peer: string): number[] {
    const p = this.#peers.get(peer);
    if (!p) return [];
    for (let i = 0; i < p.has.size; i++) if (p.has.has(i)) this.#adjust(i, -1);
    const lost = [...p.inflight];
    for (const i of lost) this.#unrequest(i, peer);
    this.#peers.delete(peer);
    return lost;
  }

  /**
   * The next chunk to request from `peer`, or null when it has nothing we
   * need now. Marks the chunk requested from `peer`.
   */
  next(peer: string): number | null {
    const p = this.#peers.get(peer);
    if (!p) return null;
    let best = p.nothingAt === this.#entered ? -1 : this.#rarest(p);
    if (best < 0) {
      p.nothingAt = this.#entered;
      best = endgamePick(p, this.#flying, this.#requested);
    }
    if (best < 0) return null;
    p.inflight.add(best);
    if (this.#requested[best] === 0) {
      this.#leave(best);
      this.#flying.add(best);
    }
    this.#requested[best]!++;
    return best;
  }

  /** Marks chunk `index` verified and written; returns the other peers to cancel it on. */
  completed(index: number, peer: string): readonly string[] {
    this.done.set(index);
    this.#leave(index);
    this.#flying.delete(index);
    const requesters = this.#requested[index]!;
    this.#requested[index] = 0;
    const mine = this.#peers.get(peer)?.inflight.delete(index) ?? false;
    if (requesters === 0 || (requesters === 1 && mine)) return NONE; // the usual case: no loop, no garbage
    const others: string[] = [];
    this.#peers.forEach((p, name) => {
      if (name !== peer && p.inflight.delete(index)) others.push(name);
    });
    return others;
  }

  /** A request failed (rejected, bad hash, cancelled); the chunk can be asked of others. */
  failed(index: number, peer: string, peerLacksIt = false): void {
    this.#unrequest(index, peer);
    const p = this.#peers.get(peer);
    if (peerLacksIt && p?.has.has(index)) {
      p.has.clear(index);
      this.#adjust(index, -1);
    }
  }

  /** Peers known to the scheduler. */
  peers(): string[] {
    return [...this.#peers.keys()];
  }

  /** Whether `peer` said it has chunk `index`. */
  peerHas(peer: string, index: number): boolean {
    return this.#peers.get(peer)?.has.has(index) ?? false;
  }

  /** Whether `peer` has a chunk that is still missing: a byte at a time, 2 KiB for 16 384 chunks. */
  wants(peer: string): boolean {
    const has = this.#peers.get(peer)?.has.bytes;
    if (!has) return false;
    const done = this.done.bytes;
    for (let k = 0; k < has.length; k++) if ((has[k]! & ~done[k]!) !== 0) return true;
    return false;
  }

  /** Missing chunks that no connected peer has. */
  unavailable(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.total; i++) if (!this.done.has(i) && this.#availability[i] === 0) out.push(i);
    return out;
  }

  /**
   * A pickable chunk `p` has, from the rarest group that holds one; within
   * the group, the first met from a random place (one draw per pick: a draw
   * per chunk looked at was once most of a download's garbage). -1: none.
   */
  #rarest(p: PeerState): number {
    const r = this.#random();
    for (let a = 1; a < this.#pickable.length; a++) {
      const group = this.#pickable[a]!;
      const len = group.length;
      if (len === 0) continue;
      const start = Math.floor(r * len);
      for (let k = 0; k < len; k++) {
        const i = group[start + k < len ? start + k : start + k - len]!;
        if (p.has.has(i)) return i;
      }
    }
    return -1;
  }

  #unrequest(index: number, peer: string): void {
    if (!this.#peers.get(peer)?.inflight.delete(index) || this.#requested[index] === 0) return;
    if (--this.#requested[index]! > 0) return;
    this.#flying.delete(index);
    if (!this.done.has(index)) this.#enter(index);
  }

  /** One more (+1) or one fewer (-1) peer has chunk `index`: it moves to its new group. */
  #adjust(index: number, by: 1 | -1): void {
    const pickable = this.#slot[index]! >= 0;
    if (pickable) this.#leave(index);
    this.#availability[index]! += by;
    if (pickable) this.#place(index);
  }

  /** Chunk `index` becomes pickable. */
  #enter(index: number): void {
    this.#entered++;
    this.#place(index);
  }

  #place(index: number): void {
    const a = this.#availability[index]!;
    while (this.#pickable.length <= a) this.#pickable.push([]);
    const group = this.#pickable[a]!;
    this.#slot[index] = group.length;
    group.push(index);
  }

  /** Chunk `index` is no longer pickable (requested or done); O(1): the group's last entry takes its place. */
  #leave(index: number): void {
    const at = this.#slot[index]!;
    if (at < 0) return;
    const group = this.#pickable[this.#availability[index]!]!;
    const last = group.pop()!;
    if (last !== index) {
      group[at] = last;
      this.#slot[last] = at;
    }
    this.#slot[index] = -1;
  }
}

/**
 * Endgame: an in-flight chunk `p` has and has not asked for, with the fewest
 * requesters below ENDGAME_COPIES (any number, when `p` has nothing in
 * flight); -1 when there is none. A function, not a
 * private method: V8 collected no feedback for a private method call on
 * this path, so the optimized `next` was thrown away at every endgame pick.
 */
function endgamePick(p: PeerState, flying: Set<number>, requested: Uint8Array): number {
  // An idle peer may add a copy past the cap: both copies of the last chunks may sit with slow peers (a chunk a
  // minute under a low upload limit) while a fast one waits with nothing to do. Idle, it takes one at a time.
  let best = -1, fewest = p.inflight.size === 0 ? Infinity : ENDGAME_COPIES;
  for (const i of flying) {
    const who = requested[i]!;
    if (who >= fewest || p.inflight.has(i) || !p.has.has(i)) continue;
    best = i;
    fewest = who;
  }
  return best;
}
