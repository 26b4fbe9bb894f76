/**
 * A transcript message's text element (.message-content). A user's message is
 * plain text (textContent only). An assistant's reply is Markdown (markdown.js),
 * kept here as its source text and drawn again from it: at once when a fetched
 * transcript sets it, and at most once per animation frame while deltas add to
 * it, however many arrive in that frame.
 *
 * A reply opened mid-stream may lack pieces (see stitchReply in transcript.js):
 * its source is then `before` a hole and `after` it, drawn as two renderings
 * with the hole's mark between them.
 */

import { isNearBottom, ui } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

/** How long a Copy button says "Copied" (or "Copy failed") before it reads Copy again. */
const COPY_FEEDBACK_MS = 1500;

/** Each reply's source, {before, after}: after is null without a hole, "" for a hole not yet drawn. */
const sources = new WeakMap();
/** Replies changed since they were last drawn, drawn at the next animation frame. */
const pending = new Set();
let frame = 0;

/** The message's text element. */
function contentOf(item) {
  return item.querySelector(".message-content");
}

/** A reply's source; an empty one if it has none yet. */
function sourceOf(item) {
  return sources.get(item) ?? { before: "", after: null };
}

/** Show a user's message: plain text, never parsed. */
export function showUserText(item, text) {
  const content = contentOf(item);
  if (content.textContent !== text) content.textContent = text;
}

/**
 * Show a reply's text `before`, then (unless `after` is null) a hole and
 * `after`; drawn now, untouched if that is what it already shows.
 */
export function showReplyText(item, before, after) {
  const source = sourceOf(item);
  if (sources.has(item) && source.before === before && source.after === after) return;
  sources.set(item, { before, after });
  drawNow(item);
}

/** Add a delta to a reply, after a hole if `hole` (or one it has); drawn at the next frame. */
export function appendReplyText(item, text, hole) {
  const { before, after } = sourceOf(item);
  if (after !== null) sources.set(item, { before, after: after + text });
  else if (hole) sources.set(item, { before, after: text });
  else sources.set(item, { before: before + text, after: null });
  pending.add(item);
  if (frame === 0) frame = requestAnimationFrame(drawPending);
}

/** Draw a reply now if it waits for a frame (its `done` came: the final text shows at once). */
export function flushReplyText(item) {
  if (pending.has(item)) drawNow(item);
}

/** The animation frame: draw every reply changed since the last one. */
function drawPending() {
  frame = 0;
  for (const item of [...pending]) drawNow(item);
}

/** Draw a reply from its source, following it down if the reader was at the bottom. */
function drawNow(item) {
  pending.delete(item);
  const { before, after } = sourceOf(item);
  const follow = isNearBottom(ui.transcript);
  const content = contentOf(item);
  if (after === null || after === "") content.replaceChildren(renderMarkdown(before));
  else content.replaceChildren(renderMarkdown(before), holeMarker(), renderMarkdown(after));
  if (follow) ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

/** The mark where a reply's text may lack pieces (drawn by CSS; not part of textContent). */
function holeMarker() {
  const marker = document.createElement("span");
  marker.className = "message-hole";
  marker.title = "Part of this reply is still loading";
  return marker;
}

/** Copy buttons of code blocks: one listener on #transcript, as blocks are drawn again and again. */
export function wireCodeCopy() {
  ui.transcript.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest(".code-copy") : null;
    if (button === null) return;
    const code = button.closest(".code-block")?.querySelector("pre > code");
    if (code === null || code === undefined) return;
    copyText(button, code.textContent);
  });
}

/** Put `text` on the clipboard; the button says whether that worked. */
async function copyText(button, text) {
  let said = "Copied";
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {
    if (!(err instanceof DOMException)) throw err;
    said = "Copy failed";
  }
  button.textContent = said;
  setTimeout(() => {
    if (button.isConnected) button.textContent = "Copy";
  }, COPY_FEEDBACK_MS);
}
