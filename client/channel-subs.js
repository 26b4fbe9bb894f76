/**
 * One tab's side of the shared stream (channel-leader.js): its subscriptions
 * to channels, the stream's state as this tab knows it, and the delivery of
 * each event (received or relayed) to the subscriptions of its channel.
 */

import { notePositions } from "./channel-ids.js";
import { State } from "./dom.js";

/** The server's limit of channels on one /stream; the oldest used ones beyond it are left out. */
export const MAX_CHANNELS = 16;

/** This tab's subscriptions; `changed()` is told whenever the set of channels changes. */
export class ChannelSubscriptions {
  constructor() {
    /** Channel -> Set of subscriptions of this tab. */
    this.subs = new Map();
    /** The channels of the stream open now (the leader's, relayed to every tab). */
    this.channels = [];
    /** Channel -> its position at the last event this tab saw: where a new stream resumes. */
    this.positions = new Map();
    this.state = State.CONNECTING;
    this.notice = null;
    this.stateListeners = []; // (state, notice) => void
  }

  /** Told when this tab's channels change (the shared stream announces them). */
  changed() {}

  /**
   * Receive `channel`'s events in this tab. `events` maps event names to
   * handlers of {type, data, lastEventId}; `onOpen` runs whenever a stream
   * carrying the channel goes live, `onClosed` when one failed for good.
   * Returns the subscription; its close() ends it.
   */
  subscribe(channel, { events, onOpen = () => {}, onClosed = () => {} }) {
    const sub = { channel, events, onOpen, onClosed, live: false, usedAt: Date.now() };
    sub.close = () => this.unsubscribe(sub);
    if (!this.subs.has(channel)) this.subs.set(channel, new Set());
    this.subs.get(channel).add(sub);
    this.changed();
    // The stream open now may carry it already (another tab wants it too);
    // told after the caller has the subscription in hand.
    queueMicrotask(() => {
      if (this.state === State.LIVE && this.channels.includes(channel) && this.subs.get(channel)?.has(sub)) {
        this.noteOpen(sub);
      }
    });
    return sub;
  }

  unsubscribe(sub) {
    const set = this.subs.get(sub.channel);
    if (set === undefined || !set.delete(sub)) return;
    if (set.size === 0) this.subs.delete(sub.channel);
    this.changed();
  }

  /** This tab's channels, [[channel, usedAt]], the most recently taken first. */
  ownChannels() {
    const used = [];
    for (const [channel, set] of this.subs) used.push([channel, Math.max(...[...set].map((s) => s.usedAt))]);
    return used;
  }

  /** The event names this tab's subscriptions handle. */
  ownEvents() {
    return [...new Set([...this.subs.values()].flatMap((set) => [...set].flatMap((sub) => Object.keys(sub.events))))];
  }

  /** Listen to the stream's state; told the current one at once. */
  onState(callback) {
    this.stateListeners.push(callback);
    callback(this.state, this.notice);
  }

  /** Show `state` and tell the subscriptions whose channel opened or failed. */
  setState(state, notice) {
    const was = this.state;
    this.state = state;
    this.notice = notice;
    for (const callback of this.stateListeners) callback(state, notice);
    for (const [channel, set] of this.subs) {
      const carried = this.channels.includes(channel);
      for (const sub of set) {
        if (state === State.LIVE && carried) this.noteOpen(sub);
        else if (state !== State.LIVE) sub.live = false;
        if (state === State.CLOSED && was !== State.CLOSED && carried) sub.onClosed();
      }
    }
  }

  noteOpen(sub) {
    if (sub.live) return;
    sub.live = true;
    sub.onOpen();
  }

  /** An event relayed (or received, leading): remember where it was, hand it to its channel's subscribers. */
  deliver({ type, data, id, channel, positions }) {
    notePositions(this.positions, positions, 4 * MAX_CHANNELS);
    const event = { type, data, lastEventId: id ?? "" };
    // A gap without a channel concerns every channel.
    const targets = channel === null ? [...this.subs.values()] : [this.subs.get(channel) ?? new Set()];
    for (const set of targets) {
      for (const sub of [...set]) sub.events[type]?.(event);
    }
  }
}
