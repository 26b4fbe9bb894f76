"""Whether a request may become a WebSocket: RFC 6455's checks, then the origin rules."""

from __future__ import annotations

from sse.app.origins import CookieOrigins, carries_our_cookie
from sse.app.values import Reply, Request, json_reply
from sse.protocol.websocket import VERSION_HEADER, handshake_problem

__all__ = ["check_handshake"]


def check_handshake(
    req: Request, allowed_origins: tuple[str, ...], cookie_origins: CookieOrigins
) -> Reply | None:
    """Why `req` cannot be upgraded to a WebSocket, as the reply to send; None if it can."""
    problem = handshake_problem(req.method, req.headers)
    if problem is not None:
        status, message = problem
        return json_reply(status, {"error": message}, (VERSION_HEADER,))
    origin = req.headers.get("origin")
    if origin is None:
        return None
    # RFC 6455 section 10.2: a browser always sends Origin, and a WebSocket is not
    # covered by CORS. With our cookie, only our own and named origins may open
    # one (another site would act as the person); without, the allow-list decides.
    if carries_our_cookie(req.headers):
        if not cookie_origins.allows(origin, req.headers):
            return json_reply(403, {"error": f"origin {origin!r} may not use this site's cookies"})
        return None
    if "*" not in allowed_origins and origin not in allowed_origins:
        return json_reply(403, {"error": f"origin {origin!r} is not allowed"})
    return None
