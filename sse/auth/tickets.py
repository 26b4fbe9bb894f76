"""Stream tickets: single-use, 60-second stand-ins for a credential in a stream's URL.

A cross-site page cannot give an `EventSource` a header, and a long-lived
token in a URL ends up in logs and histories. The page POSTs for a ticket
(with its token in the header) and opens `?ticket=`; the ticket is signed
(any node can check it) and spent on first use (`claim_once`, in Redis when
nodes share one), so a leaked URL opens nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from itsdangerous import URLSafeTimedSerializer

from sse.auth.identity import Identity
from sse.auth.signed import load_signed

__all__ = ["TICKET_TTL_S", "ClaimOnce", "Tickets"]

TICKET_TTL_S = 60
_MAX_TICKET_CHARS = 1024
# Whether a ticket's nonce is used for the first time (True), kept `ttl_s` seconds.
ClaimOnce = Callable[[str, int], "bool | Awaitable[bool]"]


class Tickets:
    """Mints and redeems stream tickets."""

    def __init__(self, secret: bytes, claim_once: ClaimOnce) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="ssechat.ticket")
        self._claim_once = claim_once

    def mint(self, identity: Identity) -> str:
        """A ticket standing for `identity`, until its first use or 60 s."""
        return self._signer.dumps(
            {
                "k": identity.kind,
                "u": identity.id,
                "n": identity.name,
                "e": identity.expires_at,
                "s": identity.session,
                "j": secrets.token_urlsafe(12),
            }
        )

    def read(self, ticket: str) -> tuple[Identity, str] | str:
        """The identity and nonce a ticket holds, or "invalid" / "expired"; not yet spent."""
        found = load_signed(
            self._signer, ticket, max_chars=_MAX_TICKET_CHARS, max_age_s=TICKET_TTL_S
        )
        if isinstance(found, str):
            return found
        data = found[0]
        kind, user, name, expires, session, nonce = (
            data.get(k) for k in ("k", "u", "n", "e", "s", "j")
        )
        if not (isinstance(kind, str) and isinstance(user, str) and isinstance(name, str)):
            return "invalid"
        if not isinstance(nonce, str) or not isinstance(expires, int | float | None):
            return "invalid"
        identity = Identity(
            kind, user, name, expires, session if isinstance(session, str) else None
        )
        return identity, nonce

    def spend(self, nonce: str) -> bool | Awaitable[bool]:
        """Mark a ticket used; False when it was used already."""
        return self._claim_once(f"ticket:{nonce}", TICKET_TTL_S)
