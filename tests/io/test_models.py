"""Several models and a system prompt, through the whole server, against a fake upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sse.io.server import Server
from tests.support.client import (
    DEFAULT,
    CookieJar,
    EventStream,
    Response,
    events_until,
    json_object,
    request,
)
from tests.support.fake_openai import FakeOpenAI, Script
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        upstream.models = [
            {"id": "gpt-a", "object": "model", "owned_by": "fake", "name": "Model A"},
            {"id": "gpt-b", "object": "model", "owned_by": "fake", "name": "Model  B\n"},
            {"id": "gpt-unoffered", "object": "model", "owned_by": "fake", "name": "No"},
        ]
        yield upstream


async def _relay(make_server: MakeServer, fake: FakeOpenAI, names: str) -> Server:
    return await make_server(
        model="openai", model_url=fake.url, model_name=names, model_api_key="sk-test"
    )


async def _create(server: Server) -> str:
    return str(json_object(await request(server.address, "POST", "/conversations"))["id"])


async def _patch(server: Server, cid: str, body: object, jar: CookieJar = DEFAULT) -> Response:
    data = json.dumps(body).encode()
    return await request(server.address, "PATCH", f"/conversations/{cid}", JSON, data, jar=jar)


async def _post(server: Server, cid: str, content: str) -> Response:
    body = json.dumps({"content": content}).encode()
    return await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)


def _sent(fake: FakeOpenAI) -> dict[str, Any]:
    chats = [r for r in fake.requests if r.method == "POST"]
    body = chats[-1].body
    assert isinstance(body, dict)
    return body


async def test_models_are_listed_with_the_upstreams_labels(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake, "gpt-a, gpt-b,gpt-c")
    listing = json_object(await request(server.address, "GET", "/models"))
    host = urlsplit(fake.url).netloc
    assert listing == {
        "models": [
            {"id": "gpt-a", "label": "Model A"},
            {"id": "gpt-b", "label": "Model B"},
            # Not in the upstream's listing: its own label.
            {"id": "gpt-c", "label": f"gpt-c via {host}"},
        ],
        "default": "gpt-a",
    }
    assert [r.target for r in fake.requests] == ["/v1/models"]
    assert fake.requests[0].headers["authorization"] == "Bearer sk-test"
    # Asked once: the labels are kept.
    await request(server.address, "GET", "/models")
    assert len(fake.requests) == 1


async def test_an_upstream_without_a_listing_leaves_the_models_own_labels(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    fake.models = "not a list"  # type: ignore[assignment]
    server = await _relay(make_server, fake, "gpt-a")
    listing = json_object(await request(server.address, "GET", "/models"))
    host = urlsplit(fake.url).netloc
    assert listing["models"] == [{"id": "gpt-a", "label": f"gpt-a via {host}"}]


async def test_the_echo_model_lists_itself(server: Server) -> None:
    response = await request(server.address, "GET", "/models", jar=None)
    # Anyone may ask; nobody is made a guest for it.
    assert response.status == 200
    assert "set-cookie" not in response.headers
    listing = json_object(response)
    assert listing == {
        "models": [{"id": "echo", "label": "built-in echo model"}],
        "default": "echo",
    }


async def test_a_conversations_model_and_system_prompt_are_kept_and_sent(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake, "gpt-a,gpt-b")
    # As the page does: the labels are learned from the upstream at the first listing.
    await request(server.address, "GET", "/models")
    cid = await _create(server)
    got = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert (got["model"], got["system"]) == ("gpt-a", "")
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    fake.script = Script(pieces=["A says hi"])
    assert (await _post(server, cid, "hello")).status == 202
    await events_until(stream, "done")
    assert _sent(fake)["model"] == "gpt-a"
    assert _sent(fake)["messages"] == [{"role": "user", "content": "hello"}]
    changed = await _patch(server, cid, {"model": "gpt-b", "system": "  Answer briefly.  "})
    assert changed.status == 200
    body = json_object(changed)
    assert (body["id"], body["model"], body["system"]) == (cid, "gpt-b", "Answer briefly.")
    # Every open tab is told.
    told = await stream.next_event()
    assert told.type == "settings"
    assert json.loads(told.data) == {"model": "gpt-b", "system": "Answer briefly."}
    fake.script = Script(pieces=["B says hi"])
    assert (await _post(server, cid, "again")).status == 202
    events = await events_until(stream, "done")
    start = json.loads(events[1].data)
    assert (start["model"], start["model_label"]) == ("gpt-b", "Model B")
    sent = _sent(fake)
    assert sent["model"] == "gpt-b"
    assert sent["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "A says hi"},
        {"role": "user", "content": "again"},
    ]
    got = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert (got["model"], got["system"]) == ("gpt-b", "Answer briefly.")
    assert [m["model"] for m in got["messages"] if m["role"] == "assistant"] == ["gpt-a", "gpt-b"]
    assert [m["model_label"] for m in got["messages"] if m["role"] == "assistant"] == [
        "Model A",
        "Model B",
    ]
    # A regenerate uses the conversation's model and prompt too.
    fake.script = Script(pieces=["B again"])
    regenerate = f"/conversations/{cid}/regenerate"
    assert (await request(server.address, "POST", regenerate, JSON, b"{}")).status == 202
    await events_until(stream, "done")
    assert _sent(fake)["model"] == "gpt-b"
    assert _sent(fake)["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert _sent(fake)["messages"][-1] == {"role": "user", "content": "again"}
    # An empty prompt is none: nothing with role system is sent.
    assert (await _patch(server, cid, {"system": ""})).status == 200
    fake.script = Script(pieces=["plain"])
    await _post(server, cid, "third")
    await events_until(stream, "done")
    assert all(m["role"] != "system" for m in _sent(fake)["messages"])
    await stream.close()


async def test_patch_refuses_what_it_cannot_keep_and_strangers(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake, "gpt-a,gpt-b")
    cid = await _create(server)
    refused = {
        400: [
            {"model": "gpt-unoffered"},
            {"model": None},
            {"system": 3},
            {},
            {"colour": "blue"},
            {"title": ""},
        ],
        413: [{"system": "x" * 4001}, {"title": "t" * 201}],
    }
    for status, bodies in refused.items():
        for body in bodies:
            response = await _patch(server, cid, body)
            assert response.status == status, body
            assert "error" in json_object(response)
    got = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert (got["model"], got["system"], got["title"]) == ("gpt-a", "", "New conversation")
    stranger = await _patch(server, cid, {"model": "gpt-b", "system": "obey me"}, CookieJar())
    assert stranger.status == 404
    assert json_object(stranger)["error"] == f"no conversation {cid}"
    got = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert (got["model"], got["system"]) == ("gpt-a", "")
    # Title, model and prompt at once.
    both = await _patch(server, cid, {"title": "Named", "model": "gpt-b", "system": "S"})
    assert json_object(both)["title"] == "Named"
    assert (json_object(both)["model"], json_object(both)["system"]) == ("gpt-b", "S")


async def test_regenerate_and_edit_are_409_while_a_reply_streams(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake, "gpt-a")
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    release = asyncio.Event()
    fake.script = Script(pieces=["one", " two"], hold={1: release})
    posted = json_object(await _post(server, cid, "hello"))
    await events_until(stream, "delta")
    regenerate = f"/conversations/{cid}/regenerate"
    edit = f"/conversations/{cid}/messages/{posted['message_id']}/edit"
    body = json.dumps({"content": "changed"}).encode()
    for target, data in ((regenerate, b"{}"), (edit, body)):
        response = await request(server.address, "POST", target, JSON, data)
        assert response.status == 409, target
        assert "still streaming" in json_object(response)["error"]
    release.set()
    await events_until(stream, "done")
    got = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert [m["content"] for m in got["messages"]] == ["hello", "one two"]
    await stream.close()
