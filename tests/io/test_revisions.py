"""Regenerate and edit over real sockets: new replies, stored, owner-only, refused mid-stream."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sse.io.server import Server
from tests.support.client import (
    DEFAULT,
    CookieJar,
    EventStream,
    Response,
    event_data,
    events_until,
    json_object,
    request,
)
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


async def _create(server: Server, jar: CookieJar = DEFAULT) -> str:
    response = await request(server.address, "POST", "/conversations", jar=jar)
    assert response.status == 201
    return str(json_object(response)["id"])


async def _post(server: Server, cid: str, content: str) -> Response:
    body = json.dumps({"content": content}).encode()
    return await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)


async def _regenerate(server: Server, cid: str, jar: CookieJar = DEFAULT) -> Response:
    target = f"/conversations/{cid}/regenerate"
    return await request(server.address, "POST", target, JSON, b"{}", jar=jar)


async def _edit(
    server: Server, cid: str, mid: str, content: object, jar: CookieJar = DEFAULT
) -> Response:
    target = f"/conversations/{cid}/messages/{mid}/edit"
    body = json.dumps({"content": content}).encode()
    return await request(server.address, "POST", target, JSON, body, jar=jar)


async def _transcript(server: Server, cid: str) -> dict[str, Any]:
    return json_object(await request(server.address, "GET", f"/conversations/{cid}"))


async def _talk(server: Server, stream: EventStream, cid: str, *turns: str) -> None:
    for turn in turns:
        assert (await _post(server, cid, turn)).status == 202
        await events_until(stream, "done")


async def test_regenerate_replaces_the_last_reply_and_streams_the_new_one(server: Server) -> None:
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _talk(server, stream, cid, "first", "second")
    before = (await _transcript(server, cid))["messages"]
    response = await _regenerate(server, cid)
    assert response.status == 202
    ids = json_object(response)
    assert ids["message_id"] == before[2]["id"]
    assert ids["reply_id"] not in {m["id"] for m in before}
    events = await events_until(stream, "done")
    kinds = [e.type for e in events]
    # The old reply goes; the user message stays as it was, so no `user` event.
    assert kinds[:2] == ["truncate", "start"]
    assert event_data(events[0]) == {"message_id": before[3]["id"]}
    assert event_data(events[1])["message_id"] == ids["reply_id"]
    assert "".join(event_data(e)["text"] for e in events if e.type == "delta") == "You said: second"
    after = (await _transcript(server, cid))["messages"]
    assert [m["id"] for m in after] == [*(m["id"] for m in before[:3]), ids["reply_id"]]
    assert [(m["content"], m["status"]) for m in after[2:]] == [
        ("second", "complete"),
        ("You said: second", "complete"),
    ]
    await stream.close()


async def test_edit_replaces_the_message_drops_what_followed_and_answers_anew(
    server: Server,
) -> None:
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    other_tab = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _talk(server, stream, cid, "one", "two", "three")
    await events_until(other_tab, "done")
    await events_until(other_tab, "done")
    await events_until(other_tab, "done")
    before = (await _transcript(server, cid))["messages"]
    edited = before[2]["id"]
    response = await _edit(server, cid, edited, "TWO again")
    assert response.status == 202
    ids = json_object(response)
    assert ids["message_id"] == edited
    for tab in (stream, other_tab):
        events = await events_until(tab, "done")
        assert [e.type for e in events[:3]] == ["truncate", "user", "start"]
        assert event_data(events[0]) == {"message_id": edited}
        user = event_data(events[1])
        assert (user["message_id"], user["content"]) == (edited, "TWO again")
        text = "".join(event_data(e)["text"] for e in events if e.type == "delta")
        assert text == "You said: TWO again"
    after = (await _transcript(server, cid))["messages"]
    assert [(m["id"], m["content"]) for m in after] == [
        (before[0]["id"], "one"),
        (before[1]["id"], "You said: one"),
        (edited, "TWO again"),
        (ids["reply_id"], "You said: TWO again"),
    ]
    await stream.close()
    await other_tab.close()


async def test_someone_else_gets_404_and_changes_nothing(server: Server) -> None:
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _talk(server, stream, cid, "mine")
    before = await _transcript(server, cid)
    mid = before["messages"][0]["id"]
    stranger = CookieJar()
    await _create(server, stranger)  # a person with conversations of their own
    regenerated = await _regenerate(server, cid, stranger)
    edited = await _edit(server, cid, mid, "theirs", stranger)
    missing = await _regenerate(server, str(uuid.uuid4()))
    for response in (regenerated, edited, missing):
        assert response.status == 404
        assert "no conversation" in json_object(response)["error"]
    assert json_object(regenerated)["error"] == f"no conversation {cid}"
    after = await _transcript(server, cid)
    assert after["messages"] == before["messages"]
    await stream.close()


async def test_what_cannot_be_answered_again_is_refused(server: Server) -> None:
    empty = await _create(server)
    nothing = await _regenerate(server, empty)
    assert nothing.status == 409
    assert "no message to answer again" in json_object(nothing)["error"]
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _talk(server, stream, cid, "hello")
    messages = (await _transcript(server, cid))["messages"]
    reply = messages[1]["id"]
    # A reply is not an editable message; neither is an unknown id, or a non-id.
    for mid in (reply, str(uuid.uuid4()), "not-an-id"):
        response = await _edit(server, cid, mid, "x")
        assert response.status == 404, mid
    # The content is checked like a post's.
    mid = messages[0]["id"]
    assert (await _edit(server, cid, mid, "   ")).status == 400
    assert (await _edit(server, cid, mid, 7)).status == 400
    too_long = "x" * (server.config.max_content_chars + 1)
    assert (await _edit(server, cid, mid, too_long)).status == 413
    assert (await _transcript(server, cid))["messages"] == messages
    await stream.close()


async def test_a_regenerate_and_an_edit_count_as_replies_for_the_limits(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", replies_per_min=1)
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _talk(server, stream, cid, "the one reply of the minute")
    before = (await _transcript(server, cid))["messages"]
    for refused in (
        await _regenerate(server, cid),
        await _edit(server, cid, before[0]["id"], "changed"),
    ):
        assert refused.status == 429
        assert int(refused.headers["retry-after"]) >= 1
    # Refused before anything was written: the transcript is as it was.
    assert (await _transcript(server, cid))["messages"] == before
    await stream.close()
