/*
 * ssechat browser page.
 *
 * Reads the room over Server-Sent Events (GET /events) and posts to it with
 * POST /send-message, or, when the settings say so, does both over one
 * WebSocket (GET /ws, RFC 6455) with the same events as JSON frames. The Chat view holds conversations with an assistant
 * (/conversations/...), whose replies stream in over one EventSource per open
 * conversation. Everything lives in one IIFE so nothing leaks onto
 * `window`. A classic script, not type="module": Chromium refuses module
 * scripts on file:// pages, and the page must work when opened from disk.
 */
(() => {
  "use strict";

  /** Server used when the page is not served over http(s), e.g. opened from disk. */
  const FILE_PAGE_SERVER_URL = "http://127.0.0.1:3000";
  /** localStorage key of the server URL the user applied. */
  const STORAGE_KEY = "ssechat.serverUrl";
  /** localStorage key of the room's transport ("sse" or "ws"). */
  const TRANSPORT_KEY = "ssechat.transport";
  /** A WebSocket does not reconnect by itself: the first retry waits this long, then doubles. */
  const SOCKET_RETRY_MS = 500;
  /** ...up to this; a random part up to as much again spreads a crowd's reconnects. */
  const SOCKET_RETRY_MAX_MS = 8000;
  /** A socket that fails to open this many times in a row is given up (Reconnect remains). */
  const SOCKET_GIVE_UP_AFTER = 6;
  /** Most <li> kept in #messages; older ones are dropped so the DOM stays small. */
  const MAX_MESSAGES = 500;
  /** Within this distance of the bottom the list follows new messages. */
  const NEAR_BOTTOM_PX = 48;
  /** A send that takes longer is abandoned so the button does not stay disabled. */
  const SEND_TIMEOUT_MS = 15000;
  /** Text the server broadcasts whenever any client connects. */
  const JOIN_TEXT = "A new user joined!";
  /** localStorage key prefix of the conversation last open on a server (the suffix is its URL). */
  const CONVERSATION_KEY_PREFIX = "ssechat.conversation@";
  /** localStorage key of model labels learned from `start` events; transcripts only name the model. */
  const MODEL_LABELS_KEY = "ssechat.modelLabels";
  /** Conversations listed (GET /conversations?limit=, at most 200). */
  const CONVERSATION_LIST_LIMIT = 50;
  /** A message typed before any conversation is open waits this long for the new one's stream. */
  const CHAT_READY_TIMEOUT_MS = 5000;
  /** A reply opened mid-stream with a hole in its text is fetched again this often until it heals. */
  const HEAL_RETRY_MS = 1100;
  /** Named events of a conversation stream that carry chat data (all JSON). */
  const CHAT_EVENTS = Object.freeze(["user", "start", "delta", "done"]);

  /** How the room reaches the page; the values are what localStorage and ?transport= hold. */
  const Transport = Object.freeze({ SSE: "sse", WS: "ws" });
  /** What #transport-label shows for each. */
  const TRANSPORT_LABELS = Object.freeze({ sse: "SSE", ws: "WebSocket" });

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
    transportLabel: byId("transport-label"),
    transportInputs: [byId("transport-sse"), byId("transport-ws")],
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
    chatView: document.querySelector('section[data-view="chat"]'),
    conversationsToggle: byId("conversations-toggle"),
    newConversation: byId("new-conversation"),
    conversationList: byId("conversation-list"),
    chatTitle: byId("chat-title"),
    chatStatus: byId("chat-status"),
    chatReconnect: byId("chat-reconnect"),
    transcript: byId("transcript"),
    chatComposer: byId("chat-composer"),
    chatInput: byId("chat-input"),
    chatSend: byId("chat-send"),
    chatStop: byId("chat-stop"),
    chatError: byId("chat-error"),
  };

  /** Base URL of the server, no trailing slash; endpoints are appended to it. */
  let serverUrl = "";
  /** The one EventSource or WebSocket we listen to; events from older ones are ignored. */
  let source = null;
  /** The room's transport (one of Transport). */
  let transport = Transport.SSE;
  /** The pending automatic reconnect of a closed WebSocket, if any. */
  let reconnectTimer = null;
  /** Consecutive WebSocket attempts that closed without ever opening. */
  let socketFailures = 0;
  /** Retries since the socket was last open; sets the backoff. */
  let socketRetries = 0;
  /**
   * Messages sent over the WebSocket that await their answer, oldest first: the
   * server answers each with an ack or error frame, in order. An entry that timed
   * out stays until its late answer arrives, so later answers still match.
   */
  const pendingSends = [];
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
    const changed = next !== serverUrl;
    if (changed) {
      clearMessages();
      lastEventId = null;
    }
    serverUrl = next;
    reconnectNow();
    onChatServerApplied(changed);
  }

  // ---------------------------------------------------------------- transport setting

  /** Pick the starting transport: ?transport= beats the saved setting beats SSE. */
  function initialTransport() {
    const fromQuery = new URLSearchParams(location.search).get("transport");
    if (fromQuery === Transport.SSE || fromQuery === Transport.WS) return fromQuery;
    let saved = null;
    try {
      saved = localStorage.getItem(TRANSPORT_KEY);
    } catch (err) {
      // Storage unavailable (privacy modes, file://): the default it is.
    }
    return saved === Transport.WS ? Transport.WS : Transport.SSE;
  }

  /** Save the transport; best effort, like the server URL. */
  function saveTransport(value) {
    try {
      localStorage.setItem(TRANSPORT_KEY, value);
    } catch (err) {
      // Not saved: the choice still applies until the page is reloaded.
    }
  }

  /** Show the transport in the header and in the settings' radio buttons. */
  function showTransport() {
    ui.transportLabel.textContent = TRANSPORT_LABELS[transport];
    ui.transportLabel.dataset.transport = transport;
    for (const input of ui.transportInputs) input.checked = input.value === transport;
  }

  /** A radio button was chosen: switch at once, resuming after the last event seen. */
  function onTransportChange(event) {
    const next = event.target.value;
    if (next !== Transport.SSE && next !== Transport.WS) return;
    saveTransport(next);
    if (next === transport) return;
    transport = next;
    showTransport();
    reconnectNow();
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

  /** Stop listening to the current stream or socket, if any. */
  function disconnect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    // 1000: a normal closure (RFC 6455 section 7.4.1); an EventSource takes no code.
    if (source instanceof WebSocket) source.close(1000);
    else if (source !== null) source.close();
    source = null;
    answerPendingSends("The connection was replaced before the server answered.");
  }

  /** Connect now, at the user's word: a socket's backoff and give-up count start over. */
  function reconnectNow() {
    socketFailures = 0;
    socketRetries = 0;
    connect();
  }

  /** Open the room on the chosen transport, replacing any previous stream or socket. */
  function connect() {
    disconnect();
    setConnectionState(State.CONNECTING);
    if (transport === Transport.WS) connectSocket();
    else connectStream();
  }

  /** Open a new EventSource on `${serverUrl}/events`. */
  function connectStream() {
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

  // ---------------------------------------------------------------- socket

  /** The room's WebSocket URL: ws(s):// for http(s)://, resuming after `lastEventId`. */
  function socketUrl() {
    const url = new URL(`${serverUrl}/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    // A WebSocket cannot send Last-Event-ID: the server reads the query instead.
    if (lastEventId !== null) url.searchParams.set("last_event_id", lastEventId);
    return url.href;
  }

  /** Open a new WebSocket on `${serverUrl}/ws`. */
  function connectSocket() {
    let socket;
    try {
      socket = new WebSocket(socketUrl());
    } catch (err) {
      // The constructor throws SyntaxError for a URL it cannot use.
      if (!(err instanceof DOMException)) throw err;
      setConnectionState(State.CLOSED);
      showSettingsError(`Cannot open a WebSocket at ${serverUrl}/ws.`);
      return;
    }
    source = socket;
    let opened = false;
    /** Wrap a handler so it only runs while `socket` is the current one. */
    const whileCurrent = (handler) => (event) => {
      if (socket === source) handler(event, socket);
    };
    socket.addEventListener(
      "open",
      whileCurrent(() => {
        opened = true;
        socketFailures = 0;
        socketRetries = 0;
        setConnectionState(State.LIVE);
      }),
    );
    socket.addEventListener("message", whileCurrent(onSocketMessage));
    socket.addEventListener(
      "close",
      whileCurrent(() => onSocketClose(opened)),
    );
  }

  /** A frame: an answer to one of our sends, or an event as a stream would carry it. */
  function onSocketMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      return; // not ours to show
    }
    if (message === null || typeof message !== "object") return;
    if (message.type === "ack" || message.type === "error") {
      const entry = pendingSends.shift();
      if (entry !== undefined) {
        entry.answer(message.type === "ack" ? null : errorText(message.error));
      }
      return;
    }
    // {"id", "event", "data"}: hand it on the way an EventSource dispatches it.
    const like = { data: String(message.data ?? ""), lastEventId: String(message.id ?? "") };
    if (message.event === "gap") onStreamGap(like);
    else if (message.event === "message") onStreamMessage(like);
  }

  /** The server's explanation, or a generic one. */
  function errorText(text) {
    return typeof text === "string" && text !== "" ? text : "The server refused the message.";
  }

  /** The socket closed: retry after a growing, jittered delay, resuming by id. */
  function onSocketClose(opened) {
    source = null;
    answerPendingSends("The connection closed before the server answered; it may not be sent.");
    if (!opened) socketFailures += 1;
    if (socketFailures >= SOCKET_GIVE_UP_AFTER) {
      setConnectionState(State.CLOSED);
      return;
    }
    setConnectionState(State.RECONNECTING);
    const base = Math.min(SOCKET_RETRY_MS * 2 ** socketRetries, SOCKET_RETRY_MAX_MS);
    socketRetries += 1;
    reconnectTimer = setTimeout(connect, base + Math.random() * base);
  }

  /** Answer every send still waiting with `text` (the socket they went out on is gone). */
  function answerPendingSends(text) {
    for (const entry of pendingSends.splice(0)) entry.answer(text);
  }

  /**
   * Send `text` to the room over the socket; resolves to null once the server
   * acknowledged it, or to why it was not sent.
   */
  function sendOverSocket(text) {
    return new Promise((resolve) => {
      const socket = source;
      if (!(socket instanceof WebSocket) || socket.readyState !== WebSocket.OPEN) {
        resolve(`Not connected to ${serverUrl}. Not sent.`);
        return;
      }
      let settled = false;
      const answer = (result) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(result);
      };
      const timer = setTimeout(
        () => answer(`No answer from ${serverUrl} after ${SEND_TIMEOUT_MS / 1000} s.`),
        SEND_TIMEOUT_MS,
      );
      pendingSends.push({ answer });
      // Sent as typed, like the POST body.
      socket.send(JSON.stringify({ type: "send", message: text }));
    });
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
      if (transport === Transport.WS) {
        const problem = await sendOverSocket(text);
        if (problem !== null) showSendError(problem);
        else ui.input.value = "";
        return;
      }
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

  // ---------------------------------------------------------------- chat: state

  /**
   * The Chat view. One conversation is open at a time, with one EventSource on
   * /conversations/{id}/events. Its events (user, start, delta, done, error) are
   * applied to #transcript as they come; the transcript itself
   * (GET /conversations/{id}) is fetched when the stream first opens, after a
   * `gap`, and after a reply that was only partly known ends (see
   * syncTranscript for how the two are stitched together).
   */
  const chat = {
    /** True once the Chat view was shown: its list and stream start lazily. */
    started: false,
    /** Id of the open conversation, or null (a message sent then creates one). */
    conversationId: null,
    /** The open conversation's EventSource; events from older ones are ignored. */
    source: null,
    /** Its badge state (one of State). */
    state: State.CLOSED,
    /** Last event id seen on this conversation's stream; see `lastEventId` (the room's). */
    lastEventId: null,
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

  /** A request to the server that failed; `message` is fit to show, `status` 0 if no answer. */
  class RequestFailed extends Error {
    constructor(message, status) {
      super(message);
      this.name = "RequestFailed";
      this.status = status;
    }
  }

  /**
   * Call the server's JSON API: `path` is appended to the server URL, `body`
   * (if given) is sent as JSON. Resolves to the parsed answer.
   *
   * Raises RequestFailed for a network error, a timeout, a non-2xx status (with
   * the server's `error` text) or an unreadable body.
   */
  async function requestJson(method, path, body) {
    const init = { method, cache: "no-store", signal: AbortSignal.timeout(SEND_TIMEOUT_MS) };
    if (body !== undefined) {
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${serverUrl}${path}`, init);
    } catch (err) {
      if (!(err instanceof TypeError || err instanceof DOMException)) throw err;
      const timedOut = err instanceof DOMException && err.name === "TimeoutError";
      throw new RequestFailed(
        timedOut
          ? `No answer from ${serverUrl} after ${SEND_TIMEOUT_MS / 1000} s.`
          : `Could not reach ${serverUrl}.`,
        0,
      );
    }
    if (!response.ok) {
      throw new RequestFailed(await describeFailedResponse(response), response.status);
    }
    try {
      return await response.json();
    } catch (err) {
      // SyntaxError: not JSON; TypeError / DOMException: the body was cut off.
      if (!(err instanceof SyntaxError || err instanceof TypeError || err instanceof DOMException)) {
        throw err;
      }
      throw new RequestFailed(`The server's answer to ${method} ${path} was unreadable.`, response.status);
    }
  }

  /** The API path of conversation `id`, plus `rest`. */
  function conversationPath(id, rest = "") {
    return `/conversations/${encodeURIComponent(id)}${rest}`;
  }

  // ---------------------------------------------------------------- chat: remembering

  /** Read the model labels saved by earlier visits (best effort, like the server URL). */
  function loadModelLabels() {
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
  function learnModelLabel(name, label) {
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
  function savedConversation() {
    try {
      return localStorage.getItem(CONVERSATION_KEY_PREFIX + serverUrl);
    } catch (err) {
      return null;
    }
  }

  /** Remember (or, with null, forget) the open conversation for the current server. */
  function saveConversation(id) {
    try {
      if (id === null) localStorage.removeItem(CONVERSATION_KEY_PREFIX + serverUrl);
      else localStorage.setItem(CONVERSATION_KEY_PREFIX + serverUrl, id);
    } catch (err) {
      // Not saved: the address bar's #c= still finds it on reload.
    }
  }

  /** The conversation id in the address bar (#c=<id>), or null. */
  function conversationFromHash() {
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
  function replaceHash(hash) {
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
  function chatHash() {
    return chat.conversationId === null ? "#chat" : `#c=${encodeURIComponent(chat.conversationId)}`;
  }

  // ---------------------------------------------------------------- chat: list

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
      item.append(button);
      items.push(item);
      if (summary.id === chat.conversationId) setChatTitle(title);
    }
    ui.conversationList.replaceChildren(...items);
    markActiveConversation();
  }

  /** Mark the open conversation's list entry with aria-current. */
  function markActiveConversation() {
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
  async function refreshConversationList() {
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
  function setDrawerOpen(open) {
    ui.chatView.dataset.drawer = open ? "open" : "closed";
    ui.conversationsToggle.setAttribute("aria-expanded", String(open));
  }

  /** A click in the list opens that conversation. */
  function onConversationListClick(event) {
    const button = event.target.closest("[data-conversation-id]");
    if (button === null) return;
    clearChatError();
    openConversation(button.dataset.conversationId);
  }

  /** Create a conversation and open it; its id, or null if that failed (the error is shown). */
  async function createConversation() {
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
  async function onNewConversation() {
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

  // ---------------------------------------------------------------- chat: opening

  /** Show `title` above the transcript. */
  function setChatTitle(title) {
    if (ui.chatTitle.textContent !== title) ui.chatTitle.textContent = title;
  }

  /** Forget everything about the open conversation's stream and transcript. */
  function resetConversationState() {
    chatDisconnect();
    chat.generation += 1;
    chat.lastEventId = null;
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
    updateChatComposer();
  }

  /** Open conversation `id`: its stream first, then its transcript (see onChatOpen). */
  function openConversation(id, title = null) {
    setDrawerOpen(false);
    if (id === chat.conversationId && chat.source !== null) return;
    resetConversationState();
    chat.conversationId = id;
    const listed = ui.conversationList.querySelector(
      `[data-conversation-id="${CSS.escape(id)}"] .conversation-title`,
    );
    setChatTitle(title ?? listed?.textContent ?? "Conversation");
    ui.transcript.setAttribute("aria-busy", "true");
    markActiveConversation();
    saveConversation(id);
    if (!ui.chatView.hidden) replaceHash(chatHash());
    chatConnect(false);
  }

  /**
   * Close the open conversation and show `why` (if given). `forget` drops it
   * from storage too: it is gone from the server, not merely left behind.
   */
  function closeConversation(why = null, forget = false) {
    resetConversationState();
    if (forget && chat.conversationId !== null) saveConversation(null);
    chat.conversationId = null;
    setChatTitle("New conversation");
    ui.transcript.removeAttribute("aria-busy");
    setChatState(State.CLOSED);
    ui.chatStatus.hidden = true;
    ui.chatReconnect.hidden = true;
    markActiveConversation();
    if (!ui.chatView.hidden) replaceHash(chatHash());
    if (why !== null) showChatError(why);
  }

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

  // ---------------------------------------------------------------- chat: stream

  /** Show `state` in #chat-status, offering Reconnect when not (about to be) live. */
  function setChatState(state) {
    ui.chatReconnect.hidden = !(state === State.RECONNECTING || state === State.CLOSED);
    if (state === chat.state && ui.chatStatus.textContent === state) return;
    chat.state = state;
    ui.chatStatus.textContent = state;
    ui.chatStatus.dataset.state = state;
  }

  /** Stop listening to the open conversation's stream, if any. */
  function chatDisconnect() {
    if (chat.source !== null) chat.source.close();
    chat.source = null;
  }

  /**
   * (Re)open the open conversation's stream. With `resume`, a new EventSource
   * passes the last id seen as ?last_event_id= (it cannot send Last-Event-ID
   * itself), so the server replays what was missed, as for the room.
   */
  function chatConnect(resume) {
    chatDisconnect();
    const id = chat.conversationId;
    if (id === null) return;
    ui.chatStatus.hidden = false;
    setChatState(State.CONNECTING);
    const query =
      resume && chat.lastEventId !== null
        ? `?last_event_id=${encodeURIComponent(chat.lastEventId)}`
        : "";
    const url = `${serverUrl}${conversationPath(id, "/events")}${query}`;
    let stream;
    try {
      stream = new EventSource(url);
    } catch (err) {
      if (!(err instanceof DOMException)) throw err;
      setChatState(State.CLOSED);
      showChatError(`Cannot open a stream at ${url}.`);
      return;
    }
    chat.source = stream;
    const whileCurrent = (handler) => (event) => {
      if (stream === chat.source) handler(event, stream);
    };
    stream.addEventListener("open", whileCurrent(onChatOpen));
    // The server names one of its events "error", the same type EventSource
    // fires for a failed connection (WHATWG HTML, "Server-sent events"). Only
    // the server's carries data, as a MessageEvent.
    stream.addEventListener(
      "error",
      whileCurrent((event, current) => {
        if (event instanceof MessageEvent) onChatEvent(event);
        else onChatStreamError(event, current);
      }),
    );
    for (const type of CHAT_EVENTS) stream.addEventListener(type, whileCurrent(onChatEvent));
    stream.addEventListener("gap", whileCurrent(onChatGap));
  }

  /**
   * The stream is open, so the server has subscribed us: whatever happens from
   * now on reaches us. Fetch the transcript for what happened before, unless
   * we hold an event id, in which case the server replays (or sends a gap).
   */
  function onChatOpen() {
    setChatState(State.LIVE);
    if (chat.lastEventId === null) syncTranscript();
  }

  /** The stream failed; readyState says whether the browser retries (see onStreamError). */
  function onChatStreamError(_event, stream) {
    if (stream.readyState === EventSource.CONNECTING) {
      setChatState(State.RECONNECTING);
    } else if (stream.readyState === EventSource.CLOSED) {
      setChatState(State.CLOSED);
      // Refused outright (e.g. 404 for an unknown conversation): the transcript
      // request says why, and shows what there is.
      if (!chat.ready) syncTranscript();
    }
  }

  /** A chat event: apply it, or keep it for after the transcript that is being fetched. */
  function onChatEvent(event) {
    if (event.lastEventId !== "") chat.lastEventId = event.lastEventId;
    let payload;
    try {
      payload = JSON.parse(event.data);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      return; // not ours to guess at; the next transcript fetch has the truth
    }
    if (payload === null || typeof payload !== "object" || typeof payload.message_id !== "string") {
      return;
    }
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

  /** Events were missed (e.g. the server restarted): fetch the transcript again. */
  function onChatGap(event) {
    if (event.lastEventId !== "") chat.lastEventId = event.lastEventId;
    // Pieces were missed: what was recorded no longer joins up with what follows.
    chat.pieces.clear();
    // The server follows a gap with every event it still keeps; they are
    // buffered during the fetch and deduplicated against it by message id.
    syncTranscript();
    refreshConversationList();
  }

  /** Apply one stream event to the transcript. */
  function applyChatEvent({ type, payload }) {
    if (type === "user") onChatUser(payload);
    else if (type === "start") onChatStart(payload);
    else if (type === "delta") onChatDelta(payload);
    else if (type === "done") onChatDone(payload);
    else if (type === "error") onChatReplyError(payload);
  }

  /** A user message was posted (from this tab or another): show it once. */
  function onChatUser(payload) {
    if (findMessage(payload.message_id) !== null) return;
    const item = messageElement("user", payload.message_id);
    setContent(item, typeof payload.content === "string" ? payload.content : "");
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
    if (item.dataset.status === "streaming") setReplying(payload.message_id);
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
    const follow = isNearBottomOf(ui.transcript);
    const content = contentOf(item);
    // Opened mid-reply with nothing live to check the saved text against (see
    // stitchReply): this piece may not follow it, so mark the seam until the
    // next fetch tells.
    if (chat.holes.has(payload.message_id) && content.querySelector(".message-hole") === null) {
      content.append(holeMarker());
    }
    content.append(payload.text);
    if (follow) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  /** A reply finished (stop, length, cancelled). */
  function onChatDone(payload) {
    const id = payload.message_id;
    chat.finished.set(id, { done: payload });
    const item = findMessage(id);
    if (item !== null) {
      const reason = payload.finish_reason;
      setStatus(item, reason === "cancelled" || reason === "interrupted" ? reason : "complete");
      setFooter(item, footerText(item.dataset.status, reason, payload));
    }
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
      setStatus(item, "error");
      setErrorText(item, message);
    }
    endReply(id);
  }

  /** After done/error: unlock the composer, and fetch the final text of a partly known reply. */
  function endReply(id) {
    if (chat.replyingId === id) setReplying(null);
    if (chat.partial.delete(id)) syncTranscript();
    refreshConversationList();
  }

  // ---------------------------------------------------------------- chat: transcript

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
  async function syncTranscript() {
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

  /**
   * Bring #transcript in line with the fetched transcript. Items are kept and
   * updated in place by message id, so the live region does not read out the
   * whole conversation again after every fetch. Returns the ids of the
   * streaming replies it stitched: their buffered deltas are already shown.
   */
  function renderTranscript(transcript) {
    if (typeof transcript.title === "string") setChatTitle(transcript.title);
    const messages = Array.isArray(transcript.messages) ? transcript.messages : [];
    const follow = isNearBottomOf(ui.transcript);
    const scrollTop = ui.transcript.scrollTop;
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
        showContent(item, saved, null);
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
        showContent(item, before, after);
        if (after !== null) chat.holes.add(message.id);
        if (transcript.replying === true) replying = message.id;
      } else {
        chat.pieces.delete(message.id);
        showContent(item, saved, null);
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

  /**
   * Show `before`, then (unless `after` is null) a hole and `after`, in a
   * message's text element; untouched if it already shows exactly that. An
   * empty `after` draws no hole (see stitchReply).
   */
  function showContent(item, before, after) {
    const content = contentOf(item);
    const hole = content.querySelector(".message-hole");
    const drawHole = after !== null && after !== "";
    if (hole === null && !drawHole && content.textContent === before) return;
    if (hole !== null && drawHole) {
      let shownBefore = "";
      for (let node = hole.previousSibling; node !== null; node = node.previousSibling) {
        shownBefore = node.textContent + shownBefore;
      }
      let shownAfter = "";
      for (let node = hole.nextSibling; node !== null; node = node.nextSibling) {
        shownAfter += node.textContent;
      }
      if (shownBefore === before && shownAfter === after) return;
    }
    if (!drawHole) {
      content.textContent = before; // textContent only: the text is untrusted
      return;
    }
    content.replaceChildren(before, holeMarker(), after);
  }

  /** The mark where a reply's text may lack pieces (drawn by CSS; not part of textContent). */
  function holeMarker() {
    const marker = document.createElement("span");
    marker.className = "message-hole";
    marker.title = "Part of this reply is still loading";
    return marker;
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

  /** The #transcript item of message `id`, or null. */
  function findMessage(id) {
    return ui.transcript.querySelector(`li[data-message-id="${CSS.escape(id)}"]`);
  }

  /** A message's text element. */
  function contentOf(item) {
    return item.querySelector(".message-content");
  }

  /** True if `list` is scrolled to (or within NEAR_BOTTOM_PX of) its bottom. */
  function isNearBottomOf(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight <= NEAR_BOTTOM_PX;
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
    const follow = isNearBottomOf(ui.transcript);
    ui.transcript.append(item);
    if (follow) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  /** Set a message's text (textContent only: it is untrusted). */
  function setContent(item, text) {
    contentOf(item).textContent = text;
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

  // ---------------------------------------------------------------- chat: composer

  /** Show `text` above the chat composer. */
  function showChatError(text) {
    ui.chatError.textContent = text;
    ui.chatError.hidden = false;
  }

  /** Hide the chat error. */
  function clearChatError() {
    ui.chatError.textContent = "";
    ui.chatError.hidden = true;
  }

  /** Note which reply streams now (null: none), and update the buttons. */
  function setReplying(id) {
    chat.replyingId = id;
    updateChatComposer();
  }

  /** Send is off while a message is posted or a reply streams; Stop shows while one streams. */
  function updateChatComposer() {
    const replying = chat.replyingId !== null;
    ui.chatSend.disabled = chat.posting || replying;
    ui.chatStop.hidden = !replying;
    ui.chatStop.disabled = chat.stopping;
    // readOnly, not disabled: focus stays, see setSending.
    ui.chatInput.readOnly = chat.posting;
    ui.chatComposer.setAttribute("aria-busy", String(chat.posting));
  }

  /** Post the composer's text to the open conversation (creating one if none is open). */
  async function sendChatMessage() {
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
  async function stopReply() {
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
  function onChatKeydown(event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    sendChatMessage();
  }

  // ---------------------------------------------------------------- chat: start

  /** First showing of the Chat view: list the conversations, reopen `wanted` or the last one. */
  function startChat(wanted) {
    if (!chat.started) {
      chat.started = true;
      refreshConversationList();
    }
    const id = wanted ?? (chat.conversationId === null ? savedConversation() : null);
    if (id !== null) openConversation(id);
  }

  /** The server URL was applied: resume on the same server, start over on another. */
  function onChatServerApplied(changed) {
    if (!chat.started) return;
    if (!changed) {
      if (chat.conversationId !== null) chatConnect(true);
      return;
    }
    closeConversation();
    clearChatError();
    ui.conversationList.replaceChildren();
    refreshConversationList();
    const saved = savedConversation();
    if (saved !== null) openConversation(saved);
  }

  /** The hash was edited (or a #c= link followed on this page): open that conversation. */
  function onHashChange() {
    const wanted = conversationFromHash();
    if (wanted !== null) showView("chat", wanted);
    else if (location.hash === "#chat") showView("chat");
  }

  /** Wire up the Chat view's controls (its network work starts with startChat). */
  function wireChat() {
    loadModelLabels();
    ui.chatComposer.addEventListener("submit", (event) => {
      event.preventDefault();
      sendChatMessage();
    });
    ui.chatInput.addEventListener("keydown", onChatKeydown);
    ui.chatInput.addEventListener("input", clearChatError);
    ui.chatStop.addEventListener("click", stopReply);
    ui.newConversation.addEventListener("click", onNewConversation);
    ui.conversationList.addEventListener("click", onConversationListClick);
    ui.conversationsToggle.addEventListener("click", () => {
      setDrawerOpen(ui.chatView.dataset.drawer !== "open");
    });
    ui.chatReconnect.addEventListener("click", () => chatConnect(true));
    window.addEventListener("hashchange", onHashChange);
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
    // The header's badge is the room's stream; the Chat view has its own.
    document.body.dataset.view = name;
    if (name === "chat") {
      startChat(conversationId);
      replaceHash(chatHash());
    } else {
      replaceHash("");
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
    transport = initialTransport();
    showTransport();
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
    wireChat();
    // A #c=<id> (or #chat) address reopens the Chat view; otherwise the room.
    const wanted = conversationFromHash();
    if (wanted !== null || location.hash === "#chat") showView("chat", wanted);
    else showView("room");
    connect();
  }

  start();
})();
