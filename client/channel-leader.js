/**
 * One connection per browser (README, "The Rooms view"). Every tab wants some
 * channels (`room:<name>`, `conv:<id>`) of the multiplexed GET /stream; one
 * tab, the leader, holds the only EventSource, on the union of them all.
 * - Who leads: a Web Lock named after the server; the others wait in line,
 *   and the browser grants it to the next when the leader closes.
 * - How tabs talk: a BroadcastChannel of that name. Tabs announce their
 *   channels (`want`); the leader reopens /stream when the union changes and
 *   relays each event (name, data, id, channel) and its state to every tab.
 * - Nothing lost: every tab keeps each channel's position at the last event
 *   relayed (channel-ids.js); a new leader, or a new set, resumes from there.
 * This tab's own subscriptions are channel-subs.js. Without Web Locks or
 * BroadcastChannel (no secure context) each tab leads alone.
 */

import { compositeFor, parseObject, positionsOf, sameList, unionOf } from "./channel-ids.js";
import { ChannelSubscriptions, MAX_CHANNELS } from "./channel-subs.js";
import { State } from "./dom.js";
import { busyText } from "./live.js";
import { serverUrl } from "./settings.js";

/**
 * Named events of /stream always relayed. An EventSource hears only the names
 * it listens to, so tabs also announce the names their subscriptions handle.
 */
const STREAM_EVENTS = Object.freeze(["message", "gap", "deleted"]);
/** Names the leader handles itself, never relayed as a channel's event. */
const OWN_EVENTS = new Set(["open", "error", "busy", "reauth"]);
/**
 * Tabs re-announce their channels this often, and the leader forgets one
 * silent for TAB_TIMEOUT_MS: a tab says `bye` when it closes, so this is for
 * a crashed one. Generous, as a hidden tab's timers may run only once a minute.
 */
const HEARTBEAT_MS = 20000;
const TAB_TIMEOUT_MS = 10 * HEARTBEAT_MS;
/** Announcements within this long are one change of the union: one reopen, not several. */
const REOPEN_DELAY_MS = 40;
/** A new leader waits this long before opening: the old leader's last relays are still arriving. */
const TAKEOVER_DELAY_MS = 150;
/** More reauths than this within REAUTH_WINDOW_MS and the stream stays closed (Reconnect remains). */
const MAX_REAUTHS = 3;
const REAUTH_WINDOW_MS = 30000;

/**
 * The page's share of the browser's one stream. subscribe(channel, ...) to
 * get that channel's events in this tab, wherever the EventSource is.
 */
export class SharedStream extends ChannelSubscriptions {
  /** `renew(reason)` (on `reauth`) resolves to "same", "replaced" or "failed"; `ready()` once it may open. */
  constructor({ renew, ready }) {
    super();
    this.renew = renew;
    this.ready = ready;
    // A random id for this tab (crypto.randomUUID needs a secure context).
    this.tab = Array.from(crypto.getRandomValues(new Uint32Array(3)), (n) => n.toString(36)).join("");
    /** Other tabs' announcements: tab -> {channels: [[channel, usedAt]], seen}. */
    this.wants = new Map();
    this.leader = false;
    this.source = null; // the EventSource, leading
    this.reauths = [];
    this.bus = null;
    this.abort = null;
    this.release = null;
    this.timers = [];
    this.reopenTimer = null;
    /** Event names the current EventSource relays. */
    this.relayed = new Set();
    /** Counts start() calls: a lead granted for an earlier server is dropped. */
    this.joined = 0;
    window.addEventListener("pagehide", () => this.post({ kind: "bye", tab: this.tab }));
    // Back from the back/forward cache: the leader forgot this tab at its `bye`.
    window.addEventListener("pageshow", (event) => event.persisted && this.announce(true));
  }

  // ------------------------------------------------------------ joining

  /** Join the page's tabs on the current server: announce, and queue for the lead. */
  start() {
    this.joined += 1;
    const name = `ssechat-stream@${serverUrl}`;
    if (typeof BroadcastChannel !== "function" || navigator.locks === undefined) {
      this.lead();
      return;
    }
    this.bus = new BroadcastChannel(name);
    this.bus.addEventListener("message", (event) => this.onBus(event.data));
    this.announce(true);
    this.timers.push(setInterval(() => this.tick(), HEARTBEAT_MS));
    this.abort = new AbortController();
    navigator.locks
      .request(name, { signal: this.abort.signal }, () => {
        this.lead();
        // Held until this tab closes (or stop() leaves this server).
        return new Promise((resolve) => {
          this.release = resolve;
        });
      })
      .catch((err) => {
        // stop() withdrew the request before it was granted.
        if (!(err instanceof DOMException && err.name === "AbortError")) throw err;
      });
  }

  /** Leave this server's tabs (the server URL changed): give up the lead, forget its ids. */
  stop() {
    this.joined += 1;
    this.post({ kind: "bye", tab: this.tab });
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    clearTimeout(this.reopenTimer);
    this.abort?.abort();
    this.release?.();
    this.bus?.close();
    this.closeSource();
    Object.assign(this, { bus: null, abort: null, release: null, leader: false });
    delete document.documentElement.dataset.streamLeader;
    this.wants.clear();
    this.positions.clear();
    this.channels = [];
  }

  /** Stop and join again: another server is other tabs, another lock, other ids. */
  restart() {
    this.stop();
    this.start();
  }

  // ------------------------------------------------------------ this tab's channels

  /** This tab's set changed: tell the leader (or, leading, reopen). */
  changed() {
    this.announce(true);
    if (!this.leader) return;
    this.listenForAll();
    this.scheduleReopen();
  }

  /** The Reconnect button: open again now, wherever the stream is. */
  reconnect() {
    this.reauths = [];
    if (this.leader) this.reopen(true);
    else this.post({ kind: "reconnect" });
  }

  // ------------------------------------------------------------ the bus

  post(message) {
    this.bus?.postMessage(message);
  }

  announce(changed) {
    this.post({ kind: "want", tab: this.tab, channels: this.ownChannels(), events: this.ownEvents(), changed });
  }

  /** Every HEARTBEAT_MS: re-announce; leading, forget tabs gone silent. */
  tick() {
    this.announce(false);
    if (!this.leader) return;
    const now = Date.now();
    let dropped = false;
    for (const [tab, want] of this.wants) {
      if (now - want.seen > TAB_TIMEOUT_MS) dropped = this.wants.delete(tab);
    }
    if (dropped) this.scheduleReopen();
  }

  onBus(message) {
    if (message === null || typeof message !== "object") return;
    switch (message.kind) {
      case "want":
        this.wants.set(message.tab, { channels: message.channels, events: message.events, seen: Date.now() });
        if (this.leader) this.listenForAll();
        if (this.leader && message.changed) {
          this.scheduleReopen();
          // A tab that wants a channel the stream already carries learns it is live.
          this.broadcastState();
        }
        break;
      case "bye":
        this.wants.delete(message.tab);
        if (this.leader) this.scheduleReopen();
        break;
      case "leader":
        // A new leader: it learns everyone's channels from the announcements.
        this.leader = false;
        this.announce(true);
        break;
      case "event":
        this.deliver(message);
        break;
      case "state":
        this.channels = message.channels;
        this.setState(message.state, message.notice);
        break;
      case "renewed":
        // The leader renewed the identity (the cookie is the browser's): learn who we are now.
        this.renew("renewed");
        break;
      case "reconnect":
        if (this.leader) this.reopen(true);
        break;
    }
  }

  // ------------------------------------------------------------ leading

  /** This tab holds the lock: after the old leader's last relays arrived, open the stream. */
  async lead() {
    const joined = this.joined;
    this.post({ kind: "leader", tab: this.tab });
    // Not leading (no reopen on announcements) until the old leader's relays are in.
    await new Promise((resolve) => setTimeout(resolve, this.bus === null ? 0 : TAKEOVER_DELAY_MS));
    await this.ready();
    // stop() (another server) meanwhile: that lock is gone.
    if (joined !== this.joined) return;
    this.leader = true;
    // Which tab holds the connection, for the curious (devtools) and the tests.
    document.documentElement.dataset.streamLeader = "true";
    this.reopen(true);
  }

  /** The union of every tab's channels, at most MAX_CHANNELS, the most recently taken kept. */
  wantedChannels() {
    return unionOf([this.ownChannels(), ...[...this.wants.values()].map((want) => want.channels)], MAX_CHANNELS);
  }

  scheduleReopen() {
    clearTimeout(this.reopenTimer);
    this.reopenTimer = setTimeout(() => this.reopen(false), REOPEN_DELAY_MS);
  }

  /** Open /stream on the wanted channels, unless the stream open now is on just those. */
  reopen(force) {
    if (!this.leader) return;
    const wanted = this.wantedChannels();
    const same = sameList(wanted, this.channels);
    if (same && !force && (this.source !== null || wanted.length === 0)) return;
    this.closeSource();
    this.channels = wanted;
    if (wanted.length === 0) {
      this.setLeaderState(State.CLOSED, null);
      return;
    }
    const query = new URLSearchParams(wanted.map((channel) => ["ch", channel]));
    // A new EventSource cannot send Last-Event-ID; the server reads the query instead.
    const resume = compositeFor(wanted, this.positions);
    if (resume !== null) query.set("last_event_id", resume);
    this.setState(State.CONNECTING, null);
    this.broadcastState();
    let stream;
    try {
      stream = new EventSource(`${serverUrl}/stream?${query}`);
    } catch (err) {
      if (!(err instanceof DOMException)) throw err;
      this.failedForGood();
      return;
    }
    this.source = stream;
    const whileCurrent = (handler) => (event) => {
      if (stream === this.source) handler(event);
    };
    stream.addEventListener("open", whileCurrent(() => this.setLeaderState(State.LIVE, null)));
    stream.addEventListener(
      "error",
      whileCurrent((event) => {
        if (event instanceof MessageEvent) this.relay(event);
        // The browser retries by itself; a `busy` notice just before says when.
        else if (stream.readyState === EventSource.CONNECTING) this.setLeaderState(State.RECONNECTING, this.notice);
        else this.failedForGood();
      }),
    );
    this.relayed = new Set();
    this.listenForAll();
    stream.addEventListener("busy", whileCurrent((event) => this.busy(event)));
    stream.addEventListener("reauth", whileCurrent((event) => this.reauthorize(event)));
  }

  /** Relay every event name some tab handles (the server's own `error` is heard above). */
  listenForAll() {
    const stream = this.source;
    if (stream === null) return;
    const names = [...STREAM_EVENTS, ...this.ownEvents()];
    for (const want of this.wants.values()) if (Array.isArray(want.events)) names.push(...want.events);
    for (const type of names) {
      if (typeof type !== "string" || OWN_EVENTS.has(type) || this.relayed.has(type)) continue;
      this.relayed.add(type);
      stream.addEventListener(type, (event) => {
        if (stream === this.source) this.relay(event);
      });
    }
  }

  closeSource() {
    this.source?.close();
    this.source = null;
  }

  /** The browser gave up (a status but 200): closed until the set changes or Reconnect. */
  failedForGood() {
    this.closeSource();
    this.setLeaderState(State.CLOSED, null);
  }

  /** An event of the leader's stream: to every tab, this one included. */
  relay(event) {
    const payload = parseObject(event.data);
    const channel = typeof payload?.channel === "string" ? payload.channel : null;
    // Where every channel of this stream is now, for whichever tab opens the next one.
    const positions = event.lastEventId === "" ? null : positionsOf(event.lastEventId, this.channels);
    const message = { kind: "event", type: event.type, data: event.data, id: event.lastEventId, channel, positions };
    this.post(message);
    this.deliver(message);
  }

  /** Over a limit of the server's: it ends the stream; the browser comes back after `retry:`. */
  busy(event) {
    const payload = parseObject(event.data);
    this.setLeaderState(State.RECONNECTING, busyText(payload?.message, payload?.retry_after_ms));
  }

  /** The stream's credential expired or was revoked: close at once, renew, reopen. */
  async reauthorize(event) {
    this.closeSource();
    this.setLeaderState(State.RECONNECTING, null);
    const now = Date.now();
    this.reauths = this.reauths.filter((when) => now - when < REAUTH_WINDOW_MS);
    this.reauths.push(now);
    const reason = parseObject(event.data)?.reason;
    const outcome = this.reauths.length <= MAX_REAUTHS ? await this.renew(reason ?? "expired") : "failed";
    this.post({ kind: "renewed" });
    if (!this.leader) return;
    // Someone else now: the views drop what is not theirs (onIdentityChanged), then it reopens.
    if (outcome !== "failed") this.reopen(true);
    else this.failedForGood();
  }

  setLeaderState(state, notice) {
    this.setState(state, notice);
    this.broadcastState();
  }

  broadcastState() {
    if (this.leader) this.post({ kind: "state", state: this.state, notice: this.notice, channels: this.channels });
  }
}
