"""The seed API's lobby posts, kept in the lobby's scrollback behind their acknowledgement.

`POST /send-message` is the benchmarked hot path, and its acknowledgement has
always meant one thing: the broker has the message, so every stream gets it and
a resume replays it. Keeping it in the store before answering halved the posts
one process can take (`make bench`, S4), because each post then paid a thread
hop and a commit of its own. So the copy for the lobby's scrollback (and its
JSON event on `room:lobby`, which needs the store's id) is written here, after
the answer, in batches: posts that arrive while a batch is written go in the
next one, in one transaction on SQLite.

What that costs: a process that crashes (not one that stops, which writes what
is queued first) can leave the batch being written out of the scrollback; its
streams had every message all the same. The queue is bounded: past
`max_queued` (a store that is down or slow) new seed posts are refused with 503
before they are sent anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sse.chat.rooms.records import LOBBY, RoomMessage, RoomStore, Sender
from sse.errors import ClientError

__all__ = ["SeedPosts"]

log = logging.getLogger("ssechat.rooms")

# Posts written in one go at most: one transaction on SQLite, bounded statements on PostgreSQL.
_BATCH = 500
# How long a stopping server waits for the queued posts to be written.
_DRAIN_TIMEOUT_S = 10.0


class SeedPosts:
    """A bounded queue of seed posts, written to the lobby by one task, then published."""

    def __init__(
        self,
        store: RoomStore,
        publish: Callable[[RoomMessage], None],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        *,
        max_queued: int = 50_000,  # about 10 MB of posts
    ) -> None:
        self._store = store
        self._publish = publish
        self._spawn = spawn
        self._max_queued = max_queued
        self._queued: list[tuple[str, Sender]] = []
        self._writing: asyncio.Event | None = None  # set when the writer is done

    def check(self) -> None:
        """Raise ClientError 503 if no more posts can be queued now (the store lags)."""
        if len(self._queued) >= self._max_queued:
            raise ClientError(
                503, "the lobby cannot keep messages now (its store lags behind); try again"
            )

    def keep(self, text: str, sender: Sender) -> None:
        """Queue `text` (already sent to the seed's streams) for the lobby; never blocks."""
        self._queued.append((text, sender))
        if self._writing is None:
            self._writing = asyncio.Event()
            self._spawn(self._write_all(self._writing))

    async def drain(self) -> None:
        """Wait (bounded) until every queued post is written: for a stopping server."""
        writing = self._writing
        if writing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writing.wait(), _DRAIN_TIMEOUT_S)
        if self._queued:
            log.warning("%d lobby posts were not kept in its scrollback", len(self._queued))

    async def _write_all(self, writing: asyncio.Event) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued[:_BATCH], self._queued[_BATCH:]
                try:
                    kept = await self._store.add_room_messages(LOBBY, batch)
                except Exception as exc:  # any failure: the batch is not kept
                    log.warning(
                        "%d lobby posts were sent but not kept in its scrollback: %s",
                        len(batch),
                        exc,
                    )
                    continue
                for message in kept:
                    if message is not None:
                        self._publish(message)
        finally:
            self._writing = None
            writing.set()
