"""Conversations across nodes: a reply made on one node streams, shows and stops on another."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sse.protocol.sse import DecodedEvent
from tests.support.client import EventStream, Response, events_until, json_object, request
from tests.support.redis_server import RedisServer
from tests.support.servers import MakeServer, ServerProcess

Spawn = Callable[..., ServerProcess]
Address = tuple[str, int]
JSON = [("content-type", "application/json")]


async def _create(address: Address) -> str:
    response = await request(address, "POST", "/conversations")
    assert response.status == 201
    return str(json_object(response)["id"])


async def _post(address: Address, cid: str, content: str) -> Response:
    body = json.dumps({"content": content}).encode()
    return await request(address, "POST", f"/conversations/{cid}/messages", JSON, body)


def _text(events: list[DecodedEvent]) -> str:
    return "".join(json.loads(e.data)["text"] for e in events if e.type == "delta")


async def test_a_reply_made_on_one_node_streams_to_a_tab_on_another_and_stops_from_there(
    redis_server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    db = str(tmp_path / "shared.sqlite3")
    a = spawn("--redis-url", redis_server.url, "--db", db, "--echo-delay", "0.02")
    b = spawn("--redis-url", redis_server.url, "--db", db, "--echo-delay", "0.02")
    cid = await _create(a.address)
    tab_on_b = await EventStream.open(b.address, f"/conversations/{cid}/events")
    tab_on_a = await EventStream.open(a.address, f"/conversations/{cid}/events")
    # Posted on A: A's model writes the reply.
    assert (await _post(a.address, cid, "word " * 500)).status == 202
    seen_on_b = [e for _ in range(4) for e in await events_until(tab_on_b, "delta")]
    assert seen_on_b[0].type == "user"
    asked = time.monotonic()
    stop = await request(b.address, "POST", f"/conversations/{cid}/stop")
    took = time.monotonic() - asked
    assert stop.status == 200
    stopped = json_object(stop)
    assert stopped["stopped"] is True, stopped
    assert took < 5.0  # bounded: the control message's round trip, not a timeout
    rest_b = await events_until(tab_on_b, "done")
    done = json.loads(rest_b[-1].data)
    assert done["finish_reason"] == "cancelled"
    assert done["message_id"] == stopped["message_id"]
    a.wait_for_log("stopped at another node's request")
    # Both tabs saw the same events, and the saved reply is exactly what streamed.
    on_a = await events_until(tab_on_a, "done")
    assert [e.last_event_id for e in on_a] == [e.last_event_id for e in [*seen_on_b, *rest_b]]
    transcript = json_object(await request(b.address, "GET", f"/conversations/{cid}"))
    reply = transcript["messages"][-1]
    assert (reply["status"], reply["finish_reason"]) == ("cancelled", "cancelled")
    assert reply["content"] == _text([*seen_on_b, *rest_b])
    # Nothing streams any more: a second stop says so at once.
    again = json_object(await request(b.address, "POST", f"/conversations/{cid}/stop"))
    assert again == {"stopped": False, "message_id": None}
    await tab_on_a.close()
    await tab_on_b.close()


async def test_a_transcript_read_on_another_node_mid_reply_joins_the_stream_exactly(
    redis_server: RedisServer, make_server: MakeServer, tmp_path: Path
) -> None:
    db = tmp_path / "shared.sqlite3"
    a = await make_server(redis_url=redis_server.url, db_path=db, echo_delay_s=0.01)
    b = await make_server(redis_url=redis_server.url, db_path=db)
    cid = await _create(a.address)
    watcher = await EventStream.open(a.address, f"/conversations/{cid}/events")
    assert (await _post(a.address, cid, "word " * 300)).status == 202
    for _ in range(120):  # past the reply's first save, which is after a second
        await events_until(watcher, "delta")
    # B shows the reply as A last saved it; A shows its live text. Either way,
    # the stream from the transcript's id continues the text exactly.
    lates = []
    for node in (b, a):
        transcript = json_object(await request(node.address, "GET", f"/conversations/{cid}"))
        assert transcript["replying"] is True
        late = await EventStream.open(
            b.address,
            f"/conversations/{cid}/events?last_event_id={transcript['last_event_id']}",
        )
        lates.append((transcript["messages"][-1]["content"], late))
    for so_far, late in lates:
        rest = await events_until(late, "done")
        assert so_far + _text(rest) == "You said: " + "word " * 300
        await late.close()
    await watcher.close()


async def test_a_message_posted_while_redis_is_down_gets_503_and_no_reply(
    redis_server: RedisServer, make_server: MakeServer
) -> None:
    node = await make_server(redis_url=redis_server.url)
    cid = await _create(node.address)
    redis_server.stop()
    response = await _post(node.address, cid, "hello?")
    assert response.status == 503
    assert "not announced" in json_object(response)["error"]
    redis_server.start()
    transcript = json_object(await request(node.address, "GET", f"/conversations/{cid}"))
    assert transcript["replying"] is False
    reply = transcript["messages"][-1]
    assert reply["status"] == "error"
