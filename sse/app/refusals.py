"""Refusals an `EventSource` survives: 200, a `retry:`, one named event, and the end.

EventSource gives up for good on any status but 200 (WHATWG HTML, "Server-sent
events": "fail the connection"). A stream refused for a reason that can pass
(a credential to renew, a server busy) is therefore answered 200 with an event
the page acts on (`reauth`: renew the credential and reconnect) and a retry
for the browser to come back by itself.
"""

from __future__ import annotations

import json

from sse.app.values import Reply
from sse.protocol.sse import Event, encode

__all__ = ["BUSY", "REAUTH", "busy_event", "reauth_event", "refused_stream"]

REAUTH = "reauth"
BUSY = "busy"
_STREAM_HEADERS = (("cache-control", "no-cache"),)

_REASONS = {
    "expired": "your credential expired; renew it and reconnect",
    "revoked": "your credential is no longer valid (signed out, or a ticket used twice)",
    "invalid": "your credential is not valid; renew it and reconnect",
}


def reauth_event(reason: str, retry_ms: int | None = None) -> bytes:
    """The `event: reauth` that tells a page to renew its credential, with `reason`."""
    payload = {"reason": reason, "message": _REASONS.get(reason, reason)}
    return encode(Event(json.dumps(payload), event=REAUTH, retry_ms=retry_ms))


def busy_event(limit: str, message: str, retry_ms: int) -> bytes:
    """The `event: busy` of a stream over a limit: which one, and when to come back."""
    payload = {"limit": limit, "message": message, "retry_after_ms": retry_ms}
    return encode(Event(json.dumps(payload), event=BUSY, retry_ms=retry_ms))


def refused_stream(body: bytes, cors: tuple[tuple[str, str], ...]) -> Reply:
    """A 200 event stream of `body` that ends at once (its length closes it)."""
    return Reply(200, body, "text/event-stream", (*cors, *_STREAM_HEADERS))
