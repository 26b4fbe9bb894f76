/**
 * The resumable live stream the room and the chat share: one EventSource at a
 * time on a URL, resuming after the last event id it saw, its state shown in a
 * status badge with a Reconnect button.
 */

import { State } from "./dom.js";

/** More reauths than this within REAUTH_WINDOW_MS and the stream stays closed (Reconnect remains). */
const MAX_REAUTHS = 3;
const REAUTH_WINDOW_MS = 30000;

/**
 * The words of a refusal over a limit: the server's `message` as a sentence and
 * when the page tries again, e.g. "Too many streams open; reconnecting in 15 s".
 */
export function busyText(message, retryMs) {
  const reason = typeof message === "string" && message !== "" ? message : "the server is busy";
  const sentence = reason.charAt(0).toUpperCase() + reason.slice(1).replace(/\.$/, "");
  if (!Number.isFinite(retryMs)) return `${sentence}; reconnecting soon`;
  return `${sentence}; reconnecting in ${Math.max(1, Math.round(retryMs / 1000))} s`;
}

/** Show `text` in `element` (a notice beside a stream), or hide it for null. */
export function showNotice(element, text) {
  if (element === null) return;
  // Rewriting the same text would make screen readers announce it again.
  if (element.textContent !== (text ?? "")) element.textContent = text ?? "";
  element.hidden = text === null;
}

/** A badge showing one of State, and the Reconnect button offered beside it. */
export class StatusBadge {
  constructor(status, reconnect, state) {
    this.status = status;
    this.reconnect = reconnect;
    /** The state shown (one of State). */
    this.state = state;
  }

  /** Show `state`; Reconnect is offered only when not (about to be) live. */
  set(state) {
    this.reconnect.hidden = !(state === State.RECONNECTING || state === State.CLOSED);
    // Rewriting the same text would make screen readers announce it again.
    if (state === this.state && this.status.textContent === state) return;
    this.state = state;
    this.status.textContent = state;
    this.status.dataset.state = state;
  }
}

/**
 * An EventSource that can be replaced and resumed. `events` maps the named
 * events to listen for ("message", "gap", ...) to handlers; `onOpen` runs once
 * live, `onClosed` when the browser gave up for good, `onUnopenable(url)` when
 * no EventSource could be made for the URL. Events of a replaced stream are
 * ignored. `event: busy` shows in `notice`, `event: reauth` calls `renew`.
 */
export class LiveStream {
  constructor({
    badge,
    events,
    onOpen = () => {},
    onClosed = () => {},
    onUnopenable,
    renew = null,
    notice = null,
  }) {
    this.badge = badge;
    /**
     * Element for `event: busy` (the stream is over a limit of the server's,
     * which then ends it): it says why and when the browser reconnects, by
     * itself after the event's `retry:`, and is hidden again once a stream opens.
     */
    this.notice = notice;
    /**
     * On `event: reauth` (the stream's credential expired or was revoked; the
     * server ends the stream after it): `renew(reason)` resolves to true to
     * reopen the same URL, false to stay closed. Null: reauth is not handled.
     */
    this.renew = renew;
    /** The URL last opened (without ?last_event_id=), for a reopen after renewal. */
    this.url = null;
    /** Counts open() and close() calls: a renewal finishing after another one changes nothing. */
    this.epoch = 0;
    /** When recent reauths arrived (ms): a server that answers each renewal with another is given up on. */
    this.reauths = [];
    this.events = events;
    this.onOpen = onOpen;
    this.onClosed = onClosed;
    this.onUnopenable = onUnopenable;
    /** The current EventSource, or null. */
    this.source = null;
    /**
     * Id of the last event seen, or null. A new EventSource cannot send
     * Last-Event-ID (the browser only sends it on its own reconnects), so
     * open() passes it as ?last_event_id= and the server replays what was
     * missed instead of losing it silently. Set to null to start afresh.
     */
    this.lastEventId = null;
  }

  /** Open an EventSource on `url`, replacing the current one, resuming after lastEventId. */
  open(url) {
    this.close();
    this.url = url;
    this.badge.set(State.CONNECTING);
    // The browser's own reconnects of this EventSource send the Last-Event-ID
    // header, which the server prefers to the query, so the query never holds
    // them back.
    const full =
      this.lastEventId === null ? url : `${url}?last_event_id=${encodeURIComponent(this.lastEventId)}`;
    let stream;
    try {
      stream = new EventSource(full);
    } catch (err) {
      // EventSource throws SyntaxError for a URL it cannot parse (WHATWG HTML
      // "Server-sent events", the EventSource constructor).
      if (!(err instanceof DOMException)) throw err;
      this.badge.set(State.CLOSED);
      this.onUnopenable(full);
      return;
    }
    this.source = stream;
    /** Wrap a handler so it only runs while `stream` is the current stream. */
    const whileCurrent = (handler) => (event) => {
      if (stream === this.source) handler(event);
    };
    stream.addEventListener(
      "open",
      whileCurrent(() => {
        // A refused stream opens too (200) before its `busy`, which shows the notice again.
        showNotice(this.notice, null);
        this.badge.set(State.LIVE);
        this.onOpen();
      }),
    );
    // A server may name one of its events "error", the same type EventSource
    // fires for a failed connection (WHATWG HTML, "Server-sent events"). Only
    // the server's carries data, as a MessageEvent.
    stream.addEventListener(
      "error",
      whileCurrent((event) => {
        if (event instanceof MessageEvent) this.dispatch(event);
        else this.failed(stream);
      }),
    );
    for (const type of Object.keys(this.events)) {
      if (type !== "error") stream.addEventListener(type, whileCurrent((event) => this.dispatch(event)));
    }
    stream.addEventListener("busy", whileCurrent((event) => this.busy(event)));
    if (this.renew !== null) stream.addEventListener("reauth", whileCurrent((event) => this.reauthorize(event)));
  }

  /**
   * The server said `reauth`: close at once (the browser would otherwise
   * reconnect with the same stale credential after `retry:`), renew, reopen.
   */
  async reauthorize(event) {
    this.close();
    this.badge.set(State.RECONNECTING);
    const url = this.url;
    const epoch = this.epoch;
    const now = Date.now();
    this.reauths = this.reauths.filter((when) => now - when < REAUTH_WINDOW_MS);
    this.reauths.push(now);
    let reason = "expired";
    try {
      const payload = JSON.parse(event.data);
      if (typeof payload?.reason === "string") reason = payload.reason;
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
    }
    const again = this.reauths.length <= MAX_REAUTHS && (await this.renew(reason));
    // Another open() (or close()) happened meanwhile: that one stands.
    if (this.epoch !== epoch) return;
    if (again) this.open(url);
    else this.badge.set(State.CLOSED);
  }

  /**
   * The server said `busy`: over one of its limits, it ends the stream. Not
   * closed here: the browser reconnects by itself after the `retry:` that came
   * with the event (its retry_after_ms), resending Last-Event-ID. Only say so.
   */
  busy(event) {
    let payload = null;
    try {
      payload = JSON.parse(event.data);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
    }
    showNotice(this.notice, busyText(payload?.message, payload?.retry_after_ms));
    this.badge.set(State.RECONNECTING);
  }

  /** Stop listening, if a stream is open. */
  close() {
    this.epoch += 1;
    showNotice(this.notice, null);
    if (this.source !== null) this.source.close();
    this.source = null;
  }

  /** Remember `event`'s id as the point the next open() resumes from. */
  remember(event) {
    // Every event the server sends has an id; "" would mean "none seen yet".
    if (event.lastEventId !== "") this.lastEventId = event.lastEventId;
  }

  /** A named event: remember its id, then hand it to its handler. */
  dispatch(event) {
    const handler = this.events[event.type];
    if (handler === undefined) return;
    this.remember(event);
    handler(event);
  }

  /** The stream failed or ended; readyState says whether the browser will retry. */
  failed(stream) {
    // Per WHATWG HTML, "error" fires with readyState CONNECTING when the
    // browser will reconnect by itself (after `retry:` ms, resending
    // Last-Event-ID), and with CLOSED when it gave up for good (HTTP 204, a
    // non-200 status, or a wrong Content-Type).
    if (stream.readyState === EventSource.CONNECTING) {
      this.badge.set(State.RECONNECTING);
    } else if (stream.readyState === EventSource.CLOSED) {
      this.badge.set(State.CLOSED);
      this.onClosed();
    }
  }
}
