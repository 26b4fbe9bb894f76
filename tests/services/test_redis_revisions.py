"""Regenerate and edit across nodes on Redis: the new reply streams to a tab on another node.

Once with the nodes on one SQLite file, once on one PostgreSQL database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import EventStream, events_until, json_object, request
from tests.support.redis_server import RedisServer
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where two nodes keep their conversations: one SQLite file, or one PostgreSQL database."""
    if request.param == "sqlite":
        return {"db_path": tmp_path / "shared.sqlite3"}
    return {"db_url": request.getfixturevalue("postgres_url")}


async def test_a_regenerate_and_an_edit_on_one_node_stream_to_a_tab_on_another(
    redis_server: RedisServer, make_server: MakeServer, shared: dict[str, Any]
) -> None:
    a = await make_server(redis_url=redis_server.url, **shared)
    b = await make_server(redis_url=redis_server.url, **shared)
    created = json_object(await request(a.address, "POST", "/conversations"))
    cid = str(created["id"])
    tab_on_b = await EventStream.open(b.address, f"/conversations/{cid}/events")
    body = json.dumps({"content": "hello"}).encode()
    posted = await request(a.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    assert posted.status == 202
    first = await events_until(tab_on_b, "done")
    old_reply = json.loads(first[1].data)["message_id"]

    regenerated = await request(a.address, "POST", f"/conversations/{cid}/regenerate", JSON, b"{}")
    assert regenerated.status == 202
    new_reply = json_object(regenerated)["reply_id"]
    events = await events_until(tab_on_b, "done")
    assert [e.type for e in events[:2]] == ["truncate", "start"]
    assert json.loads(events[0].data) == {"message_id": old_reply}
    assert json.loads(events[1].data)["message_id"] == new_reply
    text = "".join(json.loads(e.data)["text"] for e in events if e.type == "delta")
    assert text == "You said: hello"

    mid = json_object(posted)["message_id"]
    edit = f"/conversations/{cid}/messages/{mid}/edit"
    edited = await request(b.address, "POST", edit, JSON, json.dumps({"content": "bye"}).encode())
    assert edited.status == 202
    events = await events_until(tab_on_b, "done")
    assert [e.type for e in events[:3]] == ["truncate", "user", "start"]
    assert json.loads(events[1].data)["content"] == "bye"
    # Both nodes read the same stored transcript.
    for node in (a, b):
        transcript = json_object(await request(node.address, "GET", f"/conversations/{cid}"))
        assert [m["content"] for m in transcript["messages"]] == ["bye", "You said: bye"]
    await tab_on_b.close()
