/**
 * The entry point of the ssechat page: picks the server and transport, wires
 * the header, the Settings panel and the view tabs, and starts the Rooms view
 * (and, when shown, the Chat view or the classic room). The Rooms view lives
 * in rooms.js, the Chat view in chat.js, the classic room in room.js; the
 * first two share the browser's one /stream (channel-leader.js).
 */

import { chatHash, conversationFromHash, replaceHash } from "./chat-state.js";
import { onChatServerApplied, startChat, wireChat } from "./chat.js";
import { ui } from "./dom.js";
import { loadIdentity, wireIdentity } from "./identity.js";
import {
  clearSendError,
  connect,
  disconnect,
  forgetRoom,
  onComposerKeydown,
  onTransportChange,
  reconnectNow,
  sendMessage,
  setTransport,
} from "./room.js";
import { onRoomsServerApplied, refreshRooms, setRoomsActive, startRooms, wireRooms } from "./rooms.js";
import {
  askAboutServer,
  clearSettingsError,
  defaultServerUrl,
  dismissServerQuestion,
  initialServerUrl,
  initialTransport,
  isOwnOrigin,
  parseServerUrl,
  queryServerUrl,
  saveServerUrl,
  serverUrl,
  setServerUrl,
  showSettingsError,
  updateQueryParam,
} from "./settings.js";

// ---------------------------------------------------------------- server URL

/** Talk to `next` from now on: reconnect the room and the Chat view to it. */
function useServer(next) {
  ui.serverInput.value = next;
  // Event ids belong to one server: another server's room starts a new list.
  const changed = next !== serverUrl;
  if (changed) forgetRoom();
  setServerUrl(next);
  // Another server is another identity (and maybe has accounts where this one has none).
  if (changed) loadIdentity();
  if (document.body.dataset.view === "room") reconnectNow();
  onRoomsServerApplied(changed);
  onChatServerApplied(changed);
}

/** Apply the typed server URL: save it, and reconnect the stream to it. */
function onApplyServer(event) {
  event.preventDefault();
  const raw = ui.serverInput.value.trim();
  // An empty field means "back to the default", which is not saved.
  const next = raw === "" ? defaultServerUrl() : parseServerUrl(raw);
  if (next === null) {
    showSettingsError(`"${raw}" is not an http:// or https:// URL.`);
    ui.serverInput.focus();
    return;
  }
  // Choosing a server here answers a pending ?server= question too.
  dismissServerQuestion();
  clearSettingsError();
  saveServerUrl(raw === "" ? null : next);
  updateQueryParam(raw === "" ? null : next);
  useServer(next);
}

// ---------------------------------------------------------------- views

/**
 * Show the <section data-view=name> and mark its nav button current; hide the
 * others. The Chat view starts on first show and keeps the address bar's hash
 * (#chat, #c=<id>) in step, so a reload comes back to it; `conversationId`
 * opens that conversation.
 */
function showView(name, conversationId = null) {
  for (const section of document.querySelectorAll("section[data-view]")) {
    section.hidden = section.dataset.view !== name;
  }
  for (const tab of document.querySelectorAll("[data-view-target]")) {
    if (tab.dataset.viewTarget === name) tab.setAttribute("aria-current", "true");
    else tab.removeAttribute("aria-current");
  }
  // The header's badge is the classic room's stream; the other views have their own.
  const before = document.body.dataset.view;
  document.body.dataset.view = name;
  // The classic room has a connection of its own: held only while it is shown.
  if (name === "room" && before !== "room") {
    setRoomsActive(false);
    connect();
  } else if (name !== "room" && before === "room") {
    disconnect();
    setRoomsActive(true);
  }
  // Back to the Rooms view: others may have made rooms meanwhile (the first showing lists them at start).
  if (name === "rooms" && before !== undefined && before !== "rooms") refreshRooms();
  if (name === "chat") {
    startChat(conversationId);
    replaceHash(chatHash());
  } else {
    replaceHash(name === "room" ? "#room" : "");
  }
}

/** A click on a nav button switches to its view. */
function onNavClick(event) {
  const tab = event.target.closest("[data-view-target]");
  if (tab !== null) showView(tab.dataset.viewTarget);
}

/** The hash was edited (or a #c= link followed on this page): open that conversation. */
function onHashChange() {
  const wanted = conversationFromHash();
  if (wanted !== null) showView("chat", wanted);
  else if (location.hash === "#chat") showView("chat");
  else if (location.hash === "#room") showView("room");
}

// ---------------------------------------------------------------- start

/** Wire up the page and open the stream; ask about a ?server= on another origin. */
function start() {
  const fromQuery = queryServerUrl();
  setServerUrl(initialServerUrl(fromQuery));
  ui.serverInput.value = serverUrl;
  setTransport(initialTransport());
  for (const input of ui.transportInputs) input.addEventListener("change", onTransportChange);
  ui.settingsForm.addEventListener("submit", onApplyServer);
  ui.reconnect.addEventListener("click", reconnectNow);
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  ui.input.addEventListener("keydown", onComposerKeydown);
  // Editing the text means the user has seen the error.
  ui.input.addEventListener("input", clearSendError);
  if (ui.nav !== null) ui.nav.addEventListener("click", onNavClick);
  wireIdentity();
  wireRooms();
  wireChat();
  window.addEventListener("hashchange", onHashChange);
  startRooms();
  // A #c=<id> (or #chat) address reopens the Chat view, #room the classic room; otherwise Rooms.
  const wanted = conversationFromHash();
  if (wanted !== null || location.hash === "#chat") showView("chat", wanted);
  else if (location.hash === "#room") showView("room");
  else showView("rooms");
  // A link's ?server= on another origin would send the user's messages there:
  // nothing goes to it until they accept (meanwhile this server is used).
  if (fromQuery !== null && !isOwnOrigin(fromQuery) && fromQuery !== serverUrl) {
    askAboutServer(fromQuery, useServer);
  }
}

start();
