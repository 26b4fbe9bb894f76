"""Browser end-to-end for the per-client limits: the page when the server refuses.

Real Chromium through Playwright against `python server.py --limits on` with
tiny limits. A stream over a limit is answered `event: busy` with a `retry:`:
the page says why and when it comes back, and the browser's own EventSource
reconnects after that retry (no reload, no new EventSource). A POST over a
limit (429) shows the server's reason and wait beside the composer and keeps
the typed text. The test's own client and the browser both speak from
127.0.0.1, so they count against the same address. Every page is watched for
CSP violations and uncaught errors (the watcher of test_identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_chat import _open_chat, _replies, _send
from tests.browser.test_identity import OpenPerson, _people
from tests.browser.test_room import FAST_RETRY, _post, _wait_for_message
from tests.support.fake_openai import FakeOpenAI
from tests.support.servers import ServerProcess

# A cap's refusal asks to come back after --cap-retry (15 s unless told; 2 s
# here, plus jitter): the page's own reconnect takes that long, so its wait is
# bounded a good deal above it.
CAP_RETRY = ("--cap-retry", "2")
CAP_RETRY_TIMEOUT_MS = 15_000
BUSY_NOTICE = re.compile(r"^Too many streams open from this address; reconnecting in [23] s$")
# A WebSocket closed 1013 is retried by the page itself, after about 15 s whatever the server says.
SOCKET_RETRY_TIMEOUT_MS = 40_000
BUSY_SOCKET_NOTICE = re.compile(
    r"^Too many streams open from this address; reconnecting in 1[5-7] s$"
)
POSTS_NOTICE = re.compile(r"^Too many messages to the room\. Try again in [1-5] s\.$")
BUDGET_NOTICE = re.compile(r"^Daily limit of model tokens reached; it resets at .+ UTC\.$")
REPLIES_NOTICE = re.compile(r"^Too many model replies started\. Try again in [1-6]?[0-9] s\.$")


@pytest.fixture
def people(browser: Browser) -> Iterator[Callable[[ServerProcess], OpenPerson]]:
    """Open people on a server's page; fails on JS errors and CSP violations."""
    with contextlib.ExitStack() as stack:

        def on(server: ServerProcess) -> OpenPerson:
            return stack.enter_context(_people(browser, f"{server.url}/#room"))

        yield on


@contextlib.contextmanager
def _held_stream(server: ServerProcess) -> Iterator[socket.socket]:
    """A room stream of the test's own, open (its head read) until the block ends."""
    host, port = server.address
    with socket.create_connection((host, port), timeout=5) as held:
        held.sendall(
            f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = held.recv(4096)
            assert chunk, f"the server closed the test's stream: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"event: busy" not in head, "the test's own stream was refused"
        yield held


def test_a_stream_over_the_cap_says_busy_and_the_browser_reconnects_by_itself(
    spawn: Callable[..., ServerProcess], people: Callable[[ServerProcess], OpenPerson]
) -> None:
    server = spawn("--limits", "on", "--streams-per-ip", "1", *CAP_RETRY, *FAST_RETRY)
    open_person = people(server)
    with _held_stream(server):
        page = open_person()
        expect(page.locator("#room-notice")).to_have_text(BUSY_NOTICE)
        expect(page.locator("#room-notice")).to_be_visible()
        expect(page.locator("#status")).to_have_text("reconnecting")
        # Marks this document: a reload would lose it.
        page.evaluate("window.sameDocument = true")
    # The slot is free: the browser's EventSource comes back after its retry: by itself.
    expect(page.locator("#status")).to_have_text("live", timeout=CAP_RETRY_TIMEOUT_MS)
    expect(page.locator("#room-notice")).to_be_hidden()
    assert page.evaluate("window.sameDocument === true"), "the page was reloaded"
    _post(page, server.url, "after the busy spell")
    _wait_for_message(page, "after the busy spell")
    expect(page.locator("#room-notice")).to_be_hidden()


def test_a_room_socket_over_the_cap_closed_1013_says_busy_and_comes_back_by_itself(
    spawn: Callable[..., ServerProcess], people: Callable[[ServerProcess], OpenPerson]
) -> None:
    server = spawn("--limits", "on", "--streams-per-ip", "1", *FAST_RETRY)
    open_person = people(server)
    with _held_stream(server):
        page = open_person(f"{server.url}/?transport=ws#room")
        expect(page.locator("#transport-label")).to_have_text("WebSocket")
        expect(page.locator("#room-notice")).to_have_text(BUSY_SOCKET_NOTICE)
        expect(page.locator("#status")).to_have_text("reconnecting")
    expect(page.locator("#status")).to_have_text("live", timeout=SOCKET_RETRY_TIMEOUT_MS)
    expect(page.locator("#room-notice")).to_be_hidden()
    _post(page, server.url, "after the socket's busy spell")
    _wait_for_message(page, "after the socket's busy spell")


def _send_from_the_composer(page: Page, text: str) -> None:
    page.locator("#message-input").fill(text)
    page.locator("#send-button").click()


def test_a_room_send_over_the_rate_shows_the_reason_and_the_wait_and_keeps_the_text(
    spawn: Callable[..., ServerProcess], people: Callable[[ServerProcess], OpenPerson]
) -> None:
    server = spawn(
        "--limits", "on", "--room-post-burst", "2", "--room-posts-per-second", "0.2", *FAST_RETRY
    )
    page = people(server)()
    expect(page.locator("#status")).to_have_text("live")
    for text in ("first", "second"):
        _send_from_the_composer(page, text)
        _wait_for_message(page, text)
        expect(page.locator("#message-input")).to_have_value("")
    _send_from_the_composer(page, "third, typed with care")
    expect(page.locator("#send-error")).to_have_text(POSTS_NOTICE)
    expect(page.locator("#send-error")).to_be_visible()
    expect(page.locator("#message-input")).to_have_value("third, typed with care")
    expect(page.locator("#send-button")).to_be_enabled()


def test_a_chat_message_over_the_reply_rate_shows_the_reason_and_the_wait_and_keeps_the_text(
    spawn: Callable[..., ServerProcess], people: Callable[[ServerProcess], OpenPerson]
) -> None:
    server = spawn("--limits", "on", "--replies-per-minute", "1", *FAST_RETRY)
    page = people(server)()
    _open_chat(page)
    _send(page, "the one reply of the minute")
    expect(_replies(page).last).to_have_attribute("data-status", "complete")
    box = page.locator("#chat-input")
    box.fill("a second question, kept")
    box.press("Enter")
    expect(page.locator("#chat-error")).to_have_text(REPLIES_NOTICE)
    expect(box).to_have_value("a second question, kept")


@contextlib.contextmanager
def _fake_upstream() -> Iterator[FakeOpenAI]:
    """The fake OpenAI upstream, served by an event loop on a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def enter() -> FakeOpenAI:
        return await FakeOpenAI().__aenter__()

    fake = asyncio.run_coroutine_threadsafe(enter(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_reply_refused_by_the_daily_budget_is_a_notice_in_the_transcript(
    spawn: Callable[..., ServerProcess], people: Callable[[ServerProcess], OpenPerson]
) -> None:
    with _fake_upstream() as fake:
        server = spawn(
            "--limits", "on", "--model", "openai", "--model-url", fake.url,
            "--model-name", "gpt-test", "--model-guest-daily-tokens", "1", *FAST_RETRY,
            env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        page = people(server)()
        _open_chat(page)
        _send(page, "spend the day's tokens")
        expect(_replies(page).last).to_have_attribute("data-status", "complete")
        box = page.locator("#chat-input")
        box.fill("one more, please")
        box.press("Enter")
        # The stream's `error` of no message: a notice, tied to no reply.
        notice = page.locator("#transcript > li.transcript-notice")
        expect(notice).to_have_text(BUDGET_NOTICE)
        expect(notice).not_to_have_attribute("data-message-id", re.compile(".*"))
        expect(page.locator("#chat-error")).to_contain_text("Daily limit of model tokens reached")
        expect(box).to_have_value("one more, please")
        expect(_replies(page)).to_have_count(1)
