"""Browser end-to-end for rooms and one connection per browser (issue 16).

Real Chromium through Playwright against `python server.py`. A browser
context is one person's browser: its pages are tabs that share cookies, Web
Locks and BroadcastChannels, so they share one GET /stream, held by one of
them (client/channel-leader.js). The server's own count of open streams
(`/healthz`'s `streams`) proves it; every page also counts the EventSources
it constructs. Another context is another person. Every page is watched for
uncaught errors and Content Security Policy violations.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from playwright._impl._api_structures import SetCookieParam  # not re-exported
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from sse.protocol.multiplex import fingerprint, parse_composite
from tests.browser.test_chat import _conversation_id, _open_chat, _replies, _send
from tests.browser.test_identity import _WATCH_CSP, _wait_for_name
from tests.browser.test_limits import BUSY_NOTICE, CAP_RETRY, CAP_RETRY_TIMEOUT_MS, _held_stream
from tests.browser.test_room import FAST_RETRY
from tests.support.browser import token
from tests.support.servers import ServerProcess

# Every page lists the URL of each EventSource it constructs.
_COUNT_EVENT_SOURCES = """
(() => {
  const Original = window.EventSource;
  window.eventSourcesOpened = [];
  window.EventSource = class extends Original {
    constructor(url, init) {
      super(url, init);
      window.eventSourcesOpened.push(String(url));
    }
  };
})();
"""
# How long a condition of the server (its stream count) may take to come true.
SETTLE_S = 15.0

OpenBrowser = Callable[..., Page]


@pytest.fixture
def person(browser: Browser) -> Iterator[OpenBrowser]:
    """Open a person's browser (a fresh context) on a server's page; fail on errors and CSP."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def watch(page: Page) -> None:
        page.on("pageerror", lambda exc: problems.append(f"{page.url}: {exc}"))

        def on_console(message: ConsoleMessage) -> None:
            if "CSP violation" in message.text or "Content Security Policy" in message.text:
                problems.append(f"{page.url}: {message.text}")

        page.on("console", on_console)

    def open_(server: ServerProcess, **context_options: Any) -> Page:
        context = browser.new_context(**context_options)
        context.set_default_timeout(10_000)
        context.add_init_script(_WATCH_CSP)
        context.add_init_script(_COUNT_EVENT_SOURCES)
        context.on("page", watch)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{server.url}/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == [], "uncaught errors or CSP violations in the page"


@pytest.fixture
def server(spawn: Callable[..., ServerProcess]) -> ServerProcess:
    """A server of the test's own: its count of streams is the test's alone."""
    return spawn(*FAST_RETRY)


def _tab(page: Page) -> Page:
    """Another tab of the same browser on the same page."""
    tab = page.context.new_page()
    tab.goto(page.url.split("#")[0])
    return tab


def _live(page: Page) -> None:
    expect(page.locator("#rooms-status")).to_have_text("live")


def _streams(server: ServerProcess) -> int:
    """The server's count of open event streams (GET /healthz, no cookie)."""
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as answer:
        health: dict[str, Any] = json.load(answer)
    count: int = health["streams"]
    return count


def _wait_for_streams(server: ServerProcess, expected: int) -> None:
    """Wait until the server counts `expected` open streams (closed ones take a moment)."""
    deadline = time.monotonic() + SETTLE_S
    while (count := _streams(server)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count == expected


def _opened(page: Page) -> list[str]:
    urls: list[str] = page.evaluate("() => window.eventSourcesOpened")
    return urls


def _leaders(tabs: list[Page]) -> list[Page]:
    return [t for t in tabs if t.evaluate("() => document.documentElement.dataset.streamLeader")]


def _wait_for_leader(tabs: list[Page]) -> None:
    """Wait until one of `tabs` holds the stream (the browser granted it the lock)."""
    deadline = time.monotonic() + SETTLE_S
    while not (leaders := _leaders(tabs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(leaders) == 1


def _room_texts(page: Page) -> list[str]:
    """The exact text of every message shown in the open room, in order."""
    texts: list[str] = page.locator("#room-messages li.room-message .text").evaluate_all(
        "items => items.map(item => item.textContent)"
    )
    return texts


def _wait_for_room_text(page: Page, text: str) -> None:
    page.wait_for_function(
        """text => [...document.querySelectorAll("#room-messages li.room-message .text")]
                     .some(item => item.textContent === text)""",
        arg=text,
    )


def _say(page: Page, text: str) -> None:
    """Send `text` to the open room through the page's composer."""
    box = page.locator("#room-input")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")
    expect(page.locator("#room-send-error")).to_be_hidden()


def _post(page: Page, server: ServerProcess, room: str, text: str) -> None:
    """POST a room message as `page`'s person, from outside the page (its context's cookies)."""
    answer = page.request.post(f"{server.url}/rooms/{room}/messages", data={"text": text})
    assert answer.ok, (answer.status, answer.text())


def test_three_tabs_hold_one_stream_and_each_shows_another_person_s_message(
    person: OpenBrowser, server: ServerProcess
) -> None:
    first = person(server)
    tabs = [first, _tab(first), _tab(first)]
    for tab in tabs:
        _live(tab)
    # One browser, three tabs: one stream on the server, one EventSource in one tab.
    _wait_for_streams(server, 1)
    assert len(_leaders(tabs)) == 1
    opened = [url for tab in tabs for url in _opened(tab)]
    assert len(opened) == 1, opened
    assert "/stream?" in opened[0]
    assert "ch=room%3Alobby" in opened[0]

    other = person(server)
    _live(other)
    their_name = _wait_for_name(other)
    _wait_for_streams(server, 2)
    said = f"hello from another browser {token()}"
    _say(other, said)
    for page in (*tabs, other):
        _wait_for_room_text(page, said)
        shown = page.locator("#room-messages li.room-message").filter(has_text=said)
        expect(shown).to_have_count(1)
        expect(shown.locator(".sender")).to_have_text(their_name)
    # Still one stream per browser, and no tab opened a second EventSource.
    assert _streams(server) == 2
    assert sum(len(_opened(tab)) for tab in tabs) == 1


def test_closing_the_leading_tab_hands_over_without_a_lost_or_repeated_message(
    person: OpenBrowser, server: ServerProcess
) -> None:
    first = person(server)
    tabs = [first, _tab(first), _tab(first)]
    for tab in tabs:
        _live(tab)
    other = person(server)
    _live(other)
    _wait_for_streams(server, 2)
    [leader] = _leaders(tabs)
    rest = [tab for tab in tabs if tab is not leader]

    word = token()
    sent = [f"{word} before"]
    _post(other, server, "lobby", sent[0])
    for tab in tabs:
        _wait_for_room_text(tab, sent[0])
    leader.close()
    # During the handover: nobody holds the stream until the next tab has the lock.
    for n in range(3):
        sent.append(f"{word} during {n}")
        _post(other, server, "lobby", sent[-1])
    _wait_for_leader(rest)
    for tab in rest:
        _live(tab)
    sent.append(f"{word} after")
    _post(other, server, "lobby", sent[-1])
    for tab in rest:
        _wait_for_room_text(tab, sent[-1])
        assert [text for text in _room_texts(tab) if text.startswith(word)] == sent
    assert len(_leaders(rest)) == 1
    # The old leader's stream closed; the new one is the browser's only one.
    _wait_for_streams(server, 2)
    assert sum(len(_opened(tab)) for tab in rest) == 1, [_opened(tab) for tab in rest]


def test_presence_shows_the_other_person_and_typing_says_who_is_typing(
    person: OpenBrowser, spawn: Callable[..., ServerProcess]
) -> None:
    # A short grace: a person leaves a room half a second after their stream of it closed.
    server = spawn("--presence-grace", "0.5", *FAST_RETRY)
    a = person(server)
    b = person(server)
    a_name, b_name = _wait_for_name(a), _wait_for_name(b)
    assert a_name != b_name
    room = f"t-{token()}"
    # A creates a room through the switcher; B, back in the Rooms view, finds it listed
    # (GET /rooms again) and opens it.
    expect(b.locator('#room-list [data-room="lobby"]')).to_have_count(1)  # B's list is in
    a.locator("#room-name").fill(room)
    a.locator("#room-create-button").click()
    expect(a.locator("#room-title")).to_have_text(f"#{room}")
    expect(b.locator(f'#room-list [data-room="{room}"]')).to_have_count(0)
    b.locator('[data-view-target="chat"]').click()
    b.locator('[data-view-target="rooms"]').click()
    b.locator(f'#room-list [data-room="{room}"]').click()
    expect(b.locator("#room-title")).to_have_text(f"#{room}")
    for page, other in ((a, b_name), (b, a_name)):
        _live(page)
        expect(page.locator("#presence-list li").filter(has_text=other)).to_have_count(1)
    expect(a.locator("#presence-count")).to_have_text("2 here")

    b.locator("#room-input").press_sequentially("typing now")
    expect(a.locator("#typing")).to_have_text(f"{b_name} is typing…")
    # Nobody is told of their own typing.
    expect(b.locator("#typing")).to_have_text("")
    said = f"typed {token()}"
    _say(b, said)
    _wait_for_room_text(a, said)
    # The message ends the typing notice.
    expect(a.locator("#typing")).to_have_text("")

    # B goes back to the lobby: the stream without the room closes, and B leaves it.
    b.locator('#room-list [data-room="lobby"]').click()
    expect(b.locator("#room-title")).to_have_text("#lobby")
    expect(a.locator("#presence-list li").filter(has_text=b_name)).to_have_count(0)
    expect(a.locator("#presence-count")).to_have_text("1 here")


def test_older_messages_load_on_demand_in_order_once_each(
    person: OpenBrowser, server: ServerProcess
) -> None:
    a = person(server)
    _live(a)
    word = token()
    sent = [f"{word} {n:02d}" for n in range(60)]
    for text in sent:
        _post(a, server, "lobby", text)
    reader = person(server)
    _live(reader)
    # The newest page first, then the older ones on demand.
    _wait_for_room_text(reader, sent[-1])
    assert _room_texts(reader) == sent[-50:]
    reader.locator("#room-older").click()
    _wait_for_room_text(reader, sent[0])
    assert _room_texts(reader) == sent
    expect(reader.locator("#room-older")).to_be_hidden()


def test_another_person_sees_the_rooms_but_cannot_open_the_first_person_s_conversation(
    person: OpenBrowser, server: ServerProcess
) -> None:
    a = person(server)
    asked: list[str] = []
    a.on("request", lambda request: asked.append(request.url))
    _open_chat(a)
    _send(a, f"secret {token()}")
    expect(_replies(a).last).to_have_attribute("data-status", "complete")
    conversation_id = _conversation_id(a)
    # The reply came over the browser's one /stream, not a stream of its own.
    assert not [url for url in asked if url.endswith("/events")], asked
    _wait_for_streams(server, 1)

    b = person(server)
    _live(b)
    expect(b.locator('#room-list [data-room="lobby"]')).to_have_count(1)
    peek = """async (path) => {
        const stop = new AbortController();
        const answer = await fetch(path, { signal: stop.signal });
        const type = answer.headers.get("content-type") ?? "";
        const text = answer.status === 200 ? "" : await answer.text();
        stop.abort();
        return { status: answer.status, type, text };
    }"""
    theirs = f"/stream?ch=conv:{conversation_id}"
    refused = b.evaluate(peek, theirs)
    assert refused["status"] == 404, refused
    assert "error" in json.loads(refused["text"])
    # Exactly like a conversation that does not exist.
    nobody_s = "00000000-0000-4000-8000-000000000000"
    missing = b.evaluate(peek, f"/stream?ch=conv:{nobody_s}")
    assert missing["status"] == 404
    assert missing["text"].replace(nobody_s, "ID") == refused["text"].replace(conversation_id, "ID")
    assert b.evaluate(peek, "/stream?ch=room:lobby")["type"].startswith("text/event-stream")
    assert a.evaluate(peek, theirs)["type"].startswith("text/event-stream")


def test_a_tab_opening_a_conversation_widens_the_one_stream_and_no_room_message_is_lost(
    person: OpenBrowser, server: ServerProcess
) -> None:
    first = person(server)
    second = _tab(first)
    other = person(server)
    for page in (first, second, other):
        _live(page)
    _wait_for_streams(server, 2)
    word = token()
    sent = [f"{word} 0"]
    _post(other, server, "lobby", sent[0])
    _wait_for_room_text(first, sent[0])
    # The second tab wants a conversation's channel too: the leader reopens on both.
    _open_chat(second)
    _send(second, f"question {word}")
    for n in range(1, 4):
        sent.append(f"{word} {n}")
        _post(other, server, "lobby", sent[-1])
    expect(_replies(second).last).to_have_attribute("data-status", "complete")
    expect(_replies(second).last.locator(".message-content")).to_have_text(
        f"You said: question {word}"
    )
    for tab in (first, second):
        _wait_for_room_text(tab, sent[-1])
        assert [text for text in _room_texts(tab) if text.startswith(word)] == sent
    _wait_for_streams(server, 2)
    # The widened stream resumed from where the old one was, with an id of its new list.
    last = parse_qs(urlsplit([u for t in (first, second) for u in _opened(t)][-1]).query)
    channels = last["ch"]
    assert channels == sorted([f"conv:{_conversation_id(second)}", "room:lobby"])
    assert last["last_event_id"][0].split(".")[0] == fingerprint(channels)


def test_the_page_writes_composite_ids_as_the_server_reads_them_and_keeps_16_channels(
    person: OpenBrowser, server: ServerProcess
) -> None:
    page = person(server)
    _live(page)
    many = [f"room:r{n:02d}-{'x' * 40}" for n in range(20)]
    # As the server writes one: later positions of the first one's epoch as their seq alone.
    compact_id = f"{fingerprint(many[:3])}.100-3.5.200-9"
    written: dict[str, Any] = page.evaluate(
        """async ([many, compactId]) => {
            const ids = await import("./channel-ids.js");
            const positions = new Map([[many[0], "1796185369998-7"], [many[2], "5-0"]]);
            // Channel n was taken at time n, channel 3 again at 99: the 16 newest are kept.
            const union = ids.unionOf([many.map((c, n) => [c, n]), [[many[3], 99]]], 16);
            const three = many.slice(0, 3);
            const id = ids.compositeFor(three, positions);
            const none = ids.compositeFor(three, new Map());
            const compact = ids.positionsOf(compactId, three);
            return { id, none, union, back: ids.positionsOf(id, three), compact };
        }""",
        [many, compact_id],
    )
    three = many[:3]
    assert written["id"] == f"{fingerprint(three)}.1796185369998-7..5-0"
    assert parse_composite(written["id"], three) == ["1796185369998-7", None, "5-0"]
    assert written["none"] is None
    assert written["union"] == sorted([many[3], *many[5:]])
    assert written["back"] == {three[0]: "1796185369998-7", three[2]: "5-0"}
    assert parse_composite(compact_id, three) == ["100-3", "100-5", "200-9"]
    assert written["compact"] == dict(zip(three, ["100-3", "100-5", "200-9"], strict=True))


def test_a_shared_stream_over_the_cap_says_busy_in_every_tab_and_comes_back_by_itself(
    person: OpenBrowser, spawn: Callable[..., ServerProcess]
) -> None:
    server = spawn("--limits", "on", "--streams-per-ip", "1", *CAP_RETRY, *FAST_RETRY)
    with _held_stream(server):
        first = person(server)
        second = _tab(first)
        for tab in (first, second):
            expect(tab.locator("#rooms-notice")).to_have_text(BUSY_NOTICE)
            expect(tab.locator("#rooms-status")).to_have_text("reconnecting")
    # The slot is free: the leader's EventSource comes back after its retry: by itself.
    for tab in (first, second):
        expect(tab.locator("#rooms-status")).to_have_text("live", timeout=CAP_RETRY_TIMEOUT_MS)
        expect(tab.locator("#rooms-notice")).to_be_hidden()
    said = f"after the busy spell {token()}"
    _post(first, server, "lobby", said)
    for tab in (first, second):
        _wait_for_room_text(tab, said)
    assert sum(len(_opened(tab)) for tab in (first, second)) == 1


def test_phone_viewport_rooms_have_no_horizontal_scroll_and_the_composer_in_view(
    person: OpenBrowser, server: ServerProcess
) -> None:
    page = person(
        server,
        viewport={"width": 360, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    _live(page)
    for text in ("x" * 300 + token(), f"https://example.com/{'a/' * 80}?{token()}"):
        _post(page, server, "lobby", text)
        _wait_for_room_text(page, text)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    messages = page.locator("#room-messages")
    assert messages.evaluate("list => list.scrollWidth <= list.clientWidth")
    for hook in ("#room-input", "#room-send", "#rooms-status", "#room-title"):
        expect(page.locator(hook)).to_be_in_viewport()


def test_in_jwt_mode_the_shared_stream_renews_when_its_token_expires_for_every_tab(
    person: OpenBrowser, spawn: Callable[..., ServerProcess]
) -> None:
    secret = "s" * 40
    server = spawn("--auth", "jwt", "--jwt-secret", secret, *FAST_RETRY)

    def token_cookie(lifetime_s: int) -> SetCookieParam:
        claims = {"sub": "host-user-8", "name": "Eve", "exp": int(time.time()) + lifetime_s}
        value = jwt.encode(claims, secret, algorithm="HS256")
        return {"name": "ssechat_token", "value": value, "url": server.url}

    first = person(server)
    first.context.add_cookies([token_cookie(3)])
    first.reload()
    second = _tab(first)
    for tab in (first, second):
        expect(tab.locator("#identity-name")).to_have_text("Eve")
        _live(tab)
    # The host renews its cookie; the stream still runs on the old token and ends
    # at its exp with `reauth`: the leader asks /me, then reopens /stream.
    first.context.add_cookies([token_cookie(3600)])
    [leader] = _leaders([first, second])
    asked: list[str] = []
    leader.on("request", lambda request: asked.append(request.url))
    with leader.expect_request(re.compile(r"/stream\?"), timeout=15_000):
        pass
    assert f"{server.url}/me" in asked, asked
    said = f"renewed {token()}"
    for tab in (first, second):
        _live(tab)
    _say(second, said)
    for tab in (first, second):
        _wait_for_room_text(tab, said)
        shown = tab.locator("#room-messages li.room-message").filter(has_text=said)
        expect(shown.locator(".sender")).to_have_text("Eve")


def test_a_follower_hears_events_only_its_own_views_name_regenerate_s_truncate(
    person: OpenBrowser, server: ServerProcess
) -> None:
    first = person(server)
    _live(first)
    second = _tab(first)
    _live(second)
    # The first tab leads and shows only rooms: it relays what the second's Chat view names.
    assert _leaders([first, second]) == [first]
    _open_chat(second)
    _send(second, f"again {token()}")
    reply = _replies(second).last
    expect(reply).to_have_attribute("data-status", "complete")
    first_id = reply.get_attribute("data-message-id") or ""
    reply.locator('button[data-action="regenerate"]').click()
    # `truncate` removed the old reply, and the new one streamed in: one reply, another id.
    expect(_replies(second).last).not_to_have_attribute("data-message-id", first_id)
    expect(_replies(second).last).to_have_attribute("data-status", "complete")
    expect(_replies(second)).to_have_count(1)
    # All through the first tab's stream: the second never opened one.
    assert _opened(second) == []
