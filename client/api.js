/**
 * The client of the server's HTTP API: JSON requests with a timeout, and
 * failures explained in words fit to show.
 */

import { serverUrl } from "./settings.js";

/** A send that takes longer is abandoned so the button does not stay disabled. */
export const SEND_TIMEOUT_MS = 15000;

/** Explain a failed response: the server's JSON `error`, else the HTTP status. */
export async function describeFailedResponse(response) {
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
export function describeFetchFailure(err) {
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return `No answer from ${serverUrl} after ${SEND_TIMEOUT_MS / 1000} s. Not sent.`;
  }
  // fetch() rejects with TypeError for network errors and CORS refusals alike.
  return `Could not reach ${serverUrl}. Not sent.`;
}

/** A request to the server that failed; `message` is fit to show, `status` 0 if no answer. */
export class RequestFailed extends Error {
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
    throw new RequestFailed(await describeFailedResponse(response), response.status);
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
