/*
 * ssechat browser page.
 *
 * Reads the room over Server-Sent Events (GET /events) and posts to it with
 * POST /send-message. Everything lives in one IIFE so nothing leaks onto
 * `window`. A classic script, not type="module": Chromium refuses module
 * scripts on file:// pages, and the page must work when opened from disk.
 */
(() => {
  "use strict";

  /** Server used when the page is not served over http(s), e.g. opened from disk. */
  const FILE_PAGE_SERVER_URL = "http://127.0.0.1:3000";
  /** localStorage key of the server URL the user applied. */
  const STORAGE_KEY = "ssechat.serverUrl";
  /** Most <li> kept in #messages; older ones are dropped so the DOM stays small. */
  const MAX_MESSAGES = 500;
  /** Within this distance of the bottom the list follows new messages. */
  const NEAR_BOTTOM_PX = 48;
  /** A send that takes longer is abandoned so the button does not stay disabled. */
  const SEND_TIMEOUT_MS = 15000;
  /** Text the server broadcasts whenever any client connects. */
  const JOIN_TEXT = "A new user joined!";

  /** Connection states; the strings are what #status shows (part of the contract). */
  const State = Object.freeze({
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

  const ui = {
    status: byId("status"),
    reconnect: byId("reconnect"),
    settingsDetails: document.querySelector("details.settings"),
    settingsForm: byId("settings-form"),
    serverInput: byId("server-url"),
    serverError: byId("server-url-error"),
    nav: document.querySelector("nav.views"),
    messages: byId("messages"),
    composer: byId("composer"),
    input: byId("message-input"),
    sendButton: byId("send-button"),
    sendError: byId("send-error"),
  };

  /** Base URL of the server, no trailing slash; endpoints are appended to it. */
  let serverUrl = "";
  /** The one EventSource we listen to; events from older ones are ignored. */
  let source = null;
  /** The badge's current state (one of State). */
  let connectionState = State.CONNECTING;
  /** True while a POST /send-message is in flight. */
  let sending = false;
  /**
   * Id of the last event seen from `serverUrl`, or null. A new EventSource cannot
   * send Last-Event-ID (the browser only sends it on its own reconnects), so a
   * manual reconnect passes it as ?last_event_id= and the server replays what
   * was missed instead of losing it silently.
   */
  let lastEventId = null;

  // ---------------------------------------------------------------- server URL

  /** Default server: this page's own origin, or the local dev server for file:// pages. */
  function defaultServerUrl() {
    const servedOverHttp = location.protocol === "http:" || location.protocol === "https:";
    return servedOverHttp ? location.origin : FILE_PAGE_SERVER_URL;
  }

  /** Turn user text into a base URL ("http(s)://host[:port][/path]"), or null if unusable. */
  function parseServerUrl(raw) {
    let text = raw.trim();
    if (text === "") return null;
    // "localhost:3000" would otherwise parse as scheme "localhost:".
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) text = `http://${text}`;
    let url;
    try {
      url = new URL(text);
    } catch (err) {
      if (err instanceof TypeError) return null; // what URL() throws for bad input
      throw err;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    // Keep a path prefix (a proxy may mount us under one) but drop ?query and
    // #hash: endpoint paths are appended to this string.
    return (url.origin + url.pathname).replace(/\/+$/, "");
  }

  /** Read the saved server URL; storage can be unavailable (privacy modes, file://). */
  function loadSavedServerUrl() {
    try {
      return localStorage.getItem(STORAGE_KEY);
    } catch (err) {
      return null;
    }
  }

  /** Save the server URL, or forget it when `url` is null. Best effort, see loadSavedServerUrl. */
  function saveServerUrl(url) {
    try {
      if (url === null) localStorage.removeItem(STORAGE_KEY);
      else localStorage.setItem(STORAGE_KEY, url);
    } catch (err) {
      // Not saved: the setting still applies until the page is reloaded.
    }
  }

  /** Pick the starting server URL: ?server= beats the saved setting beats the default. */
  function initialServerUrl() {
    const fromQuery = new URLSearchParams(location.search).get("server");
    if (fromQuery !== null) {
      const parsed = parseServerUrl(fromQuery);
      if (parsed !== null) return parsed;
      showSettingsError(`Ignoring ?server=${fromQuery}: not an http(s) URL.`);
    }
    const saved = loadSavedServerUrl();
    const parsedSaved = saved === null ? null : parseServerUrl(saved);
    return parsedSaved ?? defaultServerUrl();
  }

  /** Keep an existing ?server= in the address bar in step, so a reload keeps the choice. */
  function updateQueryParam(url) {
    const here = new URL(location.href);
    if (!here.searchParams.has("server")) return;
    if (url === null) here.searchParams.delete("server");
    else here.searchParams.set("server", url);
    try {
      history.replaceState(history.state, "", here);
    } catch (err) {
      // Some browsers refuse replaceState on file:// pages; the stored setting still holds.
    }
  }

  /** Show `text` under the server URL field and open the settings so it is seen. */
  function showSettingsError(text) {
    ui.serverError.textContent = text;
    ui.serverError.hidden = false;
    if (ui.settingsDetails !== null) ui.settingsDetails.open = true;
  }

  /** Hide the settings error. */
  function clearSettingsError() {
    ui.serverError.textContent = "";
    ui.serverError.hidden = true;
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
    clearSettingsError();
    saveServerUrl(raw === "" ? null : next);
    updateQueryParam(raw === "" ? null : next);
    ui.serverInput.value = next;
    // Event ids belong to one server: another server's room starts a new list,
    // and resuming there from this server's id would only earn a gap notice.
    if (next !== serverUrl) {
      clearMessages();
      lastEventId = null;
    }
    serverUrl = next;
    connect();
  }

  // ---------------------------------------------------------------- stream

  /** Show `state` in the badge; Reconnect is offered only when not (about to be) live. */
  function setConnectionState(state) {
    ui.reconnect.hidden = !(state === State.RECONNECTING || state === State.CLOSED);
    // Rewriting the same text would make screen readers announce it again.
    if (state === connectionState && ui.status.textContent === state) return;
    connectionState = state;
    ui.status.textContent = state;
    ui.status.dataset.state = state;
  }

  /** Stop listening to the current stream, if any. */
  function disconnect() {
    if (source !== null) source.close();
    source = null;
  }

  /** Open a new EventSource on `${serverUrl}/events`, replacing any previous one. */
  function connect() {
    disconnect();
    setConnectionState(State.CONNECTING);
    // Resume after the last event seen (see `lastEventId`). The browser's own
    // reconnects of this EventSource send the Last-Event-ID header, which the
    // server prefers to the query, so the query never holds them back.
    const resume = lastEventId === null ? "" : `?last_event_id=${encodeURIComponent(lastEventId)}`;
    let stream;
    try {
      stream = new EventSource(`${serverUrl}/events${resume}`);
    } catch (err) {
      // EventSource throws SyntaxError for a URL it cannot parse (WHATWG HTML
      // "Server-sent events", the EventSource constructor).
      if (!(err instanceof DOMException)) throw err;
      setConnectionState(State.CLOSED);
      showSettingsError(`Cannot open a stream at ${serverUrl}/events.`);
      return;
    }
    source = stream;
    /** Wrap a handler so it only runs while `stream` is the current stream. */
    const whileCurrent = (handler) => (event) => {
      if (stream === source) handler(event, stream);
    };
    stream.addEventListener("open", whileCurrent(onStreamOpen));
    stream.addEventListener("error", whileCurrent(onStreamError));
    stream.addEventListener("message", whileCurrent(onStreamMessage));
    stream.addEventListener("gap", whileCurrent(onStreamGap));
  }

  /** The stream is open: we are live. */
  function onStreamOpen() {
    setConnectionState(State.LIVE);
  }

  /** The stream failed or ended; readyState says whether the browser will retry. */
  function onStreamError(_event, stream) {
    // Per WHATWG HTML, "error" fires with readyState CONNECTING when the
    // browser will reconnect by itself (after `retry:` ms, resending
    // Last-Event-ID), and with CLOSED when it gave up for good (HTTP 204, a
    // non-200 status, or a wrong Content-Type).
    if (stream.readyState === EventSource.CONNECTING) setConnectionState(State.RECONNECTING);
    else if (stream.readyState === EventSource.CLOSED) setConnectionState(State.CLOSED);
  }

  /** Remember `event`'s id as the point a manual reconnect resumes from. */
  function rememberEventId(event) {
    // Every event the server sends has an id; "" would mean "none seen yet".
    if (event.lastEventId !== "") lastEventId = event.lastEventId;
  }

  /** A broadcast message: list it. */
  function onStreamMessage(event) {
    rememberEventId(event);
    const kind = event.data === JOIN_TEXT ? "join" : "message";
    appendItem(event.data, event.lastEventId, kind);
  }

  /** Missed events the server cannot replay: list a notice saying so. */
  function onStreamGap(event) {
    rememberEventId(event);
    let text = "Some messages were missed and cannot be shown.";
    let resumedFrom = null;
    try {
      const gap = JSON.parse(event.data);
      if (gap !== null && typeof gap.message === "string" && gap.message !== "") text = gap.message;
      if (gap !== null && typeof gap.last_event_id === "string") resumedFrom = gap.last_event_id;
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      // Malformed gap data still means a gap: show the generic text.
    }
    const item = appendItem(text, event.lastEventId, "notice");
    if (resumedFrom !== null) item.dataset.resumedFrom = resumedFrom;
  }

  // ---------------------------------------------------------------- message list

  /** True if the list is scrolled to (or within NEAR_BOTTOM_PX of) its bottom. */
  function isNearBottom() {
    const list = ui.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight <= NEAR_BOTTOM_PX;
  }

  /** Add one <li> at the bottom; `kind` is its class: "message", "join" or "notice". */
  function appendItem(text, eventId, kind) {
    const followBottom = isNearBottom();
    const item = document.createElement("li");
    item.className = kind;
    // textContent only, never innerHTML: message text is untrusted and may hold markup.
    item.textContent = text;
    item.dataset.eventId = eventId;
    ui.messages.append(item);
    dropOldestItems();
    if (followBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
    return item;
  }

  /** Keep at most MAX_MESSAGES items; scroll anchoring keeps the reader's place. */
  function dropOldestItems() {
    while (ui.messages.childElementCount > MAX_MESSAGES) ui.messages.firstElementChild.remove();
  }

  /** Empty the list (when switching to another server's room). */
  function clearMessages() {
    ui.messages.replaceChildren();
  }

  // ---------------------------------------------------------------- composer

  /** Show `text` next to the composer. */
  function showSendError(text) {
    ui.sendError.textContent = text;
    ui.sendError.hidden = false;
  }

  /** Hide the composer error. */
  function clearSendError() {
    ui.sendError.textContent = "";
    ui.sendError.hidden = true;
  }

  /** Lock or unlock the composer while a send is in flight. */
  function setSending(inFlight) {
    sending = inFlight;
    ui.sendButton.disabled = inFlight;
    // readOnly rather than disabled: a disabled textarea would lose focus,
    // and edits made now would be wiped when the send succeeds.
    ui.input.readOnly = inFlight;
    ui.composer.setAttribute("aria-busy", String(inFlight));
  }

  /** Explain a failed response: the server's JSON `error`, else the HTTP status. */
  async function describeFailedResponse(response) {
    let body = "";
    try {
      body = await response.text();
    } catch (err) {
      // The body was cut off; the status line alone still explains something.
    }
    try {
      const parsed = JSON.parse(body);
      if (parsed !== null && typeof parsed.error === "string" && parsed.error !== "") {
        return parsed.error;
      }
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
    }
    const reason = response.statusText ? ` ${response.statusText}` : "";
    return `The server answered ${response.status}${reason}.`;
  }

  /** Explain why fetch() itself rejected. */
  function describeFetchFailure(err) {
    if (err instanceof DOMException && err.name === "TimeoutError") {
      return `No answer from ${serverUrl} after ${SEND_TIMEOUT_MS / 1000} s. Not sent.`;
    }
    // fetch() rejects with TypeError for network errors and CORS refusals alike.
    return `Could not reach ${serverUrl}. Not sent.`;
  }

  /** POST the composer's text; on success clear it, else show why it failed. */
  async function sendMessage() {
    if (sending) return;
    const text = ui.input.value;
    if (text.trim() === "") return;
    clearSendError();
    setSending(true);
    try {
      let response;
      try {
        response = await fetch(`${serverUrl}/send-message`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          // Sent as typed (leading spaces, newlines): the text is the user's.
          body: JSON.stringify({ message: text }),
          signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
        });
      } catch (err) {
        if (!(err instanceof TypeError || err instanceof DOMException)) throw err;
        showSendError(describeFetchFailure(err));
        return;
      }
      if (!response.ok) {
        showSendError(await describeFailedResponse(response));
        return;
      }
      // The message itself comes back over the stream like everyone else's,
      // so it is not added to the list here.
      ui.input.value = "";
    } finally {
      setSending(false);
      ui.input.focus();
    }
  }

  /** Enter sends; Shift+Enter (or Enter while an IME is composing) types a newline. */
  function onComposerKeydown(event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    sendMessage();
  }

  // ---------------------------------------------------------------- views

  /** Show the <section data-view=name> and mark its nav button current; hide the others. */
  function showView(name) {
    for (const section of document.querySelectorAll("section[data-view]")) {
      section.hidden = section.dataset.view !== name;
    }
    for (const tab of document.querySelectorAll("[data-view-target]")) {
      if (tab.dataset.viewTarget === name) tab.setAttribute("aria-current", "true");
      else tab.removeAttribute("aria-current");
    }
  }

  /** A click on a nav button switches to its view. */
  function onNavClick(event) {
    const tab = event.target.closest("[data-view-target]");
    if (tab !== null) showView(tab.dataset.viewTarget);
  }

  // ---------------------------------------------------------------- start

  /** Wire up the page and open the stream. */
  function start() {
    serverUrl = initialServerUrl();
    ui.serverInput.value = serverUrl;
    ui.settingsForm.addEventListener("submit", onApplyServer);
    ui.reconnect.addEventListener("click", connect);
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      sendMessage();
    });
    ui.input.addEventListener("keydown", onComposerKeydown);
    // Editing the text means the user has seen the error.
    ui.input.addEventListener("input", clearSendError);
    if (ui.nav !== null) ui.nav.addEventListener("click", onNavClick);
    showView("room");
    connect();
  }

  start();
})();
