"""Whether a request may become a WebSocket: RFC 6455's checks, then the origin allow-list."""

from __future__ import annotations

from sse.app.values import Reply, Request, json_reply
from sse.protocol.websocket import VERSION_HEADER, handshake_problem

__all__ = ["check_handshake"]


def check_handshake(req: Request, allowed_origins: tuple[str, ...]) -> Reply | None:
    """Why `req` cannot be upgraded to a WebSocket, as the reply to send; None if it can."""
    problem = handshake_problem(req.method, req.headers)
    if problem is not None:
        status, message = problem
        return json_reply(status, {"error": message}, (VERSION_HEADER,))
    origin = req.headers.get("origin")
    # RFC 6455 section 10.2: a browser always sends Origin, and a WebSocket is not
    # covered by CORS, so the allow-list that guards reads by other sites guards it here.
    if origin is not None and "*" not in allowed_origins and origin not in allowed_origins:
        return json_reply(403, {"error": f"origin {origin!r} is not allowed"})
    return None
