/**
 * #transcript, the open conversation's messages: rendered from a fetched
 * transcript (kept and updated in place by message id), and changed by each
 * stream event (user, start, delta, done, error).
 */

import { chat, learnModelLabel, setChatTitle, setReplying } from "./chat-state.js";
import { syncTranscript } from "./chat.js";
import { refreshConversationList } from "./conversations.js";
import { isNearBottom, ui } from "./dom.js";
import { truncateTranscript } from "./message-actions.js";
import { appendReplyText, flushReplyText, showReplyText, showUserText } from "./message-content.js";

/** Apply one stream event to the transcript. */
export function applyChatEvent({ type, payload }) {
  if (type === "user") onChatUser(payload);
  else if (type === "start") onChatStart(payload);
  else if (type === "delta") onChatDelta(payload);
  else if (type === "done") onChatDone(payload);
  else if (type === "error") onChatReplyError(payload);
  else if (type === "truncate") truncateTranscript(payload);
}

/** A user message was posted (from this tab or another): show it once. */
function onChatUser(payload) {
  if (findMessage(payload.message_id) !== null) return;
  const item = messageElement("user", payload.message_id);
  showUserText(item, typeof payload.content === "string" ? payload.content : "");
  appendMessage(item);
  // The first message names the conversation.
  refreshConversationList();
}

/** A reply begins: a streaming bubble labelled with its model. */
function onChatStart(payload) {
  learnModelLabel(payload.model, payload.model_label);
  let item = findMessage(payload.message_id);
  if (item === null) {
    item = messageElement("assistant", payload.message_id);
    setStatus(item, "streaming");
    appendMessage(item);
  }
  setModel(item, payload.model);
  if (item.dataset.status === "streaming") {
    setReplying(payload.message_id);
    announce("The assistant is replying.");
  }
}

/** A piece of a reply: append it to its bubble, while that still streams. */
function onChatDelta(payload) {
  if (typeof payload.text !== "string") return;
  let item = findMessage(payload.message_id);
  if (item === null) {
    // Its `start` was missed (e.g. replayed history began after it).
    item = messageElement("assistant", payload.message_id);
    setStatus(item, "streaming");
    appendMessage(item);
    setReplying(payload.message_id);
  }
  // A finished reply's text is final; replayed deltas must not add to it.
  if (item.dataset.status !== "streaming") return;
  // Opened mid-reply with nothing live to check the saved text against (see
  // stitchReply): this piece may not follow it, so mark the seam until the
  // next fetch tells. Drawn as Markdown at the next animation frame.
  appendReplyText(item, payload.text, chat.holes.has(payload.message_id));
}

/** A reply finished (stop, length, cancelled). */
function onChatDone(payload) {
  const id = payload.message_id;
  chat.finished.set(id, { done: payload });
  const item = findMessage(id);
  if (item !== null) {
    const reason = payload.finish_reason;
    flushReplyText(item);
    setStatus(item, reason === "cancelled" || reason === "interrupted" ? reason : "complete");
    setFooter(item, footerText(item.dataset.status, reason, payload));
  }
  if (chat.replyingId === id) announce(endingSaid(payload.finish_reason));
  endReply(id);
}

/** A reply failed: say why on its bubble; the conversation stays usable. */
function onChatReplyError(payload) {
  const id = payload.message_id;
  const message = typeof payload.message === "string" && payload.message !== ""
    ? payload.message
    : "The reply failed.";
  chat.finished.set(id, { error: message });
  const item = findMessage(id);
  if (item !== null) {
    flushReplyText(item);
    setStatus(item, "error");
    setErrorText(item, message);
  }
  if (chat.replyingId === id) announce("The reply failed.");
  endReply(id);
}

/** After done/error: unlock the composer, and fetch the final text of a partly known reply. */
function endReply(id) {
  if (chat.replyingId === id) setReplying(null);
  if (chat.partial.delete(id)) syncTranscript();
  refreshConversationList();
}

/**
 * Bring #transcript in line with the fetched transcript. Items are kept and
 * updated in place by message id, so the live region does not read out the
 * whole conversation again after every fetch. Returns the ids of the
 * streaming replies it stitched: their buffered deltas are already shown.
 */
export function renderTranscript(transcript) {
  if (typeof transcript.title === "string") setChatTitle(transcript.title);
  const messages = Array.isArray(transcript.messages) ? transcript.messages : [];
  const follow = isNearBottom(ui.transcript);
  const scrollTop = ui.transcript.scrollTop;
  const notices = detachNotices();
  const shown = new Map();
  for (const item of ui.transcript.querySelectorAll(":scope > li[data-message-id]")) {
    shown.set(item.dataset.messageId, item);
  }
  chat.partial.clear();
  chat.holes.clear();
  const stitched = new Set();
  let replying = null;
  const items = [];
  for (const message of messages) {
    if (message === null || typeof message.id !== "string") continue;
    const role = message.role === "user" ? "user" : "assistant";
    let item = shown.get(message.id);
    if (item === undefined || item.dataset.role !== role) item = messageElement(role, message.id);
    const saved = typeof message.content === "string" ? message.content : "";
    if (role === "user") {
      showUserText(item, saved);
      items.push(item);
      continue;
    }
    const status = typeof message.status === "string" ? message.status : "complete";
    setModel(item, message.model);
    setStatus(item, status);
    const seen = chat.finished.get(message.id);
    if (status === "streaming") {
      // Even with `replying` false it may just have ended; its buffered
      // done/error then fetches the final text.
      chat.partial.add(message.id);
      stitched.add(message.id);
      const { before, after } = stitchReply(saved, chat.pieces.get(message.id));
      showReplyText(item, before, after);
      if (after !== null) chat.holes.add(message.id);
      if (transcript.replying === true) replying = message.id;
    } else {
      chat.pieces.delete(message.id);
      showReplyText(item, saved, null);
    }
    // The transcript keeps no error text; this page may have seen it.
    const failed = status === "error" || seen?.error !== undefined;
    setErrorText(item, failed ? (seen?.error ?? "The reply failed.") : null);
    setFooter(item, footerText(status, message.finish_reason, seen?.done));
    items.push(item);
  }
  // Insert, move or drop only what differs.
  let cursor = ui.transcript.firstElementChild;
  for (const item of items) {
    if (item === cursor) cursor = cursor.nextElementSibling;
    else ui.transcript.insertBefore(item, cursor);
  }
  while (cursor !== null) {
    const next = cursor.nextElementSibling;
    cursor.remove();
    cursor = next;
  }
  reattachNotices(notices);
  setReplying(replying);
  ui.transcript.scrollTop = follow ? ui.transcript.scrollHeight : scrollTop;
  return stitched;
}

/**
 * The text of a streaming reply from its `saved` text and the pieces this
 * stream received for it (`record`, see recordPiece). Exact ({before: text,
 * after: null}) when the stream saw its start, or when the saved text ends
 * with the first few live pieces (it was saved after we subscribed); else
 * the saved text `before` a hole and the live pieces `after` it.
 *
 * With no live piece yet, nothing is known to be missing, but nothing is
 * known to join either: the hole is drawn by the next delta (onChatDelta),
 * and the reply stays in `holes` so it is fetched again.
 *
 * The overlap test can be fooled by text that repeats at the seam (a hole
 * closed one word early or late); the final fetch at done corrects that.
 */
function stitchReply(saved, record) {
  const texts = record?.texts ?? [];
  if (record?.started === true) return { before: texts.join(""), after: null };
  let joined = "";
  let overlap = 0;
  for (let index = 0; index < texts.length; index += 1) {
    joined += texts[index];
    if (joined.length > saved.length) break;
    if (saved.endsWith(joined)) overlap = index + 1;
  }
  if (overlap > 0) return { before: saved + texts.slice(overlap).join(""), after: null };
  if (texts.length === 0) return { before: saved, after: "" };
  return { before: saved, after: texts.join("") };
}

/** The #transcript item of message `id`, or null. */
export function findMessage(id) {
  return ui.transcript.querySelector(`li[data-message-id="${CSS.escape(id)}"]`);
}

/** A new, empty transcript item for a message of `role` ("user" or "assistant"). */
function messageElement(role, id) {
  const item = document.createElement("li");
  item.className = `chat-message ${role}`;
  item.dataset.messageId = id;
  item.dataset.role = role;
  const meta = document.createElement("div");
  meta.className = "message-meta";
  const who = document.createElement("span");
  who.className = "message-role";
  who.textContent = role === "user" ? "You" : "Assistant";
  meta.append(who);
  if (role === "assistant") {
    const model = document.createElement("span");
    model.className = "message-model";
    model.hidden = true;
    meta.append(model);
  }
  const content = document.createElement("div");
  content.className = "message-content";
  const error = document.createElement("p");
  error.className = "message-error error";
  error.hidden = true;
  const footer = document.createElement("div");
  footer.className = "message-footer";
  footer.hidden = true;
  item.append(meta, content, error, footer);
  return item;
}

/** Add a message at the bottom, following it if the reader was at the bottom. */
function appendMessage(item) {
  const follow = isNearBottom(ui.transcript);
  ui.transcript.append(item);
  if (follow) ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

/**
 * Show `text` at the end of the transcript as a notice of the conversation's,
 * tied to no message: e.g. an `error` event with message_id null (a reply the
 * daily budget refused). The fetched transcript does not hold it, so
 * renderTranscript keeps it after the message it followed.
 */
export function appendTranscriptNotice(text) {
  const item = document.createElement("li");
  item.className = "transcript-notice";
  item.setAttribute("role", "status");
  // textContent only: the text comes from the server.
  item.textContent = text;
  appendMessage(item);
}

/** Take the notices out of #transcript, each with the id of the message it followed (or null). */
function detachNotices() {
  const notices = [];
  for (const item of ui.transcript.querySelectorAll(":scope > li.transcript-notice")) {
    let before = item.previousElementSibling;
    while (before !== null && before.dataset.messageId === undefined) before = before.previousElementSibling;
    notices.push({ item, after: before?.dataset.messageId ?? null });
    item.remove();
  }
  return notices;
}

/** Put detached notices back after their message (at the end if it is gone), in order. */
function reattachNotices(notices) {
  let top = null;
  for (const { item, after } of notices) {
    const anchor = after === null ? null : findMessage(after);
    if (after === null) {
      if (top === null) ui.transcript.prepend(item);
      else top.after(item);
      top = item;
    } else if (anchor === null) ui.transcript.append(item);
    else {
      // After the anchor and the notices already put back after it.
      let place = anchor;
      while (place.nextElementSibling?.classList.contains("transcript-notice")) place = place.nextElementSibling;
      place.after(item);
    }
  }
}

/** Show which model wrote a reply, by label when known. */
function setModel(item, name) {
  const model = item.querySelector(".message-model");
  if (model === null || typeof name !== "string" || name === "") return;
  const label = chat.modelLabels.get(name) ?? name;
  if (model.textContent !== label) model.textContent = label;
  model.title = `model: ${name}`;
  model.hidden = false;
}

/** Set a reply's status: data-status, a `status-<status>` class, aria-busy while streaming. */
function setStatus(item, status) {
  const previous = item.dataset.status;
  if (previous === status) return;
  if (previous !== undefined) item.classList.remove(`status-${previous}`);
  item.dataset.status = status;
  item.classList.add(`status-${status}`);
  item.classList.toggle("error", status === "error");
  // Screen readers wait for aria-busy to clear instead of reading every piece.
  if (status === "streaming") item.setAttribute("aria-busy", "true");
  else item.removeAttribute("aria-busy");
}

/** Show `text` under a reply as its error (null: none). */
function setErrorText(item, text) {
  const error = item.querySelector(".message-error");
  if (error.textContent !== (text ?? "")) error.textContent = text ?? "";
  error.hidden = text === null;
}

/** Show `text` as a reply's footer (hidden when empty). */
function setFooter(item, text) {
  const footer = item.querySelector(".message-footer");
  if (footer.textContent !== text) footer.textContent = text;
  footer.hidden = text === "";
}

/** "40 ms" under a second, else "1.2 s". */
function formatDuration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** A reply's footer: how it ended, and its timings when this page saw its `done`. */
function footerText(status, finishReason, done) {
  const parts = [];
  if (status === "cancelled") parts.push("stopped");
  else if (status === "interrupted") parts.push("interrupted");
  if (finishReason === "length") parts.push("cut at length limit");
  if (done !== undefined && done !== null) {
    if (typeof done.ttft_ms === "number") parts.push(`first token ${formatDuration(done.ttft_ms)}`);
    if (typeof done.duration_ms === "number") parts.push(formatDuration(done.duration_ms));
  }
  return parts.join(" · ");
}


/** What the visually-hidden #chat-announce says when a reply ends (see announce). */
function endingSaid(reason) {
  if (reason === "cancelled") return "The reply was stopped.";
  if (reason === "interrupted") return "The reply was interrupted.";
  return "The reply is finished.";
}

/**
 * Tell screen readers how a reply goes, once per change: a reply is aria-busy
 * while it streams (setStatus), so its text is read once, when it is whole.
 */
function announce(text) {
  if (ui.chatAnnounce.textContent !== text) ui.chatAnnounce.textContent = text;
}
