"""CORS response headers for the configured allow-list (Fetch standard, "CORS protocol")."""

from __future__ import annotations

__all__ = ["cors_headers", "preflight_headers"]

_PREFLIGHT_MAX_AGE_S = "600"


def cors_headers(origin: str | None, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """Headers that let `origin` read a response, or none when it is not allowed.

    Our endpoints carry no credentials, so `*` is a safe answer when the
    allow-list says so; a named list echoes the origin and varies on it.
    """
    if origin is None:
        # Not a CORS request (same origin, curl): nothing to allow. A named list
        # still varies on Origin, so a cache never serves this to a CORS request.
        return [] if "*" in allowed else [("vary", "Origin")]
    if "*" in allowed:
        return [("access-control-allow-origin", "*")]
    if origin in allowed:
        return [("access-control-allow-origin", origin), ("vary", "Origin")]
    return [("vary", "Origin")]


def preflight_headers(
    origin: str | None, allowed: tuple[str, ...], methods: str, request_headers: str | None
) -> list[tuple[str, str]]:
    """Headers answering an OPTIONS preflight for a path that accepts `methods`."""
    headers = cors_headers(origin, allowed)
    headers.append(("access-control-allow-methods", methods))
    if request_headers:
        # Echoing what was asked is safe here: no endpoint trusts any request header
        # for authority, and it lets clients send e.g. Last-Event-ID or Content-Type.
        headers.append(("access-control-allow-headers", request_headers))
    headers.append(("access-control-max-age", _PREFLIGHT_MAX_AGE_S))
    return headers
