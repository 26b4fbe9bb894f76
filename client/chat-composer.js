/**
 * The Chat view's composer: posts a message to the open conversation
 * (creating one if none is open) and stops a streaming reply. The stream and
 * the transcript it feeds live in chat.js.
 */

import { conversationPath, RequestFailed, requestJson } from "./api.js";
import { chat, clearChatError, setReplying, showChatError, updateChatComposer } from "./chat-state.js";
import { closeConversation, syncTranscript } from "./chat.js";
import { createConversation } from "./conversations.js";
import { ui } from "./dom.js";
import { serverUrl } from "./settings.js";
import { findMessage } from "./transcript.js";

/** A message typed before any conversation is open waits this long for the new one's stream. */
const CHAT_READY_TIMEOUT_MS = 5000;

/** Resolve once the open conversation's transcript is shown, or after `ms` regardless. */
function whenChatReady(ms) {
  if (chat.ready) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    chat.onReady.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}



/** Post the composer's text to the open conversation (creating one if none is open). */
export async function sendChatMessage() {
  if (chat.posting) return;
  const text = ui.chatInput.value;
  if (text.trim() === "") return;
  if (chat.replyingId !== null) {
    showChatError("A reply is still streaming: wait for it, or press Stop.");
    return;
  }
  clearChatError();
  chat.posting = true;
  updateChatComposer();
  try {
    if (chat.conversationId === null && (await createConversation()) === null) return;
    // Post once the stream is open, so this message and its reply stream in
    // live rather than arriving with the transcript.
    await whenChatReady(CHAT_READY_TIMEOUT_MS);
    const id = chat.conversationId;
    const generation = chat.generation;
    if (id === null) return;
    let answer;
    try {
      answer = await requestJson("POST", conversationPath(id, "/messages"), { content: text });
    } catch (err) {
      if (!(err instanceof RequestFailed)) throw err;
      if (generation !== chat.generation) return;
      if (err.status === 404) {
        closeConversation(`That conversation is not on ${serverUrl}; it may have been deleted.`, true);
      } else {
        showChatError(err.message);
      }
      return;
    }
    if (generation !== chat.generation) return;
    // The message itself arrives as a `user` event, like in every other tab.
    ui.chatInput.value = "";
    const replyId = answer?.reply_id;
    // Show Stop at once, unless the reply already ended (its events can beat this answer).
    if (typeof replyId === "string" && !chat.finished.has(replyId) && chat.replyingId === null) {
      const item = findMessage(replyId);
      if (item === null || item.dataset.status === "streaming") setReplying(replyId);
    }
  } finally {
    chat.posting = false;
    updateChatComposer();
    ui.chatInput.focus();
  }
}

/** Ask the server to stop the streaming reply; it ends with done/cancelled. */
export async function stopReply() {
  const id = chat.conversationId;
  if (id === null || chat.stopping) return;
  const generation = chat.generation;
  chat.stopping = true;
  updateChatComposer();
  try {
    const answer = await requestJson("POST", conversationPath(id, "/stop"));
    if (generation !== chat.generation) return;
    // Nothing was streaming: we missed the end of the reply we thought ran.
    if (answer?.stopped === false && chat.replyingId !== null) {
      setReplying(null);
      syncTranscript();
    }
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    if (generation === chat.generation) showChatError(`Could not stop the reply: ${err.message}`);
  } finally {
    if (generation === chat.generation) {
      chat.stopping = false;
      updateChatComposer();
    }
  }
}

/** Enter sends; Shift+Enter (or Enter while an IME is composing) types a newline. */
export function onChatKeydown(event) {
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  sendChatMessage();
}

/** Escape anywhere in the Chat view stops the streaming reply, as Stop does. */
export function onChatViewKeydown(event) {
  if (event.key !== "Escape" || event.isComposing || chat.replyingId === null) return;
  event.preventDefault();
  stopReply();
}
