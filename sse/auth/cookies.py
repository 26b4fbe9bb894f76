"""Reading the Cookie header and writing Set-Cookie values (RFC 6265)."""

from __future__ import annotations

__all__ = ["SESSION_COOKIE", "TOKEN_COOKIE", "clear_cookie", "read_cookie", "set_cookie"]

SESSION_COOKIE = "ssechat_session"
# Set by the host application in jwt mode: it carries the host's token.
TOKEN_COOKIE = "ssechat_token"


def read_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header, or None; the first one wins."""
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None


def set_cookie(name: str, value: str, *, max_age_s: int, secure: bool) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax, for the whole site."""
    # Lax: sent when a person follows a link here, never with another site's
    # fetch or form POST; the Origin check in `sse.app.router` covers the rest.
    flags = f"; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Lax"
    return f"{name}={value}{flags}{'; Secure' if secure else ''}"


def clear_cookie(name: str, *, secure: bool) -> str:
    """A Set-Cookie value that makes the browser forget cookie `name`."""
    return set_cookie(name, "", max_age_s=0, secure=secure)
