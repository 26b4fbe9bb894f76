"""Browser end-to-end for the Chat view: conversations with the built-in echo model.

Debian's Chromium, driven by Playwright, against `python server.py`, as in
test_browser.py (whose browser settings this module reuses). The module's server
paces the echo model at 30 ms a word, so a reply visibly grows and a long one
can be stopped halfway. Each test opens its own browser context and its own
conversation; messages carry a unique token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.test_room import (
    FAST_RETRY,
    RECONNECT_TIMEOUT_MS,
)
from tests.conftest import OpenPage, page_opener
from tests.support.browser import token
from tests.support.servers import ServerProcess

ECHO_LABEL = "built-in echo model"
# Seconds per echoed word: slow enough to watch a reply grow, fast enough to finish.
ECHO_DELAY = ("--echo-delay", "0.03")
# A reply long enough (200 words, 6 s) to be stopped or joined while it streams.
LONG_WORDS = " ".join(f"w{i}" for i in range(200))
# What the footer of a reply shows after its `done`: "first token 31 ms · 0.4 s".
TIMINGS = re.compile(r"first token \d+ ms · \d+(\.\d)? m?s$")


def _open_chat(page: Page) -> None:
    """Switch to the Chat view."""
    page.locator('[data-view-target="chat"]').click()
    expect(page.locator("#chat-input")).to_be_visible()


def _send(page: Page, text: str) -> None:
    """Type `text` into the chat composer and press Enter; wait until it was accepted."""
    box = page.locator("#chat-input")
    box.fill(text)
    box.press("Enter")
    # Accepted (the box empties) or refused (an error shows): either ends the wait.
    # Polled on a timer, not per animation frame: a test may hold requestAnimationFrame.
    page.wait_for_function(
        """() => document.getElementById("chat-input").value === ""
                 || !document.getElementById("chat-error").hidden""",
        polling=50,
    )
    expect(page.locator("#chat-error")).to_be_hidden()
    expect(box).to_have_value("")


def _replies(page: Page) -> Locator:
    return page.locator('#transcript li[data-role="assistant"]')


def _content(item: Locator) -> str:
    """The exact textContent of a message's text (no whitespace folding)."""
    text: str = item.locator(".message-content").evaluate("node => node.textContent")
    return text


def _shown(text: str) -> str:
    """What a reply of plain words shows as Markdown: a paragraph drops trailing spaces."""
    return text.rstrip()


def _transcript_texts(page: Page) -> list[tuple[str, str]]:
    """(role, exact text) of every message shown in #transcript."""
    rows: list[list[str]] = page.locator("#transcript li[data-message-id]").evaluate_all(
        """items => items.map(item =>
               [item.dataset.role, item.querySelector(".message-content").textContent])"""
    )
    return [(role, text) for role, text in rows]


def _conversation_id(page: Page) -> str:
    """The open conversation, as the address bar names it (#c=<id>)."""
    match = re.search(r"#c=([0-9a-f-]{36})$", page.url)
    assert match, page.url
    return match.group(1)


def _stored(page: Page, base_url: str, conversation_id: str) -> dict[str, Any]:
    """GET /conversations/{id} from outside the page's UI."""
    response = page.request.get(f"{base_url}/conversations/{conversation_id}")
    assert response.status == 200
    body: dict[str, Any] = response.json()
    return body


def _wait_until_longer_than(item: Locator, length: int) -> None:
    """Wait until a reply's text has grown past `length` characters."""
    item.locator(".message-content").evaluate(
        """(node, length) => new Promise(resolve => {
               const check = () => node.textContent.length > length && (resolve(), true);
               if (check()) return;
               const observer = new MutationObserver(() => check() && observer.disconnect());
               observer.observe(node, {childList: true, subtree: true, characterData: true});
           })""",
        length,
    )


@pytest.fixture(scope="module")
def assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `python server.py` with a paced echo model for the module, own database."""
    db = tmp_path_factory.mktemp("assistant") / "chat.sqlite3"
    server = ServerProcess("--port", "0", "--db", str(db), *ECHO_DELAY, *FAST_RETRY)
    yield server
    server.kill()


@pytest.fixture
def open_page(browser: Browser, assistant: ServerProcess) -> Iterator[OpenPage]:
    """Open a page in a fresh context (the module server's by default); fail on JS errors."""
    with page_opener(browser, f"{assistant.url}/") as open_:
        yield open_


def test_reply_grows_piece_by_piece_into_a_bubble_labelled_with_the_echo_model(
    open_page: OpenPage, assistant: ServerProcess
) -> None:
    page = open_page()
    _open_chat(page)
    # Every text the first reply's bubble shows, in order, as the page draws them.
    page.evaluate(
        """() => {
               window.replyTexts = [];
               const transcript = document.getElementById("transcript");
               new MutationObserver(() => {
                   const node = transcript.querySelector(
                       'li[data-role="assistant"] .message-content');
                   const seen = window.replyTexts;
                   if (node !== null && seen[seen.length - 1] !== node.textContent) {
                       seen.push(node.textContent);
                   }
               }).observe(transcript, {childList: true, subtree: true, characterData: true});
           }"""
    )
    message = f"grow {token()} one two three four five six"
    _send(page, message)

    reply = _replies(page).first
    expect(reply).to_have_attribute("data-status", "complete")
    final = f"You said: {message}"
    assert _content(reply) == final
    texts: list[str] = page.evaluate("window.replyTexts")
    assert texts[-1] == final
    # It grew: each text a longer prefix of the final one, seen at several lengths.
    assert all(final.startswith(text) for text in texts), texts
    lengths = [len(text) for text in texts]
    assert lengths == sorted(set(lengths)), lengths
    assert len([n for n in lengths if 0 < n < len(final)]) > 3, texts

    expect(reply.locator(".message-model")).to_have_text(ECHO_LABEL)
    expect(reply.locator(".message-footer")).to_have_text(TIMINGS)
    # The message shows once (from its `user` event), above its reply.
    assert _transcript_texts(page) == [("user", message), ("assistant", final)]
    expect(page.locator("#chat-stop")).to_be_hidden()
    expect(page.locator("#chat-send")).to_be_enabled()
    expect(page.locator("#chat-status")).to_have_text("live")

    # The conversation is listed, current, and titled by the message.
    current = page.locator("#conversation-list [aria-current='true']")
    expect(current).to_have_attribute("data-conversation-id", _conversation_id(page))
    expect(current.locator(".conversation-title")).to_have_text(message)
    expect(page.locator("#chat-title")).to_have_text(message)


def test_stop_ends_a_long_reply_where_it_is_and_the_server_keeps_that_text(
    open_page: OpenPage, assistant: ServerProcess
) -> None:
    page = open_page()
    _open_chat(page)
    message = f"stop {token()} {LONG_WORDS}"
    _send(page, message)
    reply = _replies(page).first
    _wait_until_longer_than(reply, 40)
    expect(reply).to_have_attribute("data-status", "streaming")
    stop = page.locator("#chat-stop")
    expect(stop).to_be_enabled()
    expect(page.locator("#chat-send")).to_be_disabled()

    # Enter while the reply streams sends nothing: it says why and keeps the text.
    after = f"after the stop {token()}"
    box = page.locator("#chat-input")
    box.fill(after)
    box.press("Enter")
    expect(page.locator("#chat-error")).to_contain_text("still streaming")
    expect(box).to_have_value(after)

    stop.click()
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".message-footer")).to_contain_text("stopped")
    expect(stop).to_be_hidden()
    stopped_text = _content(reply)
    assert stopped_text.startswith("You said: stop ")
    assert len(stopped_text) < len(f"You said: {message}")

    conversation_id = _conversation_id(page)
    stored = _stored(page, assistant.url, conversation_id)
    assert stored["replying"] is False
    last = stored["messages"][-1]
    assert (last["role"], last["status"], last["finish_reason"]) == (
        "assistant",
        "cancelled",
        "cancelled",
    )
    assert _shown(last["content"]) == stopped_text

    # The conversation goes on; by the time the next reply is complete, a stopped
    # reply that was still growing would have grown.
    box.press("Enter")
    expect(box).to_have_value("")
    expect(_replies(page)).to_have_count(2)
    expect(_replies(page).nth(1)).to_have_attribute("data-status", "complete")
    assert _content(_replies(page).nth(1)) == f"You said: {after}"
    assert _content(reply) == stopped_text


def test_a_tab_opened_mid_reply_shows_only_true_text_and_can_stop_it_for_every_tab(
    open_page: OpenPage, assistant: ServerProcess
) -> None:
    base_url = assistant.url
    writer = open_page()
    _open_chat(writer)
    message = f"joined {token()} {LONG_WORDS}"
    final = f"You said: {message}"
    _send(writer, message)
    _wait_until_longer_than(_replies(writer).first, 60)
    conversation_id = _conversation_id(writer)

    # The reader watches its first reply bubble from before it exists. The saved
    # text it opens with lags the stream (the server saves once a second), so
    # pieces may be missing until a later save overlaps the live ones; the page
    # must then mark the hole. Wherever no hole is marked, the text must be a
    # true prefix of the reply.
    # Another tab of the same person: someone else would get 404 (test_identity.py).
    reader = writer.context.new_page()
    reader.goto(f"{base_url}/")
    reader.evaluate(
        """final => {
               window.untrue = [];
               window.healedTexts = [];
               const transcript = document.getElementById("transcript");
               new MutationObserver(() => {
                   const item = transcript.querySelector('li[data-role="assistant"]');
                   if (item === null || item.querySelector(".message-hole") !== null) return;
                   const text = item.querySelector(".message-content").textContent;
                   if (!final.startsWith(text)) window.untrue.push(text);
                   else if (item.dataset.status === "streaming") window.healedTexts.push(text);
               }).observe(transcript, {childList: true, subtree: true, characterData: true});
           }""",
        final,
    )
    # A #c=<id> link followed on an open page switches to that conversation.
    reader.goto(f"{base_url}/#c={conversation_id}")
    expect(reader.locator("#chat-status")).to_have_text("live")
    reply = _replies(reader).first
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reader.locator("#chat-stop")).to_be_visible()
    expect(reply.locator(".message-model")).to_be_visible()
    # Whole and still growing: seen at several lengths past the opening text.
    reader.wait_for_function("() => new Set(window.healedTexts.map(text => text.length)).size > 5")

    reader.locator("#chat-stop").click()
    for page in (reader, writer):
        expect(_replies(page).first).to_have_attribute("data-status", "cancelled")
        expect(page.locator("#chat-stop")).to_be_hidden()
    # When the reply ends the reader fetches its stored text: all three agree.
    stored = _shown(_stored(reader, base_url, conversation_id)["messages"][-1]["content"])
    expect(reply.locator(".message-content")).to_have_text(stored)
    assert _content(_replies(reader).first) == stored
    assert _content(_replies(writer).first) == stored
    assert _transcript_texts(reader) == _transcript_texts(writer)
    assert reader.evaluate("window.untrue") == []


def test_reload_and_a_return_visit_reopen_the_conversation_with_its_transcript(
    open_page: OpenPage, assistant: ServerProcess
) -> None:
    page = open_page()
    _open_chat(page)
    message = f"remember me {token()}"
    _send(page, message)
    expect(_replies(page).first).to_have_attribute("data-status", "complete")
    conversation_id = _conversation_id(page)
    expected = [("user", message), ("assistant", f"You said: {message}")]

    def shows_the_conversation() -> None:
        expect(page.locator("#transcript")).to_be_visible()
        expect(page.locator("#chat-status")).to_have_text("live")
        current = page.locator("#conversation-list [aria-current='true']")
        expect(current).to_have_attribute("data-conversation-id", conversation_id)
        expect(current).to_contain_text(message)
        expect(_replies(page)).to_have_count(1)
        assert _transcript_texts(page) == expected
        # The label was learnt from the `start` event; the transcript only says "echo".
        expect(_replies(page).first.locator(".message-model")).to_have_text(ECHO_LABEL)

    page.reload()  # the address bar's #c=<id>
    shows_the_conversation()

    # A later visit without the hash opens the rooms; the Chat view remembers.
    page.goto(f"{assistant.url}/")
    expect(page.locator("#room-messages")).to_be_visible()
    _open_chat(page)
    shows_the_conversation()
    assert _conversation_id(page) == conversation_id


def test_server_restart_keeps_the_conversation_listed_and_its_transcript_intact(
    open_page: OpenPage, spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    same = ("--db", str(tmp_path / "restarted.sqlite3"), *ECHO_DELAY, *FAST_RETRY)
    first = spawn(*same)
    base_url = first.url
    page = open_page(f"{base_url}/#chat")
    message = f"before the restart {token()}"
    _send(page, message)
    expect(_replies(page).first).to_have_attribute("data-status", "complete")
    before = _transcript_texts(page)
    conversation_id = _conversation_id(page)
    status = page.locator("#chat-status")
    expect(status).to_have_text("live")

    first.terminate()
    expect(status).to_have_text("reconnecting")
    second = spawn("--port", str(first.address[1]), *same)
    expect(status).to_have_text("live", timeout=RECONNECT_TIMEOUT_MS)
    # The browser resent an id of the old process: a gap, then the transcript again.
    second.wait_for_log("gap")
    listed = page.locator(f"#conversation-list [data-conversation-id='{conversation_id}']")
    expect(listed).to_contain_text(message)
    assert _transcript_texts(page) == before

    after = f"after the restart {token()}"
    _send(page, after)
    expect(_replies(page)).to_have_count(2)
    expect(_replies(page).nth(1)).to_have_attribute("data-status", "complete")
    assert _transcript_texts(page) == [
        *before,
        ("user", after),
        ("assistant", f"You said: {after}"),
    ]


def test_phone_viewport_chat_has_no_horizontal_scroll_and_a_conversation_drawer(
    open_page: OpenPage,
) -> None:
    page = open_page(
        viewport={"width": 360, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    _open_chat(page)
    # Unbreakable text is what usually pushes a narrow layout sideways.
    message = f"{'x' * 300} {token()}"
    _send(page, message)
    reply = _replies(page).first
    expect(reply).to_have_attribute("data-status", "complete")
    assert _content(reply) == f"You said: {message}"
    for hook in ("#chat-input", "#chat-send", "#chat-status", "#conversations-toggle"):
        expect(page.locator(hook)).to_be_in_viewport()
    # The list is a drawer, closed until asked for.
    expect(page.locator("#new-conversation")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.locator("#transcript").evaluate("list => list.scrollWidth <= list.clientWidth")

    toggle = page.locator("#conversations-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#new-conversation")).to_be_in_viewport()
    current = page.locator("#conversation-list [aria-current='true']")
    expect(current).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    # Picking a conversation closes the drawer again.
    current.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#new-conversation")).to_be_hidden()
    expect(page.locator("#chat-input")).to_be_in_viewport()
