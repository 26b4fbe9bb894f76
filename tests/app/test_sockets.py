"""Whether a request may become a WebSocket, and what its messages mean: pure tables."""

from __future__ import annotations

import base64

import pytest

from sse.app.commands import PostCommand, SendCommand, parse_command
from sse.app.handshake import check_handshake
from sse.app.origins import CookieOrigins
from sse.app.values import Request
from sse.errors import ClientError

KEY = base64.b64encode(b"0123456789abcdef").decode()
UPGRADE = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", KEY),
    ("sec-websocket-version", "13"),
]
OP_TEXT, OP_BINARY, OP_CONT, OP_CLOSE, OP_PING = 0x1, 0x2, 0x0, 0x8, 0x9


# -- pure: frames, payloads, handshake checks, commands ----------------------------


def _req(headers: list[tuple[str, str]], method: str = "GET") -> Request:
    return Request(method, "/ws", {}, dict(headers))


def _without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in UPGRADE if k != name]


@pytest.mark.parametrize(
    ("headers", "method", "status"),
    [
        (UPGRADE, "GET", None),
        ([*_without("connection"), ("connection", "keep-alive, Upgrade")], "GET", None),
        ([*_without("upgrade"), ("upgrade", "WebSocket")], "GET", None),
        (UPGRADE, "HEAD", 400),
        ([], "GET", 400),
        (_without("upgrade"), "GET", 400),
        (_without("connection"), "GET", 400),
        (_without("sec-websocket-key"), "GET", 400),
        ([*_without("sec-websocket-key"), ("sec-websocket-key", "c2hvcnQ=")], "GET", 400),
        (_without("sec-websocket-version"), "GET", 400),
        ([*_without("sec-websocket-version"), ("sec-websocket-version", "8")], "GET", 426),
    ],
)
def test_handshake_check_follows_rfc6455_section_4_2(
    headers: list[tuple[str, str]], method: str, status: int | None
) -> None:
    refused = check_handshake(_req(headers, method), ("*",), CookieOrigins(None, ("*",)))
    assert (refused.status if refused else None) == status
    if refused is not None:
        assert ("sec-websocket-version", "13") in refused.headers


@pytest.mark.parametrize(
    ("origin", "allowed", "status"),
    [
        (None, ("https://ok.example",), None),
        ("https://ok.example", ("https://ok.example",), None),
        ("https://evil.example", ("https://ok.example",), 403),
        ("https://evil.example", ("*",), None),
    ],
)
def test_origin_is_checked_against_the_cors_allow_list(
    origin: str | None, allowed: tuple[str, ...], status: int | None
) -> None:
    headers = [*UPGRADE, ("origin", origin)] if origin else UPGRADE
    refused = check_handshake(_req(headers), allowed, CookieOrigins(None, allowed))
    assert (refused.status if refused else None) == status


@pytest.mark.parametrize(
    ("origin", "allowed", "status"),
    [
        (None, ("*",), None),  # not a browser: no other site is acting
        ("http://chat.test", ("*",), None),  # the server's own (its Host)
        ("https://chat.test", ("*",), None),  # its own behind a TLS proxy
        ("https://evil.example", ("*",), 403),  # "*" never lends the cookie
        ("https://ok.example", ("https://ok.example",), None),
        ("https://evil.example", ("https://ok.example",), 403),
    ],
)
def test_an_upgrade_with_our_cookie_is_only_for_our_own_and_named_origins(
    origin: str | None, allowed: tuple[str, ...], status: int | None
) -> None:
    headers = [*UPGRADE, ("host", "chat.test"), ("cookie", "ssechat_session=x")]
    if origin:
        headers.append(("origin", origin))
    refused = check_handshake(_req(headers), allowed, CookieOrigins(None, allowed))
    assert (refused.status if refused else None) == status


@pytest.mark.parametrize(
    ("text", "conversation", "expected"),
    [
        ('{"type":"send","message":"hi"}', False, SendCommand("hi")),
        ('{"type":"send","message":""}', False, SendCommand("")),
        ('{"type":"message","content":"hi"}', True, PostCommand("hi")),
        ("nope", False, 400),
        ("[" * 100_000, False, 400),
        ("[]", False, 400),
        ('{"message":"hi"}', False, 400),
        ('{"type":"message","content":"hi"}', False, 400),
        ('{"type":"send","message":"hi"}', True, 400),
        ('{"type":"send"}', False, 400),
        ('{"type":"send","message":1}', False, 400),
        ('{"type":"send","message":"\\ud800"}', False, 400),
        ('{"type":"message","content":"  "}', True, 400),
        ('{"type":"message","content":"' + "x" * 11 + '"}', True, 413),
    ],
)
def test_commands_are_checked_like_the_post_bodies(
    text: str, conversation: bool, expected: object
) -> None:
    if isinstance(expected, int):
        with pytest.raises(ClientError) as caught:
            parse_command(text, conversation=conversation, max_content_chars=10)
        assert caught.value.status == expected
    else:
        assert parse_command(text, conversation=conversation, max_content_chars=10) == expected
