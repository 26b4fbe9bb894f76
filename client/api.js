/**
 * The client of the server's HTTP API: JSON requests with a timeout, and
 * failures explained in words fit to show.
 */

import { serverUrl } from "./settings.js";

/** A send that takes longer is abandoned so the button does not stay disabled. */
export const SEND_TIMEOUT_MS = 15000;

/**
 * Read a failed response: the server's JSON `error` (else the HTTP status) and,
 * for a refusal over a limit (429), the whole seconds to wait, from the body's
 * `retry_after` or the Retry-After header (null when neither says).
 */
export async function readFailedResponse(response) {
  let body = "";
  try {
    body = await response.text();
  } catch (err) {
    // The body was cut off; the status line alone still explains something.
  }
  let text = null;
  let retryAfter = null;
  try {
    const parsed = JSON.parse(body);
    if (parsed !== null && typeof parsed.error === "string" && parsed.error !== "") text = parsed.error;
    if (Number.isFinite(parsed?.retry_after)) retryAfter = Math.max(1, Math.ceil(parsed.retry_after));
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
  }
  if (retryAfter === null && response.status === 429) {
    // Retry-After is whole seconds here (the server never sends an HTTP date).
    const header = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    if (Number.isFinite(header)) retryAfter = Math.max(1, header);
  }
  if (text === null) {
    const reason = response.statusText ? ` ${response.statusText}` : "";
    text = `The server answered ${response.status}${reason}.`;
  }
  return { text: withRetry(text, retryAfter), retryAfter };
}

/** Explain a failed response in words fit to show (see readFailedResponse). */
export async function describeFailedResponse(response) {
  return (await readFailedResponse(response)).text;
}

/** `text` (the server's reason, lower case) as a sentence, saying when to try again if known. */
function withRetry(text, retryAfter) {
  if (retryAfter === null) return text;
  const sentence = text.charAt(0).toUpperCase() + text.slice(1).replace(/\.$/, "");
  return `${sentence}. Try again in ${retryAfter} s.`;
}

/** Explain why fetch() itself rejected. */
export function describeFetchFailure(err) {
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return `No answer from ${serverUrl} after ${SEND_TIMEOUT_MS / 1000} s. Not sent.`;
  }
  // fetch() rejects with TypeError for network errors and CORS refusals alike.
  return `Could not reach ${serverUrl}. Not sent.`;
}

/**
 * A request to the server that failed; `message` is fit to show, `status` 0 if
 * no answer, `retryAfter` the seconds a refusal over a limit (429) asks to wait,
 * else null.
 */
export class RequestFailed extends Error {
  constructor(message, status, retryAfter = null) {
    super(message);
    this.name = "RequestFailed";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/**
 * Call the server's JSON API: `path` is appended to the server URL, `body`
 * (if given) is sent as JSON. Resolves to the parsed answer.
 *
 * Raises RequestFailed for a network error, a timeout, a non-2xx status (with
 * the server's `error` text, and when to try again after a 429) or an
 * unreadable body.
 */
export async function requestJson(method, path, body) {
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
    const { text, retryAfter } = await readFailedResponse(response);
    throw new RequestFailed(text, response.status, retryAfter);
  }
  // 204 No Content (DELETE): nothing to parse.
  if (response.status === 204) return null;
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
export function conversationPath(id, rest = "") {
  return `/conversations/${encodeURIComponent(id)}${rest}`;
}
