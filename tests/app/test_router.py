"""The app without a socket: `App.handle` tables, parsed requests in and exact replies out."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from sse.app.room import JOIN_ANNOUNCEMENT, ROOM, SENT_REPLY, Room
from sse.app.router import App
from sse.app.static import StaticFile
from sse.app.values import OpenSocket, OpenStream, Reply, Request, Result, Route
from sse.config import Config
from sse.errors import ClientError
from sse.pubsub.broker import MemoryBroker
from sse.pubsub.hub import Hub

JSON = {"content-type": "application/json"}
_NO_VALUE = "Expecting value: line 1 column 1 (char 0)"
PAGE = {"/": StaticFile("text/html; charset=utf-8", b"<!doctype html>")}


def _app(config: Config | None = None) -> tuple[App, Hub]:
    config = config or Config()
    hub = Hub(history_size=10, epoch="7")
    routes = [
        *Room(config, MemoryBroker(hub)).routes(),
        Route("/things/{id}", {"GET": _thing, "DELETE": _thing}),
    ]
    return App(config, routes, PAGE, lambda: {"status": "ok"}), hub


def _thing(req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
    if params["id"] == "gone":
        raise ClientError(404, "no thing gone")
    return Reply(200, params["id"].encode(), "text/plain")


def _handle(app: App, method: str, path: str, **headers: str) -> Result:
    body = headers.pop("body", "").encode()
    result = app.handle(Request(method, path, {}, {**JSON, **headers}), body)
    assert isinstance(result, Reply | OpenStream | OpenSocket), "these routes answer at once"
    return result


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nowhere", 404, "no such path: /nowhere"),
        ("POST", "/events", 405, "POST is not allowed here"),
        ("GET", "/things/gone", 404, "no thing gone"),
        ("POST", "/send-message", 400,
         "body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    ],
)  # fmt: skip
def test_client_mistakes_are_exact_4xx_replies(
    method: str, path: str, status: int, error: str
) -> None:
    reply = _handle(_app()[0], method, path)
    assert isinstance(reply, Reply)
    assert (reply.status, json.loads(reply.body)) == (status, {"error": error})


def test_a_405_says_which_methods_are_allowed() -> None:
    reply = _handle(_app()[0], "PUT", "/things/1")
    assert isinstance(reply, Reply)
    assert ("allow", "GET, DELETE, HEAD, OPTIONS") in reply.headers


def test_path_parameters_reach_the_handler_and_head_is_get() -> None:
    app = _app()[0]
    assert _handle(app, "GET", "/things/42") == Reply(200, b"42", "text/plain")
    assert _handle(app, "HEAD", "/things/42") == Reply(200, b"42", "text/plain")


def test_events_opens_the_room_and_announces_a_new_user_only() -> None:
    app = _app()[0]
    assert _handle(app, "GET", "/events") == OpenStream(ROOM, None, JOIN_ANNOUNCEMENT)
    resumed = _handle(app, "GET", "/events", **{"last-event-id": "7-3"})
    assert resumed == OpenStream(ROOM, "7-3", None)
    quiet = _app(Config(join_announcement=False))[0]
    assert _handle(quiet, "GET", "/events") == OpenStream(ROOM, None, None)


def test_send_message_publishes_once_and_acknowledges() -> None:
    app, hub = _app()
    reply = _handle(app, "POST", "/send-message", body='{"message": "hi"}')
    assert reply == Reply(200, SENT_REPLY, "text/plain; charset=utf-8")
    assert hub.last_id(ROOM) == "7-1"
    assert [f.event.data for f in hub.resume(ROOM, "7-0").frames if f.event] == ["hi"]


def test_cors_headers_are_added_for_an_allowed_origin_only() -> None:
    app = _app(Config(cors_origins=("https://a.example",)))[0]
    allowed = _handle(app, "GET", "/things/1", origin="https://a.example")
    other = _handle(app, "GET", "/things/1", origin="https://b.example")
    assert isinstance(allowed, Reply)
    assert isinstance(other, Reply)
    assert ("access-control-allow-origin", "https://a.example") in allowed.headers
    assert not any(name.startswith("access-control-") for name, _ in other.headers)


def test_a_preflight_is_answered_without_calling_the_handler() -> None:
    reply = _handle(_app()[0], "OPTIONS", "/things/gone", origin="https://a.example")
    assert isinstance(reply, Reply)
    assert reply.status == 204
    assert ("allow", "GET, DELETE, HEAD, OPTIONS") in reply.headers


def test_the_page_and_health_are_served() -> None:
    app = _app()[0]
    page = _handle(app, "GET", "/")
    assert isinstance(page, Reply)
    assert page.body == b"<!doctype html>"
    health = _handle(app, "GET", "/healthz")
    assert isinstance(health, Reply)
    assert json.loads(health.body) == {"status": "ok"}


def test_a_room_socket_carries_the_room_and_its_commands() -> None:
    upgrade = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": "MDEyMzQ1Njc4OWFiY2RlZg==",
        "sec-websocket-version": "13",
    }
    app, hub = _app()
    opened = _handle(app, "GET", "/ws", **upgrade)
    assert isinstance(opened, OpenSocket)
    assert (opened.topic, opened.announce) == (ROOM, JOIN_ANNOUNCEMENT)
    answer = opened.commands('{"type": "send", "message": "over a socket"}')
    assert answer == b'{"type":"ack","id":"7-1"}'
    refused = opened.commands('{"type": "send"}')
    assert refused == b'{"type":"error","status":400,"error":"missing \\"message\\""}'
    assert hub.last_id(ROOM) == "7-1"
