"""A model behind an OpenAI-compatible Chat Completions API, streamed as it is produced.

The request and stream follow the OpenAI API reference, "Create chat completion"
(POST {base}/chat/completions with "stream": true) and "The chat completion chunk
object": server-sent events whose data is a `chat.completion.chunk` JSON object, the
text in `choices[0].delta.content`, the first chunk carrying only the role, one chunk
with an empty delta and the `finish_reason`, then a last event whose data is `[DONE]`.
Every request asks for `"stream_options": {"include_usage": true}`, so a last chunk
before [DONE] has `"choices": []` and `"usage": {"completion_tokens": ...}`: what the
reply cost, yielded as `Usage` for the daily budgets. And `"max_tokens"` bounds what one
reply may cost. Both are always sent, a deliberate simplicity: an OpenAI-compatible
server that rejects unknown fields answers 400, which the person sees quoted.
https://platform.openai.com/docs/api-reference/chat/create
https://platform.openai.com/docs/api-reference/chat-streaming

The event stream itself is read by our own `sse.wire.Decoder` (WHATWG HTML 9.2.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Sequence

import httpx

from sse.chat.models.base import ChatTurn, Finish, Piece, Usage
from sse.chat.models.listing import read_listing
from sse.errors import ConfigError, ModelError
from sse.protocol.sse import DecodedEvent, Decoder

__all__ = ["OpenAIModel"]

_ENDPOINT = "/chat/completions"
# An error answer is read only this far: enough for any JSON error object, and a
# misbehaving upstream cannot make us hold a large body in memory.
_ERROR_BODY_LIMIT_BYTES = 64 * 1024
# How much of an upstream text we quote in an error message.
_QUOTE_CHARS = 300
# After [DONE], how long and how far we keep reading for the end of the body, so the
# connection goes back to the pool instead of being closed (httpcore keeps only a
# connection whose response was read to the end).
_DRAIN_S = 1.0
_DRAIN_LIMIT_BYTES = 64 * 1024
# 9.2.6: a line ends at CRLF, a lone LF or a lone CR.
_EOL = re.compile(rb"\r\n|\r|\n")
_SPACES = re.compile(r"\s+")
# How far down an exception's chain of causes we look for the OS error.
_CAUSE_DEPTH = 8


class OpenAIModel:
    """Streams replies from an OpenAI-compatible `/chat/completions` endpoint.

    Raises:
        ConfigError: the URL is not http(s) with a host, or a limit (max_tokens
            too) is not positive.
    """

    def __init__(
        self,
        *,
        url: str,
        model_name: str,
        api_key: str | None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        max_line_bytes: int = 1 << 20,
        max_tokens: int = 1024,
    ) -> None:
        parsed = _parse_url(url)
        if not model_name:
            raise ConfigError("the model name must not be empty")
        if connect_timeout_s <= 0 or read_timeout_s <= 0 or max_line_bytes <= 0:
            raise ConfigError("model timeouts and max_line_bytes must be positive")
        if max_tokens <= 0:
            raise ConfigError(f"the model's max_tokens must be positive, not {max_tokens}")
        self._max_tokens = max_tokens
        self._endpoint = parsed
        self._name = model_name
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        self._host = host if parsed.port is None else f"{host}:{parsed.port}"
        # Shown in error messages, so without user:password or a query string: either
        # may carry a credential.
        self._where = str(parsed.copy_with(username=None, password=None, query=None))
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_line_bytes = max_line_bytes
        self._headers = {
            "accept": "text/event-stream",
            # A compressing upstream or proxy may hold events back to fill its
            # blocks, which defeats streaming; and an uncompressed body is what our
            # line limit measures.
            "accept-encoding": "identity",
        }
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        # httpx's read timeout bounds each wait for bytes, headers included, so it
        # means "the model sent nothing for this long", not a cap on the whole reply.
        # A write or a free pooled connection should come as fast as a connection.
        timeout = httpx.Timeout(
            connect=connect_timeout_s,
            read=read_timeout_s,
            write=connect_timeout_s,
            pool=connect_timeout_s,
        )
        self._client = httpx.AsyncClient(timeout=timeout)

    @property
    def name(self) -> str:
        """The model's name as the upstream knows it, e.g. "gpt-4o-mini"."""
        return self._name

    @property
    def free(self) -> bool:
        """Every reply is paid for upstream."""
        return False

    @property
    def label(self) -> str:
        """The model and the host serving it, e.g. "gpt-4o-mini via api.openai.com"."""
        return f"{self._name} via {self._host}"

    def sibling(self, model_name: str) -> OpenAIModel:
        """The same upstream asked for another model, sharing this one's connections.

        Close only one of them: they share one connection pool.
        """
        twin = copy.copy(self)
        if not model_name:
            raise ConfigError("the model name must not be empty")
        twin._name = model_name
        return twin

    async def upstream_labels(self, wanted: Collection[str]) -> dict[str, str]:
        """The labels the upstream's `GET {base}/models` gives the `wanted` ids, if any.

        Raises:
            ModelError: the listing could not be read (its caller falls back to ids).
        """
        path = self._endpoint.path.removesuffix(_ENDPOINT) + "/models"
        url = str(self._endpoint.copy_with(path=path))
        headers = {k: v for k, v in self._headers.items() if k != "accept"}
        try:
            return await read_listing(self._client, url, headers, wanted)
        except (httpx.HTTPError, ValueError) as exc:
            where = self._where.removesuffix(_ENDPOINT)
            raise ModelError(f"cannot list the models at {where}: {exc}") from exc

    @property
    def endpoint(self) -> str:
        """The URL requests go to, ending in /chat/completions, minus credentials and query."""
        return self._where

    async def reply(self, history: Sequence[ChatTurn]) -> AsyncGenerator[Piece, None]:
        """Stream the upstream's reply to `history`, each piece as soon as it arrives.

        Text pieces, then `Usage` when the upstream reports what the reply cost, then
        `Finish("length")` if max_tokens cut it.

        Raises:
            ModelError: the upstream could not be reached, refused, went silent, sent
                something that is not a chat completion stream, or stopped before [DONE].
        """
        payload = {
            "model": self._name,
            "messages": [{"role": turn.role, "content": turn.content} for turn in history],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self._max_tokens,
        }
        parser = _StreamParser(self._max_line_bytes)
        streaming = False
        try:
            async with self._client.stream(
                "POST", self._endpoint, json=payload, headers=self._headers
            ) as response:
                await self._check_head(response)
                streaming = True
                # aiter_bytes hands over each chunk as the socket delivers it, so a
                # piece is relayed the moment its event is complete.
                chunks = response.aiter_bytes()
                async for chunk in chunks:
                    for piece in parser.feed(chunk):
                        yield piece
                    if parser.done:
                        break
                else:
                    raise ModelError("the model's stream ended before [DONE]")
                await _drain(chunks)
        except httpx.HTTPError as exc:
            raise self._failure(exc, streaming=streaming) from exc

    async def aclose(self) -> None:
        """Close the connection pool; idempotent."""
        await self._client.aclose()

    async def _check_head(self, response: httpx.Response) -> None:
        """Accept a 2xx event stream; otherwise explain what came instead.

        Raises:
            ModelError: a non-2xx status, or a 2xx that is not text/event-stream.
        """
        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if response.is_success and media_type == "text/event-stream":
            return
        body = await _read_some(response)
        detail = _error_detail(body)
        if not response.is_success:
            # Some servers send no reason phrase (it is optional, RFC 9112 4): use ours.
            reason = response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)
            status = f"{response.status_code} {reason}".strip()
            raise ModelError(
                f"the model at {self._where} answered {status}" + (f": {detail}" if detail else "")
            )
        if media_type == "application/json" and _error_message(body) is None:
            # The upstream ignored "stream": true and sent a whole completion.
            raise ModelError(
                f"the model at {self._where} answered with one JSON document, not an event "
                'stream; it does not seem to support "stream": true'
            )
        raise ModelError(
            f"the model at {self._where} answered {media_type or 'no content type'}"
            " instead of text/event-stream" + (f": {detail}" if detail else "")
        )

    def _failure(self, exc: httpx.HTTPError, *, streaming: bool) -> ModelError:
        """Say in a person's words what an httpx exception means for this reply."""
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return ModelError(
                f"cannot reach the model at {self._where}: "
                f"no connection within {self._connect_timeout_s:g} s"
            )
        if isinstance(exc, httpx.ConnectError):
            return ModelError(f"cannot reach the model at {self._where}: {_os_cause(exc, detail)}")
        if isinstance(exc, httpx.ReadTimeout):
            return ModelError(f"the model sent nothing for {self._read_timeout_s:g} s")
        if isinstance(exc, httpx.WriteTimeout):
            return ModelError(
                f"the model did not take the request within {self._connect_timeout_s:g} s"
            )
        if isinstance(exc, httpx.PoolTimeout):
            return ModelError(
                f"too many replies at once: no free connection to the model within "
                f"{self._connect_timeout_s:g} s"
            )
        if isinstance(exc, httpx.NetworkError):
            detail = _os_cause(exc, detail)
        if streaming and isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return ModelError(f"the model's stream ended before [DONE]: {detail}")
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return ModelError(f"the connection to the model at {self._where} broke: {detail}")
        return ModelError(f"the request to the model at {self._where} failed: {detail}")


class _StreamParser:
    """Turns the bytes of a chat completion stream into pieces; pure, no I/O.

    Raises:
        ModelError: a line or event is too long, a chunk is malformed or reports an
            error, or the content filter cut the reply.
    """

    __slots__ = ("_decoder", "_filtered", "_guard", "_length", "done")

    def __init__(self, max_line_bytes: int) -> None:
        self._decoder = Decoder()
        self._guard = _SizeGuard(max_line_bytes)
        self._length = False  # a chunk said finish_reason "length"
        self._filtered = False  # a chunk said finish_reason "content_filter"
        self.done = False
        """[DONE] was read; what follows it is ignored."""

    def feed(self, chunk: bytes) -> list[Piece]:
        """Parse the next bytes; return the pieces they complete, `Finish` last if any.

        Raises:
            ModelError: see the class.
        """
        if self.done:
            return []
        # Before the Decoder sees the bytes, so it never holds more than the limit.
        self._guard.check(chunk)
        out: list[Piece] = []
        for event in self._decoder.feed(chunk):
            if not isinstance(event, DecodedEvent):
                continue
            if event.data == "[DONE]":
                self.done = True
                if self._filtered:
                    raise ModelError("the model's content filter cut the reply short")
                if self._length:
                    out.append(Finish("length"))
                break
            text, finish_reason, usage = _parse_chunk(event.data)
            if text:
                out.append(text)
            if usage is not None:
                out.append(usage)
            if finish_reason == "length":
                self._length = True
            elif finish_reason == "content_filter":
                self._filtered = True
        return out


class _SizeGuard:
    """Counts the bytes the Decoder holds back, since it has no limit of its own.

    The Decoder keeps an unfinished line, and the data lines of an event until its
    blank line; both are bounded here by the same number of bytes.

    Raises:
        ModelError: a line, or the lines of one event, exceed the limit.
    """

    __slots__ = ("_after_cr", "_event_bytes", "_limit", "_line_bytes", "_line_is_comment")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._line_bytes = 0  # bytes of the line not yet ended
        self._line_is_comment = False  # it starts with ":", which the Decoder drops
        self._event_bytes = 0  # bytes of the ended lines of the event not yet dispatched
        self._after_cr = False  # the last chunk ended in CR: a next LF is its CRLF

    def check(self, chunk: bytes) -> None:
        """Account for the next bytes of the stream.

        Raises:
            ModelError: see the class.
        """
        if not chunk:
            return
        start = 1 if self._after_cr and chunk[0] == 0x0A else 0
        self._after_cr = chunk[-1] == 0x0D
        for end in _EOL.finditer(chunk, start):
            self._grow(chunk, start, end.start())
            self._end_line()
            start = end.end()
        self._grow(chunk, start, len(chunk))

    def _grow(self, chunk: bytes, start: int, stop: int) -> None:
        """Add chunk[start:stop] to the current line."""
        if stop == start:
            return
        if self._line_bytes == 0:
            self._line_is_comment = chunk[start] == 0x3A
        self._line_bytes += stop - start
        if self._line_bytes > self._limit:
            raise ModelError(f"the model sent a line longer than {self._limit} bytes")

    def _end_line(self) -> None:
        """End the current line; a blank one ends the event (9.2.6)."""
        if self._line_bytes == 0:
            self._event_bytes = 0
            return
        if not self._line_is_comment:
            self._event_bytes += self._line_bytes
            if self._event_bytes > self._limit:
                raise ModelError(f"the model sent an event longer than {self._limit} bytes")
        self._line_bytes = 0


def _parse_chunk(data: str) -> tuple[str, str | None, Usage | None]:
    """Read the text, finish reason and usage of one `chat.completion.chunk`.

    Raises:
        ModelError: the data is not a chunk, or it carries an `error` object.
    """
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _malformed("not JSON", data) from exc
    if not isinstance(chunk, dict):
        raise _malformed("not a JSON object", data)
    # OpenAI-compatible servers report a failure after the head as a chunk holding
    # an error object, in the same shape as an error answer's body.
    if chunk.get("error") is not None:
        raise ModelError(f"the model reported an error: {_error_text(chunk['error'])}")
    usage = _usage(chunk.get("usage"))
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise _malformed('no "choices" list', data)
    if not choices:
        # The usage chunk of stream_options.include_usage has an empty list.
        return "", None, usage
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _malformed("the choice is not an object", data)
    # A finish chunk may omit the delta: absent, null and {} all mean no text.
    delta = choice.get("delta")
    if delta is None:
        delta = {}
    if not isinstance(delta, dict):
        raise _malformed("the delta is not an object", data)
    text = delta.get("content")
    if text is None:
        # A refusal arrives in its own field, content being null; a person should
        # see it rather than an empty reply.
        text = delta.get("refusal")
    finish_reason = choice.get("finish_reason")
    if not isinstance(text, str | None) or not isinstance(finish_reason, str | None):
        raise _malformed("content or finish_reason is not a string", data)
    return text or "", finish_reason, usage


def _usage(value: object) -> Usage | None:
    """The `Usage` of a chunk's "usage" object; None if absent (null) or malformed.

    A malformed report is ignored rather than failing a reply the person already
    has: the service then estimates the cost from the text.
    """
    if not isinstance(value, dict):
        return None
    tokens = value.get("completion_tokens")
    # bool is an int in Python; true is not a count.
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        return None
    return Usage(tokens)


def _malformed(why: str, data: str) -> ModelError:
    """The error for event data that is not a usable chunk, quoting the data."""
    return ModelError(f"malformed chunk from the model: {why}: {_quote(data)}")


async def _read_some(response: httpx.Response) -> bytes:
    """Read the start of a body we will only quote, up to _ERROR_BODY_LIMIT_BYTES."""
    body = bytearray()
    # What arrived before a failure is enough to explain the answer's status.
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT_BYTES:
                break
    return bytes(body[:_ERROR_BODY_LIMIT_BYTES])


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what little follows [DONE] so the connection can be kept; give up quickly."""
    seen = 0
    # Whatever goes wrong here, the reply is complete: the connection is just closed.
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_DRAIN_S):
            async for chunk in chunks:
                seen += len(chunk)
                if seen > _DRAIN_LIMIT_BYTES:
                    return


def _error_message(body: bytes) -> str | None:
    """The message of an OpenAI-style error body, if the body is one."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    # {"error": {"message": ...}} is OpenAI's shape; {"error": "..."}, {"detail": ...}
    # and {"message": ...} come from other OpenAI-compatible servers.
    for key in ("error", "detail", "message"):
        if doc.get(key) is not None:
            return _error_text(doc[key])
    return None


def _error_detail(body: bytes) -> str:
    """What to quote from an error body: its JSON error message, else its text."""
    message = _error_message(body)
    if message is not None:
        return message
    return _quote(body.decode("utf-8", errors="replace"))


def _error_text(error: object) -> str:
    """The message of an error value: its "message" field, or the value itself."""
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return _quote(error["message"])
    if isinstance(error, str):
        return _quote(error)
    return _quote(json.dumps(error))


def _os_cause(exc: BaseException, default: str) -> str:
    """The OS's words for the error at the root of `exc`, e.g. "Connection refused".

    httpx says "All connection attempts failed" for every failed connect; the errno
    it chains from says why.
    """
    found = default
    cause = exc.__cause__ or exc.__context__
    for _ in range(_CAUSE_DEPTH):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno is not None:
            # Resolver errors (socket.gaierror) have negative numbers and their own text.
            found = os.strerror(cause.errno) if cause.errno > 0 else (cause.strerror or found)
        cause = cause.__cause__ or cause.__context__
    return found


def _quote(text: str) -> str:
    """Text from the upstream on one line, cut to a length fit for a message."""
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"


def _parse_url(url: str) -> httpx.URL:
    """The chat completions endpoint for a base URL, or the endpoint itself.

    Raises:
        ConfigError: not an http(s) URL with a host.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"model URL {url!r} is not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"model URL {url!r} must start with http:// or https:// and name a host")
    path = parsed.path.rstrip("/")
    if not path.endswith(_ENDPOINT):
        path += _ENDPOINT
    return parsed.copy_with(path=path)
