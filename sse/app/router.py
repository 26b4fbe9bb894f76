"""Routing: which handler answers a parsed request, with CORS, 404, 405 and OPTIONS. No I/O.

The I/O edge (`sse.io.http`) parses bytes into a `Request`, asks `App.handle`
what to do, and writes the `Reply`, opens the `OpenStream` or upgrades to the
`OpenSocket`. The routes themselves come from `sse.app.room` and
`sse.app.conversations`.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from sse.app.cors import cors_headers, preflight_headers
from sse.app.origins import CookieOrigins, carries_our_cookie
from sse.app.page import page_headers
from sse.app.refusals import busy_event, reauth_event, refused_stream
from sse.app.static import StaticFile
from sse.app.values import (
    PATH_PARAM,
    Handler,
    OpenSocket,
    OpenStream,
    Reply,
    Request,
    Result,
    Route,
    error_reply,
    json_reply,
)
from sse.auth.gate import Gate
from sse.auth.identity import Verdict
from sse.config import Config
from sse.errors import ClientError, OverLimit, StoreUnavailable
from sse.limits.policy import Claim, Limits, address_client
from sse.metrics import AUTH_FAILURES
from sse.protocol.sse import encode_retry
from sse.pubsub.broker import settle

__all__ = ["App"]

# Methods that change something: with our cookie, only from an origin we trust.
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A route's handlers, and whether they need to know who asks.
_Methods = tuple[Mapping[str, Handler], bool]

# The verdicts' problems, the reason label of ssechat_auth_failures_total (bounded).
_PROBLEMS = frozenset(("missing", "invalid", "expired", "revoked"))


class App:
    """The routes of the server, answering parsed requests."""

    def __init__(
        self,
        config: Config,
        routes: Sequence[Route],
        static: Mapping[str, StaticFile],
        health: Callable[[], Mapping[str, object]],
        readiness: Callable[[], Sequence[str] | Awaitable[Sequence[str]]] = tuple,
        gate: Gate | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._config = config
        self._static = static
        self._health = health
        self._readiness = readiness
        self._gate = gate
        self._limits = limits if limits is not None and limits.enabled else None
        self._cookie_origins = CookieOrigins.from_config(config)
        self._page_headers = page_headers(self._cookie_origins.named)
        self._random = random.Random()
        # Fixed paths are looked up in a dict: the seed API's hot path pays no regex.
        self._exact: dict[str, _Methods] = {
            "/healthz": ({"GET": self._healthz}, False),
            "/readyz": ({"GET": self._readyz}, False),
        }
        for path in static:
            self._exact[path] = ({"GET": self._static_file}, False)
        self._patterns: list[tuple[re.Pattern[str], _Methods, str]] = []
        for route in routes:
            if route.identity and gate is None:
                raise ValueError(f"route {route.pattern} needs identities, and no Gate was given")
            entry = (route.methods, route.identity)
            if PATH_PARAM.search(route.pattern):
                self._patterns.append((route.compile(), entry, route.pattern))
            else:
                self._exact[route.pattern] = entry

    @property
    def cookie_origins(self) -> CookieOrigins:
        """Which origins may act with the cookies a request carries."""
        return self._cookie_origins

    def is_stream(self, req: Request) -> bool:
        """Whether `req` asks for an event stream (for answers that skip routing)."""
        return req.method in ("GET", "HEAD") and (
            req.path.endswith("/events") or req.path == "/stream"
        )

    def _match(self, path: str) -> tuple[_Methods, Mapping[str, str]] | None:
        entry = self._exact.get(path)
        if entry is not None:
            return entry, {}
        for regex, entry, _ in self._patterns:
            found = regex.match(path)
            if found is not None:
                return entry, found.groupdict()
        return None

    def route_of(self, path: str) -> str:
        """The pattern `path` matches (`/conversations/{id}`), for logs without ids in them."""
        if path in self._exact:
            return path
        for regex, _, pattern in self._patterns:
            if regex.match(path) is not None:
                return pattern
        return "(no route)"

    def handle(self, req: Request, body: bytes) -> Result | Awaitable[Result]:
        """Route `req` and answer it; client mistakes become 4xx replies."""
        origin = req.headers.get("origin")
        cors = tuple(cors_headers(origin, self._config.cors_origins))
        matched = self._match(req.path)
        if matched is None:
            return error_reply(404, f"no such path: {req.path}", cors)
        (methods, identity), params = matched
        if req.method == "OPTIONS":
            allow = self._allow(methods)
            asked = req.headers.get("access-control-request-headers")
            pre = preflight_headers(origin, self._config.cors_origins, allow, asked)
            return Reply(204, headers=(*pre, ("allow", allow)))
        # HEAD is GET without a body (RFC 9110 section 9.3.2); h11 drops the body.
        handler = methods.get("GET" if req.method == "HEAD" else req.method)
        if handler is None:
            allow_header = ("allow", self._allow(methods))
            return error_reply(405, f"{req.method} is not allowed here", (*cors, allow_header))
        if (
            origin is not None
            and req.method in _WRITES
            and carries_our_cookie(req.headers)
            and not self._cookie_origins.allows(origin, req.headers)
        ):
            # Another site's page acting with this browser's cookies: change nothing.
            message = f"origin {origin!r} may not send this site's cookies; nothing was changed"
            return error_reply(403, message, cors)
        limits = self._limits
        if limits is not None and not _is_probe(req.path):
            flooded = limits.hit_local(limits.requests, address_client(req.client_ip))
            if flooded is not None:
                return self._client_error(req, flooded, cors)
        if identity:
            return self._identify(req, body, params, handler, cors)
        return self._call(req, body, params, handler, cors)

    def _identify(
        self,
        req: Request,
        body: bytes,
        params: Mapping[str, str],
        handler: Handler,
        cors: tuple[tuple[str, str], ...],
    ) -> Result | Awaitable[Result]:
        gate = self._gate
        assert gate is not None, "checked when the routes were given"
        stream = self.is_stream(req)
        # A WebSocket, like an EventSource, cannot be given a header by a page.
        upgrade = req.headers.get("upgrade", "").lower() == "websocket"
        verdict = gate.resolve(req.headers, req.query, stream=stream, tickets=stream or upgrade)
        if isinstance(verdict, Verdict):
            return self._as(verdict, req, body, params, handler, cors)
        return self._await_identity(verdict, req, body, params, handler, cors)

    async def _await_identity(
        self,
        pending: Awaitable[Verdict],
        req: Request,
        body: bytes,
        params: Mapping[str, str],
        handler: Handler,
        cors: tuple[tuple[str, str], ...],
    ) -> Result:
        try:
            verdict = await pending
        except StoreUnavailable as exc:
            return self._store_unavailable(req, exc, cors)
        result = self._as(verdict, req, body, params, handler, cors)
        return result if isinstance(result, Reply | OpenStream | OpenSocket) else await result

    def _as(
        self,
        verdict: Verdict,
        req: Request,
        body: bytes,
        params: Mapping[str, str],
        handler: Handler,
        cors: tuple[tuple[str, str], ...],
    ) -> Result | Awaitable[Result]:
        """Run `handler` as the verdict's identity, or refuse the request without one."""
        identity = verdict.identity
        if identity is None:
            return self._unidentified(req, verdict.problem or "missing", cors)
        req = replace(req, identity=identity)
        # A new guest's cookie rides with the CORS headers onto whatever the
        # handler answers, errors included (`_with_cors`).
        cookies = tuple(("set-cookie", c) for c in verdict.cookies)
        limits = self._limits
        if cookies and limits is not None:
            # New guests per address: dropping the cookie is no way around the limits.
            minted = limits.hit(limits.guests, [(address_client(req.client_ip), 1.0)])
            if isinstance(minted, OverLimit):
                return self._client_error(req, minted, cors)
            if minted is not None:
                return self._await_guest(minted, req, body, params, handler, (*cors, *cookies))
        return self._call(req, body, params, handler, (*cors, *cookies))

    async def _await_guest(
        self,
        minted: Awaitable[OverLimit | None],
        req: Request,
        body: bytes,
        params: Mapping[str, str],
        handler: Handler,
        cors: tuple[tuple[str, str], ...],
    ) -> Result:
        refused = await minted
        if refused is not None:
            return self._client_error(req, refused, _without_cookies(cors))
        return await settle(self._call(req, body, params, handler, cors))

    def _jittered(self, base_ms: int) -> int:
        # Spread the reconnects of the browsers refused at one moment.
        return base_ms + self._random.randint(0, self._config.retry_jitter_ms)

    def _unidentified(self, req: Request, problem: str, cors: tuple[tuple[str, str], ...]) -> Reply:
        AUTH_FAILURES.labels(problem if problem in _PROBLEMS else "invalid").inc()
        # A stream whose credential can be renewed is told so on a 200 the browser
        # survives; only a first stream with no credential at all gets the 401.
        if self.is_stream(req) and problem != "missing":
            retry = self._jittered(self._config.retry_ms)
            return refused_stream(reauth_event(problem, retry), cors)
        messages = {
            "missing": "sign-in required: send a token (Authorization: Bearer) or a ticket",
            "expired": "the credential has expired",
            "revoked": "the credential is no longer valid",
            "invalid": "the credential is not valid",
        }
        payload = {"error": messages.get(problem, problem), "reason": problem}
        challenge = ("www-authenticate", "Bearer") if self._config.auth == "jwt" else None
        return json_reply(401, payload, (*cors, *((challenge,) if challenge else ())))

    def _call(
        self,
        req: Request,
        body: bytes,
        params: Mapping[str, str],
        handler: Handler,
        cors: tuple[tuple[str, str], ...],
    ) -> Result | Awaitable[Result]:
        try:
            result = handler(req, body, params)
        except ClientError as exc:
            return self._client_error(req, exc, cors)
        except StoreUnavailable as exc:
            return self._store_unavailable(req, exc, cors)
        if isinstance(result, Reply):
            return _with_cors(result, cors)
        if isinstance(result, OpenStream | OpenSocket):
            return self._admit(req, result, cors)
        return self._finish(req, result, cors)

    async def _finish(
        self, req: Request, pending: Awaitable[Result], cors: tuple[tuple[str, str], ...]
    ) -> Result:
        try:
            result = await pending
        except ClientError as exc:
            return self._client_error(req, exc, cors)
        except StoreUnavailable as exc:
            return self._store_unavailable(req, exc, cors)
        if isinstance(result, Reply):
            return _with_cors(result, cors)
        return await settle(self._admit(req, result, cors))

    def _client_error(
        self, req: Request, exc: ClientError, cors: tuple[tuple[str, str], ...]
    ) -> Reply:
        if not isinstance(exc, OverLimit):
            return error_reply(exc.status, exc.message, cors)
        if self.is_stream(req):
            # 429 would end an EventSource for good: 200, `event: busy`, a retry, the end.
            retry = self._jittered(round(exc.retry_after_s * 1000))
            body = busy_event(exc.limit, exc.message, retry)
            return refused_stream(body, _without_cookies(cors))
        payload = {"error": exc.message, "limit": exc.limit, "retry_after": exc.retry_after}
        return json_reply(429, payload, (*cors, ("retry-after", str(exc.retry_after))))

    def _admit(
        self, req: Request, opening: OpenStream | OpenSocket, cors: tuple[tuple[str, str], ...]
    ) -> Result | Awaitable[Result]:
        """`opening`, holding its slots of the stream caps; or the refusal of a stream over one."""
        limits = self._limits
        if limits is None:
            return _with_cors(opening, cors)
        opened = limits.hit(limits.stream_opens, [(address_client(req.client_ip), 1.0)])
        if isinstance(opened, OverLimit):
            return self._over(req, opening, opened, cors)
        if opened is not None:  # counted in Redis: the rest waits for it
            return self._admit_later(req, opening, cors, opened)
        claimed = limits.claim(self._caps(req), uuid.uuid4().hex)
        if isinstance(claimed, Claim | OverLimit):
            return self._claimed(req, opening, claimed, cors)
        return self._admit_later(req, opening, cors, None, claimed)

    async def _admit_later(
        self,
        req: Request,
        opening: OpenStream | OpenSocket,
        cors: tuple[tuple[str, str], ...],
        opened: Awaitable[OverLimit | None] | None,
        claiming: Awaitable[Claim | OverLimit] | None = None,
    ) -> Result:
        limits = self._limits
        assert limits is not None
        if opened is not None:
            refused = await opened
            if refused is not None:
                return self._over(req, opening, refused, cors)
            pending = limits.claim(self._caps(req), uuid.uuid4().hex)
            if isinstance(pending, Claim | OverLimit):
                return self._claimed(req, opening, pending, cors)
            claiming = pending
        assert claiming is not None
        return self._claimed(req, opening, await claiming, cors)

    @staticmethod
    def _caps(req: Request) -> list[tuple[str, str]]:
        caps = [("streams_per_ip", address_client(req.client_ip))]
        if req.identity is not None:
            caps.append(("streams", req.identity.owner))
        return caps

    def _claimed(
        self,
        req: Request,
        opening: OpenStream | OpenSocket,
        claimed: Claim | OverLimit,
        cors: tuple[tuple[str, str], ...],
    ) -> Result:
        if isinstance(claimed, OverLimit):
            return self._over(req, opening, claimed, cors)
        return _with_cors(replace(opening, claim=claimed), cors)

    def _over(
        self,
        req: Request,
        opening: OpenStream | OpenSocket,
        refused: OverLimit,
        cors: tuple[tuple[str, str], ...],
    ) -> Result:
        if isinstance(opening, OpenSocket):
            # A 101 and then close code 1013 (try again later, RFC 6455 section 7.4.1):
            # a WebSocket client reads a close code, not a 429.
            return replace(opening, refused=refused.message)
        return self._client_error(req, refused, cors)

    def _store_unavailable(
        self, req: Request, exc: StoreUnavailable, cors: tuple[tuple[str, str], ...]
    ) -> Reply:
        # The database failed, not the client nor our code: 503 with its cause and
        # no traceback (the store's health shows it). An EventSource gives up for
        # good on a 503 (WHATWG HTML, "Server-sent events"), so a stream gets
        # what an overloaded server gives it: 200, a long retry, and the end.
        if self.is_stream(req):
            body = encode_retry(self._config.overload_retry_ms)
            return Reply(200, body, "text/event-stream", (*cors, ("cache-control", "no-cache")))
        return error_reply(503, f"the conversations cannot be stored or read now: {exc}", cors)

    @staticmethod
    def _allow(methods: Mapping[str, Handler]) -> str:
        names = list(methods)
        if "GET" in methods:
            names.append("HEAD")
        return ", ".join([*names, "OPTIONS"])

    def _healthz(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        return json_reply(200, dict(self._health()), (("cache-control", "no-store"),))

    def _readyz(
        self, req: Request, body: bytes, params: Mapping[str, str]
    ) -> Reply | Awaitable[Reply]:
        # Readiness, unlike liveness, may fail: a balancer then sends traffic elsewhere.
        reasons = self._readiness()
        if isinstance(reasons, Sequence):
            return _readiness_reply(reasons)
        return self._await_readyz(reasons)

    @staticmethod
    async def _await_readyz(pending: Awaitable[Sequence[str]]) -> Reply:
        return _readiness_reply(await pending)

    def _static_file(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        file = self._static[req.path]
        return Reply(200, file.body, file.content_type, self._page_headers)


def _is_probe(path: str) -> bool:
    # A balancer's probes come from one address, many times a second: never limited.
    return path == "/healthz" or path == "/readyz"


def _readiness_reply(reasons: Sequence[str]) -> Reply:
    headers = (("cache-control", "no-store"),)
    if reasons:
        return json_reply(503, {"status": "not ready", "reasons": list(reasons)}, headers)
    return json_reply(200, {"status": "ready"}, headers)


def _without_cookies(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """`headers` without the Set-Cookie a new guest's cookie rides in (see `App._as`)."""
    return tuple(h for h in headers if h[0] != "set-cookie")


def _with_cors(result: Result, cors: tuple[tuple[str, str], ...]) -> Result:
    if not cors or isinstance(result, OpenSocket):
        return result  # a 101 has no body to share; sse.app.handshake checks Origin instead
    if isinstance(result, OpenStream):
        return replace(result, cors=_without_cookies(cors))
    headers = result.headers
    if any(name == "set-cookie" for name, _ in headers):
        # The handler set the session itself (a sign-in): a new guest's cookie
        # would undo it.
        cors = _without_cookies(cors)
    return Reply(result.status, result.body, result.content_type, (*cors, *headers))
