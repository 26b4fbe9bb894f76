/**
 * The conversation list (GET /conversations): a sidebar on wide screens and a
 * drawer on narrow ones; New conversation (POST /conversations); Rename
 * (PATCH /conversations/{id}) and Delete (DELETE) beside each entry.
 */

import { conversationPath, RequestFailed, requestJson } from "./api.js";
import { chat, clearChatError, setChatTitle, showChatError } from "./chat-state.js";
import { closeConversation, openConversation } from "./chat.js";
import { ui } from "./dom.js";
import { serverUrl } from "./settings.js";

/** Conversations listed (GET /conversations?limit=, at most 200). */
const CONVERSATION_LIST_LIMIT = 50;
/** A first press of Delete arms it for this long; a second press within it deletes. */
const DELETE_ARMED_MS = 4000;

/** Short time for the list: the time of day if today, else the date. */
function formatListTime(seconds) {
  const when = new Date(seconds * 1000);
  const today = new Date().toDateString() === when.toDateString();
  return today
    ? when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : when.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

/** Replace #conversation-list with these summaries ({id, title, updated_at}). */
function renderConversationList(conversations) {
  const items = [];
  for (const summary of conversations) {
    if (summary === null || typeof summary.id !== "string") continue;
    const title = typeof summary.title === "string" && summary.title !== "" ? summary.title : "Untitled";
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "conversation";
    button.dataset.conversationId = summary.id;
    const titleText = document.createElement("span");
    titleText.className = "conversation-title";
    titleText.textContent = title;
    button.append(titleText);
    if (typeof summary.updated_at === "number") {
      const time = document.createElement("time");
      time.className = "conversation-time";
      time.dateTime = new Date(summary.updated_at * 1000).toISOString();
      time.textContent = formatListTime(summary.updated_at);
      button.append(time);
    }
    item.className = "conversation-row";
    item.append(button, actionButton("rename", "Rename", title), actionButton("delete", "Delete", title));
    items.push(item);
    if (summary.id === chat.conversationId) setChatTitle(title);
  }
  ui.conversationList.replaceChildren(...items);
  markActiveConversation();
}

/** A small Rename or Delete button for the entry titled `title`. */
function actionButton(action, label, title) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "conversation-action";
  button.dataset.action = action;
  button.textContent = label;
  button.setAttribute("aria-label", `${label} “${title}”`);
  return button;
}

/** Mark the open conversation's list entry with aria-current. */
export function markActiveConversation() {
  for (const button of ui.conversationList.querySelectorAll("[data-conversation-id]")) {
    if (button.dataset.conversationId === chat.conversationId) {
      button.setAttribute("aria-current", "true");
    } else {
      button.removeAttribute("aria-current");
    }
  }
}

/**
 * Fetch the list again. Calls made while one runs are folded into a single
 * further fetch, so a burst of events costs at most two requests.
 */
export async function refreshConversationList() {
  if (chat.listLoading) {
    chat.listWanted = true;
    return;
  }
  chat.listLoading = true;
  try {
    do {
      chat.listWanted = false;
      const server = serverUrl;
      let answer;
      try {
        answer = await requestJson("GET", `/conversations?limit=${CONVERSATION_LIST_LIMIT}`);
      } catch (err) {
        if (!(err instanceof RequestFailed)) throw err;
        if (server === serverUrl) showChatError(`Could not list the conversations: ${err.message}`);
        return;
      }
      // An answer from the server we just left would list its conversations here.
      if (server !== serverUrl) continue;
      renderConversationList(Array.isArray(answer?.conversations) ? answer.conversations : []);
    } while (chat.listWanted);
  } finally {
    chat.listLoading = false;
  }
}

/** Open or close the conversation drawer (only a drawer on narrow screens, see style.css). */
export function setDrawerOpen(open) {
  ui.chatView.dataset.drawer = open ? "open" : "closed";
  ui.conversationsToggle.setAttribute("aria-expanded", String(open));
}

/** A click in the list opens that conversation, or renames or deletes it. */
export function onConversationListClick(event) {
  const action = event.target.closest("[data-action]");
  if (action !== null) {
    const id = action.closest("li")?.querySelector("[data-conversation-id]")?.dataset.conversationId;
    if (id === undefined) return;
    if (action.dataset.action === "rename") startRename(action.closest("li"), id);
    else if (action.dataset.action === "delete") onDeletePress(action, id);
    return;
  }
  const button = event.target.closest("[data-conversation-id]");
  if (button === null) return;
  clearChatError();
  openConversation(button.dataset.conversationId);
}

/** Create a conversation and open it; its id, or null if that failed (the error is shown). */
export async function createConversation() {
  let summary;
  try {
    summary = await requestJson("POST", "/conversations");
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    showChatError(`Could not start a conversation: ${err.message}`);
    return null;
  }
  if (summary === null || typeof summary.id !== "string") {
    showChatError("The server's answer did not name the new conversation.");
    return null;
  }
  openConversation(summary.id, typeof summary.title === "string" ? summary.title : null);
  refreshConversationList();
  return summary.id;
}

/** New conversation: start one, unless the open one is still empty (then reuse it). */
export async function onNewConversation() {
  clearChatError();
  const openAndEmpty =
    chat.conversationId !== null && chat.ready && ui.transcript.childElementCount === 0;
  if (!openAndEmpty) {
    ui.newConversation.disabled = true;
    try {
      await createConversation();
    } finally {
      ui.newConversation.disabled = false;
    }
  }
  setDrawerOpen(false);
  ui.chatInput.focus();
}


// ---------------------------------------------------------------- rename, delete

/** Replace the entry's title with a text field; Enter saves (PATCH), Escape cancels. */
function startRename(item, id) {
  const title = item.querySelector(".conversation-title")?.textContent ?? "";
  const form = document.createElement("form");
  form.className = "conversation-rename";
  const input = document.createElement("input");
  input.type = "text";
  input.value = title;
  input.maxLength = 200;
  input.setAttribute("aria-label", "New title");
  const save = document.createElement("button");
  save.type = "submit";
  save.className = "conversation-action";
  save.textContent = "Save";
  form.append(input, save);
  item.replaceChildren(form);
  input.focus();
  input.select();
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") refreshConversationList();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const next = input.value.trim();
    if (next !== "" && next !== title) {
      try {
        await requestJson("PATCH", conversationPath(id), { title: next });
        if (id === chat.conversationId) setChatTitle(next);
      } catch (err) {
        if (!(err instanceof RequestFailed)) throw err;
        showChatError(`Could not rename the conversation: ${err.message}`);
      }
    }
    refreshConversationList();
  });
}

/** Delete asks twice: the first press arms the button, a second one within DELETE_ARMED_MS deletes. */
function onDeletePress(button, id) {
  if (button.dataset.armed !== "true") {
    const label = button.getAttribute("aria-label");
    button.dataset.armed = "true";
    button.textContent = "Delete?";
    button.setAttribute("aria-label", `Confirm: ${label}`);
    setTimeout(() => {
      if (!button.isConnected) return;
      delete button.dataset.armed;
      button.textContent = "Delete";
      button.setAttribute("aria-label", label);
    }, DELETE_ARMED_MS);
    return;
  }
  deleteConversation(id);
}

/** DELETE /conversations/{id}; its open stream also ends with `deleted` (chat.js). */
async function deleteConversation(id) {
  clearChatError();
  try {
    await requestJson("DELETE", conversationPath(id));
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    // 404: already gone (deleted elsewhere); the list below shows that.
    if (err.status !== 404) {
      showChatError(`Could not delete the conversation: ${err.message}`);
      return;
    }
  }
  ui.conversationList.querySelector(`[data-conversation-id="${CSS.escape(id)}"]`)?.closest("li")?.remove();
  if (id === chat.conversationId) closeConversation(null, true);
  refreshConversationList();
}
