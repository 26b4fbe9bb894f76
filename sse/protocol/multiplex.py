"""The wire format of a multiplexed stream (`GET /stream?ch=...`): tagged events, composite ids.

A multiplexed stream carries the events of several channels on one connection.
Each event keeps its `event:` name; its data is the channel's JSON object with
a `"channel"` key added. Every event that has an id gets one composite id, the
position of the connection in every channel at that event:

    <fingerprint>.<position 1>.<position 2>...

in the order the channels were asked for. A position is the channel's own
event id (`<epoch>-<seq>` in one process, a Redis entry id across nodes); a
later position that shares the first one's `<epoch>-` (every channel, in one
process) is written as its `<seq>` alone. The
fingerprint is 8 hex digits of a hash of the channel list, so that an id meant
for another list of channels is recognised as foreign instead of misread. No
CR, LF or NUL can appear in it: fingerprints are hex, positions are checked.

Pure: no I/O, no clock. The encodings of a frame's events are cached on the
frame (`Frame.encodings`), so a broadcast tags each event once, not once per
connection: only the composite id line is a connection's own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from sse.protocol.frame import Frame
from sse.protocol.http1 import chunk
from sse.protocol.sse import Event, encode

__all__ = [
    "MAX_CHANNELS",
    "ONE_CHUNKED",
    "ONE_RAW",
    "ChannelIds",
    "fingerprint",
    "one_channel",
    "parse_composite",
    "tagged_body",
    "tagged_data",
]

MAX_CHANNELS = 16
# A position as our brokers write them: `<epoch ms>-<seq>` or a Redis entry id.
_POSITION = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")
# A later position with the first one's `<epoch>-`, written without it.
_SEQ = re.compile(r"[0-9]{1,20}\Z")
_SEP = "."
# Past this nothing we issue is as long: such an id is not even split.
_MAX_COMPOSITE_CHARS = 9 + MAX_CHANNELS * 42
# Keys of `Frame.encodings` (shared with the WebSocket encodings, which use others).
_BODY = "mux:body"  # one event's tagged bytes, without an id line
ONE_RAW = "mux:one"  # a frame as a one-channel stream writes it, unframed
ONE_CHUNKED = "mux:one-chunked"  # the same as one HTTP/1.1 chunk


def fingerprint(channels: Sequence[str]) -> str:
    """8 hex digits naming the list of channels (in order) that a composite id is for."""
    return hashlib.blake2b("\n".join(channels).encode(), digest_size=4).hexdigest()


def parse_composite(value: str | None, channels: Sequence[str]) -> list[str | None] | None:
    """The position of each channel in a composite Last-Event-ID; never raises.

    None when there is no id (no resume). Otherwise one entry per channel: its
    position, or None where the id does not hold a usable one for it (another
    list of channels, a malformed part): the channel then resumes from an id
    the broker does not know, which is a `gap` for it alone.
    """
    if value is None:
        return None
    unknown: list[str | None] = [None] * len(channels)
    if len(value) > _MAX_COMPOSITE_CHARS:
        return unknown
    parts = value.split(_SEP)
    if len(parts) != len(channels) + 1 or parts[0] != fingerprint(channels):
        return unknown
    first = parts[1]
    base = _base_of(first) if _POSITION.match(first) else ""
    out: list[str | None] = []
    for part in parts[1:]:
        if _POSITION.match(part):
            out.append(part)
        elif base and _SEQ.match(part):
            out.append(base + part)
        else:
            out.append(None)
    return out


def tagged_data(data: str, channel: str) -> str:
    """`data` (a JSON object) with `"channel"` added; other data is wrapped as `"data"`."""
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if isinstance(value, dict):
        value["channel"] = channel  # ours wins over any "channel" of the event's own
        return json.dumps(value, ensure_ascii=False)
    return json.dumps({"data": data, "channel": channel}, ensure_ascii=False)


def tagged_body(single: Frame, channel: str) -> bytes:
    """One event of `channel` tagged, without its id line: built once per frame, then shared.

    A frame belongs to one topic, and a topic to one channel name, so every
    multiplexed stream of that channel shares these bytes.
    """
    body = single.encodings.get(_BODY)
    if body is None:
        event = single.event
        data = "" if event is None else event.data
        name = None if event is None else event.event
        body = single.encodings[_BODY] = encode(Event(tagged_data(data, channel), event=name))
    return body


def one_channel(frame: Frame, channel: str, prefix: str, *, chunked: bool) -> bytes:
    """`frame` as every one-channel stream of `channel` writes it (`prefix`: `<fingerprint>.`).

    The composite id of a one-channel stream depends only on the event, so the
    bytes are the same for all of them: built once per frame, like `Frame.chunked`.
    """
    key = ONE_CHUNKED if chunked else ONE_RAW
    done = frame.encodings.get(key)
    if done is not None:
        return done
    raw = frame.encodings.get(ONE_RAW)
    if raw is None:
        raw = frame.encodings[ONE_RAW] = b"".join(
            b"id: %b\n%b" % ((prefix + s.id).encode(), tagged_body(s, channel))
            if s.id
            else tagged_body(s, channel)
            for s in frame.singles()
        )
    if not chunked:
        return raw
    framed = frame.encodings[ONE_CHUNKED] = chunk(raw)
    return framed


class ChannelIds:
    """A connection's position in each of its channels, and its composite ids."""

    __slots__ = ("_base", "_parts", "_positions", "fingerprint")

    def __init__(self, channels: Sequence[str], positions: Sequence[str]) -> None:
        self.fingerprint = fingerprint(channels)
        self._positions = list(positions)
        self._base = ""
        self._parts: list[str] = []
        self._rebase()

    def _rebase(self) -> None:
        # The first position is written whole; each other one sharing its
        # `<epoch>-` (every channel in one process) as its sequence number alone.
        positions = self._positions
        self._base = _base_of(positions[0]) if positions else ""
        self._parts = [positions[0], *(_compact(p, self._base) for p in positions[1:])]

    def composite(self) -> str:
        """The composite id of the positions now."""
        return _SEP.join((self.fingerprint, *self._parts))

    def encode(self, index: int, frame: Frame, channel: str) -> bytes:
        """`frame`'s events of channel `index`, each with its composite id; advances it.

        The other channels' positions do not move during one frame, so the id
        line is the cached tagged body plus one join of three strings per event.
        """
        positions = self._positions
        parts = self._parts
        head = _SEP.join((self.fingerprint, *parts[:index])) + _SEP
        tail = _SEP.join(("", *parts[index + 1 :])) if index + 1 < len(parts) else ""
        out = []
        for single in frame.singles():
            body = tagged_body(single, channel)
            if not single.id:
                out.append(body)
                continue
            positions[index] = single.id
            if index == 0:
                if self._base and single.id.startswith(self._base):
                    parts[0] = single.id
                else:  # a new epoch (a Redis millisecond): the others are written anew
                    self._rebase()
                    parts = self._parts
                    tail = _SEP.join(("", *parts[1:]))
                part = single.id
            else:
                part = parts[index] = _compact(single.id, self._base)
            out.append(b"id: %b\n%b" % ((head + part + tail).encode(), body))
        return b"".join(out)


def _base_of(position: str) -> str:
    """`<epoch>-` of a position, or "" for none."""
    cut = position.find("-")
    return position[: cut + 1] if cut > 0 else ""


def _compact(position: str, base: str) -> str:
    return position[len(base) :] if base and position.startswith(base) else position
