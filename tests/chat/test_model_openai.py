"""The OpenAI-compatible model against a fake upstream over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Sequence

import pytest

from sse.chat.models.base import ChatTurn, Finish, Piece, Usage
from sse.chat.models.openai import OpenAIModel, _StreamParser
from sse.errors import ConfigError, ModelError
from tests.support.fake_openai import GREETING, FakeOpenAI, Script

HISTORY = (
    ChatTurn("system", "You are terse."),
    ChatTurn("user", "Hi"),
    ChatTurn("assistant", "Hello."),
    ChatTurn("user", "How are you?"),
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@contextlib.asynccontextmanager
async def open_model(url: str, **options: object) -> AsyncIterator[OpenAIModel]:
    settings: dict[str, object] = {"model_name": "gpt-test", "api_key": "sk-test"}
    settings.update(options)
    model = OpenAIModel(url=url, **settings)  # type: ignore[arg-type]  # options: object-typed
    try:
        yield model
    finally:
        await model.aclose()


async def collect(
    model: OpenAIModel,
    history: Sequence[ChatTurn] = HISTORY,
    timeout: float = 10.0,
    into: list[Piece] | None = None,
) -> list[Piece]:
    """The whole reply; `into` gets each piece as it comes, for a reply that fails."""
    got = [] if into is None else into

    async def run() -> list[Piece]:
        # reply() is an async generator; the Model protocol types it as an iterator.
        async with contextlib.aclosing(model.reply(history)) as pieces:  # type: ignore[type-var]
            async for piece in pieces:
                got.append(piece)
        return got

    return await asyncio.wait_for(run(), timeout)


async def failure(model: OpenAIModel, timeout: float = 10.0) -> str:
    with pytest.raises(ModelError) as caught:
        await collect(model, timeout=timeout)
    return str(caught.value)


# The happy path


async def test_pieces_are_relayed_in_order_and_the_request_is_a_streamed_chat_completion(
    fake: FakeOpenAI,
) -> None:
    async with open_model(fake.url) as model:
        assert await collect(model) == list(GREETING)
    [request] = fake.requests
    assert request.method == "POST"
    assert request.target == "/v1/chat/completions"
    assert request.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "How are you?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1024,
    }
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["content-type"] == "application/json"


async def test_every_request_asks_for_max_tokens_and_the_usage_report(
    fake: FakeOpenAI,
) -> None:
    async with open_model(fake.url, max_tokens=77) as model:
        await collect(model)
        await collect(model)
    assert len(fake.requests) == 2
    for request in fake.requests:
        assert isinstance(request.body, dict)
        assert request.body["max_tokens"] == 77
        assert request.body["stream_options"] == {"include_usage": True}


async def test_the_reported_usage_is_yielded_after_the_text(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a", "b"], usage=42)
    async with open_model(fake.url) as model:
        assert await collect(model) == ["a", "b", Usage(42)]


async def test_usage_comes_before_finish_length(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a"], finish_reason="length", usage=7)
    async with open_model(fake.url) as model:
        assert await collect(model) == ["a", Usage(7), Finish("length")]


async def test_no_usage_when_the_upstream_reports_none(fake: FakeOpenAI) -> None:
    async with open_model(fake.url) as model:
        pieces = await collect(model)
    assert pieces == list(GREETING)
    assert not any(isinstance(piece, Usage) for piece in pieces)


@pytest.mark.parametrize(
    "usage",
    [
        "lots",
        [3],
        {},
        {"prompt_tokens": 3},
        {"completion_tokens": "3"},
        {"completion_tokens": 2.5},
        {"completion_tokens": -1},
        {"completion_tokens": True},
    ],
)
async def test_a_malformed_usage_report_is_ignored(fake: FakeOpenAI, usage: object) -> None:
    fake.script = Script(pieces=["a"], usage_object=usage)
    async with open_model(fake.url) as model:
        assert await collect(model) == ["a"]


async def test_no_authorization_header_without_a_key(fake: FakeOpenAI) -> None:
    async with open_model(fake.url, api_key=None) as model:
        assert await collect(model) == list(GREETING)
    assert "authorization" not in fake.requests[0].headers


async def test_the_first_piece_arrives_while_the_upstream_holds_back_the_rest(
    fake: FakeOpenAI,
) -> None:
    release = asyncio.Event()
    fake.script = Script(pieces=["first", " second", " third"], hold={1: release})
    async with open_model(fake.url) as model:
        pieces = model.reply(HISTORY)
        try:
            assert await asyncio.wait_for(anext(pieces), 5) == "first"
            assert not release.is_set()  # the rest has not been sent yet
            release.set()
            assert [piece async for piece in pieces] == [" second", " third"]
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]  # a generator, typed as iterator


async def test_finish_reason_length_ends_with_finish_length(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a", "b"], finish_reason="length")
    async with open_model(fake.url) as model:
        assert await collect(model) == ["a", "b", Finish("length")]


async def test_finish_reason_stop_yields_no_finish(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a"], finish_reason="stop")
    async with open_model(fake.url) as model:
        assert await collect(model) == ["a"]


async def test_the_role_only_chunk_and_empty_pieces_yield_nothing(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["", "x", ""])
    async with open_model(fake.url) as model:
        assert await collect(model) == ["x"]


async def test_a_reply_without_text_is_empty(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=[])
    async with open_model(fake.url) as model:
        assert await collect(model) == []


async def test_a_refusal_is_relayed_as_text(fake: FakeOpenAI) -> None:
    delta = {"content": None, "refusal": "I can't help with that."}
    refusal = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
    fake.script = Script(pieces=["-"], malformed_at=0, malformed_data=json.dumps(refusal))
    async with open_model(fake.url) as model:
        assert await collect(model) == ["I can't help with that."]


async def test_consecutive_replies_reuse_one_connection(fake: FakeOpenAI) -> None:
    async with open_model(fake.url) as model:
        assert await collect(model) == list(GREETING)
        assert await collect(model) == list(GREETING)
    assert len(fake.requests) == 2
    assert fake.connections == 1


async def test_unicode_split_across_chunks_survives(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["héllo ", "wörld ", "😀", "\n", "日本"])
    async with open_model(fake.url) as model:
        assert await collect(model) == ["héllo ", "wörld ", "😀", "\n", "日本"]


# URLs and labels


@pytest.mark.parametrize("suffix", ["", "/", "/chat/completions", "/chat/completions/"], ids=repr)
async def test_base_url_or_full_endpoint_reach_the_same_endpoint(
    fake: FakeOpenAI, suffix: str
) -> None:
    async with open_model(fake.url + suffix) as model:
        assert model.endpoint == fake.url + "/chat/completions"
        assert await collect(model) == list(GREETING)
    assert fake.requests[0].target == "/v1/chat/completions"


async def test_a_wrong_path_reports_the_upstreams_404(fake: FakeOpenAI) -> None:
    async with open_model(fake.url.removesuffix("/v1")) as model:
        message = await failure(model)
    assert fake.requests[0].target == "/chat/completions"
    assert "404 Not Found" in message
    assert "Invalid URL (POST /chat/completions)" in message


async def test_label_names_the_model_and_the_host() -> None:
    async with open_model("https://api.openai.com/v1", model_name="gpt-4o-mini") as hosted:
        assert (hosted.name, hosted.label) == ("gpt-4o-mini", "gpt-4o-mini via api.openai.com")
        assert hosted.endpoint == "https://api.openai.com/v1/chat/completions"
    async with open_model("http://127.0.0.1:8000/v1/", model_name="llama3") as local:
        assert (local.name, local.label) == ("llama3", "llama3 via 127.0.0.1:8000")
    async with open_model("http://[::1]:8000/v1", model_name="llama3") as ipv6:
        assert ipv6.label == "llama3 via [::1]:8000"


async def test_credentials_in_the_url_are_kept_out_of_messages(fake: FakeOpenAI) -> None:
    fake.script = Script(status=500)
    url = fake.url.replace("http://", "http://me:secret@")
    async with open_model(url) as model:
        assert "secret" not in model.endpoint
        assert "secret" not in model.label
        message = await failure(model)
    assert "500 Internal Server Error" in message
    assert "secret" not in message


async def test_a_query_string_is_sent_but_never_shown(fake: FakeOpenAI) -> None:
    fake.script = Script(status=500)
    async with open_model(fake.url + "?api-version=2024-06-01&key=secret") as model:
        assert model.endpoint == fake.url + "/chat/completions"
        message = await failure(model)
    assert fake.requests[0].target == "/v1/chat/completions?api-version=2024-06-01&key=secret"
    assert "secret" not in message


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://example.test/v1", "http:///v1", ""])
def test_a_url_that_is_not_http_is_refused_at_startup(url: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        OpenAIModel(url=url, model_name="m", api_key=None)


def test_non_positive_limits_are_refused_at_startup() -> None:
    with pytest.raises(ConfigError):
        OpenAIModel(url="http://x.test", model_name="m", api_key=None, read_timeout_s=0)
    with pytest.raises(ConfigError):
        OpenAIModel(url="http://x.test", model_name="m", api_key=None, max_line_bytes=0)
    with pytest.raises(ConfigError, match="max_tokens"):
        OpenAIModel(url="http://x.test", model_name="m", api_key=None, max_tokens=0)


# Failures become ModelError with a message for a person


async def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    async with open_model(f"http://127.0.0.1:{port}/v1") as model:
        message = await failure(model)
    where = f"http://127.0.0.1:{port}/v1/chat/completions"
    assert message == f"cannot reach the model at {where}: Connection refused"


async def test_401_reports_the_status_and_the_upstreams_message(fake: FakeOpenAI) -> None:
    fake.script = Script(status=401)
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert "401 Unauthorized" in message
    assert "Incorrect API key provided" in message


async def test_500_with_a_text_body_quotes_the_text(fake: FakeOpenAI) -> None:
    fake.script = Script(
        status=500, content_type="text/plain", error_body=b"upstream  crashed\n\nbadly"
    )
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert "500 Internal Server Error" in message
    assert message.endswith(": upstream crashed badly")


async def test_a_huge_error_body_is_cut_short_in_the_message(fake: FakeOpenAI) -> None:
    fake.script = Script(status=502, content_type="text/html", error_body=b"<p>" * 1_000_000)
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert "502 Bad Gateway" in message
    assert len(message) < 500


async def test_an_upstream_that_never_answers_times_out(fake: FakeOpenAI) -> None:
    fake.script = Script(hang=True)
    async with open_model(fake.url, read_timeout_s=0.3) as model:
        assert await failure(model) == "the model sent nothing for 0.3 s"


async def test_an_upstream_that_goes_silent_mid_reply_times_out(fake: FakeOpenAI) -> None:
    never = asyncio.Event()
    fake.script = Script(pieces=["a", "b"], hold={1: never})
    got: list[Piece] = []
    async with open_model(fake.url, read_timeout_s=0.3) as model:
        with pytest.raises(ModelError, match=r"^the model sent nothing for 0\.3 s$"):
            await collect(model, into=got)
    assert got == ["a"]
    await fake.wait_for_disconnect()


async def test_a_chunk_that_is_not_json_is_malformed(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a", "b"], malformed_at=1, malformed_data="{not json")
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert message == "malformed chunk from the model: not JSON: {not json"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ('{"id":"x","object":"chat.completion.chunk"}', 'no "choices" list'),
        ('{"choices":{"0":{}}}', 'no "choices" list'),
        ("[1, 2]", "not a JSON object"),
        ('{"choices":["text"]}', "the choice is not an object"),
        ('{"choices":[{"delta":"text"}]}', "the delta is not an object"),
        ('{"choices":[{"delta":{"content":42}}]}', "not a string"),
        ('{"choices":[{"delta":{},"finish_reason":1}]}', "not a string"),
    ],
)
async def test_a_chunk_of_the_wrong_shape_is_malformed(
    fake: FakeOpenAI, data: str, why: str
) -> None:
    fake.script = Script(pieces=["a"], malformed_at=0, malformed_data=data)
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert message.startswith("malformed chunk from the model: ")
    assert why in message


async def test_an_error_object_in_the_stream_reports_its_message(fake: FakeOpenAI) -> None:
    error = '{"error":{"message":"The server had an error while processing your request."}}'
    fake.script = Script(pieces=["a", "b"], malformed_at=1, malformed_data=error)
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert message == (
        "the model reported an error: The server had an error while processing your request."
    )


async def test_a_stream_without_done_is_cut_short(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a"], no_done=True)
    async with open_model(fake.url) as model:
        assert await failure(model) == "the model's stream ended before [DONE]"


async def test_a_connection_closed_mid_body_is_cut_short(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a", "b", "c"], abort_after=1)
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert message.startswith("the model's stream ended before [DONE]: ")


async def test_a_line_longer_than_the_limit_is_refused(fake: FakeOpenAI) -> None:
    never = asyncio.Event()
    fake.script = Script(pieces=["x" * 5000, "more"], hold={1: never})
    async with open_model(fake.url, max_line_bytes=1000) as model:
        assert await failure(model) == "the model sent a line longer than 1000 bytes"
    await fake.wait_for_disconnect()  # stopped reading: the request is closed


async def test_a_line_within_the_limit_is_accepted(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["x" * 700])
    async with open_model(fake.url, max_line_bytes=1000) as model:
        assert await collect(model) == ["x" * 700]


async def test_an_event_of_many_lines_longer_than_the_limit_is_refused(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a"], malformed_at=0, malformed_data="\n".join(["y" * 400] * 5))
    async with open_model(fake.url, max_line_bytes=1000) as model:
        assert await failure(model) == "the model sent an event longer than 1000 bytes"


async def test_a_whole_json_completion_instead_of_a_stream_is_explained(fake: FakeOpenAI) -> None:
    fake.script = Script(content_type="application/json")
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert "not an event stream" in message
    assert '"stream": true' in message


async def test_another_content_type_on_200_is_refused(fake: FakeOpenAI) -> None:
    fake.script = Script(content_type="text/html")
    async with open_model(fake.url) as model:
        message = await failure(model)
    assert "answered text/html instead of text/event-stream" in message


async def test_a_content_filter_stop_is_reported(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a"], finish_reason="content_filter")
    async with open_model(fake.url) as model:
        assert await failure(model) == "the model's content filter cut the reply short"


# Stopping


async def test_cancelling_the_consumer_closes_the_upstream_connection(fake: FakeOpenAI) -> None:
    fake.script = Script(pieces=["a"] * 10_000, delay_s=0.05)
    got: list[Piece] = []
    some_arrived = asyncio.Event()

    async with open_model(fake.url) as model:

        async def consume() -> None:
            async for piece in model.reply(HISTORY):
                got.append(piece)
                if len(got) == 3:
                    some_arrived.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(some_arrived.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake.wait_for_disconnect()
    assert fake.disconnects == 1
    assert 3 <= len(got) < 10_000


async def test_closing_the_reply_early_closes_the_upstream_connection(fake: FakeOpenAI) -> None:
    never = asyncio.Event()
    fake.script = Script(pieces=["a", "b"], hold={1: never})
    async with open_model(fake.url) as model:
        pieces = model.reply(HISTORY)
        assert await asyncio.wait_for(anext(pieces), 5) == "a"
        await pieces.aclose()  # type: ignore[attr-defined]  # a generator, typed as iterator
        await fake.wait_for_disconnect()


async def test_the_model_works_again_after_a_cancelled_reply(fake: FakeOpenAI) -> None:
    never = asyncio.Event()
    fake.script = Script(pieces=["a", "b"], hold={1: never})
    async with open_model(fake.url) as model:
        pieces = model.reply(HISTORY)
        assert await asyncio.wait_for(anext(pieces), 5) == "a"
        await pieces.aclose()  # type: ignore[attr-defined]  # a generator, typed as iterator
        fake.script = Script()
        assert await collect(model) == list(GREETING)


# The stream parser alone: the same pieces however the bytes are split


STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    b'"finish_reason":null}]}\r\n\r\n'
    b": keep-alive\r\n\r\n"
    b'data: {"choices":[{"index":0,"delta":{"content":"h\xc3\xa9"},"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":null}]}\r\r'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n'
    b"data: [DONE]\n\n"
)


def parse(parts: Sequence[bytes], max_line_bytes: int = 1 << 20) -> list[Piece]:
    parser = _StreamParser(max_line_bytes)
    out: list[Piece] = []
    for part in parts:
        out += parser.feed(part)
    assert parser.done
    return out


def test_parser_gives_the_same_pieces_for_every_split() -> None:
    expected: list[Piece] = ["hé", "llo", Finish("length")]
    assert parse([STREAM]) == expected
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == expected
    for cut in range(len(STREAM) + 1):
        assert parse([STREAM[:cut], STREAM[cut:]]) == expected, cut


def test_parser_reads_usage_in_a_chunk_with_choices_too() -> None:
    # Some OpenAI-compatible servers put the usage in the finish chunk.
    stream = (
        b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}],'
        b'"usage":null}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert parse([stream]) == ["x", Usage(1)]


def test_parser_line_limit_counts_crlf_split_across_chunks_once() -> None:
    line = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}'
    limit = len(line)
    parts = [line + b"\r", b"\n\r", b"\n", b"data: [DONE]\r", b"\n\r\n"]
    assert parse(parts, max_line_bytes=limit) == ["x"]
    with pytest.raises(ModelError, match="line longer than"):
        parse([line + b"\r\n\r\n"], max_line_bytes=limit - 1)
