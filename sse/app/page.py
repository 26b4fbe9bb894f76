"""The headers the browser page is served with: what it may load, and who may frame it."""

from __future__ import annotations

from collections.abc import Iterable

from sse.app.values import NOSNIFF

__all__ = ["page_headers"]


def page_headers(connect_origins: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Headers for the page's files: a strict CSP, nosniff, and no referrer to other sites.

    Scripts and styles only from this origin, no inline script, no framing
    (clickjacking), and connections only to this origin and `connect_origins`
    (the ones named with --cors-origin).
    """
    connect = " ".join(["'self'", *sorted(connect_origins)])
    policy = "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    return (
        ("cache-control", "no-cache"),
        ("content-security-policy", policy),
        NOSNIFF,
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    )
