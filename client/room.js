/**
 * The room: its events read over Server-Sent Events (GET /events, through the
 * shared LiveStream) and posted with POST /send-message, or, when the settings
 * say so, both over one WebSocket (GET /ws, RFC 6455) with the same events as
 * JSON frames; the message list; the composer.
 */

import { describeFailedResponse, describeFetchFailure, SEND_TIMEOUT_MS } from "./api.js";
import { NEAR_BOTTOM_PX, State, ui } from "./dom.js";
import { renewIdentity } from "./identity.js";
import { busyText, LiveStream, showNotice, StatusBadge } from "./live.js";
import {
  saveTransport,
  serverUrl,
  showSettingsError,
  Transport,
  TRANSPORT_LABELS,
} from "./settings.js";

/** A WebSocket does not reconnect by itself: the first retry waits this long, then doubles. */
const SOCKET_RETRY_MS = 500;
/** ...up to this; a random part up to as much again spreads a crowd's reconnects. */
const SOCKET_RETRY_MAX_MS = 8000;
/** A socket that fails to open this many times in a row is given up (Reconnect remains). */
const SOCKET_GIVE_UP_AFTER = 6;
/**
 * A socket closed with 1013 (try again later: over a limit of the server's)
 * comes back after this, plus a random part up to SOCKET_BUSY_JITTER_MS; the
 * server's `busy` for an EventSource asks about as much (a cap's retry).
 */
const SOCKET_BUSY_RETRY_MS = 15000;
const SOCKET_BUSY_JITTER_MS = 2000;
/** Close codes the server uses (RFC 6455 section 7.4.1; 4000-4999 are the application's). */
const CLOSE_TRY_AGAIN_LATER = 1013;
const CLOSE_REAUTH = 4001;
/** More 4001 closes than this within SOCKET_REAUTH_WINDOW_MS and the socket stays closed. */
const SOCKET_MAX_REAUTHS = 3;
const SOCKET_REAUTH_WINDOW_MS = 30000;
/** Most <li> kept in #messages; older ones are dropped so the DOM stays small. */
const MAX_MESSAGES = 500;
/** Text the server broadcasts whenever any client connects. */
const JOIN_TEXT = "A new user joined!";

/** The header's badge: the room's stream or socket. */
const badge = new StatusBadge(ui.status, ui.reconnect, State.CONNECTING);
/**
 * The room's event stream. Its lastEventId is the room's resume point on both
 * transports: a socket resumes from it too, and a switch of transport keeps it.
 */
const stream = new LiveStream({
  badge,
  events: { message: onStreamMessage, gap: onStreamGap },
  onUnopenable: () => showSettingsError(`Cannot open a stream at ${serverUrl}/events.`),
  // `reauth` (jwt mode: the token expired): the room is everyone's, so any identity will do.
  renew: async () => (await renewIdentity()) !== "failed",
  notice: ui.roomNotice,
});
/** The one WebSocket we listen to, or null; events from older ones are ignored. */
let socket = null;
/** The room's transport (one of Transport). */
let transport = Transport.SSE;
/** The pending automatic reconnect of a closed WebSocket, if any. */
let reconnectTimer = null;
/** Consecutive WebSocket attempts that closed without ever opening. */
let socketFailures = 0;
/** Retries since the socket was last open; sets the backoff. */
let socketRetries = 0;
/** When recent 4001 closes came (ms), as LiveStream counts its reauths. */
let socketReauths = [];
/**
 * Messages sent over the WebSocket that await their answer, oldest first: the
 * server answers each with an ack or error frame, in order. An entry that timed
 * out stays until its late answer arrives, so later answers still match.
 */
const pendingSends = [];
/** True while a POST /send-message is in flight. */
let sending = false;

// ---------------------------------------------------------------- transport

/** Use `value` (one of Transport) from now on; the caller connects. */
export function setTransport(value) {
  transport = value;
  showTransport();
}

/** Show the transport in the header and in the settings' radio buttons. */
function showTransport() {
  ui.transportLabel.textContent = TRANSPORT_LABELS[transport];
  ui.transportLabel.dataset.transport = transport;
  for (const input of ui.transportInputs) input.checked = input.value === transport;
}

/** A radio button was chosen: switch at once, resuming after the last event seen. */
export function onTransportChange(event) {
  const next = event.target.value;
  if (next !== Transport.SSE && next !== Transport.WS) return;
  saveTransport(next);
  if (next === transport) return;
  transport = next;
  showTransport();
  // The classic room connects only while it is shown (main.js showView).
  if (document.body.dataset.view === "room") reconnectNow();
}

// ---------------------------------------------------------------- stream

/** Stop listening to the current stream or socket, if any (also when the view is left). */
export function disconnect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  showNotice(ui.roomNotice, null);
  // 1000: a normal closure (RFC 6455 section 7.4.1).
  if (socket !== null) socket.close(1000);
  socket = null;
  stream.close();
  answerPendingSends("The connection was replaced before the server answered.");
}

/** Connect now, at the user's word: a socket's backoff and give-up count start over. */
export function reconnectNow() {
  socketFailures = 0;
  socketRetries = 0;
  connect();
}

/** Open the room on the chosen transport, replacing any previous stream or socket. */
export function connect() {
  disconnect();
  badge.set(State.CONNECTING);
  if (transport === Transport.WS) connectSocket();
  else stream.open(`${serverUrl}/events`);
}

/** Start afresh on another server: its room is another list, with its own event ids. */
export function forgetRoom() {
  clearMessages();
  // Resuming there from this server's id would only earn a gap notice.
  stream.lastEventId = null;
}

/** A broadcast message: list it. */
function onStreamMessage(event) {
  const kind = event.data === JOIN_TEXT ? "join" : "message";
  appendItem(event.data, event.lastEventId, kind);
}

/** Missed events the server cannot replay: list a notice saying so. */
function onStreamGap(event) {
  let text = "Some messages were missed and cannot be shown.";
  let resumedFrom = null;
  try {
    const gap = JSON.parse(event.data);
    if (gap !== null && typeof gap.message === "string" && gap.message !== "") text = gap.message;
    if (gap !== null && typeof gap.last_event_id === "string") resumedFrom = gap.last_event_id;
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    // Malformed gap data still means a gap: show the generic text.
  }
  const item = appendItem(text, event.lastEventId, "notice");
  if (resumedFrom !== null) item.dataset.resumedFrom = resumedFrom;
}

// ---------------------------------------------------------------- socket

/** The room's WebSocket URL: ws(s):// for http(s)://, resuming after the last event seen. */
function socketUrl() {
  const url = new URL(`${serverUrl}/ws`);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  // A WebSocket cannot send Last-Event-ID: the server reads the query instead.
  if (stream.lastEventId !== null) url.searchParams.set("last_event_id", stream.lastEventId);
  return url.href;
}

/** Open a new WebSocket on `${serverUrl}/ws`. */
function connectSocket() {
  let opening;
  try {
    opening = new WebSocket(socketUrl());
  } catch (err) {
    // The constructor throws SyntaxError for a URL it cannot use.
    if (!(err instanceof DOMException)) throw err;
    badge.set(State.CLOSED);
    showSettingsError(`Cannot open a WebSocket at ${serverUrl}/ws.`);
    return;
  }
  socket = opening;
  let opened = false;
  /** Wrap a handler so it only runs while `opening` is the current socket. */
  const whileCurrent = (handler) => (event) => {
    if (opening === socket) handler(event);
  };
  opening.addEventListener(
    "open",
    whileCurrent(() => {
      opened = true;
      socketFailures = 0;
      socketRetries = 0;
      // A socket over a limit opens too (101) before its 1013, which shows the notice again.
      showNotice(ui.roomNotice, null);
      badge.set(State.LIVE);
    }),
  );
  opening.addEventListener("message", whileCurrent(onSocketMessage));
  opening.addEventListener(
    "close",
    whileCurrent((event) => onSocketClose(opened, event)),
  );
}

/** A frame: an answer to one of our sends, or an event as a stream would carry it. */
function onSocketMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return; // not ours to show
  }
  if (message === null || typeof message !== "object") return;
  if (message.type === "ack" || message.type === "error") {
    const entry = pendingSends.shift();
    if (entry !== undefined) {
      entry.answer(message.type === "ack" ? null : errorText(message.error));
    }
    return;
  }
  // {"id", "event", "data"}: hand it on the way an EventSource dispatches it.
  if (message.event !== "gap" && message.event !== "message") return;
  const like = { data: String(message.data ?? ""), lastEventId: String(message.id ?? "") };
  stream.remember(like);
  if (message.event === "gap") onStreamGap(like);
  else onStreamMessage(like);
}

/** The server's explanation, or a generic one. */
function errorText(text) {
  return typeof text === "string" && text !== "" ? text : "The server refused the message.";
}

/**
 * The socket closed. 1013 (over a limit): say so and retry after a long
 * delay; 4001 (the credential expired): renew it (GET /me) and reconnect at
 * once; anything else: retry after a growing, jittered delay. Each resumes by id.
 */
function onSocketClose(opened, event) {
  socket = null;
  answerPendingSends("The connection closed before the server answered; it may not be sent.");
  if (event.code === CLOSE_TRY_AGAIN_LATER) {
    const delay = SOCKET_BUSY_RETRY_MS + Math.random() * SOCKET_BUSY_JITTER_MS;
    showNotice(ui.roomNotice, busyText(event.reason, delay));
    badge.set(State.RECONNECTING);
    reconnectTimer = setTimeout(connect, delay);
    return;
  }
  if (event.code === CLOSE_REAUTH) {
    reauthorizeSocket();
    return;
  }
  if (!opened) socketFailures += 1;
  if (socketFailures >= SOCKET_GIVE_UP_AFTER) {
    badge.set(State.CLOSED);
    return;
  }
  badge.set(State.RECONNECTING);
  const base = Math.min(SOCKET_RETRY_MS * 2 ** socketRetries, SOCKET_RETRY_MAX_MS);
  socketRetries += 1;
  reconnectTimer = setTimeout(connect, base + Math.random() * base);
}

/**
 * The socket closed with 4001: its credential (a token) expired or was
 * revoked. The room is everyone's, so any identity will do: renew and
 * reconnect, unless renewals keep failing (then it stays closed; Reconnect remains).
 */
async function reauthorizeSocket() {
  badge.set(State.RECONNECTING);
  const now = Date.now();
  socketReauths = socketReauths.filter((when) => now - when < SOCKET_REAUTH_WINDOW_MS);
  socketReauths.push(now);
  const again = socketReauths.length <= SOCKET_MAX_REAUTHS && (await renewIdentity()) !== "failed";
  // Another connect() (a switch of transport, Reconnect) happened meanwhile: that one stands.
  if (socket !== null || reconnectTimer !== null || transport !== Transport.WS) return;
  if (again) connect();
  else badge.set(State.CLOSED);
}

/** Answer every send still waiting with `text` (the socket they went out on is gone). */
function answerPendingSends(text) {
  for (const entry of pendingSends.splice(0)) entry.answer(text);
}

/**
 * Send `text` to the room over the socket; resolves to null once the server
 * acknowledged it, or to why it was not sent.
 */
function sendOverSocket(text) {
  return new Promise((resolve) => {
    if (socket === null || socket.readyState !== WebSocket.OPEN) {
      resolve(`Not connected to ${serverUrl}. Not sent.`);
      return;
    }
    let settled = false;
    const answer = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(
      () => answer(`No answer from ${serverUrl} after ${SEND_TIMEOUT_MS / 1000} s.`),
      SEND_TIMEOUT_MS,
    );
    pendingSends.push({ answer });
    // Sent as typed, like the POST body.
    socket.send(JSON.stringify({ type: "send", message: text }));
  });
}

// ---------------------------------------------------------------- message list

/** True if the list is scrolled to (or within NEAR_BOTTOM_PX of) its bottom. */
function isNearBottom() {
  const list = ui.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight <= NEAR_BOTTOM_PX;
}

/** Add one <li> at the bottom; `kind` is its class: "message", "join" or "notice". */
function appendItem(text, eventId, kind) {
  const followBottom = isNearBottom();
  const item = document.createElement("li");
  item.className = kind;
  // textContent only, never innerHTML: message text is untrusted and may hold markup.
  item.textContent = text;
  item.dataset.eventId = eventId;
  ui.messages.append(item);
  dropOldestItems();
  if (followBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
  return item;
}

/** Keep at most MAX_MESSAGES items; scroll anchoring keeps the reader's place. */
function dropOldestItems() {
  while (ui.messages.childElementCount > MAX_MESSAGES) ui.messages.firstElementChild.remove();
}

/** Empty the list (when switching to another server's room). */
function clearMessages() {
  ui.messages.replaceChildren();
}

// ---------------------------------------------------------------- composer

/** Show `text` next to the composer. */
function showSendError(text) {
  ui.sendError.textContent = text;
  ui.sendError.hidden = false;
}

/** Hide the composer error. */
export function clearSendError() {
  ui.sendError.textContent = "";
  ui.sendError.hidden = true;
}

/** Lock or unlock the composer while a send is in flight. */
function setSending(inFlight) {
  sending = inFlight;
  ui.sendButton.disabled = inFlight;
  // readOnly rather than disabled: a disabled textarea would lose focus,
  // and edits made now would be wiped when the send succeeds.
  ui.input.readOnly = inFlight;
  ui.composer.setAttribute("aria-busy", String(inFlight));
}

/** POST the composer's text; on success clear it, else show why it failed. */
export async function sendMessage() {
  if (sending) return;
  const text = ui.input.value;
  if (text.trim() === "") return;
  clearSendError();
  setSending(true);
  try {
    if (transport === Transport.WS) {
      const problem = await sendOverSocket(text);
      if (problem !== null) showSendError(problem);
      else ui.input.value = "";
      return;
    }
    let response;
    try {
      response = await fetch(`${serverUrl}/send-message`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        // Sent as typed (leading spaces, newlines): the text is the user's.
        body: JSON.stringify({ message: text }),
        signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
      });
    } catch (err) {
      if (!(err instanceof TypeError || err instanceof DOMException)) throw err;
      showSendError(describeFetchFailure(err));
      return;
    }
    if (!response.ok) {
      showSendError(await describeFailedResponse(response));
      return;
    }
    // The message itself comes back over the stream like everyone else's,
    // so it is not added to the list here.
    ui.input.value = "";
  } finally {
    setSending(false);
    ui.input.focus();
  }
}

/** Enter sends; Shift+Enter (or Enter while an IME is composing) types a newline. */
export function onComposerKeydown(event) {
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  sendMessage();
}
