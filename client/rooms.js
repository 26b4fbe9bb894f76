/**
 * The Rooms view: named rooms (GET /rooms, POST /rooms to create one), the
 * open room's messages with their senders' names, older ones loaded on demand
 * (GET /rooms/{name}/messages?before=), its composer (POST
 * /rooms/{name}/messages), who is here and who is typing (presence.js). Its
 * events are the channel room:<name> of the browser's one /stream
 * (channel-stream.js), shared by every tab of the page.
 */

import { RequestFailed, requestJson } from "./api.js";
import { parseObject } from "./channel-ids.js";
import { shared } from "./channel-stream.js";
import { NEAR_BOTTOM_PX, State } from "./dom.js";
import { onIdentityChanged, whenIdentityKnown } from "./identity.js";
import { showNotice, StatusBadge } from "./live.js";
import {
  isMe,
  loadPresence,
  onPresenceEvent,
  onTypingEvent,
  roomPath,
  showPresenceOf,
  stoppedTyping,
  userTyped,
  wirePresence,
} from "./presence.js";

/** The room every server has. */
export const LOBBY = "lobby";
/** Room names the server accepts (the contract's). */
const ROOM_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
/** Messages fetched at a time (the newest on opening, older ones per press of "Load older"). */
const PAGE_SIZE = 50;
/** Most messages kept in the list; the oldest go (Load older brings them back). */
const MAX_MESSAGES = 500;

/** Elements of the view, found by wireRooms. */
let ui = null;
let badge = null;
/** The open room's name, its subscription, and a counter that makes late answers harmless. */
let room = null;
let sub = null;
let generation = 0;
/** True once the open room's newest messages were fetched (after its stream first opened). */
let loaded = false;
/** True while a send is in flight. */
let sending = false;
/** False while the classic room is shown: it has a connection of its own (setRoomsActive). */
let active = true;

function byId(id) {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`index.html lacks #${id}`);
  return element;
}

/** An event's JSON data as an object, or null. */
const parse = (event) => parseObject(event.data);

// ---------------------------------------------------------------- switching

/** Open room `name`: its channel on the shared stream, then (once open) its messages and people. */
export function openRoom(name) {
  if (name === room && (sub !== null || !active)) return;
  sub?.close();
  generation += 1;
  room = name;
  loaded = false;
  ui.title.textContent = `#${name}`;
  ui.messages.replaceChildren();
  ui.older.hidden = true;
  showPresenceOf(name);
  markCurrentRoom();
  if (!active) return;
  sub = shared.subscribe(`room:${name}`, {
    events: {
      message: onMessage,
      presence: (event) => withPayload(event, onPresenceEvent),
      typing: (event) => withPayload(event, onTypingEvent),
      gap: onGap,
    },
    onOpen: onRoomOpen,
  });
}

function withPayload(event, handler) {
  const payload = parse(event);
  if (payload !== null) handler(payload);
}

/**
 * The stream carries the room now: fetch the newest messages the first time
 * (events from now on reach us, so none falls between), and who is here.
 */
function onRoomOpen() {
  if (!loaded) loadMessages(null);
  loadPresence();
}

/** Missed events the server cannot replay: fetch the newest messages again. */
function onGap() {
  loadMessages(null);
}

/** GET /rooms: list the rooms as buttons. */
export async function refreshRooms() {
  let answer;
  try {
    answer = await requestJson("GET", "/rooms");
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    showNotice(ui.createError, `Could not list the rooms: ${err.message}`);
    return;
  }
  const names = new Set([LOBBY]);
  for (const entry of Array.isArray(answer?.rooms) ? answer.rooms : []) {
    const name = typeof entry === "string" ? entry : entry?.name;
    if (typeof name === "string" && ROOM_NAME.test(name)) names.add(name);
  }
  if (room !== null) names.add(room);
  ui.list.replaceChildren(
    ...[...names].sort().map((name) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "room-button";
      button.dataset.room = name;
      button.textContent = `#${name}`;
      item.append(button);
      return item;
    }),
  );
  markCurrentRoom();
}

function markCurrentRoom() {
  for (const button of ui.list.querySelectorAll("[data-room]")) {
    if (button.dataset.room === room) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

/** POST /rooms {name}: create the room (or find it there already) and open it. */
async function onCreate(event) {
  event.preventDefault();
  const name = ui.createInput.value.trim().toLowerCase();
  if (!ROOM_NAME.test(name)) {
    showNotice(ui.createError, "A room name is 1-64 of a-z, 0-9, _ and -, starting with a letter or digit.");
    return;
  }
  showNotice(ui.createError, null);
  try {
    await requestJson("POST", "/rooms", { name });
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    // 409: it exists already, so open it.
    if (err.status !== 409) {
      showNotice(ui.createError, `Could not create the room: ${err.message}`);
      return;
    }
  }
  ui.createInput.value = "";
  openRoom(name);
  refreshRooms();
}

// ---------------------------------------------------------------- messages

/** A message's fields, or null if it is not one: {id, text, from: {id, name}, at}. */
function messageOf(payload) {
  if (payload === null || typeof payload.id !== "string" || typeof payload.text !== "string") return null;
  const from = payload.from ?? {};
  return {
    id: payload.id,
    text: payload.text,
    fromId: typeof from.id === "string" ? from.id : "",
    fromName: typeof from.name === "string" && from.name !== "" ? from.name : "someone",
    at: typeof payload.at === "string" ? payload.at : "",
  };
}

/** `event: message` of the open room: list it (once, however it came: live, replayed, fetched). */
function onMessage(event) {
  const message = messageOf(parse(event));
  if (message === null) return;
  stoppedTyping(message.fromId);
  const followBottom = isNearBottom();
  if (place(message, event.lastEventId)) dropOldest();
  if (followBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** One <li>: the sender's name, the time, the text; all textContent, never markup. */
function renderMessage(message, eventId) {
  const item = document.createElement("li");
  item.className = "room-message";
  item.dataset.messageId = message.id;
  item.dataset.at = message.at;
  if (eventId) item.dataset.eventId = eventId;
  if (isMe(message.fromId)) item.dataset.mine = "true";
  const head = document.createElement("span");
  head.className = "room-message-head";
  const sender = document.createElement("span");
  sender.className = "sender";
  sender.textContent = message.fromName;
  head.append(sender);
  if (message.at !== "") {
    const time = document.createElement("time");
    time.dateTime = message.at;
    const when = new Date(message.at);
    time.textContent = Number.isNaN(when.getTime())
      ? ""
      : when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    head.append(time);
  }
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  item.append(head, text);
  return item;
}

/**
 * Put `message` in the list in time order, unless it is there already (a
 * replay after a handover, or a fetch overlapping the live events). Returns
 * true if it was added.
 */
function place(message, eventId = "") {
  if (ui.messages.querySelector(`[data-message-id="${CSS.escape(message.id)}"]`) !== null) return false;
  const item = renderMessage(message, eventId);
  // Usually the newest: walk back from the end past any that are later.
  let after = ui.messages.lastElementChild;
  while (after !== null && message.at !== "" && after.dataset.at > message.at) {
    after = after.previousElementSibling;
  }
  if (after === null) ui.messages.prepend(item);
  else after.after(item);
  return true;
}

function isNearBottom() {
  const list = ui.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight <= NEAR_BOTTOM_PX;
}

function dropOldest() {
  while (ui.messages.childElementCount > MAX_MESSAGES) ui.messages.firstElementChild.remove();
  // What was dropped can be fetched again.
  if (ui.messages.childElementCount >= MAX_MESSAGES) ui.older.hidden = false;
}

/**
 * GET /rooms/{name}/messages?limit=&before=: the newest page (before null) or
 * the page older than the oldest shown; "Load older" shows while there may be more.
 */
async function loadMessages(before) {
  const asked = generation;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (before !== null) query.set("before", before);
  let answer;
  try {
    answer = await requestJson("GET", roomPath(room, `/messages?${query}`));
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    if (asked === generation) showNotice(ui.notice, `Could not load the messages: ${err.message}`);
    return;
  }
  if (asked !== generation) return;
  if (before === null) loaded = true;
  const list = Array.isArray(answer?.messages) ? answer.messages : [];
  // Loading older keeps the reader's place; the first load goes to the bottom.
  const fromBottom = ui.messages.scrollHeight - ui.messages.scrollTop;
  for (const entry of list) {
    const message = messageOf(entry);
    if (message !== null) place(message);
  }
  // The server names where the next (older) page starts while there is one.
  if (before !== null || !ui.older.hidden || list.length > 0) ui.older.hidden = typeof answer?.before !== "string";
  ui.messages.scrollTop = before === null ? ui.messages.scrollHeight : ui.messages.scrollHeight - fromBottom;
}

function onOlder() {
  const oldest = ui.messages.firstElementChild?.dataset.messageId;
  if (oldest !== undefined) loadMessages(oldest);
}

// ---------------------------------------------------------------- composer

/** POST the composer's text to the open room; the message itself comes back on the stream. */
async function sendRoomMessage() {
  const text = ui.input.value;
  if (sending || room === null || text.trim() === "") return;
  sending = true;
  ui.send.disabled = true;
  ui.input.readOnly = true;
  showNotice(ui.sendError, null);
  try {
    await requestJson("POST", roomPath(room, "/messages"), { text });
    ui.input.value = "";
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    showNotice(ui.sendError, err.message);
  } finally {
    sending = false;
    ui.send.disabled = false;
    ui.input.readOnly = false;
    ui.input.focus();
  }
}

/** Enter sends; Shift+Enter (or Enter while an IME composes) types a newline. */
function onKeydown(event) {
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  sendRoomMessage();
}

// ---------------------------------------------------------------- start

/** Find the view's elements and wire its controls; startRooms does the network work. */
export function wireRooms() {
  ui = {
    list: byId("room-list"),
    createForm: byId("room-create"),
    createInput: byId("room-name"),
    createError: byId("room-create-error"),
    title: byId("room-title"),
    status: byId("rooms-status"),
    reconnect: byId("rooms-reconnect"),
    notice: byId("rooms-notice"),
    older: byId("room-older"),
    messages: byId("room-messages"),
    composer: byId("room-composer"),
    input: byId("room-input"),
    send: byId("room-send"),
    sendError: byId("room-send-error"),
  };
  wirePresence({ count: byId("presence-count"), list: byId("presence-list"), typing: byId("typing") });
  badge = new StatusBadge(ui.status, ui.reconnect, State.CONNECTING);
  shared.onState((state, text) => {
    badge.set(state);
    showNotice(ui.notice, text);
  });
  ui.reconnect.addEventListener("click", () => shared.reconnect());
  // Someone else now (signed in or out): the stream opened with the old cookie is theirs.
  onIdentityChanged(() => shared.reconnect());
  ui.createForm.addEventListener("submit", onCreate);
  ui.list.addEventListener("click", (event) => {
    const button = event.target.closest("[data-room]");
    if (button !== null) openRoom(button.dataset.room);
  });
  ui.older.addEventListener("click", onOlder);
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendRoomMessage();
  });
  ui.input.addEventListener("keydown", onKeydown);
  ui.input.addEventListener("input", () => {
    showNotice(ui.sendError, null);
    if (ui.input.value !== "") userTyped();
  });
}

/**
 * The classic room is shown (false) or left (true). It holds a connection of
 * its own, so meanwhile the Rooms view lets go of its channel: a tab then
 * holds one connection, not two (the shared stream closes if nothing else needs it).
 */
export function setRoomsActive(on) {
  if (on === active) return;
  active = on;
  if (!on) {
    sub?.close();
    sub = null;
    return;
  }
  const name = room ?? LOBBY;
  room = null;
  openRoom(name);
}

/** Join the page's tabs on the shared stream and open the lobby (after GET /me: one guest). */
export function startRooms() {
  openRoom(LOBBY);
  shared.start();
  whenIdentityKnown().then(() => refreshRooms());
}

/** The server URL was applied: another server is other tabs, other rooms, other ids. */
export function onRoomsServerApplied(changed) {
  if (!changed) {
    shared.reconnect();
    return;
  }
  sub?.close();
  sub = null;
  room = null;
  shared.restart();
  openRoom(LOBBY);
  whenIdentityKnown().then(() => refreshRooms());
}
