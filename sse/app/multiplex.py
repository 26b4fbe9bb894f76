"""`GET /stream?ch=room:lobby&ch=conv:<id>`: one event stream for every channel a tab follows.

Channels are `room:<name>` (the hub topic `room:<name>`) and `conv:<id>` (the
conversation's topic, `conversation:<id>`), 1 to 16 of them, each at most
once. A conversation channel is open only to the conversation's owner: the
store is asked with the owner, and someone else's conversation is answered
404 exactly like a missing one. Room channels go through `RoomAccess`, where
room existence and presence plug in.

What is refused here cannot pass by retrying (a malformed list, someone
else's conversation), so it is a plain 4xx: an EventSource stops, and the page
must ask for another list. What can pass (a credential to renew, a limit, a
store down) is answered like every stream's, with 200 and a retry (`App`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Mapping
from typing import Protocol
from urllib.parse import parse_qsl

from sse.app.inputs import last_event_id
from sse.app.values import OpenStream, Request, Route, StreamWatch
from sse.auth.identity import Identity
from sse.chat.service import ChatService, topic_of
from sse.errors import ClientError
from sse.protocol.multiplex import MAX_CHANNELS
from sse.pubsub.broker import settle

__all__ = ["ROOM_NAME", "OpenRooms", "RoomAccess", "parse_channels", "stream_routes"]

ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
_ROOM = "room:"
_CONV = "conv:"
# A query holds a few channels and credentials; past this many fields it is not ours.
_MAX_QUERY_FIELDS = 4 * MAX_CHANNELS


class RoomAccess(Protocol):
    """Which named rooms a person may follow, and who is present in them."""

    def check(self, who: Identity, rooms: tuple[str, ...]) -> Awaitable[None] | None:
        """Refuse (raise `ClientError`, 404 for a room that does not exist) or allow."""

    def watch(self, who: Identity, rooms: tuple[str, ...]) -> StreamWatch | None:
        """What to tell when the stream with these room channels opens and closes."""


class OpenRooms:
    """Every well-named room can be followed, and nobody's presence is told."""

    def check(self, who: Identity, rooms: tuple[str, ...]) -> None:
        """Allow."""

    def watch(self, who: Identity, rooms: tuple[str, ...]) -> StreamWatch | None:
        """No presence."""
        return None


def parse_channels(raw_query: str) -> list[tuple[str, str]]:
    """The `ch` parameters as (channel, topic) pairs, in the order given.

    Raises:
        ClientError: 400 for none, more than 16, a repeat, or a malformed channel.
    """
    try:
        fields = parse_qsl(raw_query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS)
    except ValueError:
        raise ClientError(400, f"the query has more than {_MAX_QUERY_FIELDS} fields") from None
    names = [value for key, value in fields if key == "ch"]
    if not 1 <= len(names) <= MAX_CHANNELS:
        raise ClientError(
            400, f"give 1 to {MAX_CHANNELS} channels as ch=room:<name> or ch=conv:<id>"
        )
    channels: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ClientError(400, f"channel {name!r} is given more than once")
        seen.add(name)
        channels.append((name, _topic(name)))
    return channels


def _topic(name: str) -> str:
    if name.startswith(_ROOM) and ROOM_NAME.match(name[len(_ROOM) :]):
        return name  # a named room's topic is its channel name
    if name.startswith(_CONV):
        raw = name[len(_CONV) :]
        try:
            canonical = str(uuid.UUID(raw))
        except ValueError:
            canonical = ""
        if canonical == raw:
            return topic_of(canonical)
    shown = name if len(name) <= 80 else name[:80] + "..."
    raise ClientError(
        400,
        f"channel {shown!r} is not room:<name> ([a-z0-9][a-z0-9_-]{{0,63}}) "
        "or conv:<id> (a conversation id, lower case)",
    )


class _Streams:
    def __init__(self, service: ChatService, rooms: RoomAccess) -> None:
        self._service = service
        self._rooms = rooms

    async def stream(self, req: Request, body: bytes, params: Mapping[str, str]) -> OpenStream:
        channels = parse_channels(req.raw_query)
        who = req.who
        rooms = tuple(name[len(_ROOM) :] for name, _ in channels if name.startswith(_ROOM))
        store = self._service.store
        for name, _ in channels:
            if name.startswith(_CONV):
                conversation_id = name[len(_CONV) :]
                # The owner goes into the query: another's id is "missing" to the store.
                if not await store.exists(who.owner, conversation_id):
                    raise ClientError(404, f"no conversation {conversation_id}")
        if rooms:
            await settle(self._rooms.check(who, rooms))
        return OpenStream(
            "",
            last_event_id(req),
            expires_at=who.expires_at,
            channels=tuple(channels),
            watch=self._rooms.watch(who, rooms) if rooms else None,
        )


def stream_routes(service: ChatService, rooms: RoomAccess | None = None) -> list[Route]:
    """The multiplexed stream's route, for `App`."""
    api = _Streams(service, rooms if rooms is not None else OpenRooms())
    return [Route("/stream", {"GET": api.stream}, identity=True)]
