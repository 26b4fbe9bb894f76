"""Tests of sse.protocol.sse against WHATWG HTML "Server-sent events" 9.2.5 and 9.2.6."""

from __future__ import annotations

import re
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse.errors import SSEChatError
from sse.protocol.sse import (
    Comment,
    DecodedEvent,
    Decoder,
    EncodeError,
    Event,
    encode,
    encode_comment,
    encode_retry,
)

Item = DecodedEvent | Comment


# --- encoding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        pytest.param(Event("hi"), b"data: hi\n\n", id="plain"),
        pytest.param(Event(""), b"data: \n\n", id="empty-data"),
        pytest.param(Event("a\nb"), b"data: a\ndata: b\n\n", id="lf"),
        pytest.param(Event("a\rb"), b"data: a\ndata: b\n\n", id="cr"),
        pytest.param(Event("a\r\nb"), b"data: a\ndata: b\n\n", id="crlf"),
        pytest.param(
            Event("a\r\n\r\nb\n\rc\r\r\nd"),
            b"data: a\ndata: \ndata: b\ndata: \ndata: c\ndata: \ndata: d\n\n",
            id="mixed-breaks",
        ),
        pytest.param(Event("\n"), b"data: \ndata: \n\n", id="only-lf"),
        pytest.param(Event("a\n"), b"data: a\ndata: \n\n", id="trailing-lf"),
        pytest.param(Event(" x"), b"data:  x\n\n", id="leading-space"),
        pytest.param(Event("a: b"), b"data: a: b\n\n", id="colon-in-data"),
        pytest.param(
            Event("x", event="add", id="7", retry_ms=1500),
            b"id: 7\nevent: add\nretry: 1500\ndata: x\n\n",
            id="id-event-retry-order",
        ),
        pytest.param(Event("x", id=""), b"id: \ndata: x\n\n", id="empty-id"),
        pytest.param(Event("x", id=" 7"), b"id:  7\ndata: x\n\n", id="id-leading-space"),
        pytest.param(Event("x", retry_ms=0), b"retry: 0\ndata: x\n\n", id="retry-zero"),
        pytest.param(
            Event("hi\n\ndata: evil\nid: 9"),
            b"data: hi\ndata: \ndata: data: evil\ndata: id: 9\n\n",
            id="injection-stays-one-event",
        ),
        pytest.param(
            Event("\U0001f600 caf\u00e9"), "data: \U0001f600 caf\u00e9\n\n".encode(), id="emoji"
        ),
        pytest.param(Event("a\x00b"), b"data: a\x00b\n\n", id="nul-in-data"),
        pytest.param(
            Event("a\u2028b\x85c"), "data: a\u2028b\x85c\n\n".encode(), id="u2028-not-a-break"
        ),
    ],
)
def test_encode_writes_exact_bytes(event: Event, wire: bytes) -> None:
    assert encode(event) == wire


def test_injection_attempt_decodes_as_one_event_with_all_its_lines() -> None:
    wire = encode(Event("hi\n\ndata: evil\nid: 9", id="1"))
    decoder = Decoder()
    assert decoder.feed(wire) == [DecodedEvent("hi\n\ndata: evil\nid: 9", "message", "1")]
    assert decoder.last_event_id == "1"


def test_encode_error_is_an_sse_chat_error() -> None:
    assert issubclass(EncodeError, SSEChatError)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"id": "a\rb"}, id="cr-in-id"),
        pytest.param({"id": "a\nb"}, id="lf-in-id"),
        pytest.param({"id": "a\x00b"}, id="nul-in-id"),
        pytest.param({"id": "\ud800"}, id="surrogate-in-id"),
        pytest.param({"event": "a\rb"}, id="cr-in-event"),
        pytest.param({"event": "a\nb"}, id="lf-in-event"),
        pytest.param({"event": "a\x00b"}, id="nul-in-event"),
        pytest.param({"event": "\udfff"}, id="surrogate-in-event"),
        pytest.param({"event": ""}, id="empty-event"),
        pytest.param({"retry_ms": -1}, id="negative-retry"),
        pytest.param({"retry_ms": 1.0}, id="float-retry"),
        pytest.param({"retry_ms": True}, id="bool-retry"),
        pytest.param({"retry_ms": False}, id="false-retry"),
        pytest.param({"retry_ms": "10"}, id="str-retry"),
    ],
)
def test_event_refuses_fields_the_wire_cannot_carry(kwargs: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        Event("x", **kwargs)


@pytest.mark.parametrize("data", ["\ud800", "a\udfffb", "x\ny\udc80"])
def test_encode_refuses_data_with_lone_surrogates(data: str) -> None:
    ev = Event(data)  # data is not pre-scanned; the UTF-8 encoder catches it
    with pytest.raises(EncodeError):
        encode(ev)


@pytest.mark.parametrize(("retry_ms", "wire"), [(0, b"retry: 0\n"), (3000, b"retry: 3000\n")])
def test_encode_retry_writes_a_lone_line(retry_ms: int, wire: bytes) -> None:
    assert encode_retry(retry_ms) == wire


@pytest.mark.parametrize("retry_ms", [-1, 1.5, True, "5", None])
def test_encode_retry_refuses_non_int_or_negative(retry_ms: Any) -> None:
    with pytest.raises(EncodeError):
        encode_retry(retry_ms)


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        pytest.param("", b":\n", id="bare"),
        pytest.param("ping", b": ping\n", id="text"),
        pytest.param(" x", b":  x\n", id="leading-space"),
        pytest.param("a\nb", b": a\n: b\n", id="lf"),
        pytest.param("a\r\nb\rc", b": a\n: b\n: c\n", id="crlf-and-cr"),
        pytest.param("a\n\nb", b": a\n:\n: b\n", id="empty-middle-line"),
        pytest.param("a\n", b": a\n:\n", id="trailing-lf"),
    ],
)
def test_encode_comment_writes_comment_lines_without_blank_line(text: str, wire: bytes) -> None:
    assert encode_comment(text) == wire
    assert b"\n\n" not in encode_comment(text)


def test_encode_comment_default_is_bare_colon() -> None:
    assert encode_comment() == b":\n"


def test_encode_comment_refuses_lone_surrogates() -> None:
    with pytest.raises(EncodeError):
        encode_comment("\ud800")


def test_comment_decodes_back_to_its_text_and_dispatches_nothing() -> None:
    decoder = Decoder(keep_comments=True)
    wire = encode_comment("a\n b") + encode_comment()
    assert decoder.feed(wire) == [Comment("a"), Comment(" b"), Comment("")]
    assert Decoder().feed(wire + b"\n") == []


# --- decoding -----------------------------------------------------------------


def _decode(
    chunks: list[bytes], *, keep_comments: bool = False
) -> tuple[list[Item], str, int | None]:
    """Feed chunks in order, close, and return the items plus final state."""
    decoder = Decoder(keep_comments=keep_comments)
    items: list[Item] = []
    for chunk in chunks:
        items += decoder.feed(chunk)
    items += decoder.close()
    return items, decoder.last_event_id, decoder.retry_ms


def _all_splits(wire: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut in two at every offset."""
    splits = [[wire], [wire[i : i + 1] for i in range(len(wire))]]
    splits += [[wire[:i], wire[i:]] for i in range(len(wire) + 1)]
    return splits


def _assert_same_however_split(
    wire: bytes, expected: list[Item], last_id: str, retry_ms: int | None, *, keep_comments: bool
) -> None:
    for chunks in _all_splits(wire):
        assert _decode(chunks, keep_comments=keep_comments) == (expected, last_id, retry_ms), chunks


M = "message"

# (wire, expected items, last_event_id after close, retry_ms after close)
DECODE_CASES: list[Any] = [
    pytest.param(
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        [DecodedEvent("YHOO\n+2\n10")],
        "",
        None,
        id="spec-yhoo-multiline",
    ),
    pytest.param(
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n",
        [
            DecodedEvent("first event", M, "1"),
            DecodedEvent("second event", M, ""),
            DecodedEvent(" third event", M, ""),
        ],
        "",
        None,
        id="spec-four-blocks",
    ),
    pytest.param(
        b"data\n\ndata\ndata\n\ndata:",
        [DecodedEvent(""), DecodedEvent("\n")],
        "",
        None,
        id="spec-colonless-data-and-discarded-tail",
    ),
    pytest.param(
        b"data:test\n\ndata: test\n\n",
        [DecodedEvent("test"), DecodedEvent("test")],
        "",
        None,
        id="spec-space-after-colon-optional",
    ),
    pytest.param(b"data: \n\n", [DecodedEvent("")], "", None, id="empty-data-is-an-event"),
    pytest.param(b"data:\n\n", [DecodedEvent("")], "", None, id="empty-data-no-space"),
    pytest.param(b"\n\n\n", [], "", None, id="blank-lines-dispatch-nothing"),
    pytest.param(
        b"event: add\n\ndata: x\n\n", [DecodedEvent("x")], "", None, id="type-reset-without-data"
    ),
    pytest.param(
        b"event: add\ndata: 1\n\ndata: 2\n\n",
        [DecodedEvent("1", "add"), DecodedEvent("2")],
        "",
        None,
        id="type-reset-after-dispatch",
    ),
    pytest.param(
        b"event:\ndata: x\n\n", [DecodedEvent("x")], "", None, id="empty-event-is-message"
    ),
    pytest.param(b"data: x\r\n\r\n", [DecodedEvent("x")], "", None, id="crlf"),
    pytest.param(b"data: x\r\r", [DecodedEvent("x")], "", None, id="lone-cr"),
    pytest.param(
        b"data: a\r\ndata: b\r\n\r\n", [DecodedEvent("a\nb")], "", None, id="crlf-is-one-line-end"
    ),
    pytest.param(
        b"data: a\rdata: b\r\n\n", [DecodedEvent("a\nb")], "", None, id="cr-then-crlf-then-lf"
    ),
    pytest.param(
        b"data: a\n\rdata: b\n\n",
        [DecodedEvent("a"), DecodedEvent("b")],
        "",
        None,
        id="lf-then-cr-is-blank-line",
    ),
    pytest.param(
        b"data: a\r\n\ndata: b\r\r\n",
        [DecodedEvent("a"), DecodedEvent("b")],
        "",
        None,
        id="cr-lf-mix",
    ),
    pytest.param(
        b"data: a\xe2\x80\xa8b\n\n", [DecodedEvent("a\u2028b")], "", None, id="u2028-is-not-a-break"
    ),
    pytest.param(b"\xef\xbb\xbfdata: x\n\n", [DecodedEvent("x")], "", None, id="bom-stripped"),
    pytest.param(
        b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", [], "", None, id="second-bom-is-part-of-field-name"
    ),
    pytest.param(
        b"\xef\xbb\xbfdata: \xef\xbb\xbfx\n\n",
        [DecodedEvent("\ufeffx")],
        "",
        None,
        id="bom-in-data-kept",
    ),
    pytest.param(
        b"data: x\n\n\xef\xbb\xbfdata: y\n\n",
        [DecodedEvent("x")],
        "",
        None,
        id="bom-later-not-stripped",
    ),
    pytest.param(b": hi\ndata: x\n:\n\n", [DecodedEvent("x")], "", None, id="comments-ignored"),
    pytest.param(b"data\n\n", [DecodedEvent("")], "", None, id="field-without-colon"),
    pytest.param(
        b"data: a:b: c\n\n", [DecodedEvent("a:b: c")], "", None, id="split-at-first-colon"
    ),
    pytest.param(b"Data: x\nDATA: y\n\n", [], "", None, id="field-names-case-sensitive"),
    pytest.param(
        b"foo: bar\ndata: x\nbaz\n\n", [DecodedEvent("x")], "", None, id="unknown-fields-ignored"
    ),
    pytest.param(b"data : x\n\n", [], "", None, id="space-before-colon-is-another-field"),
    pytest.param(
        b"id: 1\ndata: a\n\ndata: b\n\n",
        [DecodedEvent("a", M, "1"), DecodedEvent("b", M, "1")],
        "1",
        None,
        id="id-persists-across-events",
    ),
    pytest.param(
        b"id: 1\ndata: a\n\nid:\ndata: b\n\n",
        [DecodedEvent("a", M, "1"), DecodedEvent("b", M, "")],
        "",
        None,
        id="empty-id-resets",
    ),
    pytest.param(
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [DecodedEvent("a", M, "1"), DecodedEvent("b", M, "1")],
        "1",
        None,
        id="id-with-nul-ignored",
    ),
    pytest.param(b"id: 5\n\n", [], "5", None, id="id-without-data-still-sets-last-id"),
    pytest.param(b"id: 5\ndata: x\n", [], "", None, id="unfinished-event-id-not-committed"),
    pytest.param(b"data: x\nid: 5", [], "", None, id="unended-id-line-discarded"),
    pytest.param(
        b"id:  5\ndata: x\n\n", [DecodedEvent("x", M, " 5")], " 5", None, id="id-one-space-removed"
    ),
    pytest.param(b"retry: 1000\n", [], "", 1000, id="retry-applies-without-blank-line"),
    pytest.param(b"retry:250\ndata: x\n\n", [DecodedEvent("x")], "", 250, id="retry-no-space"),
    pytest.param(b"retry: 007\n", [], "", 7, id="retry-leading-zeros"),
    pytest.param(b"retry: 10\nretry: 12a\n", [], "", 10, id="retry-with-letter-ignored"),
    pytest.param(b"retry:  1\n", [], "", None, id="retry-second-space-not-digit"),
    pytest.param(b"retry: 1 \n", [], "", None, id="retry-trailing-space"),
    pytest.param(b"retry:\nretry: -1\nretry: +1\n", [], "", None, id="retry-empty-or-signed"),
    pytest.param("retry: \u0661\u0662\n".encode(), [], "", None, id="retry-non-ascii-digits"),
    pytest.param(b"retry: 1.5\n", [], "", None, id="retry-decimal"),
    pytest.param(b"retry: " + b"9" * 5000 + b"\n", [], "", None, id="retry-too-long-to-convert"),
    pytest.param(
        b"data: \xff\xfeok\n\n", [DecodedEvent("\ufffd\ufffdok")], "", None, id="invalid-utf8"
    ),
    pytest.param(b"data: \xe2\x82\n\n", [DecodedEvent("\ufffd")], "", None, id="truncated-utf8"),
    pytest.param(
        b"data: \xed\xa0\x80\n\n", [DecodedEvent("\ufffd" * 3)], "", None, id="encoded-surrogate"
    ),
    pytest.param(
        "data: \U0001f600\n\n".encode(), [DecodedEvent("\U0001f600")], "", None, id="four-byte-utf8"
    ),
    pytest.param(
        b"data: x\n\ndata: \xf0\x9f", [DecodedEvent("x")], "", None, id="truncated-utf8-at-eof"
    ),
    pytest.param(b"data: x", [], "", None, id="no-line-end-at-eof"),
    pytest.param(b"", [], "", None, id="empty-stream"),
]


@pytest.mark.parametrize(("wire", "expected", "last_id", "retry_ms"), DECODE_CASES)
def test_decoder_follows_spec_however_stream_is_split(
    wire: bytes, expected: list[Item], last_id: str, retry_ms: int | None
) -> None:
    _assert_same_however_split(wire, expected, last_id, retry_ms, keep_comments=False)


COMMENT_CASES: list[Any] = [
    pytest.param(b": hello\n", [Comment("hello")], id="one-space-removed"),
    pytest.param(b":hello\n", [Comment("hello")], id="no-space"),
    pytest.param(b":  two\n", [Comment(" two")], id="only-one-space-removed"),
    pytest.param(b":\n", [Comment("")], id="bare"),
    pytest.param(b": a: b\n", [Comment("a: b")], id="colon-in-comment"),
    pytest.param(b"\xef\xbb\xbf: bom\r\n", [Comment("bom")], id="after-bom"),
    pytest.param(
        b": a\ndata: x\n: b\n\n",
        [Comment("a"), Comment("b"), DecodedEvent("x")],
        id="in-order-with-events",
    ),
    pytest.param(b": unended", [], id="unended-comment-discarded"),
]


@pytest.mark.parametrize(("wire", "expected"), COMMENT_CASES)
def test_decoder_returns_comments_when_asked(wire: bytes, expected: list[Item]) -> None:
    _assert_same_however_split(wire, expected, "", None, keep_comments=True)


def test_decoder_hides_comments_by_default() -> None:
    assert Decoder().feed(b": hello\n:\n") == []


def test_decoder_dispatches_on_a_trailing_cr_without_waiting_for_more() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: x\r\r") == [DecodedEvent("x")]
    # The LF completing the CRLF that began the chunk before ends nothing.
    assert decoder.feed(b"\ndata: y\n\n") == [DecodedEvent("y")]


def test_decoder_joins_a_crlf_split_across_chunks_into_one_line_end() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r\n") == [DecodedEvent("a\nb")]


def test_decoder_close_discards_incomplete_event_and_is_idempotent() -> None:
    decoder = Decoder()
    assert decoder.feed(b"id: 1\ndata: x\n\nid: 2\ndata: y\n") == [DecodedEvent("x", M, "1")]
    assert decoder.close() == []
    assert decoder.close() == []
    assert decoder.last_event_id == "1"


def test_decoder_refuses_feed_after_close() -> None:
    decoder = Decoder()
    decoder.close()
    with pytest.raises(RuntimeError):
        decoder.feed(b"data: x\n\n")


def test_decoder_handles_a_long_line_in_many_chunks() -> None:
    decoder = Decoder()
    line = b"data: " + b"x" * 100_000 + b"\n\n"
    items: list[Item] = []
    for i in range(0, len(line), 7):
        items += decoder.feed(line[i : i + 7])
    assert items == [DecodedEvent("x" * 100_000)]


def test_decoder_handles_many_events_in_one_chunk() -> None:
    wire = b"".join(encode(Event(str(i), id=str(i))) for i in range(1000))
    decoder = Decoder()
    assert decoder.feed(wire) == [DecodedEvent(str(i), M, str(i)) for i in range(1000)]


# --- round trip properties ------------------------------------------------------

# Any text but lone surrogates (category Cs), which UTF-8 cannot carry.
_NO_SURROGATES: list[Literal["Cs"]] = ["Cs"]
_text = st.text(alphabet=st.characters(exclude_categories=_NO_SURROGATES))
_field = st.text(
    alphabet=st.characters(exclude_categories=_NO_SURROGATES, exclude_characters="\r\n\x00")
)
_ids = st.none() | _field
_names = st.none() | _field.filter(bool)
_retries = st.none() | st.integers(min_value=0, max_value=2**63)
_events = st.builds(Event, _text, event=_names, id=_ids, retry_ms=_retries)

_NEWLINES = re.compile(r"\r\n|\r")


def _as_delivered(text: str) -> str:
    """What a client sees of data: CRLF and lone CR become LF (9.2.6)."""
    return _NEWLINES.sub("\n", text)


@given(data=_text, event=_names, event_id=_ids, retry_ms=_retries)
def test_encode_then_decode_gives_back_the_event(
    data: str, event: str | None, event_id: str | None, retry_ms: int | None
) -> None:
    ev = Event(data, event=event, id=event_id, retry_ms=retry_ms)
    decoder = Decoder()
    items = decoder.feed(encode(ev)) + decoder.close()
    assert items == [DecodedEvent(_as_delivered(data), event or M, event_id or "")]
    assert decoder.last_event_id == (event_id or "")
    assert decoder.retry_ms == retry_ms


@given(events=st.lists(_events, max_size=8), data=st.data())
def test_concatenated_events_decode_the_same_however_split(
    events: list[Event], data: st.DataObject
) -> None:
    wire = b"".join(encode(ev) for ev in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="cuts"))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]

    expected: list[Item] = []
    last_id = ""
    retry_ms: int | None = None
    for ev in events:
        last_id = ev.id if ev.id is not None else last_id
        retry_ms = ev.retry_ms if ev.retry_ms is not None else retry_ms
        expected.append(DecodedEvent(_as_delivered(ev.data), ev.event or M, last_id))

    assert _decode(chunks) == (expected, last_id, retry_ms)


@given(wire=st.binary(max_size=64), data=st.data())
def test_arbitrary_bytes_decode_the_same_however_split(wire: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(wire)), label="cut")
    assert _decode([wire[:cut], wire[cut:]], keep_comments=True) == _decode(
        [wire[i : i + 1] for i in range(len(wire))], keep_comments=True
    )
