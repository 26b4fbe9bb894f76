"""What each request means: routing, validation and replies, with no I/O.

The transport layer (`sse.http`) parses bytes into a `Request`, asks `App.handle`
what to do, and either writes the `Reply` or opens the `OpenStream`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

from sse.broker import Broker, BrokerUnavailable
from sse.config import Config
from sse.cors import cors_headers, preflight_headers
from sse.errors import ClientError, StoreUnavailable
from sse.static import StaticFile
from sse.wire import EncodeError, encode_retry

__all__ = [
    "JOIN_ANNOUNCEMENT",
    "ROOM",
    "SENT_REPLY",
    "App",
    "OpenSocket",
    "OpenStream",
    "Reply",
    "Request",
    "Result",
    "Route",
    "json_reply",
    "parse_json_object",
    "require_text",
]

ROOM = "room"
JOIN_ANNOUNCEMENT = "A new user joined!"
SENT_REPLY = b"Message sent successfully!"

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head; header names are lower case, repeats joined by ', '."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete response to write: status, body and any extra headers."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Answer with an event stream of `topic`, replaying after `last_event_id` if set."""

    topic: str
    last_event_id: str | None
    announce: str | None = None
    cors: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class OpenSocket:
    """Upgrade to a WebSocket carrying `topic` (sse.ws), replaying after `last_event_id`.

    `conversation_id` says what the client may send over it: None for the room.
    """

    topic: str
    last_event_id: str | None
    announce: str | None = None
    conversation_id: str | None = None


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A reply whose body is `payload` as JSON."""
    return Reply(status, json.dumps(payload).encode(), _JSON, headers)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return json_reply(status, {"error": message}, headers)


def parse_json_object(req: Request, body: bytes) -> dict[str, object]:
    """The body as a JSON object.

    Raises:
        ClientError: 415 for a non-JSON media type, 400 for anything not a JSON object.
    """
    media = req.headers.get("content-type", _JSON).split(";", 1)[0].strip().lower()
    if media != _JSON and not media.endswith("+json"):
        raise ClientError(415, f"expected a JSON body (Content-Type: {_JSON}), got {media!r}")
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ClientError(400, "body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # Deep nesting ("[[[[...") within the size limit would otherwise be a 500.
        raise ClientError(400, "body is nested too deeply") from None
    if not isinstance(value, dict):
        raise ClientError(400, "body must be a JSON object")
    return value


def require_text(obj: Mapping[str, object], name: str) -> str:
    """The string member `name` of a JSON object.

    Raises:
        ClientError: 400 when it is missing, not a string, or not encodable text.
    """
    if name not in obj:
        raise ClientError(400, f'missing "{name}"')
    value = obj[name]
    if not isinstance(value, str):
        raise ClientError(400, f'"{name}" must be a string')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ClientError(400, f'"{name}" holds a lone surrogate, which is not text') from None
    return value


Result = Reply | OpenStream | OpenSocket
Handler = Callable[[Request, bytes, Mapping[str, str]], "Result | Awaitable[Result]"]
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Route:
    """A path pattern such as `/conversations/{id}` and its handlers by method."""

    pattern: str
    methods: Mapping[str, Handler]

    def compile(self) -> re.Pattern[str]:
        """The pattern as a regex; each `{name}` matches one path segment."""
        parts = _PARAM.split(self.pattern)
        regex = "".join(
            f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
        )
        return re.compile(regex + r"\Z")


class App:
    """The routes of the server, answering parsed requests."""

    def __init__(
        self,
        config: Config,
        broker: Broker,
        static: Mapping[str, StaticFile],
        health: Callable[[], Mapping[str, object]],
        extra_routes: Sequence[Route] = (),
    ) -> None:
        self._config = config
        self._broker = broker
        self._static = static
        self._health = health
        # Fixed paths are looked up in a dict: the seed API's hot path pays no regex.
        self._exact: dict[str, Mapping[str, Handler]] = {
            "/events": {"GET": self._events},
            "/send-message": {"POST": self._send_message},
            "/healthz": {"GET": self._healthz},
        }
        for path in static:
            self._exact[path] = {"GET": self._static_file}
        self._patterns: list[tuple[re.Pattern[str], Mapping[str, Handler]]] = []
        for route in extra_routes:
            if _PARAM.search(route.pattern):
                self._patterns.append((route.compile(), route.methods))
            else:
                self._exact[route.pattern] = route.methods

    def is_stream(self, req: Request) -> bool:
        """Whether `req` asks for an event stream (for answers that skip routing)."""
        return req.method in ("GET", "HEAD") and req.path.endswith("/events")

    def _match(self, path: str) -> tuple[Mapping[str, Handler], Mapping[str, str]] | None:
        methods = self._exact.get(path)
        if methods is not None:
            return methods, {}
        for regex, methods in self._patterns:
            found = regex.match(path)
            if found is not None:
                return methods, found.groupdict()
        return None

    def handle(self, req: Request, body: bytes) -> Result | Awaitable[Result]:
        """Route `req` and answer it; client mistakes become 4xx replies."""
        origin = req.headers.get("origin")
        cors = tuple(cors_headers(origin, self._config.cors_origins))
        matched = self._match(req.path)
        if matched is None:
            return _error(404, f"no such path: {req.path}", cors)
        methods, params = matched
        if req.method == "OPTIONS":
            allow = self._allow(methods)
            asked = req.headers.get("access-control-request-headers")
            pre = preflight_headers(origin, self._config.cors_origins, allow, asked)
            return Reply(204, headers=(*pre, ("allow", allow)))
        # HEAD is GET without a body (RFC 9110 section 9.3.2); h11 drops the body.
        handler = methods.get("GET" if req.method == "HEAD" else req.method)
        if handler is None:
            allow_header = ("allow", self._allow(methods))
            return _error(405, f"{req.method} is not allowed here", (*cors, allow_header))
        try:
            result = handler(req, body, params)
        except ClientError as exc:
            return _error(exc.status, exc.message, cors)
        except StoreUnavailable as exc:
            return self._store_unavailable(req, exc, cors)
        if isinstance(result, Reply | OpenStream | OpenSocket):
            return _with_cors(result, cors)
        return self._finish(req, result, cors)

    async def _finish(
        self, req: Request, pending: Awaitable[Result], cors: tuple[tuple[str, str], ...]
    ) -> Result:
        try:
            result = await pending
        except ClientError as exc:
            return _error(exc.status, exc.message, cors)
        except StoreUnavailable as exc:
            return self._store_unavailable(req, exc, cors)
        return _with_cors(result, cors)

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
        return _error(503, f"the conversations cannot be stored or read now: {exc}", cors)

    @staticmethod
    def _allow(methods: Mapping[str, Handler]) -> str:
        names = list(methods)
        if "GET" in methods:
            names.append("HEAD")
        return ", ".join([*names, "OPTIONS"])

    def _events(self, req: Request, body: bytes, params: Mapping[str, str]) -> OpenStream:
        # The header wins: EventSource sends it on every reconnect, while the query
        # parameter is only for a first connection (which cannot send the header).
        last_id = req.headers.get("last-event-id", req.query.get("last_event_id"))
        # A stream that resumes is a returning user, not a new one: announcing it
        # would fill the room with joins after every restart or dropped network.
        new_user = self._config.join_announcement and not last_id
        return OpenStream(ROOM, last_id or None, JOIN_ANNOUNCEMENT if new_user else None)

    def _send_message(
        self, req: Request, body: bytes, params: Mapping[str, str]
    ) -> Reply | Awaitable[Reply]:
        message = require_text(parse_json_object(req, body), "message")
        try:
            published = self._broker.publish(ROOM, message)
        except EncodeError as exc:  # require_text should make this unreachable
            raise ClientError(400, f'"message" cannot be sent: {exc}') from None
        if isinstance(published, str):
            return Reply(200, SENT_REPLY, _TEXT)
        return _sent(published)

    def _healthz(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        return json_reply(200, dict(self._health()), (("cache-control", "no-store"),))

    def _static_file(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        file = self._static[req.path]
        return Reply(200, file.body, file.content_type, (("cache-control", "no-cache"),))


async def _sent(published: Awaitable[str]) -> Reply:
    # 200 only once the broker has the event: what we acknowledge is never lost.
    try:
        await published
    except EncodeError as exc:
        raise ClientError(400, f'"message" cannot be sent: {exc}') from None
    except BrokerUnavailable as exc:
        raise ClientError(503, f"the message was not sent: {exc}; try again") from None
    return Reply(200, SENT_REPLY, _TEXT)


def _with_cors(result: Result, cors: tuple[tuple[str, str], ...]) -> Result:
    if not cors or isinstance(result, OpenSocket):
        return result  # a 101 has no body to share; sse.ws checks Origin instead
    if isinstance(result, OpenStream):
        return OpenStream(result.topic, result.last_event_id, result.announce, cors)
    return Reply(result.status, result.body, result.content_type, (*cors, *result.headers))


def status_phrase(status: int) -> bytes:
    """The standard reason phrase for `status`, for the status line."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
