"""The values identity resolution hands the routes: who is asking, and what was wrong."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCOUNT", "GUEST", "JWT", "Identity", "Verdict"]

GUEST = "guest"
ACCOUNT = "account"
JWT = "jwt"


@dataclass(frozen=True, slots=True)
class Identity:
    """Someone using the server: a guest, an account, or a host application's user.

    `expires_at` (seconds since the epoch) is when the credential stops being
    valid, for a stream to end with `reauth` then; None when it does not expire
    while a stream could be open (a session cookie, renewed by the page).
    `session` is an account's sign-in, for signing out.
    """

    kind: str
    id: str
    name: str
    expires_at: float | None = None
    session: str | None = None

    @property
    def owner(self) -> str:
        """What the store files this identity's conversations under: kinds never collide."""
        return f"{self.kind}:{self.id}"

    def public(self) -> dict[str, str]:
        """What `GET /me` shows."""
        return {"id": self.id, "name": self.name, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request's credentials came to.

    `identity` is None only in jwt mode, when no valid token came. `problem`
    says what was wrong with a credential that came: "invalid" (tampered,
    garbage, wrong key, audience or issuer), "expired", "revoked" (signed out,
    a ticket used twice) or, in jwt mode, "missing". `cookies` are Set-Cookie
    values the reply must carry (a new guest's session).
    """

    identity: Identity | None
    problem: str | None = None
    cookies: tuple[str, ...] = ()
