"""CORS response headers for the configured allow-list (Fetch standard, "CORS protocol")."""

from __future__ import annotations

__all__ = ["cors_headers", "preflight_headers"]

_PREFLIGHT_MAX_AGE_S = "600"
_CREDENTIALS = ("access-control-allow-credentials", "true")


def cors_headers(origin: str | None, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """Headers that let `origin` read a response, or none when it is not allowed.

    An origin named in the list may send cookies (Access-Control-Allow-Credentials);
    `*` lets any other read what needs no cookie, and never with one: the Fetch
    standard refuses `*` together with credentials, and we never echo a stranger.
    """
    if origin is None:
        # Not a CORS request (same origin, curl): nothing to allow. A named list
        # still varies on Origin, so a cache never serves this to a CORS request.
        return [] if allowed == ("*",) else [("vary", "Origin")]
    if origin in allowed and origin != "*":
        return [("access-control-allow-origin", origin), _CREDENTIALS, ("vary", "Origin")]
    if "*" in allowed:
        # A named list beside "*" still varies on Origin.
        star = [("access-control-allow-origin", "*")]
        return star if allowed == ("*",) else [*star, ("vary", "Origin")]
    return [("vary", "Origin")]


def preflight_headers(
    origin: str | None, allowed: tuple[str, ...], methods: str, request_headers: str | None
) -> list[tuple[str, str]]:
    """Headers answering an OPTIONS preflight for a path that accepts `methods`."""
    headers = cors_headers(origin, allowed)
    headers.append(("access-control-allow-methods", methods))
    if request_headers:
        # Echoing what was asked is safe: a header grants nothing to an origin
        # that is not allowed (and cookies only to named ones), and it lets
        # clients send Authorization, Last-Event-ID or Content-Type.
        headers.append(("access-control-allow-headers", request_headers))
    headers.append(("access-control-max-age", _PREFLIGHT_MAX_AGE_S))
    return headers
