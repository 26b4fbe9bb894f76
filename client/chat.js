/**
 * The Chat view: conversations with an assistant (/conversations/...). One
 * conversation is open at a time, its events the channel conv:<id> of the
 * browser's one /stream (channel-stream.js); its transcript is fetched and stitched with the
 * events (syncTranscript). The composer is chat-composer.js.
 */

import { conversationPath, RequestFailed, requestJson } from "./api.js";
import { onChatKeydown, onChatViewKeydown, sendChatMessage, stopReply } from "./chat-composer.js";
import {
  clearConversationSettings,
  onSettingsEvent,
  showConversationSettings,
  wireChatSettings,
} from "./chat-settings.js";
import {
  chat,
  chatHash,
  clearChatError,
  loadModelLabels,
  replaceHash,
  saveConversation,
  savedConversation,
  setChatTitle,
  showChatError,
  updateChatComposer,
} from "./chat-state.js";
import {
  markActiveConversation,
  onConversationListClick,
  onNewConversation,
  refreshConversationList,
  setDrawerOpen,
} from "./conversations.js";
import { State, ui } from "./dom.js";
import { Change, onIdentityChanged, whenIdentityKnown } from "./identity.js";
import { ChannelStream } from "./channel-stream.js";
import { StatusBadge } from "./live.js";
import { wireCodeCopy } from "./message-content.js";
import { wireMessageActions } from "./message-actions.js";
import { serverUrl } from "./settings.js";
import { appendTranscriptNotice, applyChatEvent, renderTranscript } from "./transcript.js";

/** A reply opened mid-stream with a hole in its text is fetched again this often until it heals. */
const HEAL_RETRY_MS = 1100;
/** Named events of a conversation stream that carry chat data (all JSON). */
const CHAT_EVENTS = Object.freeze(["truncate", "user", "start", "delta", "done"]);

/** #chat-status: the open conversation's stream (the header's badge is the room's). */
const badge = new StatusBadge(ui.chatStatus, ui.chatReconnect, State.CLOSED);
/** The open conversation's stream; its lastEventId is where a reconnect resumes. */
const stream = new ChannelStream({
  badge,
  events: {
    ...Object.fromEntries(CHAT_EVENTS.map((type) => [type, onChatEvent])),
    // The server's own `error` event (a failed reply), not a failed connection.
    error: onChatEvent,
    gap: onChatGap,
    deleted: onChatDeleted,
    settings: onSettingsEvent,
  },
  onOpen: onChatOpen,
  // Refused outright (e.g. 404 for an unknown conversation): the transcript
  // request says why, and shows what there is.
  onClosed: () => {
    if (!chat.ready) syncTranscript();
  },
  notice: ui.chatNotice,
});

// ---------------------------------------------------------------- opening

/** Forget everything about the open conversation's stream and transcript. */
function resetConversationState() {
  stream.close();
  chat.generation += 1;
  stream.lastEventId = null;
  chat.syncing = false;
  chat.resyncWanted = false;
  chat.buffer = [];
  chat.ready = false;
  chat.onReady = [];
  chat.pieces.clear();
  chat.partial.clear();
  chat.holes.clear();
  clearTimeout(chat.healTimer);
  chat.healTimer = null;
  chat.finished.clear();
  chat.replyingId = null;
  chat.stopping = false;
  ui.transcript.replaceChildren();
  clearConversationSettings();
  updateChatComposer();
}

/** Open conversation `id`: its stream first, then its transcript (see onChatOpen). */
export function openConversation(id, title = null) {
  setDrawerOpen(false);
  if (id === chat.conversationId && stream.source !== null) return;
  resetConversationState();
  chat.conversationId = id;
  const listed = ui.conversationList.querySelector(
    `[data-conversation-id="${CSS.escape(id)}"] .conversation-title`,
  );
  setChatTitle(title ?? listed?.textContent ?? "Conversation");
  setExportLinks(id);
  ui.transcript.setAttribute("aria-busy", "true");
  markActiveConversation();
  saveConversation(id);
  if (!ui.chatView.hidden) replaceHash(chatHash());
  chatConnect();
}

/**
 * Close the open conversation and show `why` (if given). `forget` drops it
 * from storage too: it is gone from the server, not merely left behind.
 */
export function closeConversation(why = null, forget = false) {
  resetConversationState();
  if (forget && chat.conversationId !== null) saveConversation(null);
  chat.conversationId = null;
  setChatTitle("New conversation");
  setExportLinks(null);
  ui.transcript.removeAttribute("aria-busy");
  badge.set(State.CLOSED);
  ui.chatStatus.hidden = true;
  ui.chatReconnect.hidden = true;
  markActiveConversation();
  if (!ui.chatView.hidden) replaceHash(chatHash());
  if (why !== null) showChatError(why);
}

/**
 * Point the Export links at conversation `id` (hidden without one). The server
 * names the file (Content-Disposition); the session cookie goes with the click.
 */
function setExportLinks(id) {
  ui.chatExport.hidden = id === null;
  for (const [link, format] of [
    [ui.chatExportMd, "md"],
    [ui.chatExportJson, "json"],
  ]) {
    if (id === null) link.removeAttribute("href");
    else link.href = `${serverUrl}${conversationPath(id, `/export?format=${format}`)}`;
  }
}

// ---------------------------------------------------------------- stream

/**
 * (Re)open the open conversation's stream, resuming after the last event seen
 * (none after openConversation), as for the room.
 */
function chatConnect() {
  stream.close();
  const id = chat.conversationId;
  if (id === null) return;
  ui.chatStatus.hidden = false;
  stream.open(`conv:${id}`);
}

/**
 * The stream is open, so the server has subscribed us: whatever happens from
 * now on reaches us. Fetch the transcript for what happened before, unless
 * we hold an event id, in which case the server replays (or sends a gap).
 */
function onChatOpen() {
  if (stream.lastEventId === null) syncTranscript();
}

/** A chat event: apply it, or keep it for after the transcript that is being fetched. */
function onChatEvent(event) {
  let payload;
  try {
    payload = JSON.parse(event.data);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return; // not ours to guess at; the next transcript fetch has the truth
  }
  if (payload === null || typeof payload !== "object") return;
  if (event.type === "error" && payload.message_id === null) {
    // The conversation's own error, of no message: a reply refused before it
    // began (the daily budget of model tokens is spent). Said in the transcript.
    const text = typeof payload.message === "string" && payload.message !== "" ? payload.message : "no reply";
    appendTranscriptNotice(`${text.charAt(0).toUpperCase()}${text.slice(1)}.`.replace(/\.\.$/, "."));
    return;
  }
  if (typeof payload.message_id !== "string") return;
  recordPiece(event.type, payload);
  const item = { type: event.type, payload };
  if (chat.syncing) chat.buffer.push(item);
  else applyChatEvent(item);
}

/** Note `start` and `delta` events as they arrive (before any buffering), for stitchReply. */
function recordPiece(type, payload) {
  const id = payload.message_id;
  if (type === "start") {
    chat.pieces.set(id, { started: true, texts: [] });
  } else if (type === "delta" && typeof payload.text === "string") {
    if (!chat.pieces.has(id)) chat.pieces.set(id, { started: false, texts: [] });
    chat.pieces.get(id).texts.push(payload.text);
  } else if (type === "done" || type === "error") {
    // Kept until the next render: a reply opened mid-stream is stitched then.
    if (!chat.partial.has(id)) chat.pieces.delete(id);
  }
}

/** The conversation was deleted (here or in another tab): close it, drop it from the list. */
function onChatDeleted() {
  const id = chat.conversationId;
  ui.conversationList.querySelector(`[data-conversation-id="${CSS.escape(id)}"]`)?.closest("li")?.remove();
  closeConversation("That conversation was deleted.", true);
  refreshConversationList();
}

/** Events were missed (e.g. the server restarted): fetch the transcript again. */
function onChatGap(event) {
  // Pieces were missed: what was recorded no longer joins up with what follows.
  chat.pieces.clear();
  // The server follows a gap with every event it still keeps; they are
  // buffered during the fetch and deduplicated against it by message id.
  syncTranscript();
  refreshConversationList();
}

// ---------------------------------------------------------------- transcript

/**
 * Fetch the transcript and render it, holding stream events back meanwhile
 * and applying them on top afterwards.
 *
 * Opening mid-reply: the stream is opened first, with no last event id, and
 * the transcript is fetched once it is open, so no event falls between the
 * two. But a streaming reply's saved text lags (the server saves it about
 * once a second) and no event id ties it to the stream, so the pieces sent
 * between that save and our subscribing are known to neither. What we do
 * (stitchReply): show the saved text, then the pieces received live; where
 * they do not provably join, a visible hole (CSS-generated, not part of the
 * text) marks the missing part, and the transcript is fetched again every
 * HEAL_RETRY_MS until a save overlaps the live pieces. When the reply ends,
 * its stored final text is fetched and replaces the bubble, so it ends exact
 * whatever happened before.
 */
export async function syncTranscript() {
  const id = chat.conversationId;
  if (id === null) return;
  if (chat.syncing) {
    chat.resyncWanted = true;
    return;
  }
  const generation = chat.generation;
  chat.syncing = true;
  let transcript = null;
  do {
    chat.resyncWanted = false;
    try {
      transcript = await requestJson("GET", conversationPath(id));
    } catch (err) {
      if (!(err instanceof RequestFailed)) throw err;
      if (generation !== chat.generation) return;
      if (err.status === 404) {
        closeConversation(`That conversation is not on ${serverUrl}; it may have been deleted.`, true);
        refreshConversationList();
        return;
      }
      showChatError(`Could not load the conversation: ${err.message}`);
      transcript = null;
      break;
    }
    if (generation !== chat.generation) return;
  } while (chat.resyncWanted);
  chat.syncing = false;
  const stitched = transcript === null ? new Set() : renderTranscript(transcript);
  if (transcript !== null) showConversationSettings(transcript);
  flushChatBuffer(stitched);
  if (!chat.ready && transcript !== null) {
    chat.ready = true;
    ui.transcript.removeAttribute("aria-busy");
    for (const callback of chat.onReady.splice(0)) callback();
  }
  scheduleHeal();
}

/** While a shown reply has a hole, fetch the transcript again soon. */
function scheduleHeal() {
  if (chat.holes.size === 0 || chat.healTimer !== null) return;
  chat.healTimer = setTimeout(() => {
    chat.healTimer = null;
    if (chat.holes.size > 0) syncTranscript();
  }, HEAL_RETRY_MS);
}

/** Apply the events held back during a transcript fetch; `stitched` replies have their deltas. */
function flushChatBuffer(stitched) {
  const buffered = chat.buffer;
  chat.buffer = [];
  for (const event of buffered) {
    if (event.type === "delta" && stitched.has(event.payload.message_id)) continue;
    applyChatEvent(event);
  }
}

// ---------------------------------------------------------------- start

/** First showing of the Chat view: list the conversations, reopen `wanted` or the last one. */
export function startChat(wanted) {
  const first = !chat.started;
  chat.started = true;
  // After GET /me: a first visit's requests at once would each make a new guest.
  whenIdentityKnown().then(() => {
    if (first) refreshConversationList();
    const id = wanted ?? (chat.conversationId === null ? savedConversation() : null);
    if (id !== null) openConversation(id);
  });
}

/**
 * This browser became someone else. Signed in: the guest's conversations
 * moved to the account, so the open one stays, its stream reopened under the
 * new cookie. Signed out or replaced: what was open is not ours any more.
 */
function onIdentity(change) {
  if (!chat.started) return;
  if (change === Change.SIGNED_IN) {
    if (chat.conversationId !== null) chatConnect();
  } else {
    closeConversation(null, true);
    ui.conversationList.replaceChildren();
  }
  refreshConversationList();
}

/** The server URL was applied: resume on the same server, start over on another. */
export function onChatServerApplied(changed) {
  if (!chat.started) return;
  if (!changed) {
    if (chat.conversationId !== null) chatConnect();
    return;
  }
  closeConversation();
  clearChatError();
  ui.conversationList.replaceChildren();
  whenIdentityKnown().then(() => {
    refreshConversationList();
    const saved = savedConversation();
    if (saved !== null) openConversation(saved);
  });
}

/** Wire up the Chat view's controls (its network work starts with startChat). */
export function wireChat() {
  loadModelLabels();
  ui.chatComposer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendChatMessage();
  });
  ui.chatInput.addEventListener("keydown", onChatKeydown);
  ui.chatView.addEventListener("keydown", onChatViewKeydown);
  wireCodeCopy();
  ui.chatInput.addEventListener("input", clearChatError);
  ui.chatStop.addEventListener("click", stopReply);
  ui.newConversation.addEventListener("click", onNewConversation);
  ui.conversationList.addEventListener("click", onConversationListClick);
  ui.conversationsToggle.addEventListener("click", () => {
    setDrawerOpen(ui.chatView.dataset.drawer !== "open");
  });
  ui.chatReconnect.addEventListener("click", () => chatConnect());
  wireMessageActions();
  wireChatSettings();
  onIdentityChanged(onIdentity);
}

