"""One identity per request, from its cookie, token or ticket, by the configured mode.

`guest` and `accounts`: the `ssechat_session` cookie names a guest or an
account's sign-in; without a valid one, the request is a new guest and the
reply sets its cookie. `jwt`: a token from `Authorization: Bearer` or the
`ssechat_token` cookie, and no guests. In every mode an event stream may
bring a single-use `?ticket=` instead. Nothing here answers a request: the
routes (`sse.app`) turn a `Verdict` into a reply.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Mapping

from sse.auth.cookies import SESSION_COOKIE, TOKEN_COOKIE, clear_cookie, read_cookie, set_cookie
from sse.auth.identity import ACCOUNT, GUEST, Identity, Verdict
from sse.auth.passwords import Passwords
from sse.auth.sessions import GUEST_MAX_AGE_S, Session, SessionCodec
from sse.auth.tickets import ClaimOnce, Tickets
from sse.auth.tokens import JwtVerifier
from sse.chat.store.base import Account, Store
from sse.config import Config
from sse.errors import BrokerUnavailable

__all__ = ["Gate"]

log = logging.getLogger("ssechat.auth")

# Problems a stream answers with `reauth` rather than go on as someone else.
_RENEWABLE = frozenset({"expired", "revoked"})


class Gate:
    """Resolves requests to identities; mints the cookies and tickets that name them."""

    def __init__(self, config: Config, store: Store, secret: bytes, claim_once: ClaimOnce) -> None:
        self.mode = config.auth
        self.sessions = SessionCodec(secret, account_max_age_s=config.session_days * 86400)
        self.tickets = Tickets(secret, claim_once)
        self.tokens = JwtVerifier(config) if config.auth == "jwt" else None
        self.passwords = Passwords() if config.auth == "accounts" else None
        self.secure = (config.public_url or "").startswith("https://")
        self._store = store

    # -- resolving -----------------------------------------------------------

    def resolve(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        *,
        stream: bool,
        tickets: bool = False,
    ) -> Verdict | Awaitable[Verdict]:
        """Who sent a request with these headers and query.

        `stream`: it opens an event stream, which is told to renew a credential
        that expired rather than go on as someone new. `tickets`: a `?ticket=`
        may stand for the credential (event streams and WebSocket upgrades,
        which a cross-site page cannot give a header).
        """
        ticket = query.get("ticket") if tickets else None
        if ticket is not None:
            return self._redeem(ticket)
        if self.tokens is not None:
            token = _bearer(headers.get("authorization")) or read_cookie(
                headers.get("cookie"), TOKEN_COOKIE
            )
            if token is None:
                return Verdict(None, "missing")
            checked = self.tokens.verify(token)
            if isinstance(checked, Identity | str):
                return _token_verdict(checked)
            return self._await_token(checked)
        value = read_cookie(headers.get("cookie"), SESSION_COOKIE)
        if value is None:
            return self.new_guest()
        session = self.sessions.read(value)
        if isinstance(session, str):
            return self._refused(session, stream)
        if session.guest:
            return Verdict(Identity(GUEST, session.user, session.name))
        return self._account_session(session, stream)

    def peek(self, headers: Mapping[str, str]) -> Identity | None:
        """Who a request is by its session cookie alone, for counting it: no store, no new guest.

        An account is named by its sign-in (the store would know its id), which
        counts the same for as long as the cookie is kept.
        """
        value = read_cookie(headers.get("cookie"), SESSION_COOKIE)
        if value is None:
            return None
        session = self.sessions.read(value)
        if isinstance(session, str):
            return None
        if session.guest:
            return Identity(GUEST, session.user, session.name)
        return Identity(ACCOUNT, f"session-{session.session}", "")

    async def _await_token(self, pending: Awaitable[Identity | str]) -> Verdict:
        return _token_verdict(await pending)

    async def _account_session(self, session: Session, stream: bool) -> Verdict:
        account = await self._store.session_account(session.session)
        if account is None:
            return self._refused("revoked", stream)
        return Verdict(_account_identity(account, session.session))

    def _refused(self, problem: str, stream: bool) -> Verdict:
        # A stream must not go on as a stranger: it is told to renew instead.
        if stream and problem in _RENEWABLE:
            return Verdict(None, problem)
        guest = self.new_guest()
        return Verdict(guest.identity, problem, guest.cookies)

    async def _redeem(self, ticket: str) -> Verdict:
        found = self.tickets.read(ticket)
        if isinstance(found, str):
            return Verdict(None, found)
        identity, nonce = found
        try:
            first = self.tickets.spend(nonce)
            if not isinstance(first, bool):
                first = await first
        except BrokerUnavailable:
            # Whether it was used cannot be known: refused, and the page asks again.
            return Verdict(None, "unavailable")
        if not first:
            return Verdict(None, "revoked")  # a ticket opens one stream, once
        if identity.expires_at is not None and identity.expires_at <= time.time():
            return Verdict(None, "expired")
        if identity.kind == ACCOUNT and identity.session is not None:
            account = await self._store.session_account(identity.session)
            if account is None:
                return Verdict(None, "revoked")
        return Verdict(identity)

    # -- minting -------------------------------------------------------------

    def new_guest(self) -> Verdict:
        """A new guest, with the cookie that makes the browser stay one."""
        user = uuid.uuid4().hex
        identity = Identity(GUEST, user, f"Guest {user[:4]}")
        return Verdict(identity, None, (self.guest_cookie(identity),))

    def guest_cookie(self, identity: Identity) -> str:
        """The session cookie of a guest, carrying its id and display name."""
        value = self.sessions.guest(identity.id, identity.name)
        return set_cookie(SESSION_COOKIE, value, max_age_s=GUEST_MAX_AGE_S, secure=self.secure)

    async def sign_in(self, account: Account) -> tuple[Identity, str]:
        """A new sign-in of `account`: its identity and the cookie that carries it."""
        max_age_s = self.sessions.account_max_age_s
        session = await self._store.create_session(account.id, max_age_s)
        value = self.sessions.account(session)
        cookie = set_cookie(SESSION_COOKIE, value, max_age_s=max_age_s, secure=self.secure)
        return _account_identity(account, session), cookie

    def signed_out_cookie(self) -> str:
        """The Set-Cookie value that removes the session cookie."""
        return clear_cookie(SESSION_COOKIE, secure=self.secure)


def _account_identity(account: Account, session: str) -> Identity:
    return Identity(ACCOUNT, account.id, account.name, session=session)


def _token_verdict(checked: Identity | str) -> Verdict:
    return Verdict(checked) if isinstance(checked, Identity) else Verdict(None, checked)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
