/**
 * Who this browser is to the server: the identity bar in the header. Shows
 * GET /me's name, renames it (PATCH /me), and, when the server has accounts,
 * signs up, in and out (/auth/*). Other modules hear of a change of identity
 * through onIdentityChanged, and streams told `reauth` renew through
 * renewIdentity.
 */

import { RequestFailed, requestJson } from "./api.js";
import { ui } from "./dom.js";
import { serverUrl } from "./settings.js";

/** How an identity changed, as onIdentityChanged's listeners are told. */
export const Change = Object.freeze({
  SIGNED_IN: "signed-in",
  SIGNED_OUT: "signed-out",
  /** A renewal (after `reauth`) found someone else: the old session is gone. */
  REPLACED: "replaced",
});

/** The identity GET /me last gave ({id, name, kind}), or null before (or without) one. */
let current = null;
/** True when the server has accounts (`--auth accounts`): the /auth routes exist. */
let accounts = false;
/** Listeners of onIdentityChanged. */
const listeners = [];

/** Resolves once the first GET /me answered (or failed): see whenIdentityKnown. */
let known = null;

/** The owner key of an identity, "kind:id" as the server names it; "" for none. */
function ownerOf(who) {
  return who === null ? "" : `${who.kind}:${who.id}`;
}

/** Call `callback(change, identity)` whenever this browser becomes someone else. */
export function onIdentityChanged(callback) {
  listeners.push(callback);
}

/**
 * Resolves once the page knows who it is. Requests that make a guest wait for
 * it: two requests without a cookie at once would each make a different guest.
 */
export function whenIdentityKnown() {
  return known ?? Promise.resolve();
}

/** The identity shown now, or null. */
export function currentIdentity() {
  return current;
}

// ---------------------------------------------------------------- rendering

/** Show `who` in the bar, and the forms that fit it. */
function show(who) {
  current = who;
  ui.identityName.textContent = who === null ? "not signed in" : who.name;
  ui.identity.dataset.kind = who === null ? "none" : who.kind;
  if (document.activeElement !== ui.displayName) ui.displayName.value = who?.name ?? "";
  // A host application's token carries the name: the server refuses a rename (403).
  ui.renameForm.hidden = who === null || who.kind === "jwt";
  ui.authForm.hidden = !accounts || who?.kind !== "guest";
  ui.signOut.hidden = who?.kind !== "account";
}

/** Show `text` under a form (null hides it). */
function showError(element, text) {
  element.textContent = text ?? "";
  element.hidden = text === null;
}

/** Tell the listeners. */
function changed(change) {
  for (const callback of listeners) callback(change, current);
}

// ---------------------------------------------------------------- requests

/** GET /me: who the server says we are (a guest without a cookie gets one), or null. */
async function fetchMe() {
  try {
    return await requestJson("GET", "/me");
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    return null;
  }
}

/**
 * Does the server have accounts? `OPTIONS /auth/login` answers 204 when the
 * route exists and 404 when it does not (sse/app/router.py): it has no body,
 * creates no guest and changes nothing, so asking costs nothing.
 */
async function hasAccounts() {
  try {
    const response = await fetch(`${serverUrl}/auth/login`, { method: "OPTIONS", cache: "no-store" });
    return response.ok;
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return false;
  }
}

/** Find out who we are and whether the server has accounts; show it. */
export function loadIdentity() {
  known = (async () => {
    // One after the other: /me may set the cookie; nothing else goes out meanwhile.
    const who = await fetchMe();
    accounts = who?.kind === "account" || (who !== null && (await hasAccounts()));
    show(who);
  })();
  return known;
}

/**
 * A stream was told `reauth`: its credential expired or was revoked. Asks
 * GET /me again, which gives a guest a fresh cookie. Resolves to "same" (go
 * on as before), "replaced" (now someone else: the listeners were told, and a
 * lost account's sign-in form is open) or "failed" (no identity to be had).
 */
export async function renewIdentity() {
  const before = current;
  const who = await fetchMe();
  if (who === null) {
    show(null);
    return "failed";
  }
  const same = ownerOf(who) === ownerOf(before);
  show(who);
  if (same) return "same";
  if (before?.kind === "account") {
    ui.identity.open = true;
    showError(ui.authError, "Your session has ended. Sign in again.");
  }
  changed(Change.REPLACED);
  return "replaced";
}

// ---------------------------------------------------------------- forms

/** Save the display name (PATCH /me). */
async function onRename(event) {
  event.preventDefault();
  showError(ui.renameError, null);
  const name = ui.displayName.value.trim();
  if (name === "") {
    showError(ui.renameError, "The name must not be empty.");
    return;
  }
  try {
    show(await requestJson("PATCH", "/me", { name }));
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    showError(ui.renameError, `Not renamed: ${err.message}`);
  }
}

/** Sign in or up (POST /auth/login or /auth/signup), as the pressed button says. */
async function onAuth(event) {
  event.preventDefault();
  showError(ui.authError, null);
  const signUp = event.submitter?.value === "signup";
  const username = ui.authUsername.value.trim();
  const password = ui.authPassword.value;
  if (username === "" || password === "") {
    showError(ui.authError, "Enter a username and a password.");
    return;
  }
  for (const button of ui.authForm.querySelectorAll("button")) button.disabled = true;
  try {
    const who = await requestJson("POST", signUp ? "/auth/signup" : "/auth/login", { username, password });
    ui.authPassword.value = "";
    show({ id: who.id, name: who.name, kind: who.kind });
    changed(Change.SIGNED_IN);
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    const verb = signUp ? "Not signed up" : "Not signed in";
    showError(ui.authError, `${verb}: ${err.message}`);
  } finally {
    for (const button of ui.authForm.querySelectorAll("button")) button.disabled = false;
  }
}

/** Sign out (POST /auth/logout), then become a guest (GET /me gives a new one). */
async function onSignOut() {
  ui.signOut.disabled = true;
  try {
    await requestJson("POST", "/auth/logout");
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    // The cookie is cleared only by a successful answer: still signed in.
    showError(ui.authError, `Not signed out: ${err.message}`);
    return;
  } finally {
    ui.signOut.disabled = false;
  }
  show(await fetchMe());
  changed(Change.SIGNED_OUT);
}

/** Wire up the identity bar and ask who we are. */
export function wireIdentity() {
  ui.renameForm.addEventListener("submit", onRename);
  ui.authForm.addEventListener("submit", onAuth);
  ui.signOut.addEventListener("click", onSignOut);
  ui.displayName.addEventListener("input", () => showError(ui.renameError, null));
  loadIdentity();
}
