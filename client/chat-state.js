/**
 * What the Chat view's modules share: the state of the open conversation, the
 * few view helpers all of them call (title, error line, composer buttons), and
 * what this browser remembers (model labels, the conversation last open, the
 * address bar's #c=).
 */

import { ui } from "./dom.js";
import { serverUrl } from "./settings.js";

/** localStorage key prefix of the conversation last open on a server (the suffix is its URL). */
const CONVERSATION_KEY_PREFIX = "ssechat.conversation@";
/** localStorage key of model labels learned from `start` events; transcripts only name the model. */
const MODEL_LABELS_KEY = "ssechat.modelLabels";

/**
 * The Chat view. One conversation is open at a time, with one LiveStream on
 * /conversations/{id}/events (chat.js). Its events (user, start, delta, done, error) are
 * applied to #transcript as they come; the transcript itself
 * (GET /conversations/{id}) is fetched when the stream first opens, after a
 * `gap`, and after a reply that was only partly known ends (see
 * syncTranscript for how the two are stitched together).
 */
export const chat = {
  /** True once the Chat view was shown: its list and stream start lazily. */
  started: false,
  /** Id of the open conversation, or null (a message sent then creates one). */
  conversationId: null,
  /** Bumped whenever another conversation (or server) is opened: late answers are dropped. */
  generation: 0,
  /** True while the transcript is being fetched; stream events wait in `buffer` meanwhile. */
  syncing: false,
  /** A sync was asked for while one ran: fetch again before applying the buffer. */
  resyncWanted: false,
  /** Stream events received while syncing, as {type, payload}, oldest first. */
  buffer: [],
  /** True once the open conversation's transcript was rendered. */
  ready: false,
  /** Callbacks waiting for `ready`. */
  onReady: [],
  /** Id of the reply streaming now, or null: shows Stop, disables Send. */
  replyingId: null,
  /**
   * Every piece received on this stream, by reply id, in order, and whether
   * its `start` was received too (then the pieces are the whole text). Cleared
   * on a gap: the record is only useful while it has no holes.
   */
  pieces: new Map(),
  /**
   * Replies rendered from a transcript saved while they streamed (opened
   * mid-reply, see syncTranscript); their final text is fetched when they end.
   */
  partial: new Set(),
  /** Those of `partial` whose shown text still has a hole (see stitchReply). */
  holes: new Set(),
  /** Timer that fetches the transcript again to heal `holes`, or null. */
  healTimer: null,
  /** `done` / `error` payloads by message id, so a re-render keeps timings and error texts. */
  finished: new Map(),
  /** True while POST .../messages (or the create before it) is in flight. */
  posting: false,
  /** True while POST .../stop is in flight. */
  stopping: false,
  /** A list fetch is running / another one was asked for meanwhile. */
  listLoading: false,
  listWanted: false,
  /** Model name -> label, e.g. "echo" -> "built-in echo model". */
  modelLabels: new Map(),
};

/** Show `title` above the transcript. */
export function setChatTitle(title) {
  if (ui.chatTitle.textContent !== title) ui.chatTitle.textContent = title;
}

/** Show `text` above the chat composer. */
export function showChatError(text) {
  ui.chatError.textContent = text;
  ui.chatError.hidden = false;
}

/** Hide the chat error. */
export function clearChatError() {
  ui.chatError.textContent = "";
  ui.chatError.hidden = true;
}

/** Note which reply streams now (null: none), and update the buttons. */
export function setReplying(id) {
  chat.replyingId = id;
  updateChatComposer();
}

/** Send is off while a message is posted or a reply streams; Stop shows while one streams. */
export function updateChatComposer() {
  const replying = chat.replyingId !== null;
  ui.chatSend.disabled = chat.posting || replying;
  ui.chatStop.hidden = !replying;
  ui.chatStop.disabled = chat.stopping;
  // readOnly, not disabled: focus stays, see setSending in room.js.
  ui.chatInput.readOnly = chat.posting;
  ui.chatComposer.setAttribute("aria-busy", String(chat.posting));
}

/** Post the composer's text to the open conversation (creating one if none is open). */

// ---------------------------------------------------------------- remembering

/** Read the model labels saved by earlier visits (best effort, like the server URL). */
export function loadModelLabels() {
  try {
    const saved = JSON.parse(localStorage.getItem(MODEL_LABELS_KEY) ?? "{}");
    if (saved === null || typeof saved !== "object") return;
    for (const [name, label] of Object.entries(saved)) {
      if (typeof label === "string") chat.modelLabels.set(name, label);
    }
  } catch (err) {
    // Unavailable storage or a damaged entry: the labels come back with the next `start`.
  }
}

/** Remember that model `name` is called `label` (the transcript only gives the name). */
export function learnModelLabel(name, label) {
  if (typeof name !== "string" || typeof label !== "string" || label === "") return;
  if (chat.modelLabels.get(name) === label) return;
  chat.modelLabels.set(name, label);
  try {
    localStorage.setItem(MODEL_LABELS_KEY, JSON.stringify(Object.fromEntries(chat.modelLabels)));
  } catch (err) {
    // Not saved: this page still knows it.
  }
}

/** The conversation last open on the current server, or null. */
export function savedConversation() {
  try {
    return localStorage.getItem(CONVERSATION_KEY_PREFIX + serverUrl);
  } catch (err) {
    return null;
  }
}

/** Remember (or, with null, forget) the open conversation for the current server. */
export function saveConversation(id) {
  try {
    if (id === null) localStorage.removeItem(CONVERSATION_KEY_PREFIX + serverUrl);
    else localStorage.setItem(CONVERSATION_KEY_PREFIX + serverUrl, id);
  } catch (err) {
    // Not saved: the address bar's #c= still finds it on reload.
  }
}

/** The conversation id in the address bar (#c=<id>), or null. */
export function conversationFromHash() {
  const match = /^#c=([^&]+)$/.exec(location.hash);
  if (match === null) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch (err) {
    if (!(err instanceof URIError)) throw err;
    return null;
  }
}

/** Put `hash` ("" for none) in the address bar without a new history entry. */
export function replaceHash(hash) {
  if (location.hash === hash || (hash === "" && location.hash === "")) return;
  const here = new URL(location.href);
  here.hash = hash;
  try {
    history.replaceState(history.state, "", here);
  } catch (err) {
    // Refused on some file:// pages; localStorage still remembers the conversation.
  }
}

/** The address-bar hash for the Chat view as it is now. */
export function chatHash() {
  return chat.conversationId === null ? "#chat" : `#c=${encodeURIComponent(chat.conversationId)}`;
}

