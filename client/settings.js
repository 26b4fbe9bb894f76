/**
 * Which server the page talks to, and over which transport the room reaches it:
 * read from the address bar and this browser's storage, shown in the header,
 * changed in the Settings panel. A ?server= on another origin is only used once
 * the user accepts it (askAboutServer): a link must not send their messages
 * elsewhere unasked.
 */

import { ui } from "./dom.js";

/** Server used when the page is not served over http(s), e.g. opened from disk. */
const FILE_PAGE_SERVER_URL = "http://127.0.0.1:3000";
/** localStorage key of the server URL the user applied. */
const STORAGE_KEY = "ssechat.serverUrl";
/** localStorage key of the room's transport ("sse" or "ws"). */
const TRANSPORT_KEY = "ssechat.transport";

/** How the room reaches the page; the values are what localStorage and ?transport= hold. */
export const Transport = Object.freeze({ SSE: "sse", WS: "ws" });
/** What #transport-label shows for each. */
export const TRANSPORT_LABELS = Object.freeze({ sse: "SSE", ws: "WebSocket" });

/** Base URL of the server, no trailing slash; endpoints are appended to it. */
export let serverUrl = "";

/** Talk to `url` from now on (the callers reconnect), and say so in the header. */
export function setServerUrl(url) {
  serverUrl = url;
  ui.serverLabel.textContent = url.replace(/^https?:\/\//, "");
  ui.serverLabel.title = `This page talks to ${url}`;
  ui.serverLabel.dataset.server = url;
}

/** Default server: this page's own origin, or the local dev server for file:// pages. */
export function defaultServerUrl() {
  const servedOverHttp = location.protocol === "http:" || location.protocol === "https:";
  return servedOverHttp ? location.origin : FILE_PAGE_SERVER_URL;
}

/** Turn user text into a base URL ("http(s)://host[:port][/path]"), or null if unusable. */
export function parseServerUrl(raw) {
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
export function saveServerUrl(url) {
  try {
    if (url === null) localStorage.removeItem(STORAGE_KEY);
    else localStorage.setItem(STORAGE_KEY, url);
  } catch (err) {
    // Not saved: the setting still applies until the page is reloaded.
  }
}

/** The ?server= of the address bar as a base URL, or null (an unusable one is reported). */
export function queryServerUrl() {
  const fromQuery = new URLSearchParams(location.search).get("server");
  if (fromQuery === null) return null;
  const parsed = parseServerUrl(fromQuery);
  if (parsed === null) showSettingsError(`Ignoring ?server=${fromQuery}: not an http(s) URL.`);
  return parsed;
}

/** True if `url` is on this page's own origin (then nothing leaves for elsewhere). */
export function isOwnOrigin(url) {
  return new URL(url).origin === location.origin;
}

/**
 * Pick the starting server URL: `fromQuery` (the ?server=, see queryServerUrl)
 * if it is on this page's origin, else the saved setting, else the default. A
 * ?server= on another origin is not used here: the page asks first
 * (askAboutServer) and meanwhile talks to this one.
 */
export function initialServerUrl(fromQuery) {
  if (fromQuery !== null && isOwnOrigin(fromQuery)) return fromQuery;
  const saved = loadSavedServerUrl();
  const parsedSaved = saved === null ? null : parseServerUrl(saved);
  return parsedSaved ?? defaultServerUrl();
}

/**
 * Ask whether to talk to `url`, a server on another origin named by ?server=:
 * a banner shows its origin with Accept and Refuse. Accept calls `onAccept(url)`;
 * Refuse drops ?server= from the address bar, so a reload does not ask again.
 */
export function askAboutServer(url, onAccept) {
  ui.serverPromptOrigin.textContent = new URL(url).origin;
  ui.serverPrompt.hidden = false;
  const answer = (accepted) => {
    ui.serverPrompt.hidden = true;
    ui.serverAccept.removeEventListener("click", accept);
    ui.serverRefuse.removeEventListener("click", refuse);
    if (accepted) onAccept(url);
    else updateQueryParam(null);
  };
  const accept = () => answer(true);
  const refuse = () => answer(false);
  ui.serverAccept.addEventListener("click", accept);
  ui.serverRefuse.addEventListener("click", refuse);
  // Refuse has the focus: a stray Enter keeps the page on its own server.
  ui.serverRefuse.focus();
}

/** Hide the question of askAboutServer unanswered (the user chose a server in Settings). */
export function dismissServerQuestion() {
  ui.serverPrompt.hidden = true;
}

/** Keep an existing ?server= in the address bar in step, so a reload keeps the choice. */
export function updateQueryParam(url) {
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
export function showSettingsError(text) {
  ui.serverError.textContent = text;
  ui.serverError.hidden = false;
  if (ui.settingsDetails !== null) ui.settingsDetails.open = true;
}

/** Hide the settings error. */
export function clearSettingsError() {
  ui.serverError.textContent = "";
  ui.serverError.hidden = true;
}

/** Pick the starting transport: ?transport= beats the saved setting beats SSE. */
export function initialTransport() {
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
export function saveTransport(value) {
  try {
    localStorage.setItem(TRANSPORT_KEY, value);
  } catch (err) {
    // Not saved: the choice still applies until the page is reloaded.
  }
}

