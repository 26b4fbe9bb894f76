"""Identity across nodes: one account, one PostgreSQL, one Redis, two `python server.py`.

Both nodes listen on 127.0.0.1, so the test's cookie jar (per host, as a
browser's) carries the person from one node to the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.support.client import (
    CookieJar,
    EventStream,
    Response,
    assert_reauth,
    default_jar,
    events_until,
    json_object,
    request,
)
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess

Spawn = Callable[..., ServerProcess]
Address = tuple[str, int]
JSON = [("content-type", "application/json")]
SECRET = "one-key-for-every-node-0123456789abcdef"


def _nodes(spawn: Spawn, redis: RedisServer, postgres_url: str) -> tuple[Address, Address]:
    args = (
        "--auth",
        "accounts",
        "--redis-url",
        redis.url,
        "--db",
        postgres_url,
        "--session-secret",
        SECRET,
        "--echo-delay",
        "0.01",
    )
    return spawn(*args).address, spawn(*args).address


async def _json(address: Address, method: str, target: str, payload: object, **kw: Any) -> Response:
    return await request(address, method, target, JSON, json.dumps(payload).encode(), **kw)


async def _signup(address: Address, username: str, **kw: Any) -> dict[str, Any]:
    payload = {"username": username, "password": "correct horse"}
    response = await _json(address, "POST", "/auth/signup", payload, **kw)
    assert response.status == 201, response.body
    return json_object(response)


async def _create(address: Address) -> str:
    response = await request(address, "POST", "/conversations")
    assert response.status == 201, response.body
    return str(json_object(response)["id"])


async def test_an_account_is_the_same_on_both_nodes_and_nobody_elses(
    redis_server: RedisServer, spawn: Spawn, postgres_url: str
) -> None:
    a, b = _nodes(spawn, redis_server, postgres_url)
    ada = await _signup(a, "ada")
    cid = await _create(a)
    stream = await EventStream.open(a, f"/conversations/{cid}/events")
    posted = await _json(a, "POST", f"/conversations/{cid}/messages", {"content": "hello nodes"})
    assert posted.status == 202
    await events_until(stream, "done")
    await stream.close()

    me_on_b = await request(b, "GET", "/me")
    assert me_on_b.status == 200
    assert json_object(me_on_b) == {"id": ada["id"], "name": "ada", "kind": "account"}
    listing = json_object(await request(b, "GET", "/conversations"))["conversations"]
    assert [c["id"] for c in listing] == [cid]
    transcript = await request(b, "GET", f"/conversations/{cid}")
    assert transcript.status == 200
    messages = json_object(transcript)["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello nodes"),
        ("assistant", "You said: hello nodes"),
    ]

    bob = CookieJar()
    await _signup(b, "bob", jar=bob)
    assert json_object(await request(b, "GET", "/conversations", jar=bob)) == {"conversations": []}
    for node in (a, b):
        theirs = await request(node, "GET", f"/conversations/{cid}", jar=bob)
        assert theirs.status == 404
        assert json_object(theirs) == {"error": f"no conversation {cid}"}
    # Bob's refusals changed nothing of Ada's.
    assert json_object(await request(a, "GET", f"/conversations/{cid}")) == json_object(transcript)


async def test_logout_on_one_node_is_refused_on_the_other_at_once(
    redis_server: RedisServer, spawn: Spawn, postgres_url: str
) -> None:
    a, b = _nodes(spawn, redis_server, postgres_url)
    ada = await _signup(a, "ada")
    cid = await _create(a)
    old = default_jar(a).cookies["ssechat_session"]
    out = await request(b, "POST", "/auth/logout")
    assert out.status == 200
    assert json_object(out) == {"signed_out": True}
    replay = [("cookie", f"ssechat_session={old}")]
    me = await request(a, "GET", "/me", replay, jar=None)
    assert me.status == 200
    assert json_object(me)["kind"] == "guest"
    assert json_object(me)["id"] != ada["id"]
    stream = await EventStream.open(a, f"/conversations/{cid}/events", replay, jar=None)
    await assert_reauth(stream, "revoked")


async def test_a_deletion_on_one_node_ends_a_stream_on_the_other(
    redis_server: RedisServer, spawn: Spawn, postgres_url: str
) -> None:
    a, b = _nodes(spawn, redis_server, postgres_url)
    await _signup(a, "ada")
    cid = await _create(a)
    keep = await _create(a)
    on_b = await EventStream.open(b, f"/conversations/{cid}/events")
    assert on_b.status == 200
    deleted = await request(a, "DELETE", f"/conversations/{cid}")
    assert deleted.status == 204
    last = (await events_until(on_b, "deleted"))[-1]
    assert json.loads(last.data) == {"conversation_id": cid}
    await on_b.wait_ended()
    assert on_b.ended
    await on_b.close()
    assert (await request(b, "GET", f"/conversations/{cid}")).status == 404
    listing = json_object(await request(b, "GET", "/conversations"))["conversations"]
    assert [c["id"] for c in listing] == [keep]
