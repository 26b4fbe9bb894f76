"""Who am I, and signing in: `/me`, `/auth/*` (signup, login, logout), `/stream-tickets`.

The `/auth` routes exist only with `--auth accounts`. Signing up or in moves
the guest's conversations to the account, so nothing made before is lost.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping

from sse.app.inputs import parse_json_object, require_text
from sse.app.values import Reply, Request, Route, json_reply
from sse.auth.gate import Gate
from sse.auth.identity import ACCOUNT, GUEST, Identity
from sse.auth.tickets import TICKET_TTL_S
from sse.chat.store.base import Account, Store
from sse.config import Config
from sse.errors import ClientError
from sse.metrics import AUTH_FAILURES

__all__ = ["identity_routes"]

log = logging.getLogger("ssechat.auth")

_NO_STORE = (("cache-control", "no-store"),)
_USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
_PASSWORD_MIN_CHARS = 8
# argon2 takes any length; a cap keeps one request from costing seconds of hashing.
_PASSWORD_MAX_CHARS = 256
_NAME_MAX_CHARS = 64


def _display_name(value: str) -> str:
    """A display name: one line, 1 to 64 characters, no control characters."""
    name = " ".join(value.split())
    if not name:
        raise ClientError(400, '"name" must not be empty')
    if len(name) > _NAME_MAX_CHARS:
        raise ClientError(413, f'"name" is longer than {_NAME_MAX_CHARS} characters')
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise ClientError(400, '"name" must not hold control or format characters')
    return name


class _IdentityApi:
    def __init__(self, gate: Gate, store: Store) -> None:
        self._gate = gate
        self._store = store

    def me(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        return json_reply(200, req.who.public(), _NO_STORE)

    async def rename_me(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        who = req.who
        name = _display_name(require_text(parse_json_object(req, body), "name"))
        if who.kind == GUEST:
            renamed = Identity(GUEST, who.id, name)
            cookie = ("set-cookie", self._gate.guest_cookie(renamed))
            return json_reply(200, renamed.public(), (*_NO_STORE, cookie))
        if who.kind == ACCOUNT:
            if not await self._store.set_account_name(who.id, name):
                raise ClientError(404, "the account no longer exists")
            return json_reply(200, Identity(ACCOUNT, who.id, name).public(), _NO_STORE)
        raise ClientError(403, "the name comes from the host application's token")

    def ticket(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        ticket = self._gate.tickets.mint(req.who)
        return json_reply(200, {"ticket": ticket, "expires_in": TICKET_TTL_S}, _NO_STORE)

    async def signup(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        username, password = _credentials(req, body)
        if len(password) < _PASSWORD_MIN_CHARS:
            raise ClientError(
                400, f"the password must be at least {_PASSWORD_MIN_CHARS} characters"
            )
        passwords = self._gate.passwords
        assert passwords is not None, "the /auth routes exist only in accounts mode"
        encoded = await passwords.hash(password)
        account = await self._store.create_account(username, encoded, username)
        if account is None:
            raise ClientError(409, f"the username {username!r} is taken")
        log.info("account %s signed up", account.id)
        return await self._signed_in(req, account, 201)

    async def login(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        username, password = _credentials(req, body)
        passwords = self._gate.passwords
        assert passwords is not None, "the /auth routes exist only in accounts mode"
        account = await self._store.account_by_username(username)
        # Checked against a stand-in hash for an unknown name: both take as long.
        if not await passwords.verify(account.password_hash if account else None, password):
            log.info("a sign-in was refused (wrong username or password)")
            AUTH_FAILURES.labels("wrong_password").inc()
            raise ClientError(401, "wrong username or password")
        assert account is not None
        return await self._signed_in(req, account, 200)

    async def _signed_in(self, req: Request, account: Account, status: int) -> Reply:
        who = req.who
        if who.kind == GUEST:
            moved = await self._store.transfer_conversations(who.owner, f"{ACCOUNT}:{account.id}")
            if moved:
                log.info("%d conversations of a guest moved to account %s", moved, account.id)
        identity, cookie = await self._gate.sign_in(account)
        payload = {**identity.public(), "username": account.username}
        return json_reply(status, payload, (*_NO_STORE, ("set-cookie", cookie)))

    async def logout(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        who = req.who
        if who.kind == ACCOUNT and who.session is not None:
            await self._store.delete_session(who.session)  # on every node, at once
        cookie = ("set-cookie", self._gate.signed_out_cookie())
        return json_reply(200, {"signed_out": who.kind == ACCOUNT}, (*_NO_STORE, cookie))


def _credentials(req: Request, body: bytes) -> tuple[str, str]:
    payload = parse_json_object(req, body)
    username = require_text(payload, "username").strip()
    password = require_text(payload, "password")
    if not _USERNAME.fullmatch(username):
        raise ClientError(
            400, "the username must be 3 to 32 letters, digits, dots, dashes or underscores"
        )
    if len(password) > _PASSWORD_MAX_CHARS:
        raise ClientError(413, f"the password is longer than {_PASSWORD_MAX_CHARS} characters")
    return username, password


def identity_routes(config: Config, gate: Gate, store: Store) -> list[Route]:
    """The identity routes, for `App`."""
    api = _IdentityApi(gate, store)
    routes = [
        Route("/me", {"GET": api.me, "PATCH": api.rename_me}, identity=True),
        Route("/stream-tickets", {"POST": api.ticket}, identity=True),
    ]
    if config.auth == "accounts":
        routes += [
            Route("/auth/signup", {"POST": api.signup}, identity=True),
            Route("/auth/login", {"POST": api.login}, identity=True),
            Route("/auth/logout", {"POST": api.logout}, identity=True),
        ]
    return routes
