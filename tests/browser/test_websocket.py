"""Headless Chromium's own `WebSocket` against `python server.py`, then the page's switch.

The protocol tests' scripts run in a page the server itself serves (`/healthz`,
which has no script of its own), so the socket carries the server's own Origin
like a page of the app would. The page tests drive the room over its transport
switch (Settings, "Room transport"). Messages carry a unique token so a test
never mistakes another test's message for its own.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_room import (
    RECONNECT_TIMEOUT_MS,
)
from tests.conftest import page_opener
from tests.support.servers import ServerProcess

# Small, so a test can go over it without sending much.
MAX_MESSAGE_BYTES = 4096

# Opens a socket and keeps what arrives in `window.sockets[name]`.
_OPEN = """async ([name, url]) => {
  window.sockets = window.sockets || {};
  const ws = new WebSocket(url);
  const state = {ws, got: [], closed: null};
  ws.onmessage = event => state.got.push(JSON.parse(event.data));
  ws.onclose = event => {
    state.closed = {code: event.code, reason: event.reason, wasClean: event.wasClean};
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("the WebSocket failed to open"));
  });
  window.sockets[name] = state;
  return ws.extensions;
}"""


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `python server.py` on a free port for the module, with a small message limit."""
    db = tmp_path_factory.mktemp("chat-ws") / "chat.sqlite3"
    server = ServerProcess(
        "--port", "0", "--db", str(db), "--ws-max-message-bytes", str(MAX_MESSAGE_BYTES)
    )
    yield server
    server.kill()


@pytest.fixture
def page(browser: Browser, chat: ServerProcess) -> Iterator[Page]:
    """A page of the server's origin in a fresh context; fails on uncaught JS errors."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{chat.url}/healthz")
    yield page
    context.close()
    assert errors == [], "uncaught errors in the page"


def _ws_url(chat: ServerProcess, path: str = "/ws") -> str:
    host, port = chat.address
    return f"ws://{host}:{port}{path}"


def _open(page: Page, name: str, url: str) -> str:
    extensions: str = page.evaluate(_OPEN, [name, url])
    return extensions


def _wait_for(page: Page, name: str, predicate: str, arg: Any = None) -> Any:
    """Wait until `predicate(messages, arg)` holds for socket `name`; return its value."""
    handle = page.wait_for_function(
        f"([name, arg]) => {{ const got = window.sockets[name].got; return ({predicate}); }}",
        arg=[name, arg],
    )
    return handle.json_value()


def _token() -> str:
    return uuid.uuid4().hex[:8]


def test_chromium_socket_receives_room_events_and_sends_a_message(
    page: Page, chat: ServerProcess
) -> None:
    assert _open(page, "alice", _ws_url(chat)) == ""  # no permessage-deflate by default
    _open(page, "bob", _ws_url(chat))
    host, port = chat.address
    posted = f"posted {_token()}"
    response = page.request.post(f"http://{host}:{port}/send-message", data={"message": posted})
    assert response.status == 200
    for name in ("alice", "bob"):
        event = _wait_for(page, name, "got.find(m => m.data === arg)", posted)
        assert event["event"] == "message"
        assert event["id"]
    sent = f"sent from Chromium {_token()}"
    page.evaluate(
        "([name, text]) => window.sockets[name].ws.send("
        "JSON.stringify({type: 'send', message: text}))",
        ["alice", sent],
    )
    ack = _wait_for(page, "alice", "got.find(m => m.type === 'ack')")
    for name in ("alice", "bob"):
        event = _wait_for(page, name, "got.find(m => m.data === arg)", sent)
        assert event == {"id": ack["id"], "event": "message", "data": sent}
    chat.wait_for_log("topic=room compression=off")


def test_chromium_socket_resumes_by_query_parameter(page: Page, chat: ServerProcess) -> None:
    _open(page, "first", _ws_url(chat))
    marker = f"before {_token()}"
    page.evaluate(
        "text => window.sockets.first.ws.send(JSON.stringify({type: 'send', message: text}))",
        marker,
    )
    seen = _wait_for(page, "first", "got.find(m => m.data === arg)", marker)
    missed = f"missed {_token()}"
    page.evaluate("() => window.sockets.first.ws.close(1000)")
    page.wait_for_function("() => window.sockets.first.closed !== null")
    page.request.post(f"{chat.url}/send-message", data={"message": missed})
    _open(page, "again", _ws_url(chat, f"/ws?last_event_id={seen['id']}"))
    replayed = _wait_for(page, "again", "got.find(m => m.data === arg)", missed)
    assert replayed["event"] == "message"


def test_chromium_sees_a_clean_1000_and_a_1009_for_an_oversize_message(
    page: Page, chat: ServerProcess
) -> None:
    _open(page, "polite", _ws_url(chat))
    page.evaluate("() => window.sockets.polite.ws.close(1000, 'done')")
    closed = page.wait_for_function("() => window.sockets.polite.closed").json_value()
    assert closed == {"code": 1000, "reason": "done", "wasClean": True}

    _open(page, "big", _ws_url(chat))
    page.evaluate(
        "size => window.sockets.big.ws.send("
        "JSON.stringify({type: 'send', message: 'x'.repeat(size)}))",
        MAX_MESSAGE_BYTES,
    )
    closed = page.wait_for_function("() => window.sockets.big.closed").json_value()
    assert closed["code"] == 1009
    assert str(MAX_MESSAGE_BYTES) in closed["reason"]


def test_chromium_gets_an_error_frame_for_a_bad_command(page: Page, chat: ServerProcess) -> None:
    _open(page, "sloppy", _ws_url(chat))
    page.evaluate("() => window.sockets.sloppy.ws.send('not json')")
    error = _wait_for(page, "sloppy", "got.find(m => m.type === 'error')")
    assert error["status"] == 400
    assert page.evaluate("() => window.sockets.sloppy.ws.readyState") == 1  # still OPEN


# -- the page's transport switch ---------------------------------------------------

OpenApp = Callable[..., Page]


@pytest.fixture
def open_app(browser: Browser, chat: ServerProcess) -> Iterator[OpenApp]:
    """Open the app's page (`/` of `chat` by default) in a fresh context; fail on JS errors."""
    with page_opener(browser, f"{chat.url}/#room") as open_:
        yield open_


def _wait_for_message(page: Page, text: str) -> None:
    page.wait_for_function(
        """text => [...document.querySelectorAll("#messages li.message")]
                     .some(item => item.textContent === text)""",
        arg=text,
    )


def test_page_switches_the_room_to_a_websocket_and_remembers_it(
    open_app: OpenApp, chat: ServerProcess
) -> None:
    page = open_app()
    reader = open_app()  # stays on SSE, the default
    for p in (page, reader):
        expect(p.locator("#status")).to_have_text("live")
        expect(p.locator("#transport-label")).to_have_text("SSE")
    expect(page.locator("#messages li.join")).to_have_count(2)
    last_id = page.locator("#messages li").last.get_attribute("data-event-id")
    assert last_id

    page.locator("details.settings summary").click()
    expect(page.locator("#transport-sse")).to_be_checked()
    with page.expect_websocket() as opened:
        page.locator("#transport-ws").check()
    socket = opened.value
    # It resumes after the last event seen, so nothing is missed or listed twice.
    assert socket.url.endswith(f"/ws?last_event_id={last_id}"), socket.url
    sent: list[str] = []
    socket.on("framesent", lambda payload: sent.append(str(payload)))
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#transport-label")).to_have_text("WebSocket")

    text = f"over the socket {_token()}"
    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")
    expect(page.locator("#message-input")).to_have_value("")
    expect(page.locator("#send-error")).to_be_hidden()
    for p in (page, reader):
        _wait_for_message(p, text)
    assert [json.loads(frame) for frame in sent] == [{"type": "send", "message": text}]
    # A resuming socket is no new user: still the two joins, nothing twice.
    expect(page.locator("#messages li.join")).to_have_count(2)
    ids = page.locator("#messages li").evaluate_all("items => items.map(i => i.dataset.eventId)")
    assert len(ids) == len(set(ids)), ids

    # Saved in this browser: a reload comes back on a WebSocket.
    with page.expect_websocket() as reopened:
        page.reload()
    assert reopened.value.url.endswith("/ws")
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#transport-label")).to_have_text("WebSocket")

    page.locator("details.settings summary").click()
    expect(page.locator("#transport-ws")).to_be_checked()
    with page.expect_request(re.compile(r"/events\b")):
        page.locator("#transport-sse").check()
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#transport-label")).to_have_text("SSE")
    chat.wait_for_log("compression=off resume=")


def test_page_socket_reconnects_after_a_restart_with_a_gap_notice(
    open_app: OpenApp, spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # A restart: same port, same database, new process.
    same = ("--db", str(tmp_path / "restarted.sqlite3"))
    first = spawn(*same)
    port = first.address[1]
    page = open_app(f"{first.url}/?transport=ws#room")
    status = page.locator("#status")
    expect(status).to_have_text("live")
    expect(page.locator("#transport-label")).to_have_text("WebSocket")
    last_id = page.locator("#messages li").last.get_attribute("data-event-id")
    assert last_id

    first.terminate()  # closes the socket with 1001, going away
    expect(status).to_have_text("reconnecting")
    assert "code=1001 server shutting down" in first.log

    second = spawn("--port", str(port), *same)
    expect(status).to_have_text("live", timeout=RECONNECT_TIMEOUT_MS)
    # The socket resumed by query; the new process cannot know the old id.
    notice = page.locator("#messages li.notice")
    expect(notice).to_have_count(1)
    expect(notice).to_have_attribute("data-resumed-from", last_id)
    assert re.search(rf"resume='{re.escape(last_id)}' replay=\d+ gap", second.log), second.log

    text = f"after the restart {_token()}"
    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")
    _wait_for_message(page, text)
