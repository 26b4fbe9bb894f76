"""A fake OpenAI-compatible Chat Completions upstream: h11 on asyncio, a real socket.

It stands in for a hosted model API, outside this machine. It speaks the streaming
format of the OpenAI API reference ("The chat completion chunk object"): a role-only
first chunk, one chunk per piece, a chunk with an empty delta and the finish_reason,
then `data: [DONE]`; each event written as its own HTTP chunk and flushed. With
`Script(usage=n)`, a usage chunk (`"choices": []`, as for stream_options.include_usage)
comes before [DONE]. Every request is kept, its JSON body parsed, in `fake.requests`.
`GET /v1/models` answers the OpenAI "List models" object made of `fake.models`.

    async with FakeOpenAI() as fake:
        fake.script = Script(pieces=["Hi", "!"], finish_reason="length")
        model = OpenAIModel(url=fake.url, model_name="gpt-test", api_key="sk-test")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType

import h11

from tests.support.client import headers_of

__all__ = ["GREETING", "FakeOpenAI", "Received", "Script"]

GREETING = ("Hello", "!", " How can", " I help", " you today?")
_ENDPOINT = "/v1/chat/completions"
_MODELS = "/v1/models"
# Bodies of error answers, as OpenAI words them, by status.
_ERROR_MESSAGES = {
    401: "Incorrect API key provided: sk-test. You can find your API key at "
    "https://platform.openai.com/account/api-keys.",
    404: "The model `gpt-test` does not exist or you do not have access to it.",
    429: "Rate limit reached for requests",
    500: "The server had an error while processing your request. Sorry about that!",
}


@dataclass
class Script:
    """How the fake answers the next requests; set `fake.script` before each reply."""

    pieces: Sequence[str] = GREETING
    """The text, one chunk per piece."""
    delay_s: float = 0.0
    """Pause before each piece, to pace a long reply like a real model."""
    finish_reason: str = "stop"
    """Sent in the chunk after the last piece."""
    status: int = 200
    """Not 200: answer with `error_body` instead of a stream."""
    error_body: bytes | None = None
    """Body of a non-200 answer; None: OpenAI's JSON error object for the status."""
    content_type: str | None = None
    """None: text/event-stream on 200, application/json otherwise. application/json on
    200 sends one whole `chat.completion`, as a server that ignores "stream": true."""
    hang: bool = False
    """Read the request, then never answer, not even the head."""
    hold: Mapping[int, asyncio.Event] = field(default_factory=dict)
    """Before sending piece i, wait until hold[i] is set."""
    malformed_at: int | None = None
    """Send `malformed_data` as the data of the event instead of piece i's chunk."""
    malformed_data: str = "{not json"
    """Any event data: bad JSON, a chunk of the wrong shape, an error object, a refusal."""
    no_done: bool = False
    """End the body properly, but without `data: [DONE]`."""
    abort_after: int | None = None
    """Close the connection right after piece i, in the middle of the chunked body."""
    usage: int | None = None
    """Send a usage chunk reporting this many completion_tokens before [DONE]."""
    usage_object: object = None
    """Send this as the usage chunk's "usage" instead (a malformed report)."""


@dataclass(frozen=True)
class Received:
    """A request as the fake read it."""

    method: str
    target: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ", "."""
    body: object
    """The JSON body, parsed; None if it was not JSON."""


class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1, answering as `script` says."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.url = ""
        """The base URL, like https://api.openai.com/v1; set on entering."""
        self.requests: list[Received] = []
        self.models: list[dict[str, object]] = [
            {"id": "gpt-test", "object": "model", "created": 1700000000, "owned_by": "fake"}
        ]
        """The entries `GET /v1/models` lists (a "name" becomes a label in ssechat)."""
        self.connections = 0
        """Connections accepted so far."""
        self.disconnects = 0
        """Clients that closed their connection before the answer was complete."""
        self.disconnected = asyncio.Event()
        """Set at the first such disconnect."""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Closing the sockets ends every handler through its own exit path; cancelling
        # them instead makes asyncio 3.11 log the cancellation as an error.
        for writer in tuple(self._writers):
            writer.close()
        if self._handlers:
            _, stuck = await asyncio.wait(self._handlers, timeout=5)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_for_disconnect(self, timeout: float = 5.0) -> None:
        """Wait until a client has closed its connection mid-answer; fail after `timeout`."""
        try:
            await asyncio.wait_for(self.disconnected.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no client disconnected within {timeout}s") from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve the requests of one keep-alive connection."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._exchange(conn, reader, writer):
                conn.start_next_cycle()
        # The client went away or broke HTTP: close, as a real server does.
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and answer it; False when the connection is to be closed."""
        received = await _read_request(conn, reader)
        if received is None:
            return False
        request, body = received
        self.requests.append(
            Received(
                method=request.method.decode(),
                target=request.target.decode(),
                headers=headers_of(request.headers),
                body=_json_or_none(body),
            )
        )
        # The answer races the client: a client that closes its end mid-answer is
        # seen at once by the watcher, not at some later write.
        answer = asyncio.create_task(self._answer(conn, writer, request, body, self.script))
        watch = asyncio.create_task(_watch(conn, reader))
        try:
            done, _ = await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (answer, watch):
                task.cancel()
            await asyncio.gather(answer, watch, return_exceptions=True)
        if answer in done and not answer.cancelled():
            error = answer.exception()
            if error is None:
                return conn.our_state is h11.DONE and conn.their_state is h11.DONE
            if not isinstance(error, ConnectionError):
                raise error  # a bug in the fake
        self.disconnects += 1
        self.disconnected.set()
        return False

    async def _answer(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        body: bytes,
        script: Script,
    ) -> None:
        """Send the answer the script asks for."""
        target = request.target.decode()
        if request.method == b"GET" and target.partition("?")[0] == _MODELS:
            listing = {"object": "list", "data": self.models}
            await _send_whole(conn, writer, 200, "application/json", _dumps(listing).encode())
            return
        if request.method != b"POST" or target.partition("?")[0] != _ENDPOINT:
            message = f"Invalid URL ({request.method.decode()} {target})"
            await _send_whole(conn, writer, 404, "application/json", _error_json(message))
            return
        if script.hang:
            await asyncio.get_running_loop().create_future()  # never done
        if script.status != 200:
            error_body = script.error_body
            if error_body is None:
                message = _ERROR_MESSAGES.get(script.status, f"Error {script.status}")
                error_body = _error_json(message)
            content_type = script.content_type or "application/json"
            await _send_whole(conn, writer, script.status, content_type, error_body)
            return
        parsed = _json_or_none(body)
        model = parsed.get("model") if isinstance(parsed, dict) else None
        model = model if isinstance(model, str) else "gpt-test"
        content_type = script.content_type or "text/event-stream"
        if content_type == "application/json":
            await _send_whole(conn, writer, 200, content_type, _completion(model, script))
            return
        head = h11.Response(
            status_code=200,
            headers=[("content-type", content_type), ("cache-control", "no-cache")],
            reason="OK",
        )
        await _send(conn, writer, head)
        await _send_event(conn, writer, _chunk(model, {"role": "assistant", "content": ""}))
        for index, piece in enumerate(script.pieces):
            if index in script.hold:
                await script.hold[index].wait()
            if script.delay_s:
                await asyncio.sleep(script.delay_s)
            if index == script.malformed_at:
                await _send_event(conn, writer, script.malformed_data)
            else:
                await _send_event(conn, writer, _chunk(model, {"content": piece}))
            if index == script.abort_after:
                writer.close()
                return
        await _send_event(conn, writer, _chunk(model, {}, script.finish_reason))
        if script.usage_object is not None:
            await _send_event(conn, writer, _usage_chunk(model, script.usage_object))
        elif script.usage is not None:
            usage = {
                "prompt_tokens": 9,
                "completion_tokens": script.usage,
                "total_tokens": 9 + script.usage,
            }
            await _send_event(conn, writer, _usage_chunk(model, usage))
        if not script.no_done:
            await _send_event(conn, writer, "[DONE]")
        await _send(conn, writer, h11.EndOfMessage())


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes] | None:
    """The next request and its body; None if the client closed between requests."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.ConnectionClosed):
            return None
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)


async def _watch(conn: h11.Connection, reader: asyncio.StreamReader) -> None:
    """Return when the client closes its end; what it sends meanwhile is kept for h11."""
    while data := await reader.read(65536):
        conn.receive_data(data)


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: h11.Event) -> None:
    """Send one h11 event and flush it."""
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


async def _send_event(conn: h11.Connection, writer: asyncio.StreamWriter, data: str) -> None:
    """Send one server-sent event as its own HTTP chunk; a line of data per line."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    await _send(conn, writer, h11.Data(data=(lines + "\n").encode()))


async def _send_whole(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes
) -> None:
    """Send a complete answer with a Content-Length."""
    headers = [("content-type", content_type), ("content-length", str(len(body)))]
    head = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)
    await _send(conn, writer, head)
    await _send(conn, writer, h11.Data(data=body))
    await _send(conn, writer, h11.EndOfMessage())


def _chunk(model: str, delta: dict[str, str], finish_reason: str | None = None) -> str:
    """One `chat.completion.chunk`, as OpenAI serialises it."""
    return _dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
    )


def _usage_chunk(model: str, usage: object) -> str:
    """The last chunk of stream_options.include_usage: no choices, the usage."""
    return _dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": usage,
        }
    )


def _completion(model: str, script: Script) -> bytes:
    """A whole, non-streamed `chat.completion`."""
    return _dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(script.pieces)},
                    "logprobs": None,
                    "finish_reason": script.finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def _error_json(message: str) -> bytes:
    """OpenAI's error object."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return _dumps({"error": error}).encode()


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_or_none(body: bytes) -> object:
    with contextlib.suppress(ValueError):
        return json.loads(body)
    return None
