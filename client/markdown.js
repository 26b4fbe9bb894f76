/**
 * An assistant reply's Markdown, made into safe DOM: markdown-it (raw HTML off,
 * images off) renders it, highlight.js colours fenced code, DOMPurify keeps only
 * the elements and attributes Markdown needs, and a last pass makes links open
 * in a new tab without handing over this page. The libraries are vendored
 * (client/vendor/, `make vendor`), served from this origin like the page.
 *
 * What a model writes must not run, load or link anything dangerous here:
 * no script, no inline style or event handler, no <img>/<svg>/<iframe> (a
 * model must not make the browser fetch a URL), and no link but http(s) and
 * mailto. Each rule is enforced twice (markdown-it's output, then DOMPurify).
 */

import MarkdownIt from "./vendor/markdown-it.mjs";
import DOMPurify from "./vendor/purify.mjs";
import hljs from "./vendor/highlight.mjs";

/** Code longer than this is not auto-detected (every language is tried, on every frame). */
const AUTO_DETECT_MAX_CHARS = 4000;

/** The only link schemes that survive; relative links and everything else become text. */
const SAFE_LINK = /^(?:https?:|mailto:)/i;

/** What DOMPurify keeps: what markdown-it emits for Markdown (no raw HTML), and no more. */
const PURIFY_CONFIG = Object.freeze({
  ALLOWED_TAGS: [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th",
    "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "title", "class", "start"],
  ALLOWED_URI_REGEXP: SAFE_LINK,
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
});

const markdown = new MarkdownIt({ html: false, linkify: true, breaks: true, highlight });
// No images: a reply must not make the browser fetch anything (the CSP's
// img-src would stop another origin, but not a request to ours).
markdown.disable("image");
markdown.core.ruler.push("align_classes", alignClasses);

/** markdown-it's `highlight` hook: the code as highlight.js HTML, or "" (markdown-it escapes it). */
function highlight(code, lang) {
  try {
    if (lang !== "" && hljs.getLanguage(lang) !== undefined) {
      return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
    }
    if (lang === "" && code.length <= AUTO_DETECT_MAX_CHARS) return hljs.highlightAuto(code).value;
  } catch {
    // A grammar that throws leaves the code plain; the reply still shows.
  }
  return "";
}

/**
 * Table cells' alignment as a class instead of markdown-it's style="text-align:…":
 * the CSP (style-src 'self') forbids inline styles, and DOMPurify drops them.
 */
function alignClasses(state) {
  for (const token of state.tokens) {
    if (token.type !== "th_open" && token.type !== "td_open") continue;
    const style = token.attrGet("style");
    if (style === null) continue;
    token.attrs = token.attrs.filter(([name]) => name !== "style");
    const align = /text-align:\s*(left|right|center)/.exec(style);
    if (align !== null) token.attrJoin("class", `align-${align[1]}`);
  }
}

/** `source` (untrusted Markdown) as a sanitized fragment of this document. */
export function renderMarkdown(source) {
  if (source === "") return document.createDocumentFragment();
  const fragment = DOMPurify.sanitize(markdown.render(source), PURIFY_CONFIG);
  dropBlockSeparators(fragment);
  for (const link of fragment.querySelectorAll("a")) secureLink(link);
  for (const table of fragment.querySelectorAll("table")) wrap(table, "table-scroll");
  for (const pre of fragment.querySelectorAll("pre")) decorateCode(pre);
  return fragment;
}

/**
 * Drop the newlines markdown-it writes between top-level blocks: layout comes
 * from the blocks, and without them a one-paragraph reply's textContent is
 * exactly its text.
 */
function dropBlockSeparators(fragment) {
  for (const node of [...fragment.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && node.textContent.trim() === "") node.remove();
  }
}

/** Keep a link only to http(s) or mailto, opening in a new tab that gets no hold on this page. */
function secureLink(link) {
  const href = link.getAttribute("href");
  if (href === null || !SAFE_LINK.test(href.trim())) {
    link.replaceWith(...link.childNodes);
    return;
  }
  link.target = "_blank";
  link.rel = "noopener noreferrer";
}

/** Put `element` inside a new <div class=`className`>, where it stood. */
function wrap(element, className) {
  const box = document.createElement("div");
  box.className = className;
  element.replaceWith(box);
  box.append(element);
  return box;
}

/** A code block: highlight.js's theme class, scrolling in its box, a language label and Copy. */
function decorateCode(pre) {
  const code = pre.querySelector(":scope > code");
  if (code === null) return;
  code.classList.add("hljs");
  const box = wrap(pre, "code-block");
  const bar = document.createElement("div");
  bar.className = "code-bar";
  const language = /(?:^|\s)language-([\w#+.-]+)/.exec(code.className)?.[1] ?? "";
  const label = document.createElement("span");
  label.className = "code-language";
  label.textContent = language;
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "button button-small code-copy";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", language === "" ? "Copy code" : `Copy ${language} code`);
  bar.append(label, copy);
  box.prepend(bar);
}
