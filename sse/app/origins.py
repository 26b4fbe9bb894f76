"""Which origins may send our cookies: this server's own, and those named with --cors-origin.

A browser attaches cookies to requests that other sites make (SameSite=Lax
stops most, not a same-site subdomain or a top-level form POST in every
browser), so a write that carries our cookie is refused when its `Origin` is
a stranger's. `*` in --cors-origin lets any site use the API without cookies,
never with them. A request with no `Origin` (curl, a server) is not a browser
acting for someone else, and passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from sse.config import Config

__all__ = ["CookieOrigins", "carries_our_cookie"]


def carries_our_cookie(headers: Mapping[str, str]) -> bool:
    """Whether the request brings one of our cookies (ssechat_session, ssechat_token)."""
    return "ssechat_" in headers.get("cookie", "")


class CookieOrigins:
    """Decides whether an `Origin` may act with the cookies a request carries."""

    def __init__(self, public_url: str | None, cors_origins: tuple[str, ...]) -> None:
        self._public = _origin_of(public_url) if public_url else None
        # Named ones only: "*" never lets a stranger use someone's cookies.
        self._named = frozenset(o for o in cors_origins if o != "*")

    @classmethod
    def from_config(cls, config: Config) -> CookieOrigins:
        """The rules --public-url and --cors-origin make."""
        return cls(config.public_url, config.cors_origins)

    @property
    def named(self) -> frozenset[str]:
        """The origins given with --cors-origin, without "*"."""
        return self._named

    def allows(self, origin: str, headers: Mapping[str, str]) -> bool:
        """Whether `origin` is this server's own (by --public-url or Host) or named."""
        if origin in self._named:
            return True
        if self._public is not None:
            return origin == self._public
        host = headers.get("host")
        # Without --public-url the Host the browser used is our own address; http
        # or https, as a proxy in front may have ended TLS.
        return host is not None and origin in (f"http://{host}", f"https://{host}")


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
