"""The multiplexed stream's wire format: tags, composite ids, and ids from clients."""

from __future__ import annotations

import json

from sse.protocol.frame import Frame
from sse.protocol.multiplex import (
    ChannelIds,
    fingerprint,
    one_channel,
    parse_composite,
    tagged_body,
    tagged_data,
)
from sse.protocol.sse import Decoder, Event

CHANNELS = ("room:lobby", "conv:8c6a3c9e-5f2b-4c1e-9a7d-3b2e1f0a9c8d")


def _frame(data: str, event_id: str | None, seq: int = 1) -> Frame:
    return Frame.of(Event(data, event="message", id=event_id), seq)


def test_the_fingerprint_is_8_hex_digits_and_depends_on_the_order() -> None:
    fp = fingerprint(CHANNELS)
    assert len(fp) == 8
    assert set(fp) <= set("0123456789abcdef")
    assert fingerprint(CHANNELS[::-1]) != fp


def test_a_composite_id_round_trips() -> None:
    ids = ChannelIds(CHANNELS, ["1-0", "2-0"])
    ids.encode(1, _frame('{"a": 1}', "5-3"), CHANNELS[1])
    assert ids.composite() == f"{fingerprint(CHANNELS)}.1-0.5-3"
    assert parse_composite(ids.composite(), CHANNELS) == ["1-0", "5-3"]


def test_later_positions_sharing_the_first_ones_epoch_are_written_short() -> None:
    ids = ChannelIds(CHANNELS, ["1796-4", "1796-9"])
    fp = fingerprint(CHANNELS)
    assert ids.composite() == f"{fp}.1796-4.9"
    assert parse_composite(ids.composite(), CHANNELS) == ["1796-4", "1796-9"]
    # The first channel moving to another epoch (a Redis millisecond) writes the others whole.
    events = Decoder().feed(ids.encode(0, _frame("{}", "1800-0"), CHANNELS[0]))
    assert events[0].last_event_id == f"{fp}.1800-0.1796-9"
    assert parse_composite(events[0].last_event_id, CHANNELS) == ["1800-0", "1796-9"]
    events = Decoder().feed(ids.encode(1, _frame("{}", "1800-3"), CHANNELS[1]))
    assert events[0].last_event_id == f"{fp}.1800-0.3"
    # A short part needs a whole first one.
    assert parse_composite(f"{fp}.nope.3", CHANNELS) == [None, None]


def test_ids_from_clients_never_raise_and_are_unknown_per_channel() -> None:
    fp = fingerprint(CHANNELS)
    assert parse_composite(None, CHANNELS) is None
    for bad in [
        "",
        ".",
        "x" * 10_000,
        f"{fp}.1-0",
        f"{fp}.1-0.2-0.3-0",
        "\x00\n",
        "ffffffff.1-0.2-0",
    ]:
        assert parse_composite(bad, CHANNELS) == [None, None], bad
    assert parse_composite(f"{fp}.1-0.nope", CHANNELS) == ["1-0", None]
    assert parse_composite(f"{fp}.1-0." + "1" * 21 + "-0", CHANNELS) == ["1-0", None]


def test_data_gets_the_channel_key_and_other_data_is_wrapped() -> None:
    assert json.loads(tagged_data('{"text": "hi"}', "room:a")) == {
        "text": "hi",
        "channel": "room:a",
    }
    # Ours wins over an event's own "channel".
    assert json.loads(tagged_data('{"channel": "x"}', "room:a")) == {"channel": "room:a"}
    assert json.loads(tagged_data("plain", "room:a")) == {"data": "plain", "channel": "room:a"}
    assert json.loads(tagged_data("[1]", "room:a")) == {"data": "[1]", "channel": "room:a"}


def test_events_decode_to_the_tagged_data_and_the_composite_id() -> None:
    frame = Frame(2, "6-1", b"", b"", parts=(_frame('{"n": 1}', "6-0"), _frame('{"n": 2}', "6-1")))
    ids = ChannelIds(CHANNELS, ["1-0", "2-0"])
    events = Decoder().feed(ids.encode(0, frame, CHANNELS[0]))
    fp = fingerprint(CHANNELS)
    assert [(e.type, json.loads(e.data)["n"], e.last_event_id) for e in events] == [
        ("message", 1, f"{fp}.6-0.2-0"),
        ("message", 2, f"{fp}.6-1.2-0"),
    ]


def test_an_event_without_id_keeps_the_positions_and_writes_no_id() -> None:
    ids = ChannelIds(CHANNELS, ["1-0", "2-0"])
    out = ids.encode(0, _frame('{"typing": true}', None), CHANNELS[0])
    assert b"id:" not in out
    assert ids.composite() == f"{fingerprint(CHANNELS)}.1-0.2-0"


def test_the_tagged_bytes_are_built_once_per_frame() -> None:
    frame = _frame('{"n": 1}', "7-0")
    assert tagged_body(frame, "room:a") is tagged_body(frame, "room:a")
    prefix = fingerprint(("room:a",)) + "."
    chunked = one_channel(frame, "room:a", prefix, chunked=True)
    assert one_channel(frame, "room:a", prefix, chunked=True) is chunked
    raw = one_channel(frame, "room:a", prefix, chunked=False)
    assert raw.startswith(f"id: {prefix}7-0\n".encode())
    assert chunked == b"%x\r\n%b\r\n" % (len(raw), raw)
