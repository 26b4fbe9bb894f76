"""Conversations over real sockets: endpoints, reply events, stop, errors, restarts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sse.io.server import Server
from tests.support.client import (
    EventStream,
    Response,
    event_data,
    events_until,
    json_object,
    request,
)
from tests.support.servers import MakeServer, ServerProcess

JSON = [("content-type", "application/json")]


async def _create(server: Server) -> str:
    response = await request(server.address, "POST", "/conversations")
    assert response.status == 201
    return str(json_object(response)["id"])


async def _post(server: Server, cid: str, content: object) -> Response:
    body = json.dumps({"content": content}).encode()
    return await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)


async def test_create_gives_201_with_an_unguessable_id_and_location(server: Server) -> None:
    response = await request(server.address, "POST", "/conversations")
    assert response.status == 201
    body = json_object(response)
    assert uuid.UUID(body["id"]).version == 4
    assert response.headers["location"] == f"/conversations/{body['id']}"
    assert body["title"] == "New conversation"


async def test_reply_streams_user_start_deltas_and_done(server: Server) -> None:
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    assert stream.status == 200
    response = await _post(server, cid, "hello there world")
    assert response.status == 202
    ids = json_object(response)
    events = await events_until(stream, "done")
    kinds = [e.type for e in events]
    assert kinds[:2] == ["user", "start"]
    assert set(kinds[2:-1]) == {"delta"}
    user, start, done = event_data(events[0]), event_data(events[1]), event_data(events[-1])
    assert (user["message_id"], user["content"], user["role"]) == (
        ids["message_id"],
        "hello there world",
        "user",
    )
    assert start == {
        "message_id": ids["reply_id"],
        "model": "echo",
        "model_label": "built-in echo model",
    }
    text = "".join(event_data(e)["text"] for e in events[2:-1])
    assert text == "You said: hello there world"
    assert done["finish_reason"] == "stop"
    assert done["pieces"] == len(events) - 3
    assert done["ttft_ms"] >= 0
    assert done["duration_ms"] >= done["ttft_ms"]
    assert all(e.last_event_id for e in events)
    await stream.close()


async def test_every_open_tab_sees_the_user_message(server: Server) -> None:
    cid = await _create(server)
    tabs = [await EventStream.open(server.address, f"/conversations/{cid}/events") for _ in "ab"]
    await _post(server, cid, "both tabs")
    for tab in tabs:
        first = await tab.next_event()
        assert (first.type, event_data(first)["content"]) == ("user", "both tabs")
        await tab.close()


async def test_transcript_and_list_reflect_the_conversation(server: Server) -> None:
    cid = await _create(server)
    other = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _post(server, cid, "What is SSE?")
    await events_until(stream, "done")
    transcript = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert transcript["title"] == "What is SSE?"
    assert transcript["replying"] is False
    messages = transcript["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[1]["content"] == "You said: What is SSE?"
    assert messages[1]["finish_reason"] == "stop"
    assert messages[1]["model"] == "echo"
    listing = json_object(await request(server.address, "GET", "/conversations"))["conversations"]
    assert [c["id"] for c in listing] == [cid, other]  # most recently updated first
    assert listing[0]["title"] == "What is SSE?"
    assert set(listing[0]) == {"id", "title", "created_at", "updated_at"}
    await stream.close()


async def test_model_sees_the_earlier_turns(make_server: MakeServer) -> None:
    server = await make_server()
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    for content in ("first", "second"):
        await _post(server, cid, content)
        await events_until(stream, "done")
    transcript = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert [m["content"] for m in transcript["messages"]] == [
        "first",
        "You said: first",
        "second",
        "You said: second",
    ]
    await stream.close()


async def test_second_message_while_replying_is_409(make_server: MakeServer) -> None:
    server = await make_server(echo_delay_s=0.05)
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    assert (await _post(server, cid, "a long message " * 20)).status == 202
    second = await _post(server, cid, "too soon")
    assert second.status == 409
    assert "still streaming" in json_object(second)["error"]
    await request(server.address, "POST", f"/conversations/{cid}/stop")
    await events_until(stream, "done")
    assert (await _post(server, cid, "now it is fine")).status == 202
    await stream.close()


async def test_stop_cancels_the_reply_and_keeps_what_arrived(make_server: MakeServer) -> None:
    server = await make_server(echo_delay_s=0.02)
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _post(server, cid, "word " * 500)
    seen = [await events_until(stream, "delta") for _ in range(4)]
    stop = await request(server.address, "POST", f"/conversations/{cid}/stop")
    assert stop.status == 200
    stopped = json_object(stop)
    assert stopped["stopped"] is True
    rest = await events_until(stream, "done")
    streamed = "".join(
        event_data(e)["text"]
        for e in [*(e for batch in seen for e in batch), *rest]
        if e.type == "delta"
    )
    done = event_data(rest[-1])
    assert done["finish_reason"] == "cancelled"
    assert done["message_id"] == stopped["message_id"]
    transcript = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    reply = transcript["messages"][-1]
    assert (reply["status"], reply["finish_reason"]) == ("cancelled", "cancelled")
    assert reply["content"] == streamed  # saved exactly as far as it streamed
    assert reply["content"].startswith("You said: word")
    assert len(reply["content"]) < len("You said: " + "word " * 500)
    again = json_object(await request(server.address, "POST", f"/conversations/{cid}/stop"))
    assert again == {"stopped": False, "message_id": None}
    await stream.close()


async def test_reply_past_the_piece_cap_finishes_with_length(make_server: MakeServer) -> None:
    server = await make_server(echo_max_pieces=3)
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _post(server, cid, "one two three four five")
    events = await events_until(stream, "done")
    assert event_data(events[-1])["finish_reason"] == "length"
    assert [event_data(e)["text"] for e in events if e.type == "delta"] == [
        "You ",
        "said: ",
        "one ",
    ]
    await stream.close()


async def test_conversation_stream_resumes_by_last_event_id(server: Server) -> None:
    cid = await _create(server)
    target = f"/conversations/{cid}/events"
    stream = await EventStream.open(server.address, target)
    await _post(server, cid, "resume me please")
    first_two = await stream.events(2)
    await stream.close()
    rest_of_reply = await EventStream.open(
        server.address, target, headers=[("last-event-id", first_two[-1].last_event_id)]
    )
    events = await events_until(rest_of_reply, "done")
    assert events[0].type == "delta"
    text = "".join(event_data(e)["text"] for e in events if e.type == "delta")
    assert text == "You said: resume me please"
    await rest_of_reply.close()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("GET", "/events"),
        ("POST", "/messages"),
        ("POST", "/stop"),
    ],
)
@pytest.mark.parametrize("cid", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_conversation_is_404(
    server: Server, method: str, suffix: str, cid: str
) -> None:
    body = b'{"content": "x"}' if suffix == "/messages" else b""
    response = await request(server.address, method, f"/conversations/{cid}{suffix}", JSON, body)
    assert response.status == 404
    assert "no conversation" in json_object(response)["error"]


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        (b"{oops", 400, "not valid JSON"),
        (b"{}", 400, 'missing "content"'),
        (b'{"content": 5}', 400, '"content" must be a string'),
        (b'{"content": "   "}', 400, "must not be empty"),
        (b'{"content": "' + b"x" * 11 + b'"}', 413, "longer than the limit of 10"),
    ],
)
async def test_bad_message_bodies_get_a_json_error(
    make_server: MakeServer, body: bytes, status: int, problem: str
) -> None:
    server = await make_server(max_content_chars=10)
    cid = await _create(server)
    response = await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    assert response.status == status
    assert problem in json_object(response)["error"]


async def test_list_limit_is_checked(server: Server) -> None:
    response = await request(server.address, "GET", "/conversations?limit=0")
    assert response.status == 400


async def test_conversations_survive_a_restart(make_server: MakeServer, tmp_path: Path) -> None:
    db = tmp_path / "kept.sqlite3"
    first = await make_server(db_path=db)
    cid = await _create(first)
    stream = await EventStream.open(first.address, f"/conversations/{cid}/events")
    await _post(first, cid, "remember me")
    await events_until(stream, "done")
    await stream.close()
    await first.stop()
    second = await make_server(db_path=db)
    listing = json_object(await request(second.address, "GET", "/conversations"))["conversations"]
    assert [c["id"] for c in listing] == [cid]
    transcript = json_object(await request(second.address, "GET", f"/conversations/{cid}"))
    assert [m["content"] for m in transcript["messages"]] == [
        "remember me",
        "You said: remember me",
    ]


async def test_shutdown_mid_reply_saves_it_as_interrupted(
    make_server: MakeServer, tmp_path: Path
) -> None:
    db = tmp_path / "cut.sqlite3"
    first = await make_server(db_path=db, echo_delay_s=0.02)
    cid = await _create(first)
    stream = await EventStream.open(first.address, f"/conversations/{cid}/events")
    await _post(first, cid, "word " * 500)
    seen = [await events_until(stream, "delta") for _ in range(4)]
    await first.stop()
    rest = await events_until(stream, "error")
    streamed = "".join(
        event_data(e)["text"]
        for e in [*(e for batch in seen for e in batch), *rest]
        if e.type == "delta"
    )
    assert "shutting down" in event_data(rest[-1])["message"]
    await stream.wait_ended()
    second = await make_server(db_path=db)
    transcript = json_object(await request(second.address, "GET", f"/conversations/{cid}"))
    reply = transcript["messages"][-1]
    assert reply["status"] == "interrupted"
    assert reply["content"] == streamed
    assert reply["content"].startswith("You said: word")
    await stream.close()


async def test_reply_cut_by_a_crash_is_marked_interrupted_with_what_was_saved(
    spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = str(tmp_path / "crash.sqlite3")
    proc = spawn("--db", db, "--echo-delay", "0.01")
    created = await request(proc.address, "POST", "/conversations")
    cid = json_object(created)["id"]
    stream = await EventStream.open(proc.address, f"/conversations/{cid}/events")
    body = json.dumps({"content": "word " * 1000}).encode()
    await request(proc.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    streamed = ""
    # Past one second of streaming the reply has been saved at least once.
    while streamed.count("word") < 150:
        event = await stream.next_event()
        if event.type == "delta":
            streamed += event_data(event)["text"]
    proc.kill()
    await stream.close()
    again = spawn("--db", db)
    again.wait_for_log("1 replies were cut short by a crash")
    transcript = json_object(await request(again.address, "GET", f"/conversations/{cid}"))
    reply = transcript["messages"][-1]
    assert reply["status"] == "interrupted"
    assert reply["content"].startswith("You said: word")
    assert streamed.startswith(reply["content"])


async def test_transcript_mid_reply_joins_the_stream_exactly(make_server: MakeServer) -> None:
    server = await make_server(echo_delay_s=0.01)
    cid = await _create(server)
    watcher = await EventStream.open(server.address, f"/conversations/{cid}/events")
    await _post(server, cid, "word " * 300)
    for _ in range(5):
        await events_until(watcher, "delta")
    transcript = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert transcript["replying"] is True
    so_far = transcript["messages"][-1]["content"]
    # Continue from the transcript's id: the text plus what follows is the whole reply.
    late = await EventStream.open(
        server.address,
        f"/conversations/{cid}/events?last_event_id={transcript['last_event_id']}",
    )
    rest = await events_until(late, "done")
    whole = so_far + "".join(event_data(e)["text"] for e in rest if e.type == "delta")
    assert whole == "You said: " + "word " * 300
    final = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    assert final["messages"][-1]["content"] == whole
    assert final["messages"][-1]["model_label"] == "built-in echo model"
    await watcher.close()
    await late.close()
