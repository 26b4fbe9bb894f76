/**
 * The page's one SharedStream (channel-leader.js), and ChannelStream: a
 * channel of it behind the interface of LiveStream (live.js), so a view that
 * had its own EventSource (the Chat view's conversation) needs only to name
 * a channel instead of a URL.
 */

import { SharedStream } from "./channel-leader.js";
import { State } from "./dom.js";
import { renewIdentity, whenIdentityKnown } from "./identity.js";
import { showNotice } from "./live.js";

/** This tab's share of the browser's one /stream. */
export const shared = new SharedStream({ renew: renewIdentity, ready: whenIdentityKnown });

/**
 * One channel of `shared`, used like a LiveStream: open(channel), close(),
 * lastEventId (the composite id of the last event of this channel seen, or
 * null), source (non-null while open). `badge` and `notice` show the shared
 * stream's state while it is open.
 */
export class ChannelStream {
  constructor({ badge, events, onOpen = () => {}, onClosed = () => {}, notice = null }) {
    this.badge = badge;
    this.events = events;
    this.onOpen = onOpen;
    this.onClosed = onClosed;
    this.notice = notice;
    /** The subscription while open, or null; named like LiveStream's EventSource. */
    this.source = null;
    this.lastEventId = null;
    shared.onState((state, text) => {
      if (this.source === null) return;
      this.badge.set(state);
      showNotice(this.notice, text);
    });
  }

  /** Receive `channel` (e.g. "conv:<id>"), replacing the channel open before. */
  open(channel) {
    this.close();
    this.badge.set(State.CONNECTING);
    const handlers = {};
    for (const [type, handler] of Object.entries(this.events)) {
      handlers[type] = (event) => {
        if (event.lastEventId !== "") this.lastEventId = event.lastEventId;
        handler(event);
      };
    }
    const sub = shared.subscribe(channel, {
      events: handlers,
      onOpen: () => {
        if (this.source !== sub) return;
        this.badge.set(State.LIVE);
        this.onOpen();
      },
      onClosed: () => {
        if (this.source !== sub) return;
        this.badge.set(State.CLOSED);
        this.onClosed();
      },
    });
    this.source = sub;
    // Opening again means "connect again" to its callers (Reconnect, a sign-in:
    // the stream must carry the new cookie), as a LiveStream's open() does.
    shared.reconnect();
  }

  /** Stop receiving the channel (the shared stream drops it if no tab wants it). */
  close() {
    showNotice(this.notice, null);
    this.source?.close();
    this.source = null;
  }
}
