"""Browser end-to-end for replies drawn as Markdown (client/markdown.js).

Real Chromium through Playwright against `python server.py`: the echo model
(which says back what it is sent, so a test controls the reply), or the fake
OpenAI upstream (tests/support/fake_openai.py) for a reply held halfway, to see
its Markdown drawn while it still streams. Every page is watched for uncaught
errors and Content Security Policy violations, and a test fails on any.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from tests.browser.test_chat import LONG_WORDS, _open_chat, _replies, _send
from tests.browser.test_identity import _WATCH_CSP
from tests.browser.test_limits import _fake_upstream
from tests.browser.test_room import FAST_RETRY
from tests.support.browser import token
from tests.support.fake_openai import FakeOpenAI, Script
from tests.support.servers import ServerProcess

# Everything a model (or a message) might try, in one text. None of it may run.
ATTACKS = "\n".join(
    [
        "<img src=x onerror=window.__xss=1>",
        "<script>window.__xss=1</script>",
        "<svg onload=window.__xss=1><circle r=5></circle></svg>",
        "[click me](javascript:window.__xss=1)",
        "<javascript:window.__xss=1>",
        '<a href="javascript:window.__xss=1">raw link</a>',
        "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "![picture](http://127.0.0.1:9/tracker.png)",
        "[safe](https://example.com/page)",
    ]
)
# A reply of every kind of block, in pieces; the fake holds back the last one.
RICH_PIECES = (
    "Some **bold** words.\n\n",
    "- first\n- second\n\n",
    "| name | count |\n|------|------:|\n| apples | 3 |\n\n",
    "```python\ndef answer():\n    return 42\n```\n",
    "\nThat is all.",
)
OpenPage = Callable[..., Page]


@contextlib.contextmanager
def _watched(browser: Browser, url: str) -> Iterator[OpenPage]:
    """Open pages in fresh contexts at `url`; fail on JS errors and CSP violations."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "CSP violation" in message.text or "Content Security Policy" in message.text:
            problems.append(message.text)

    def open_(**context_options: Any) -> Page:
        context = browser.new_context(**context_options)
        context.set_default_timeout(10_000)
        context.add_init_script(_WATCH_CSP)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", on_console)
        page.goto(url)
        _open_chat(page)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == [], "uncaught errors or CSP violations in the page"


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `python server.py` with the echo model, 20 ms a word."""
    db = tmp_path_factory.mktemp("markdown") / "chat.sqlite3"
    server = ServerProcess("--port", "0", "--db", str(db), "--echo-delay", "0.02", *FAST_RETRY)
    yield server
    server.kill()


@pytest.fixture
def open_page(browser: Browser, echo: ServerProcess) -> Iterator[OpenPage]:
    with _watched(browser, f"{echo.url}/") as open_:
        yield open_


def _upstream_server(spawn: Callable[..., ServerProcess], fake: FakeOpenAI) -> ServerProcess:
    """A server whose model is the fake OpenAI upstream."""
    return spawn(
        "--model", "openai", "--model-url", fake.url, "--model-name", "gpt-test", *FAST_RETRY,
        env={"OPENAI_API_KEY": "sk-test"},
    )  # fmt: skip


def test_markdown_is_drawn_while_the_reply_streams(
    browser: Browser, spawn: Callable[..., ServerProcess]
) -> None:
    with _fake_upstream() as fake:
        held = asyncio.Event()
        fake.script = Script(pieces=RICH_PIECES, hold={len(RICH_PIECES) - 1: held})
        server = _upstream_server(spawn, fake)
        with _watched(browser, f"{server.url}/") as open_:
            page = open_()
            _send(page, f"show me markdown {token()}")
            reply = _replies(page).first
            content = reply.locator(".message-content")
            # Every block is drawn before the last piece is even sent.
            expect(content.locator("strong")).to_have_text("bold")
            expect(content.locator("ul > li")).to_have_text(["first", "second"])
            expect(content.locator(".table-scroll > table td")).to_have_text(["apples", "3"])
            expect(content.locator("pre > code.language-python .hljs-keyword")).to_have_text(
                ["def", "return"]
            )
            expect(reply).to_have_attribute("data-status", "streaming")
            expect(reply).to_have_attribute("aria-busy", "true")
            expect(content).not_to_contain_text("That is all.")
            expect(page.locator("#chat-announce")).to_have_text("The assistant is replying.")

            # The fake runs on a loop of its own thread: set its event there.
            _loop_of(fake).call_soon_threadsafe(held.set)
            expect(reply).to_have_attribute("data-status", "complete")
            expect(content.locator("p").last).to_have_text("That is all.")
            expect(reply).not_to_have_attribute("aria-busy", "true")
            expect(page.locator("#chat-announce")).to_have_text("The reply is finished.")
            # Alignment by class: the CSP allows no inline style.
            expect(content.locator("td.align-right")).to_have_text("3")
            assert content.locator("[style]").count() == 0
            expect(content.locator(".code-language")).to_have_text("python")


# Holds the page's animation frames until the test runs them, and counts `delta` events.
_HOLD_FRAMES = """
window.__frames = [];
window.__deltas = 0;
let lastFrame = 0;
window.requestAnimationFrame = (callback) => {
  window.__frames.push(callback);
  lastFrame += 1;
  return lastFrame;
};
window.__runFrames = () => {
  for (const callback of window.__frames.splice(0)) callback(performance.now());
};
const PageEventSource = window.EventSource;
window.EventSource = class extends PageEventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("delta", () => { window.__deltas += 1; });
  }
};
"""


def test_many_deltas_are_drawn_in_one_animation_frame(
    browser: Browser, spawn: Callable[..., ServerProcess]
) -> None:
    pieces = [f"word{index} " for index in range(12)]
    with _fake_upstream() as fake:
        held = asyncio.Event()
        fake.script = Script(pieces=pieces, hold={len(pieces) - 1: held})
        server = _upstream_server(spawn, fake)
        with _watched(browser, f"{server.url}/") as open_:
            page = open_()
            page.context.add_init_script(_HOLD_FRAMES)
            page.reload()
            _open_chat(page)
            _send(page, f"count frames {token()}")
            # Polled on a timer: requestAnimationFrame is the one being held.
            page.wait_for_function(f"() => window.__deltas === {len(pieces) - 1}", polling=50)
            content = _replies(page).first.locator(".message-content")
            # Eleven deltas asked for one frame, and nothing is drawn before it runs.
            assert page.evaluate("window.__frames.length") == 1
            assert content.evaluate("node => node.textContent") == ""
            page.evaluate("window.__runFrames()")
            expected = "".join(pieces[:-1]).rstrip()
            assert content.evaluate("node => node.textContent") == expected
            assert page.evaluate("window.__frames.length") == 0
            _loop_of(fake).call_soon_threadsafe(held.set)
            # The last piece's frame is not run: `done` draws the final text at once.
            expect(_replies(page).first).to_have_attribute("data-status", "complete")
            expect(content).to_have_text("".join(pieces).rstrip())


def _loop_of(fake: FakeOpenAI) -> asyncio.AbstractEventLoop:
    """The event loop the fake upstream runs on (its server's)."""
    assert fake._server is not None
    return fake._server.get_loop()


def _assert_nothing_ran_or_loaded(page: Page) -> None:
    """No payload ran, and the transcript holds nothing that could run or fetch."""
    assert page.evaluate("window.__xss") is None
    transcript = page.locator("#transcript")
    for selector in ("img", "script", "svg", "iframe", "object", "style", "[style]"):
        assert transcript.locator(selector).count() == 0, selector
    for attribute in ("onerror", "onload", "onclick"):
        assert transcript.locator(f"[{attribute}]").count() == 0, attribute
    for scheme in ("javascript:", "data:", "vbscript:"):
        assert transcript.locator(f'a[href^="{scheme}" i]').count() == 0, scheme


def test_html_scripts_and_dangerous_links_in_a_message_and_its_reply_run_nothing(
    open_page: OpenPage,
) -> None:
    page = open_page()
    _send(page, ATTACKS)
    reply = _replies(page).first
    expect(reply).to_have_attribute("data-status", "complete")
    # The user's message is plain text, character for character.
    user = page.locator('#transcript li[data-role="user"] .message-content')
    assert user.evaluate("node => node.textContent") == ATTACKS
    assert user.locator("*").count() == 0
    content = reply.locator(".message-content")
    # Markdown-escaped, so still readable as text.
    expect(content).to_contain_text("<script>window.__xss=1</script>")
    expect(content).to_contain_text("<img src=x onerror=window.__xss=1>")
    # Clicking where the javascript: links are runs nothing either.
    content.get_by_text("click me", exact=False).click()
    content.get_by_text("raw link", exact=False).click()
    _assert_nothing_ran_or_loaded(page)
    # Only http(s) links are left (an image is a link to it, never loaded), and
    # each opens in a new tab that gets no hold on this page.
    links = content.locator("a")
    expect(links).to_have_text(["picture", "safe"])
    hrefs = links.evaluate_all("links => links.map(link => link.getAttribute('href'))")
    assert hrefs == ["http://127.0.0.1:9/tracker.png", "https://example.com/page"]
    for index in range(2):
        expect(links.nth(index)).to_have_attribute("target", "_blank")
        expect(links.nth(index)).to_have_attribute("rel", "noopener noreferrer")


def test_copy_puts_a_code_block_on_the_clipboard(open_page: OpenPage) -> None:
    page = open_page(permissions=["clipboard-read", "clipboard-write"])
    code = f'const answer = "{token()}";\nconsole.log(answer);'
    _send(page, f"copy this:\n```js\n{code}\n```")
    reply = _replies(page).first
    expect(reply).to_have_attribute("data-status", "complete")
    copy = reply.get_by_role("button", name="Copy js code")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"{code}\n"
    expect(copy).to_have_text("Copy")


def test_enter_sends_shift_enter_breaks_the_line_and_escape_stops_the_reply(
    open_page: OpenPage,
) -> None:
    page = open_page()
    box = page.locator("#chat-input")
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")
    expect(page.locator("#transcript li[data-message-id]")).to_have_count(0)
    box.press("Enter")
    expect(box).to_have_value("")
    user = page.locator('#transcript li[data-role="user"] .message-content').first
    expect(user).to_have_text("first line\nsecond line")
    expect(_replies(page).first).to_have_attribute("data-status", "complete")

    _send(page, f"long {token()} {LONG_WORDS}")
    reply = _replies(page).nth(1)
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(page.locator("#chat-stop")).to_be_visible()
    box.press("Escape")
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#chat-announce")).to_have_text("The reply was stopped.")
    expect(page.locator("#chat-stop")).to_be_hidden()


def test_a_phone_scrolls_wide_tables_and_code_inside_their_boxes_not_the_page(
    open_page: OpenPage,
) -> None:
    page = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    columns = [f"column{i}_with_a_long_heading" for i in range(8)]
    table = "\n".join(
        [
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
            "| " + " | ".join("value" for _ in columns) + " |",
        ]
    )
    long_line = "x = [" + ", ".join(str(n) for n in range(80)) + "]"
    _send(page, f"wide {token()}\n\n{table}\n\n```python\n{long_line}\n```\n\n{'word ' * 60}")
    reply = _replies(page).first
    expect(reply).to_have_attribute("data-status", "complete")
    sizes = page.evaluate(
        """() => {
               const box = (selector) => {
                   const node = document.querySelector(selector);
                   return [node.scrollWidth, node.clientWidth];
               };
               return {
                   page: [document.documentElement.scrollWidth,
                          document.documentElement.clientWidth],
                   table: box("#transcript .table-scroll"),
                   code: box("#transcript .code-block pre > code"),
               };
           }"""
    )
    page_width, page_client = sizes["page"]
    assert page_width <= page_client, sizes
    assert page_client == 390, sizes
    # Wider than the screen, so they scroll inside their own boxes.
    for name in ("table", "code"):
        inner, outer = sizes[name]
        assert inner > outer, (name, sizes)
        assert outer < 390, (name, sizes)
