"""Session cookies: a guest's id and name, or an account's sign-in, signed by itsdangerous."""

from __future__ import annotations

import time
from dataclasses import dataclass

from itsdangerous import URLSafeTimedSerializer

from sse.auth.signed import load_signed

__all__ = ["GUEST_MAX_AGE_S", "Session", "SessionCodec"]

# Browsers keep a cookie at most 400 days (RFC 6265bis); a guest's lasts as long.
GUEST_MAX_AGE_S = 400 * 86400
# A cookie value longer than this is not one of ours: refused before any parsing.
_MAX_COOKIE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid session cookie says: a guest (`user`, `name`) or an account sign-in."""

    guest: bool
    user: str = ""
    name: str = ""
    session: str = ""


class SessionCodec:
    """Signs and reads `ssechat_session` cookie values (constant-time comparison inside)."""

    def __init__(self, secret: bytes, *, account_max_age_s: float) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="ssechat.session")
        self._account_max_age_s = account_max_age_s

    @property
    def account_max_age_s(self) -> int:
        """How long an account's sign-in cookie lasts."""
        return int(self._account_max_age_s)

    def guest(self, user: str, name: str) -> str:
        """The cookie value of a guest."""
        return self._signer.dumps({"k": "g", "u": user, "n": name})

    def account(self, session: str) -> str:
        """The cookie value of an account's sign-in (the session id the store knows)."""
        return self._signer.dumps({"k": "a", "s": session})

    def read(self, value: str) -> Session | str:
        """The session a cookie value holds, or what is wrong with it: "invalid" or "expired"."""
        # The longest life any cookie has; an account's is checked below.
        found = load_signed(
            self._signer, value, max_chars=_MAX_COOKIE_CHARS, max_age_s=GUEST_MAX_AGE_S
        )
        if isinstance(found, str):
            return found
        data, signed_at = found
        kind = data.get("k")
        if kind == "g":
            user, name = data.get("u"), data.get("n")
            if isinstance(user, str) and isinstance(name, str) and user:
                return Session(True, user=user, name=name)
        elif kind == "a":
            session = data.get("s")
            if isinstance(session, str) and session:
                age_s = time.time() - signed_at.timestamp()
                if age_s > self._account_max_age_s:
                    return "expired"
                return Session(False, session=session)
        return "invalid"
