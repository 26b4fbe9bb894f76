/**
 * Actions on the open conversation's messages: Regenerate on the last reply,
 * Edit on the user's own messages (an inline editor: Enter sends, Escape
 * cancels), and the `truncate` event both of them make every tab apply.
 *
 * The buttons are added by watching #transcript (a MutationObserver), so
 * transcript.js renders messages without knowing about them. What a
 * regenerate or an edit changes arrives as stream events, as in every other
 * tab: `truncate` (the message from which the transcript is replaced), then
 * for an edit `user` with the new text, then the new reply.
 */

import { conversationPath, RequestFailed, requestJson } from "./api.js";
import { chat, clearChatError, setReplying, showChatError } from "./chat-state.js";
import { ui } from "./dom.js";

/** True while a regenerate or an edit is being posted: the buttons wait for its answer. */
let revising = false;

/** The item of message `id` in #transcript, or null. */
function itemOf(id) {
  return ui.transcript.querySelector(`:scope > li[data-message-id="${CSS.escape(id)}"]`);
}

/**
 * A `truncate` event: message `payload.message_id` and everything after it
 * leave the transcript (an edited message comes back in the next event).
 */
export function truncateTranscript(payload) {
  if (typeof payload.message_id !== "string") return;
  let node = itemOf(payload.message_id);
  while (node !== null) {
    const next = node.nextElementSibling;
    const id = node.dataset.messageId;
    if (id !== undefined) {
      chat.pieces.delete(id);
      chat.partial.delete(id);
      chat.holes.delete(id);
      chat.finished.delete(id);
      if (chat.replyingId === id) setReplying(null);
    }
    node.remove();
    node = next;
  }
}

/** The `.message-actions` row of `item`, made on first use. */
function actionsOf(item) {
  let row = item.querySelector(":scope > .message-actions");
  if (row === null) {
    row = document.createElement("div");
    row.className = "message-actions";
    item.append(row);
  }
  return row;
}

/** Give `item` a button for `action`, once. */
function ensureButton(item, action, label, title) {
  const row = actionsOf(item);
  if (row.querySelector(`button[data-action="${action}"]`) !== null) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "button button-small message-action";
  button.dataset.action = action;
  button.textContent = label;
  button.title = title;
  row.append(button);
}

/** Edit on every user message, Regenerate on the last reply; all off while a reply streams. */
function refreshActions() {
  const items = [...ui.transcript.querySelectorAll(":scope > li.chat-message[data-message-id]")];
  const last = items.at(-1) ?? null;
  for (const item of items) {
    if (item.dataset.role === "user") ensureButton(item, "edit", "Edit", "Edit this message and ask again");
  }
  for (const button of ui.transcript.querySelectorAll('button[data-action="regenerate"]')) {
    if (button.closest("li") !== last) button.remove();
  }
  if (last !== null && last.dataset.role === "assistant" && last.dataset.status !== "streaming") {
    ensureButton(last, "regenerate", "Regenerate", "Write this reply again");
  }
  const busy = revising || chat.replyingId !== null || last?.dataset.status === "streaming";
  for (const button of ui.transcript.querySelectorAll("button[data-action]")) {
    if (button.disabled !== busy) button.disabled = busy;
  }
}

/** After a regenerate or an edit was accepted: Stop shows at once, as after a send. */
function replyStarted(answer) {
  const replyId = answer?.reply_id;
  if (typeof replyId !== "string" || chat.finished.has(replyId) || chat.replyingId !== null) return;
  const item = itemOf(replyId);
  if (item === null || item.dataset.status === "streaming") setReplying(replyId);
}

/** POST `path` for the open conversation; the answer, or null after showing why not. */
async function revise(path, body) {
  const id = chat.conversationId;
  if (id === null || revising) return null;
  const generation = chat.generation;
  clearChatError();
  revising = true;
  refreshActions();
  try {
    const answer = await requestJson("POST", conversationPath(id, path), body);
    if (generation !== chat.generation) return null;
    replyStarted(answer);
    return answer;
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    if (generation === chat.generation) showChatError(err.message);
    return null;
  } finally {
    revising = false;
    refreshActions();
  }
}

/** Open the inline editor of user message `item`, or focus it if open. */
function openEditor(item) {
  const open = item.querySelector(".message-editor textarea");
  if (open !== null) {
    open.focus();
    return;
  }
  const content = item.querySelector(".message-content");
  const form = document.createElement("form");
  form.className = "message-editor";
  form.noValidate = true;
  const label = document.createElement("label");
  label.className = "visually-hidden";
  label.textContent = "Edit your message";
  const input = document.createElement("textarea");
  input.className = "message-editor-input";
  input.value = content?.textContent ?? "";
  input.rows = Math.min(8, Math.max(2, input.value.split("\n").length));
  label.append(input);
  const send = document.createElement("button");
  send.type = "submit";
  send.className = "button button-small button-primary";
  send.textContent = "Send";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "button button-small";
  cancel.dataset.editor = "cancel";
  cancel.textContent = "Cancel";
  const hint = document.createElement("span");
  hint.className = "message-editor-hint";
  hint.textContent = "Enter sends · Esc cancels · later messages are replaced";
  form.append(label, send, cancel, hint);
  if (content !== null) content.hidden = true;
  item.classList.add("editing");
  (content ?? item.lastElementChild).after(form);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closeEditor(item);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  cancel.addEventListener("click", () => closeEditor(item));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (text.trim() === "") return;
    send.disabled = true;
    const path = `/messages/${encodeURIComponent(item.dataset.messageId)}/edit`;
    const answer = await revise(path, { content: text });
    send.disabled = false;
    if (answer !== null) closeEditor(item);
    else input.focus();
  });
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

/** Close the editor of `item`, showing its message again. */
function closeEditor(item) {
  item.querySelector(".message-editor")?.remove();
  item.classList.remove("editing");
  const content = item.querySelector(".message-content");
  if (content !== null) content.hidden = false;
}

/** Clicks on the action buttons, for every message at once. */
function onTranscriptClick(event) {
  const button = event.target.closest?.("button[data-action]");
  if (button === null || button === undefined || button.disabled) return;
  const item = button.closest("li[data-message-id]");
  if (item === null) return;
  if (button.dataset.action === "regenerate") revise("/regenerate", {});
  else if (button.dataset.action === "edit") openEditor(item);
}

/** Watch #transcript for messages to give buttons to, and the composer for a streaming reply. */
export function wireMessageActions() {
  ui.transcript.addEventListener("click", onTranscriptClick);
  // Items coming and going: childList of #transcript only, so neither the
  // buttons added inside items nor a reply's growing text wake it.
  new MutationObserver(refreshActions).observe(ui.transcript, { childList: true });
  // A reply starting or ending; and Stop, shown exactly while a reply streams.
  const status = new MutationObserver(refreshActions);
  status.observe(ui.transcript, { subtree: true, attributes: true, attributeFilter: ["data-status"] });
  status.observe(ui.chatStop, { attributes: true, attributeFilter: ["hidden"] });
}
