"""Browser end-to-end: Debian's Chromium, driven by Playwright, against `python server.py`.

Each test opens its own browser context (own storage, own connections); the
server and the browser are shared by the module. Messages carry a unique token
so a test never mistakes another test's message for its own.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import OpenPage, page_opener
from tests.support.browser import token
from tests.support.servers import ROOT, ServerProcess

# Browsers reconnect after `retry:` ms; the defaults (3-5 s) would make the
# reconnect tests slow.
FAST_RETRY = ("--retry-ms", "200", "--retry-jitter-ms", "100")
SENT = "Message sent successfully!"
# Long enough for a server start plus a few reconnect attempts.
RECONNECT_TIMEOUT_MS = 15_000


def _message_texts(page: Page) -> list[str]:
    """The exact textContent of every listed chat message (not joins or notices)."""
    texts: list[str] = page.locator("#messages li.message").evaluate_all(
        "items => items.map(item => item.textContent)"
    )
    return texts


def _event_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("#messages li").evaluate_all(
        "items => items.map(item => item.dataset.eventId)"
    )
    return ids


def _wait_for_message(page: Page, text: str) -> None:
    """Wait until a `li.message` has exactly `text` as its textContent (no whitespace folding)."""
    page.wait_for_function(
        """text => [...document.querySelectorAll("#messages li.message")]
                     .some(item => item.textContent === text)""",
        arg=text,
    )


def _post(page: Page, base_url: str, message: str) -> None:
    """POST a message from outside the page's UI (Playwright's own HTTP client)."""
    response = page.request.post(f"{base_url}/send-message", data={"message": message})
    assert response.status == 200
    assert response.text() == SENT


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `python server.py` on a free port for the whole module (like `spawn`, own database)."""
    db = tmp_path_factory.mktemp("chat") / "chat.sqlite3"
    server = ServerProcess("--port", "0", "--db", str(db), *FAST_RETRY)
    yield server
    server.kill()


@pytest.fixture
def open_page(browser: Browser, chat: ServerProcess) -> Iterator[OpenPage]:
    """Open a page in a fresh context (the chat page by default); fail on uncaught JS errors."""
    with page_opener(browser, f"{chat.url}/#room") as open_:
        yield open_


class _OtherOrigin:
    """A second local origin (another port), serving fixed pages from memory."""

    def __init__(self, files: dict[str, tuple[str, bytes]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = files.get(self.path.split("?", 1)[0])
                if found is None:
                    self.send_error(404)
                    return
                content_type, body = found
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test output is no place for an access log

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


# The article's client, unchanged but for the server's address, plus a way for
# the test to call its fetch() and read the reply.
_ARTICLE_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>article client</title>
<ul id="messages"></ul>
<script>
  const es = new EventSource("SERVER/events");
  es.onmessage = e => {
    const li = document.createElement("li");
    li.textContent = e.data;
    document.getElementById("messages").append(li);
  };
  window.sendMessage = message =>
    fetch("SERVER/send-message", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({message: message}),
    }).then(response => response.text());
</script>
"""


@pytest.fixture
def other_origin(chat: ServerProcess) -> Iterator[_OtherOrigin]:
    """The article's page at /article.html and our own client at /app/, on another port."""
    client = ROOT / "client"
    files = {
        "/article.html": (
            "text/html; charset=utf-8",
            _ARTICLE_PAGE.replace("SERVER", chat.url).encode(),
        ),
        "/app/": ("text/html; charset=utf-8", (client / "index.html").read_bytes()),
    }
    # Every module and stylesheet the page loads, as sse/static.py serves them.
    patterns = [("text/javascript", "*.js"), ("text/css", "*.css")]
    patterns += [("text/javascript", "vendor/*.mjs"), ("text/css", "vendor/*.css")]
    for kind, pattern in patterns:
        for path in sorted(client.glob(pattern)):
            name = path.relative_to(client).as_posix()
            files[f"/app/{name}"] = (f"{kind}; charset=utf-8", path.read_bytes())
    server = _OtherOrigin(files)
    yield server
    server.close()


def test_page_loads_and_the_badge_goes_live_with_our_own_join_listed(open_page: OpenPage) -> None:
    page = open_page()
    expect(page).to_have_title("ssechat")
    status = page.locator("#status")
    expect(status).to_have_text("live")
    expect(status).to_have_attribute("data-state", "live")
    expect(page.locator("#reconnect")).to_be_hidden()
    # The server announces every new stream, ours included.
    expect(page.locator("#messages li.join")).to_have_count(1)
    expect(page.locator("#messages li.join")).to_have_attribute("data-event-id", re.compile(r".+"))


def test_message_sent_through_the_ui_reaches_every_page_and_clears_the_input(
    open_page: OpenPage,
) -> None:
    sender = open_page()
    reader = open_page()
    for page in (sender, reader):
        expect(page.locator("#status")).to_have_text("live")
    text = f"hello from A {token()}"
    sender.locator("#message-input").fill(text)
    sender.locator("#send-button").click()
    expect(sender.locator("#message-input")).to_have_value("")
    expect(sender.locator("#send-error")).to_be_hidden()
    for page in (reader, sender):
        _wait_for_message(page, text)
        assert _message_texts(page) == [text]


def test_enter_sends_shift_enter_breaks_the_line_and_text_arrives_verbatim(
    open_page: OpenPage, chat: ServerProcess
) -> None:
    page = open_page()
    expect(page.locator("#status")).to_have_text("live")
    box = page.locator("#message-input")
    word = token()

    box.press_sequentially(f"first line {word}")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    multi_line = f"first line {word}\nsecond line"
    expect(box).to_have_value(multi_line)
    box.press("Enter")
    expect(box).to_have_value("")
    _wait_for_message(page, multi_line)

    # Event-stream field syntax inside the data must stay data (one event, id intact).
    injection = f"line1 {word}\n\ndata: injected\nid: 999"
    box.fill(injection)
    box.press("Enter")
    expect(box).to_have_value("")
    _wait_for_message(page, injection)

    emoji = f"héllo 👋🏽 {word}"
    box.fill(emoji)
    page.locator("#send-button").click()
    expect(box).to_have_value("")
    _wait_for_message(page, emoji)

    markup = f'<img src=x onerror="window.__pwned=1"><b>bold</b> {word}'
    _post(page, chat.url, markup)
    _wait_for_message(page, markup)

    # Exactly these four, in order: Shift+Enter sent nothing, the injection made no
    # extra event.
    assert _message_texts(page) == [multi_line, injection, emoji, markup]
    ids = _event_ids(page)
    assert len(ids) == len(set(ids))
    assert "999" not in ids
    assert page.locator("#messages img, #messages b").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_article_client_code_works_from_another_origin(
    open_page: OpenPage, chat: ServerProcess, other_origin: _OtherOrigin
) -> None:
    page = open_page(f"{other_origin.origin}/article.html")
    assert page.evaluate("location.origin") != chat.url
    # Our own join announcement shows the stream is open before we send.
    expect(page.locator("#messages li").first).to_have_text("A new user joined!")
    text = f"from another origin {token()}"
    assert page.evaluate("message => sendMessage(message)", text) == SENT
    expect(page.locator("#messages li").last).to_have_text(text)
    # The JSON POST is not a simple request: the browser asked first.
    chat.wait_for_log('"OPTIONS /send-message HTTP/1.1" 204')


def test_our_client_served_from_another_origin_talks_to_the_server_by_query(
    open_page: OpenPage, chat: ServerProcess, other_origin: _OtherOrigin
) -> None:
    server = chat.url
    page = open_page(f"{other_origin.origin}/app/?server={quote(server, safe='')}#room")
    # The ?server= is not the page's own origin: it is used once accepted.
    expect(page.locator("#server-prompt-origin")).to_have_text(server)
    page.locator("#server-accept").click()
    expect(page.locator("#status")).to_have_text("live")
    text = f"cross-origin UI {token()}"
    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")
    expect(page.locator("#message-input")).to_have_value("")
    _wait_for_message(page, text)


def _open_recording(open_page: OpenPage, url: str) -> tuple[Page, list[str]]:
    """Open `url` in a fresh page, listing the URL of every request and socket it makes."""
    page = open_page("about:blank")
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.on("websocket", lambda socket: seen.append(socket.url))
    page.goto(url)
    return page, seen


@pytest.fixture
def foreign(spawn: Callable[..., ServerProcess]) -> str:
    """The base URL of a second server, on another loopback address: another origin."""
    return spawn("--host", "127.0.0.2", *FAST_RETRY).url


def test_a_link_to_another_server_asks_first_and_sends_nothing_there_until_accepted(
    open_page: OpenPage, spawn: Callable[..., ServerProcess], foreign: str
) -> None:
    # The page may connect only to the origins its server names (CSP
    # connect-src, from --cors-origin), so this page's server names the other.
    own = spawn("--cors-origin", foreign, *FAST_RETRY).url
    page, seen = _open_recording(open_page, f"{own}/?server={quote(foreign, safe='')}#room")
    expect(page.locator("#server-prompt")).to_be_visible()
    expect(page.locator("#server-prompt-origin")).to_have_text(foreign)
    # Meanwhile the page talks to its own server, and says so.
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#server-label")).to_have_text(own.removeprefix("http://"))
    mine = f"before accepting {token()}"
    page.locator("#message-input").fill(mine)
    page.locator("#message-input").press("Enter")
    _wait_for_message(page, mine)
    assert [url for url in seen if url.startswith(foreign)] == []

    page.locator("#server-accept").click()
    expect(page.locator("#server-prompt")).to_be_hidden()
    expect(page.locator("#server-label")).to_have_text(foreign.removeprefix("http://"))
    expect(page.locator("#status")).to_have_text("live")
    theirs = f"after accepting {token()}"
    page.locator("#message-input").fill(theirs)
    page.locator("#message-input").press("Enter")
    _wait_for_message(page, theirs)
    # Another server's room: the list started over there.
    assert mine not in _message_texts(page)
    assert any(url.startswith(f"{foreign}/events") for url in seen)


def test_refusing_a_link_to_another_server_stays_on_the_own_one(
    open_page: OpenPage, chat: ServerProcess, foreign: str
) -> None:
    own = chat.url
    page, seen = _open_recording(open_page, f"{own}/?server={quote(foreign, safe='')}#room")
    page.locator("#server-refuse").click()
    expect(page.locator("#server-prompt")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#server-label")).to_have_text(own.removeprefix("http://"))
    assert "server=" not in page.url  # so a reload does not ask again
    text = f"refused {token()}"
    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")
    _wait_for_message(page, text)
    page.reload()
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#server-prompt")).to_be_hidden()
    assert [url for url in seen if url.startswith(foreign)] == []


def test_a_link_to_the_page_s_own_server_is_used_without_asking(
    open_page: OpenPage, chat: ServerProcess
) -> None:
    own = chat.url
    page = open_page(f"{own}/?server={quote(own, safe='')}#room")
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#server-prompt")).to_be_hidden()
    expect(page.locator("#server-label")).to_have_text(own.removeprefix("http://"))


def test_server_restart_on_the_same_port_shows_reconnecting_then_a_gap_notice(
    open_page: OpenPage, spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # A restart: same port, same database, new process.
    same = ("--db", str(tmp_path / "restarted.sqlite3"), *FAST_RETRY)
    first = spawn(*same)
    base_url = first.url
    page = open_page(f"{base_url}/#room")
    status = page.locator("#status")
    expect(status).to_have_text("live")
    expect(page.locator("#messages li.join")).to_have_count(1)
    last_id = page.locator("#messages li").last.get_attribute("data-event-id")
    assert last_id

    first.terminate()
    expect(status).to_have_text("reconnecting")
    expect(page.locator("#reconnect")).to_be_visible()

    second = spawn("--port", str(first.address[1]), *same)
    assert second.url == base_url
    expect(status).to_have_text("live", timeout=RECONNECT_TIMEOUT_MS)
    # The browser resent the old id (Last-Event-ID); the new process cannot know it.
    notice = page.locator("#messages li.notice")
    expect(notice).to_have_count(1)
    expect(notice).to_have_attribute("data-resumed-from", last_id)
    expect(notice).to_contain_text(last_id)
    assert re.search(rf"resume='{re.escape(last_id)}' replay=\d+ gap", second.log), second.log

    text = f"after the restart {token()}"
    _post(page, base_url, text)
    _wait_for_message(page, text)


def test_reconnect_button_resumes_from_the_last_event_without_loss(
    open_page: OpenPage, chat: ServerProcess
) -> None:
    base_url = chat.url
    page = open_page()
    status = page.locator("#status")
    expect(status).to_have_text("live")
    before = f"before {token()}"
    _post(page, base_url, before)
    _wait_for_message(page, before)
    last_id = page.locator("#messages li").last.get_attribute("data-event-id")
    assert last_id

    # window.stop() (the browser's Stop button, Esc) ends the stream for good:
    # the page shows `closed` and offers Reconnect.
    page.evaluate("window.stop()")
    expect(status).to_have_text("closed")
    missed = [f"missed 1 {token()}", f"missed 2 {token()}"]
    for text in missed:
        _post(page, base_url, text)

    with page.expect_request(re.compile(r"/events\b")) as opened:
        page.locator("#reconnect").click()
    # A new EventSource cannot send Last-Event-ID, so the id travels in the query.
    assert opened.value.url == f"{base_url}/events?last_event_id={quote(last_id, safe='')}"
    assert opened.value.header_value("last-event-id") is None
    expect(status).to_have_text("live")
    for text in missed:
        _wait_for_message(page, text)
    assert _message_texts(page) == [before, *missed]
    ids = _event_ids(page)
    assert len(ids) == len(set(ids)), ids
    expect(page.locator("#messages li.notice")).to_have_count(0)
    chat.wait_for_log(f"resume='{last_id}' replay=2\n")


def test_apply_resumes_on_the_same_server_and_starts_fresh_on_another(
    open_page: OpenPage, spawn: Callable[..., ServerProcess]
) -> None:
    other_url = spawn(*FAST_RETRY).url
    # The page may connect only to the origins its server names (CSP
    # connect-src, from --cors-origin), so this page's server names the other.
    own = spawn("--cors-origin", other_url, *FAST_RETRY)
    base_url = own.url
    page = open_page(f"{base_url}/#room")
    expect(page.locator("#status")).to_have_text("live")
    text = f"kept {token()}"
    _post(page, base_url, text)
    _wait_for_message(page, text)
    last_id = page.locator("#messages li").last.get_attribute("data-event-id")
    assert last_id

    page.locator("details.settings summary").click()
    expect(page.locator("#server-url")).to_have_value(base_url)
    with page.expect_request(re.compile(r"/events\b")) as opened:
        page.locator("#apply-server").click()
    assert opened.value.url == f"{base_url}/events?last_event_id={quote(last_id, safe='')}"
    expect(page.locator("#status")).to_have_text("live")
    # Same room: the list stays, nothing is listed twice, and a resuming
    # stream is not announced as a new user.
    expect(page.locator("#messages li.join")).to_have_count(1)
    assert _message_texts(page) == [text]
    ids = _event_ids(page)
    assert len(ids) == len(set(ids)), ids

    page.locator("#server-url").fill(other_url)
    with page.expect_request(re.compile(r"/events\b")) as opened:
        page.locator("#apply-server").click()
    # Another server's ids mean nothing here: no resume, and a new list.
    assert opened.value.url == f"{other_url}/events"
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#messages li")).to_have_count(1)
    expect(page.locator("#messages li.join")).to_have_count(1)


def test_phone_viewport_has_no_horizontal_scroll_and_the_composer_in_view(
    open_page: OpenPage, chat: ServerProcess
) -> None:
    page = open_page(
        viewport={"width": 360, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    expect(page.locator("#status")).to_have_text("live")
    # Unbreakable text is what usually pushes a narrow layout sideways.
    long_word = "x" * 300 + token()
    long_url = f"https://example.com/{'a/' * 80}?{token()}"
    for text in (long_word, long_url):
        _post(page, chat.url, text)
        _wait_for_message(page, text)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    messages = page.locator("#messages")
    assert messages.evaluate("list => list.scrollWidth <= list.clientWidth")
    for hook in ("#message-input", "#send-button", "#status"):
        expect(page.locator(hook)).to_be_in_viewport()
