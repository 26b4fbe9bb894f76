"""The openai model through the whole server, against a fake upstream on a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sse.io.server import Server
from sse.protocol.sse import DecodedEvent
from tests.support.client import EventStream, event_data, request
from tests.support.fake_openai import FakeOpenAI, Script
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


async def _relay(make_server: MakeServer, fake: FakeOpenAI, **overrides: Any) -> Server:
    return await make_server(
        model="openai",
        model_url=fake.url,
        model_name="gpt-test",
        model_api_key="sk-test",
        **overrides,
    )


async def _conversation(server: Server) -> tuple[str, EventStream]:
    created = (await request(server.address, "POST", "/conversations")).json()
    assert isinstance(created, dict)
    cid = str(created["id"])
    return cid, await EventStream.open(server.address, f"/conversations/{cid}/events")


async def _say(server: Server, cid: str, content: str) -> int:
    body = json.dumps({"content": content}).encode()
    response = await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    return response.status


async def _until(stream: EventStream, *kinds: str) -> list[DecodedEvent]:
    seen: list[DecodedEvent] = []
    while not seen or seen[-1].type not in kinds:
        seen.append(await stream.next_event(10))
    return seen


async def test_upstream_pieces_become_delta_events_and_history_is_sent(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake)
    cid, stream = await _conversation(server)
    fake.script = Script(pieces=["Hel", "lo", " there"])
    assert await _say(server, cid, "hi") == 202
    events = await _until(stream, "done")
    start = event_data(events[1])
    host = urlsplit(fake.url).netloc
    assert (start["model"], start["model_label"]) == ("gpt-test", f"gpt-test via {host}")
    assert [event_data(e)["text"] for e in events if e.type == "delta"] == ["Hel", "lo", " there"]
    assert event_data(events[-1])["finish_reason"] == "stop"
    fake.script = Script(pieces=["second"], finish_reason="length")
    await _say(server, cid, "again")
    events = await _until(stream, "done")
    assert event_data(events[-1])["finish_reason"] == "length"
    sent = fake.requests[-1].body
    assert isinstance(sent, dict)
    assert sent["model"] == "gpt-test"
    assert sent["stream"] is True
    assert sent["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "again"},
    ]
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-test"
    await stream.close()


@pytest.mark.parametrize(
    ("script", "cause"),
    [
        (Script(status=401), "Incorrect API key provided"),
        (Script(status=500, error_body=b"upstream exploded"), "500"),
        (Script(malformed_at=1), "malformed chunk"),
        (Script(no_done=True), "ended before [DONE]"),
        (Script(hang=True), "sent nothing for"),
    ],
)
async def test_upstream_failure_is_an_error_event_and_the_conversation_stays_usable(
    make_server: MakeServer, fake: FakeOpenAI, script: Script, cause: str
) -> None:
    server = await _relay(make_server, fake, model_read_timeout_s=0.5)
    cid, stream = await _conversation(server)
    fake.script = script
    await _say(server, cid, "break please")
    events = await _until(stream, "error", "done")
    assert events[-1].type == "error"
    assert cause in event_data(events[-1])["message"]
    transcript = (await request(server.address, "GET", f"/conversations/{cid}")).json()
    assert isinstance(transcript, dict)
    assert transcript["messages"][-1]["status"] == "error"
    fake.script = Script(pieces=["fine ", "again"])
    assert await _say(server, cid, "and now?") == 202
    events = await _until(stream, "done", "error")
    assert events[-1].type == "done"
    await stream.close()


async def test_unreachable_upstream_is_an_error_event(make_server: MakeServer) -> None:
    server = await make_server(
        model="openai", model_url="http://127.0.0.1:9/v1", model_name="gpt-test"
    )
    cid, stream = await _conversation(server)
    await _say(server, cid, "anyone there?")
    events = await _until(stream, "error", "done")
    assert events[-1].type == "error"
    assert "cannot reach the model" in event_data(events[-1])["message"]
    await stream.close()


async def test_stop_mid_stream_cancels_the_upstream_request(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake)
    cid, stream = await _conversation(server)
    fake.script = Script(pieces=["tok "] * 10_000, delay_s=0.01)
    await _say(server, cid, "a very long answer please")
    await _until(stream, "delta")
    stop = (await request(server.address, "POST", f"/conversations/{cid}/stop")).json()
    assert isinstance(stop, dict)
    assert stop["stopped"] is True
    events = await _until(stream, "done")
    assert event_data(events[-1])["finish_reason"] == "cancelled"
    await fake.wait_for_disconnect()
    await stream.close()


async def test_a_failed_reply_keeps_its_error_in_the_transcript(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake)
    cid, stream = await _conversation(server)
    fake.script = Script(status=401)
    await _say(server, cid, "fail")
    await _until(stream, "error")
    transcript = (await request(server.address, "GET", f"/conversations/{cid}")).json()
    assert isinstance(transcript, dict)
    reply = transcript["messages"][-1]
    assert reply["status"] == "error"
    assert "Incorrect API key provided" in reply["error"]
    await stream.close()
