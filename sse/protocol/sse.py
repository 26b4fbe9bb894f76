"""The text/event-stream wire format: encode events, decode a byte stream.

Follows WHATWG HTML "Server-sent events": section 9.2.5 "Parsing an event
stream" (the format we write) and section 9.2.6 "Interpreting an event stream"
(how a client reads it, which the Decoder implements step by step).
https://html.spec.whatwg.org/multipage/server-sent-events.html

Pure: no I/O, no asyncio, no clock. Bytes in, events out; events in, bytes out.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass

from sse.errors import EncodeError

__all__ = [
    "Comment",
    "DecodedEvent",
    "Decoder",
    "Event",
    "encode",
    "encode_comment",
    "encode_retry",
]

# 9.2.6: a line ends at CRLF, a lone LF or a lone CR. Not str.splitlines(): it
# also splits on U+2028, U+0085, FF, VT..., which are ordinary any-char in 9.2.5.
_BREAK = re.compile(r"\r\n|\r|\n")
# 9.2.5: id and event values are one line of any-char, so no CR or LF. NUL is
# legal on the wire for "event", but 9.2.6 ignores an "id" containing U+0000,
# and the spec's note on Last-Event-ID excludes it, so we refuse it in both.
# Lone surrogates are not scalar values, so UTF-8 cannot carry them: refuse them
# here, while the value is built, instead of failing later in encode().
_BAD_FIELD = re.compile("[\r\n\x00\ud800-\udfff]")
# 9.2.6 "retry": "If the field value consists of only ASCII digits". Not
# str.isdigit(), which also accepts e.g. Arabic-Indic digits and superscripts.
_ASCII_DIGITS = re.compile(r"[0-9]+")


def _check_field(name: str, value: str | None) -> None:
    """Refuse an id or event value that would break out of its line.

    Raises:
        EncodeError: the value contains CR, LF, NUL or a lone surrogate.
    """
    if value is not None and _BAD_FIELD.search(value):
        raise EncodeError(f"CR, LF, NUL or lone surrogate in {name} {value!r}")


def _check_retry(retry_ms: object) -> None:
    """Refuse a reconnection time that 9.2.6 would ignore.

    Raises:
        EncodeError: retry_ms is not a plain int (bool is refused) or is negative.
    """
    # type() rather than isinstance(): bool is an int subclass, and "retry: True"
    # is not ASCII digits, so a client would silently ignore it (9.2.6).
    if type(retry_ms) is not int or retry_ms < 0:
        raise EncodeError(f"retry must be a non-negative int of milliseconds, got {retry_ms!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """One event to send; validated when built, so a bad event never reaches the wire.

    Raises:
        EncodeError: id or event contains CR, LF, NUL or a lone surrogate; event is "";
            retry_ms is not a non-negative int.
    """

    data: str
    event: str | None = None
    id: str | None = None
    retry_ms: int | None = None

    def __post_init__(self) -> None:
        """Validate the fields that have their own line on the wire."""
        _check_field("id", self.id)
        _check_field("event", self.event)
        # "event:" with an empty value leaves the event type buffer empty, so the
        # client dispatches "message" (9.2.6 step 6): say None if you mean that.
        if self.event == "":
            raise EncodeError("empty event name; use event=None for 'message'")
        if self.retry_ms is not None:
            _check_retry(self.retry_ms)


def encode(ev: Event) -> bytes:
    """Serialise one event as id, event, retry, then one data line per line of data.

    Raises:
        EncodeError: ev.data contains a lone surrogate, which UTF-8 cannot carry.
    """
    data = ev.data
    # One "data:" line per line of data; the client joins them back with LF
    # (9.2.6 "data"), so CRLF and lone CR come out as LF. Most chat messages
    # have no line break: skip the regex for them, this runs once per broadcast.
    if "\n" in data or "\r" in data:
        data = _BREAK.sub("\ndata: ", data)
    # Always "field: value" with one space: the client removes exactly one
    # leading U+0020 (9.2.6), so a value that starts with a space survives.
    text = f"data: {data}\n\n"
    if ev.retry_ms is not None:
        text = f"retry: {ev.retry_ms}\n{text}"
    if ev.event is not None:
        text = f"event: {ev.event}\n{text}"
    if ev.id is not None:
        text = f"id: {ev.id}\n{text}"
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise EncodeError(f"data is not encodable as UTF-8: {exc.reason}") from exc


def encode_comment(text: str = "") -> bytes:
    """Serialise a comment: one ":" line per line of text, with no blank line after.

    Raises:
        EncodeError: text contains a lone surrogate, which UTF-8 cannot carry.
    """
    # 9.2.6: a line starting with ":" is ignored, so a comment is a lone line.
    # No trailing blank line on purpose: heartbeats are sent as a lone comment
    # line, because some clients (httpx-sse 0.4.3) invent an empty event for
    # every blank line once they have seen an id, unlike 9.2.6 step 2.
    lines = "".join(f": {part}\n" if part else ":\n" for part in _BREAK.split(text))
    try:
        return lines.encode()
    except UnicodeEncodeError as exc:
        raise EncodeError(f"comment is not encodable as UTF-8: {exc.reason}") from exc


def encode_retry(retry_ms: int) -> bytes:
    """Serialise a lone "retry:" line that sets the client's reconnection time.

    Raises:
        EncodeError: retry_ms is not a plain int (bool is refused) or is negative.
    """
    _check_retry(retry_ms)
    # 9.2.6 applies "retry" when the line is read, no blank line needed.
    return f"retry: {retry_ms}\n".encode()


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    """An event as 9.2.6 "dispatch the event" creates it."""

    data: str
    type: str = "message"
    last_event_id: str = ""


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line: its text after the colon, minus one leading space."""

    text: str


class Decoder:
    """Incremental parser of one event stream, following WHATWG HTML 9.2.6 to the letter.

    Raises:
        RuntimeError: feed() is called after close().
    """

    __slots__ = (
        "_after_cr",
        "_at_start",
        "_closed",
        "_data",
        "_event_type",
        "_id_buffer",
        "_keep_comments",
        "_tail",
        "_utf8",
        "last_event_id",
        "retry_ms",
    )

    def __init__(self, *, keep_comments: bool = False) -> None:
        """Start a stream with empty buffers (9.2.6)."""
        self._keep_comments = keep_comments
        # 9.2.6 "Streams must be decoded using the UTF-8 decode algorithm": bad
        # bytes become U+FFFD. Python's decoder replaces the same maximal subparts
        # as the Encoding standard, and keeps a sequence split across chunks.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True  # no character decoded yet: a BOM may still come
        self._after_cr = False  # the last line ended in a CR at a chunk's end
        self._closed = False
        self._tail: list[str] = []  # text of the line not yet ended
        # The data buffer, kept as its lines: the buffer is "".join(v + "\n"),
        # so it is empty exactly when this list is.
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer = ""
        self.last_event_id = ""
        """The last event ID string: the id buffer as of the last dispatch."""
        self.retry_ms: int | None = None
        """The reconnection time the stream last set, if any."""

    def feed(self, chunk: bytes) -> list[DecodedEvent | Comment]:
        """Parse the next bytes of the stream and return what they complete, in order.

        Raises:
            RuntimeError: the decoder was closed.
        """
        if self._closed:
            raise RuntimeError("Decoder.feed() after close()")
        return self._take(self._utf8.decode(chunk))

    def close(self) -> list[DecodedEvent | Comment]:
        """End the stream, discarding an incomplete event as 9.2.6 says; idempotent."""
        if self._closed:
            return []
        self._closed = True
        out = self._take(self._utf8.decode(b"", True))
        # 9.2.6: "Once the end of the file is reached, any pending data must be
        # discarded. (If the file ends in the middle of an event, before the final
        # empty line, the incomplete event is not dispatched.)" The unended line
        # is dropped unprocessed, so an "id:" in it never reaches last_event_id.
        self._tail = []
        self._data = []
        self._event_type = ""
        return out

    def _take(self, text: str) -> list[DecodedEvent | Comment]:
        """Split decoded text into lines and process every line that has ended."""
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            # 9.2.6: UTF-8 decode "strips one leading UTF-8 Byte Order Mark (BOM),
            # if any": once, at the start of the stream, not of every chunk.
            if text[0] == "\ufeff":
                text = text[1:]
        elif self._after_cr:
            self._after_cr = False
            # The CR ending the previous chunk was the first half of a CRLF: we
            # already ended the line there, so this LF ends nothing.
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        if "\n" not in text and "\r" not in text:
            # Still inside one line: keep the pieces, join once when it ends, so
            # a long line arriving in many chunks costs linear time.
            self._tail.append(text)
            return []
        if self._tail:
            self._tail.append(text)
            text = "".join(self._tail)
        lines = _BREAK.split(text)
        last = lines.pop()
        self._tail = [last] if last else []
        # A CR at the very end is a line end now (a lone CR is one, 9.2.6), so a
        # CR-only stream is not held back a chunk; remember it to drop a next LF.
        self._after_cr = text[-1] == "\r"
        return self._process(lines)

    def _process(self, lines: list[str]) -> list[DecodedEvent | Comment]:
        """Process complete lines in order, per the list in 9.2.6."""
        out: list[DecodedEvent | Comment] = []
        for line in lines:
            if not line:
                # "If the line is empty (a blank line)": dispatch the event.
                self._dispatch(out)
                continue
            if line[0] == ":":
                # "If the line starts with a U+003A COLON character (:)": ignore
                # the line. We hand it back only if asked to, for heartbeats.
                if self._keep_comments:
                    out.append(Comment(line[2:] if line[1:2] == " " else line[1:]))
                continue
            # Field before the first colon, value after it minus one leading
            # U+0020; no colon: the whole line is the name, the value is "".
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            # "Field names must be compared literally, with no case folding."
            if field == "data":
                self._data.append(value)
            elif field == "event":
                self._event_type = value
            elif field == "id":
                # "If the field value does not contain U+0000 NULL, then set the
                # last event ID buffer to the field value. Otherwise, ignore."
                if "\x00" not in value:
                    self._id_buffer = value
            elif field == "retry" and _ASCII_DIGITS.fullmatch(value):
                # "If the field value consists of only ASCII digits"; otherwise
                # the retry field is ignored, like any other field.
                self._set_retry(value)
            # "Otherwise: The field is ignored."
        return out

    def _set_retry(self, digits: str) -> None:
        """Set the reconnection time from a field value of ASCII digits (9.2.6)."""
        # Leading zeros do not change the value and would count against
        # Python's limit on digits per int() conversion.
        digits = digits.lstrip("0") or "0"
        # Deliberate deviation: a value longer than sys.get_int_max_str_digits()
        # (4300 by default) is ignored, not interpreted: int() raises ValueError
        # for it, and it is beyond any usable delay anyway.
        with contextlib.suppress(ValueError):
            self.retry_ms = int(digits)

    def _dispatch(self, out: list[DecodedEvent | Comment]) -> None:
        """Run 9.2.6 "dispatch the event", appending the event it creates, if any."""
        # Step 1: the last event ID string takes the buffer's value even if no
        # event follows; the buffer itself is not reset.
        self.last_event_id = self._id_buffer
        # Step 2: an empty data buffer resets data and type buffers, no event.
        if not self._data:
            self._event_type = ""
            return
        # Steps 3-5: the buffer is each value plus LF, minus the last LF; type
        # is "message" unless the event type buffer says otherwise (step 6).
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        out.append(DecodedEvent(data, self._event_type or "message", self.last_event_id))
        # Step 7: reset the data and event type buffers.
        self._data = []
        self._event_type = ""
