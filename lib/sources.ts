/**
 * The sources a download knows of, and whose turn it is to take one of its
 * connection slots (lib/download.ts decides when a connected peer gives
 * its slot up; this decides who comes next). The order:
 *
 *   1. sources never tried;
 *   2. sources tried before that are due again: the tracker named them
 *      again since they left, or the download starves and turnover had put
 *      them out while they had missing chunks;
 *   3. any other source that left, the longest gone first.
 *
 * @module
 */

import { type Address, formatAddress } from "./connection.ts";

/** Sources a download remembers at most; those heard of beyond it are ignored (the tracker names others again). */
export const MAX_KNOWN_PEERS = 1_000;

/** A source a look-up named; `complete`: the tracker lists it as holding the whole file. */
export interface SourceAddress extends Address {
  complete?: boolean;
}

/** The line of sources waiting for a connection slot. */
export class Sources {
  /** Every source heard of, by name, in line order: one that leaves goes to the end. */
  #known = new Map<string, SourceAddress>();
  /** Sources connected to at least once. */
  #tried = new Set<string>();
  #connected = new Set<string>();
  /** Tried, not connected now, and due for another turn after the untried. */
  #due = new Set<string>();
  /** Put out by turnover while they had missing chunks: due again should the download starve. */
  #turnedOut = new Set<string>();

  constructor(readonly max: number = MAX_KNOWN_PEERS) {}

  /**
   * Sources a look-up named. New ones join the end of the line (up to
   * `max`); ones tried before and not connected now are due again (a
   * partial source may have gained chunks since).
   */
  learn(addrs: Iterable<SourceAddress>): void {
    for (const a of addrs) {
      const peer = formatAddress(a);
      if (this.#known.has(peer)) this.#known.set(peer, a); // what it holds now; its place in line stays
      if (this.#tried.has(peer)) {
        if (!this.#connected.has(peer)) this.#due.add(peer);
      } else if (!this.#known.has(peer) && this.#known.size < this.max) {
        this.#known.set(peer, a);
      }
    }
  }

  /** Whether the download never connected to `peer`. */
  untried(peer: string): boolean {
    return !this.#tried.has(peer);
  }

  /** Whether some known source was never connected to. */
  get anyUntried(): boolean {
    return this.#known.size > this.#tried.size;
  }

  /** A connection to `peer` opens. */
  connected(peer: string): void {
    this.#tried.add(peer);
    this.#connected.add(peer);
    this.#due.delete(peer);
    this.#turnedOut.delete(peer);
  }

  /**
   * The connection to `peer` closed: it goes to the end of the line.
   * `turnedOut`: turnover put it out while it had missing chunks.
   */
  left(peer: string, turnedOut = false): void {
    if (!this.#connected.delete(peer)) return;
    const a = this.#known.get(peer);
    if (a) {
      this.#known.delete(peer);
      this.#known.set(peer, a);
    }
    if (turnedOut) this.#turnedOut.add(peer);
  }

  /** The download starves (no connected peer has a missing chunk): those turnover put out are due again. */
  starving(): void {
    for (const peer of this.#turnedOut) this.#due.add(peer);
    this.#turnedOut.clear();
  }

  /** Up to `slots` sources to connect to, in turn order, of those not connected that `may` allows. */
  next(slots: number, may: (peer: string) => boolean): [string, SourceAddress][] {
    const out: [string, SourceAddress][] = [];
    for (let turn = 0; turn <= 2; turn++) {
      for (const [peer, a] of this.#known) {
        if (out.length >= slots) return out;
        if (this.#turnOf(peer) === turn && !this.#connected.has(peer) && may(peer)) out.push([peer, a]);
      }
    }
    return out;
  }

  /** Sources waiting for a turn: never tried, or due again and allowed by `may` (a backoff may hold them). */
  waiting(may: (peer: string) => boolean): number {
    let count = this.#known.size - this.#tried.size;
    for (const peer of this.#due) if (may(peer)) count++;
    return count;
  }

  /** 0: never tried; 1: due again; 2: any other. */
  #turnOf(peer: string): number {
    return !this.#tried.has(peer) ? 0 : this.#due.has(peer) ? 1 : 2;
  }
}
