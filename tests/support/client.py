"""A small HTTP/SSE client for the tests: asyncio streams, h11 as the client, our decoder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h11

from sse.protocol.sse import Comment, DecodedEvent, Decoder

Headers = Sequence[tuple[str, str]]


class CookieJar:
    """A browser's cookies for one host: what Set-Cookie gave, sent back as Cookie.

    As in a browser, cookies ignore the port, so a server restarted on another
    port sees the same person. Every request of a test uses the default jar
    (one person) unless it passes `jar=` (someone else) or `jar=None` (no cookies).
    """

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def header(self) -> str | None:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items()) or None

    def take(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        for name, value in raw:
            if name.lower() != b"set-cookie":
                continue
            pair, _, attributes = value.decode().partition(";")
            key, _, cookie = pair.strip().partition("=")
            if "max-age=0" in attributes.lower().replace(" ", "") or not cookie:
                self.cookies.pop(key, None)
            else:
                self.cookies[key] = cookie


_jars: dict[str, CookieJar] = {}


def default_jar(address: tuple[str, int]) -> CookieJar:
    """The cookies the test's one person holds for `address`'s host."""
    return _jars.setdefault(address[0], CookieJar())


def forget_cookies() -> None:
    """A new test starts with no cookies (the conftest calls this before each one)."""
    _jars.clear()


class _Default:
    pass


DEFAULT: Any = _Default()


@dataclass
class Response:
    """A whole response: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def headers_of(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names lower-cased, repeats joined by ', ' (as the server sees them)."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode().lower()
        out[key] = f"{out[key]}, {value.decode()}" if key in out else value.decode()
    return out


class Connection:
    """One keep-alive client connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        jar: CookieJar | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.jar = jar

    @classmethod
    async def open(
        cls,
        address: tuple[str, int],
        jar: CookieJar | None = DEFAULT,
        local_addr: tuple[str, int] | None = None,
    ) -> Connection:
        """Connect to `address`; from `local_addr` (say ("127.0.0.2", 0)) to be another client."""
        reader, writer = await asyncio.open_connection(*address, local_addr=local_addr)
        return cls(reader, writer, default_jar(address) if jar is DEFAULT else jar)

    async def _next(self, timeout: float) -> h11.Event | type[h11.NEED_DATA]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            self.h11.receive_data(data)

    async def send_request(
        self, method: str, target: str, headers: Headers = (), body: bytes = b""
    ) -> None:
        hdrs = [("host", "127.0.0.1"), *headers]
        cookie = self.jar.header() if self.jar is not None else None
        if cookie is not None and not any(name.lower() == "cookie" for name, _ in headers):
            hdrs.append(("cookie", cookie))
        if body:
            hdrs.append(("content-length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += self.h11.send(h11.Data(data=body))
        data += self.h11.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()

    async def read_head(self, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
        while True:
            event = await self._next(timeout)
            if isinstance(event, h11.InformationalResponse):
                continue
            assert isinstance(event, h11.Response), event
            if self.jar is not None:
                self.jar.take(event.headers)
            return event.status_code, headers_of(event.headers)

    async def read_response(self, timeout: float = 5.0) -> Response:
        status, headers = await self.read_head(timeout)
        body = bytearray()
        while True:
            event = await self._next(timeout)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return Response(status, headers, bytes(body))

    async def request(
        self,
        method: str,
        target: str,
        headers: Headers = (),
        body: bytes = b"",
        timeout: float = 5.0,
    ) -> Response:
        await self.send_request(method, target, headers, body)
        return await self.read_response(timeout)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def request(
    address: tuple[str, int],
    method: str,
    target: str,
    headers: Headers = (),
    body: bytes = b"",
    jar: CookieJar | None = DEFAULT,
) -> Response:
    """One request on its own connection, with the cookies of `jar` (the default person's)."""
    conn = await Connection.open(address, jar)
    try:
        return await conn.request(method, target, headers, body)
    finally:
        await conn.close()


async def post_message(address: tuple[str, int], message: str) -> Response:
    """`POST /send-message` the way the seed's browser client does it."""
    body = json.dumps({"message": message}).encode()
    return await request(
        address, "POST", "/send-message", [("content-type", "application/json")], body
    )


class EventStream:
    """An open event stream read through our own decoder."""

    def __init__(self, conn: Connection, status: int, headers: dict[str, str]) -> None:
        self.conn = conn
        self.status = status
        self.headers = headers
        self.decoder = Decoder(keep_comments=True)
        self.items: list[DecodedEvent | Comment] = []
        self.raw = bytearray()
        self.ended = False  # the response finished (EndOfMessage or EOF)
        self._cursor = 0

    @classmethod
    async def open(
        cls,
        address: tuple[str, int],
        target: str = "/events",
        headers: Headers = (),
        jar: CookieJar | None = DEFAULT,
    ) -> EventStream:
        conn = await Connection.open(address, jar)
        await conn.send_request("GET", target, [("accept", "text/event-stream"), *headers])
        status, hdrs = await conn.read_head()
        return cls(conn, status, hdrs)

    async def _pump(self, timeout: float) -> None:
        event = await self.conn._next(timeout)
        if isinstance(event, h11.Data):
            self.raw += event.data
            self.items.extend(self.decoder.feed(bytes(event.data)))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            self.items.extend(self.decoder.close())
            self.ended = True
        else:
            raise AssertionError(f"unexpected {event!r}")

    async def next_item(self, timeout: float = 5.0) -> DecodedEvent | Comment:
        deadline = time.monotonic() + timeout
        while self._cursor >= len(self.items):
            if self.ended:
                raise EOFError("the stream ended")
            await self._pump(max(deadline - time.monotonic(), 0.001))
        item = self.items[self._cursor]
        self._cursor += 1
        return item

    async def next_event(self, timeout: float = 5.0) -> DecodedEvent:
        """The next event, skipping comments."""
        deadline = time.monotonic() + timeout
        while True:
            item = await self.next_item(max(deadline - time.monotonic(), 0.001))
            if isinstance(item, DecodedEvent):
                return item

    async def events(self, count: int, timeout: float = 5.0) -> list[DecodedEvent]:
        deadline = time.monotonic() + timeout
        return [
            await self.next_event(max(deadline - time.monotonic(), 0.001)) for _ in range(count)
        ]

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Read until the server ends the response."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            try:
                await self._pump(max(deadline - time.monotonic(), 0.001))
            except (ConnectionError, h11.RemoteProtocolError):
                self.ended = True

    async def close(self) -> None:
        await self.conn.close()


async def raw_exchange(address: tuple[str, int], data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes; returns every byte it sent."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, what: str = ""
) -> None:
    """Poll `predicate` until true; fail after `timeout` seconds, naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def json_object(response: Response) -> dict[str, Any]:
    """The response's body as a JSON object (fails the test if it is anything else)."""
    payload = response.json()
    assert isinstance(payload, dict)
    return payload


def event_data(event: DecodedEvent) -> dict[str, Any]:
    """An event's data, which must be a JSON object."""
    payload = json.loads(event.data)
    assert isinstance(payload, dict)
    return payload


async def next_of(stream: EventStream, kind: str, timeout: float = 10.0) -> DecodedEvent:
    """The next event of type `kind`, skipping the others."""
    return (await events_until(stream, kind, timeout))[-1]


async def events_until(stream: EventStream, kind: str, timeout: float = 10.0) -> list[DecodedEvent]:
    """Events up to and including the first of type `kind`."""
    seen: list[DecodedEvent] = []
    while not seen or seen[-1].type != kind:
        seen.append(await stream.next_event(timeout))
    return seen


def cookie_headers(
    address: tuple[str, int], jar: CookieJar | None = DEFAULT
) -> list[tuple[str, str]]:
    """The Cookie header the person of `jar` sends to `address`, for clients of other libraries."""
    chosen = default_jar(address) if jar is DEFAULT else jar
    cookie = chosen.header() if chosen is not None else None
    return [("cookie", cookie)] if cookie else []


async def assert_reauth(stream: EventStream, reason: str) -> None:
    """`stream` is a refusal EventSource survives: 200, `event: reauth` for `reason`, the end."""
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    event = await stream.next_event()
    assert event.type == "reauth"
    assert json.loads(event.data)["reason"] == reason
    await stream.wait_ended()
    await stream.close()
