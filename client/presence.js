/**
 * Who is in the open room (GET /rooms/{name}/presence, then `presence`
 * events) and who is typing there (`typing` events; this page's own typing
 * is sent with POST /rooms/{name}/typing, at most every TYPING_SEND_MS).
 * Names are shown with textContent only: they are whatever people chose.
 */

import { RequestFailed, requestJson } from "./api.js";
import { currentIdentity } from "./identity.js";

/** The server shows a typing event for a few seconds: this page says so at most this often. */
const TYPING_SEND_MS = 2000;
/** "X is typing…" stays this long after X's last typing event (or until X's message). */
const TYPING_SHOW_MS = 4000;

/** Elements: #presence-count, #presence-list, #typing. */
let view = null;
/** The room shown, or null. */
let room = null;
/** Who is here: user id -> name. */
const here = new Map();
/** Users present by the server's count (it may count people this page was not told of yet). */
let count = 0;
/** Who is typing: user id -> {name, timer}. */
const typing = new Map();
/** When this page last said it is typing (ms), and in which room. */
let typingSentAt = 0;
let typingSentIn = null;

/** The path of room `name`, plus `rest`. */
export function roomPath(name, rest = "") {
  return `/rooms/${encodeURIComponent(name)}${rest}`;
}

/** A user object of an event, or null: {id, name} with strings. */
function userOf(value) {
  if (value === null || typeof value !== "object") return null;
  if (typeof value.id !== "string" || typeof value.name !== "string") return null;
  return { id: value.id, name: value.name };
}

/** True if `id` is this browser's identity (the server may name it by id or as kind:id). */
export function isMe(id) {
  const me = currentIdentity();
  return me !== null && (id === me.id || id === `${me.kind}:${me.id}`);
}

/** Remember the elements (once). */
export function wirePresence(elements) {
  view = elements;
}

/** Show room `name` (null: none): forget the last room's people, ask who is in this one. */
export function showPresenceOf(name) {
  room = name;
  here.clear();
  count = 0;
  for (const entry of typing.values()) clearTimeout(entry.timer);
  typing.clear();
  render();
  renderTyping();
}

/** The room's stream is open: whatever happens now reaches us, so ask who is here already. */
export async function loadPresence() {
  const asked = room;
  if (asked === null) return;
  let answer;
  try {
    answer = await requestJson("GET", roomPath(asked, "/presence"));
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    return; // the events still tell who comes and goes
  }
  if (asked !== room) return;
  for (const user of Array.isArray(answer?.users) ? answer.users : []) {
    const who = userOf(user);
    if (who !== null) here.set(who.id, who.name);
  }
  if (Number.isInteger(answer?.count)) count = answer.count;
  render();
}

/** `event: presence`: someone came or went. */
export function onPresenceEvent(payload) {
  if (payload.room !== room) return;
  const who = userOf(payload.user);
  if (who === null) return;
  if (payload.action === "join") here.set(who.id, who.name);
  else if (payload.action === "leave") here.delete(who.id);
  if (Number.isInteger(payload.count)) count = payload.count;
  render();
}

/** `event: typing`: show "X is typing…" for TYPING_SHOW_MS (not for this page's own person). */
export function onTypingEvent(payload) {
  if (payload.room !== room) return;
  const who = userOf(payload.user);
  if (who === null || isMe(who.id)) return;
  const before = typing.get(who.id);
  if (before !== undefined) clearTimeout(before.timer);
  const timer = setTimeout(() => {
    typing.delete(who.id);
    renderTyping();
  }, TYPING_SHOW_MS);
  typing.set(who.id, { name: who.name, timer });
  renderTyping();
}

/** A message from `userId` arrived: they stopped typing it. */
export function stoppedTyping(userId) {
  const entry = typing.get(userId);
  if (entry === undefined) return;
  clearTimeout(entry.timer);
  typing.delete(userId);
  renderTyping();
}

/** The user typed in the composer: tell the room, at most every TYPING_SEND_MS. */
export function userTyped() {
  const now = Date.now();
  if (room === null || (room === typingSentIn && now - typingSentAt < TYPING_SEND_MS)) return;
  typingSentAt = now;
  typingSentIn = room;
  requestJson("POST", roomPath(room, "/typing")).catch((err) => {
    // Best effort: a refused typing notice (over a rate) is not worth a word.
    if (!(err instanceof RequestFailed)) throw err;
  });
}

/** Show who is here: the count, and each name. */
function render() {
  if (view === null) return;
  const names = [...here.values()].sort((a, b) => a.localeCompare(b));
  const shown = Math.max(count, names.length);
  view.count.textContent = shown === 1 ? "1 here" : `${shown} here`;
  view.list.replaceChildren(
    ...names.map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }),
  );
}

/** Show who is typing, e.g. "Ann is typing…", "Ann and Bo are typing…", "3 people are typing…". */
function renderTyping() {
  if (view === null) return;
  const names = [...typing.values()].map((entry) => entry.name);
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  if (view.typing.textContent !== text) view.typing.textContent = text;
}
