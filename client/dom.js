/**
 * The page's elements, found once, and the connection states every badge shows.
 * A module imported by every other one; it has no imports itself.
 */

/** Within this distance of the bottom a list (#messages, #transcript) follows new items. */
export const NEAR_BOTTOM_PX = 48;

/** True if `list` is scrolled to (or within NEAR_BOTTOM_PX of) its bottom. */
export function isNearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight <= NEAR_BOTTOM_PX;
}

/** Connection states; the strings are what #status shows (part of the contract). */
export const State = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** Return the element with this id; a missing one is a bug in index.html. */
function byId(id) {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`index.html lacks #${id}`);
  return element;
}

export const ui = {
  status: byId("status"),
  transportLabel: byId("transport-label"),
  transportInputs: [byId("transport-sse"), byId("transport-ws")],
  reconnect: byId("reconnect"),
  settingsDetails: document.querySelector("details.settings"),
  settingsForm: byId("settings-form"),
  serverInput: byId("server-url"),
  serverError: byId("server-url-error"),
  nav: document.querySelector("nav.views"),
  roomNotice: byId("room-notice"),
  messages: byId("messages"),
  composer: byId("composer"),
  input: byId("message-input"),
  sendButton: byId("send-button"),
  sendError: byId("send-error"),
  chatView: document.querySelector('section[data-view="chat"]'),
  conversationsToggle: byId("conversations-toggle"),
  newConversation: byId("new-conversation"),
  conversationList: byId("conversation-list"),
  chatTitle: byId("chat-title"),
  chatStatus: byId("chat-status"),
  chatReconnect: byId("chat-reconnect"),
  chatExport: byId("chat-export"),
  chatExportMd: byId("chat-export-md"),
  chatExportJson: byId("chat-export-json"),
  chatNotice: byId("chat-notice"),
  chatSettings: byId("chat-settings"),
  chatModel: byId("chat-model"),
  chatSystemForm: byId("chat-system-form"),
  chatSystem: byId("chat-system"),
  chatSystemSave: byId("chat-system-save"),
  chatSettingsStatus: byId("chat-settings-status"),
  transcript: byId("transcript"),
  chatComposer: byId("chat-composer"),
  chatInput: byId("chat-input"),
  chatSend: byId("chat-send"),
  chatStop: byId("chat-stop"),
  chatError: byId("chat-error"),
  chatAnnounce: byId("chat-announce"),
  serverLabel: byId("server-label"),
  serverPrompt: byId("server-prompt"),
  serverPromptOrigin: byId("server-prompt-origin"),
  serverAccept: byId("server-accept"),
  serverRefuse: byId("server-refuse"),
  identity: byId("identity"),
  identityName: byId("identity-name"),
  renameForm: byId("rename-form"),
  displayName: byId("display-name"),
  renameError: byId("rename-error"),
  authForm: byId("auth-form"),
  authNote: byId("auth-note"),
  authUsername: byId("auth-username"),
  authPassword: byId("auth-password"),
  authError: byId("auth-error"),
  signOut: byId("sign-out"),
};
