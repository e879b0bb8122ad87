/**
 * Which chunk to ask which peer for. Pure state, no I/O.
 *
 * - Rarest first: among the chunks a peer has that nobody is fetching, pick
 *   one held by the fewest live peers. Ties go to the first met by a scan
 *   that starts at a random chunk, so several downloaders spread over
 *   different chunks.
 * - Load follows throughput: the coordinator keeps a queue of requests
 *   outstanding per peer, sized from that peer's measured rate
 *   (rate_meter.ts), and asks for a new chunk each time one completes; so a
 *   fast peer both gets more requests at once and gets them more often.
 * - Endgame: once every missing chunk is already requested, an idle peer
 *   asks for an in-flight chunk too (at most `endgameCopies` requesters per
 *   chunk); the first copy wins and the others are cancelled.
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
}

/** Chunk scheduling state for one download. */
export class Scheduler {
  readonly done: Bitfield;
  #peers = new Map<string, PeerState>();
  #availability: Uint32Array;
  /** How many peers each chunk is requested from (which ones: each peer's `inflight`). */
  #requested: Uint8Array;
  #random: () => number;

  constructor(total: number, done?: Bitfield, random: () => number = Math.random) {
    this.done = done ?? new Bitfield(total);
    this.#availability = new Uint32Array(total);
    this.#requested = new Uint8Array(total);
    this.#random = random;
  }

  get total(): number {
    return this.done.size;
  }

  get complete(): boolean {
    return this.done.complete;
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
    this.#peers.set(peer, { has, inflight: new Set() });
    for (let i = 0; i < has.size; i++) if (has.has(i)) this.#availability[i]!++;
  }

  /** A peer announced a new chunk (HAVE). */
  peerGained(peer: string, index: number): void {
    const p = this.#peers.get(peer);
    if (p && index < p.has.size && p.has.set(index)) this.#availability[index]!++;
  }

  /** Forgets a peer; its outstanding chunks become requestable again. */
  removePeer(peer: string): number[] {
    const p = this.#peers.get(peer);
    if (!p) return [];
    for (let i = 0; i < p.has.size; i++) if (p.has.has(i)) this.#availability[i]!--;
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
    // One random draw per pick, not one per tie: the scan starts at a random
    // chunk and keeps the first of the rarest it meets. (A draw per tie made
    // a heap number per chunk scanned: most of a download's garbage.)
    const total = this.total;
    const start = Math.floor(this.#random() * total);
    let best = -1, bestAvail = Infinity;
    for (let k = 0; k < total; k++) {
      const i = start + k < total ? start + k : start + k - total;
      if (this.done.has(i) || this.#requested[i]! > 0 || !p.has.has(i)) continue;
      const a = this.#availability[i]!;
      if (a < bestAvail) {
        best = i;
        bestAvail = a;
        if (a <= 1) break; // only this peer has it: none can be rarer
      }
    }
    if (best < 0) best = endgamePick(p, this.#requested, this.done);
    if (best < 0) return null;
    p.inflight.add(best);
    this.#requested[best]!++;
    return best;
  }

  /** Marks chunk `index` verified and written; returns the other peers to cancel it on. */
  completed(index: number, peer: string): readonly string[] {
    this.done.set(index);
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
      this.#availability[index]!--;
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

  /** Missing chunks that no connected peer has. */
  unavailable(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.total; i++) if (!this.done.has(i) && this.#availability[i] === 0) out.push(i);
    return out;
  }

  #unrequest(index: number, peer: string): void {
    if (this.#peers.get(peer)?.inflight.delete(index) && this.#requested[index]! > 0) this.#requested[index]!--;
  }
}

/**
 * Endgame: an in-flight chunk `p` has and has not asked for, with the fewest
 * requesters below ENDGAME_COPIES; -1 when there is none. A function, not a
 * private method: V8 collected no feedback for a private method call on
 * this path, so the optimized `next` was thrown away at every endgame pick.
 */
function endgamePick(p: PeerState, requested: Uint8Array, done: Bitfield): number {
  let best = -1, fewest = ENDGAME_COPIES;
  for (let i = 0; i < requested.length; i++) {
    const who = requested[i]!;
    if (who === 0 || who >= fewest || done.has(i) || p.inflight.has(i) || !p.has.has(i)) continue;
    best = i;
    fewest = who;
  }
  return best;
}
