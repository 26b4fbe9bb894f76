"""The `/metrics` listener (--metrics-listen HOST:PORT): its own port, not the public one.

A small HTTP/1.1 server on h11: `GET /metrics` (or HEAD) answers the Prometheus text
format; any other path is 404, any other method 405. One request per connection, then
close: a scraper asks every few seconds, and keeping its connection buys nothing here.

In one process the default registry is exported. With --workers the supervisor serves it
(`sse.io.workers`): it reads the files every worker writes in PROMETHEUS_MULTIPROC_DIR
through a `MultiProcessCollector`, so one scrape sees the sum over the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import h11
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from sse.config import parse_listen
from sse.metrics import flush_requests
from sse.protocol.http1 import status_phrase

__all__ = ["MetricsListener", "multiprocess_registry"]

log = logging.getLogger("ssechat.metrics")

_PATH = b"/metrics"
# A scrape is one short request: its head must come within this, and be this small.
_READ_TIMEOUT_S = 10.0
_MAX_HEAD_BYTES = 8192


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry that reads every process's values from the files in `path`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]  # its __init__ has no annotations
    return registry


class MetricsListener:
    """Answers `GET /metrics` on its own address with `registry`'s metrics."""

    def __init__(self, listen: str, registry: CollectorRegistry = REGISTRY) -> None:
        self._host, self._port = parse_listen(listen)
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] = (self._host, self._port)

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound host and port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, reuse_address=True
        )
        self.address = self._server.sockets[0].getsockname()[:2]
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        log.info("metrics on http://%s:%d/metrics", shown, port)
        return self.address

    async def close(self) -> None:
        """Stop listening and drop the scrapes in flight; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in tuple(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await asyncio.wait_for(self._answer(reader, writer), _READ_TIMEOUT_S)
        except (TimeoutError, ConnectionError, h11.ProtocolError):
            pass  # a scraper that stalls or breaks HTTP gets nothing more
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(4096)
                conn.receive_data(data)
                if not data and conn.their_state is h11.SEND_BODY:
                    return
                continue
            if isinstance(event, h11.Request):
                break
            if isinstance(event, h11.ConnectionClosed):
                return
        target = event.target.partition(b"?")[0]
        if target != _PATH:
            status, body, kind = 404, b"not found: only /metrics is here\n", "text/plain"
        elif event.method not in (b"GET", b"HEAD"):
            status, body, kind = 405, b"GET /metrics\n", "text/plain"
        else:
            # Off the loop: with --workers it reads a file per worker and metric type.
            flush_requests()  # this process's tallies (workers flush their own each second)
            body = await asyncio.to_thread(generate_latest, self._registry)
            status, kind = (
                200,
                CONTENT_TYPE_PLAIN_0_0_4,
            )  # what a scraper that asks for nothing gets
        headers = [
            ("content-type", kind),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        if status == 405:
            headers.append(("allow", "GET, HEAD"))
        writer.write(
            conn.send(
                h11.Response(status_code=status, headers=headers, reason=status_phrase(status))
            )
        )
        if event.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
