"""Named rooms over real sockets, one node: rooms, messages, scrollback, lobby, presence, typing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.client import (
    CookieJar,
    EventStream,
    Response,
    event_data,
    json_object,
    next_of,
    post_message,
    request,
    wait_until,
)
from tests.support.jwt_keys import HMAC_SECRET, token
from tests.support.servers import MakeServer

Address = tuple[str, int]
_JSON = [("content-type", "application/json")]


async def _post(address: Address, target: str, payload: object, **kw: Any) -> Response:
    return await request(address, "POST", target, _JSON, json.dumps(payload).encode(), **kw)


async def _get(address: Address, target: str, **kw: Any) -> Response:
    return await request(address, "GET", target, **kw)


async def _me(address: Address, **kw: Any) -> dict[str, Any]:
    return json_object(await _get(address, "/me", **kw))


async def test_rooms_are_made_listed_and_validated(make_server: MakeServer) -> None:
    server = await make_server()
    address = server.address
    listed = json_object(await _get(address, "/rooms"))
    assert listed["rooms"] == [{"name": "lobby", "members": 0}]
    made = await _post(address, "/rooms", {"name": "general"})
    assert made.status == 201, made.body
    assert json_object(made) == {"name": "general", "created": True}
    again = await _post(address, "/rooms", {"name": "general"})
    assert again.status == 200
    assert json_object(again)["created"] is False
    for bad in ["", "General", "-x", "a" * 65, "a b", "a/b", "é", 7]:
        refused = await _post(address, "/rooms", {"name": bad})
        assert refused.status == 400, (bad, refused.body)
        assert "error" in json_object(refused)
    assert (await _post(address, "/rooms", {"name": "a" * 64})).status == 201
    names = [r["name"] for r in json_object(await _get(address, "/rooms"))["rooms"]]
    assert names == ["a" * 64, "general", "lobby"]
    missing = await _get(address, "/rooms/nowhere/messages")
    assert missing.status == 404
    assert (await _post(address, "/rooms/nowhere/messages", {"text": "hi"})).status == 404
    assert (await _get(address, "/rooms/nowhere/presence")).status == 404
    stream = await EventStream.open(address, "/rooms/nowhere/events")
    assert stream.status == 404
    await stream.close()


async def test_the_number_of_rooms_is_capped(make_server: MakeServer) -> None:
    server = await make_server(max_rooms=3)
    address = server.address
    assert (await _post(address, "/rooms", {"name": "one"})).status == 201
    assert (await _post(address, "/rooms", {"name": "two"})).status == 201
    full = await _post(address, "/rooms", {"name": "three"})
    assert full.status == 409
    assert "3 rooms" in json_object(full)["error"]
    assert (await _post(address, "/rooms", {"name": "one"})).status == 200  # existing: fine


async def test_room_creation_is_rate_limited(make_server: MakeServer) -> None:
    server = await make_server(limits="on", rooms_per_min=2)
    address = server.address
    assert (await _post(address, "/rooms", {"name": "r1"})).status == 201
    assert (await _post(address, "/rooms", {"name": "r2"})).status == 201
    refused = await _post(address, "/rooms", {"name": "r3"})
    assert refused.status == 429
    assert json_object(refused)["limit"] == "room_creations"
    assert int(refused.headers["retry-after"]) >= 1


async def test_messages_carry_their_sender_and_are_bounded(make_server: MakeServer) -> None:
    server = await make_server(room_message_chars=50)
    address = server.address
    await _post(address, "/rooms", {"name": "general"})
    me = await _me(address)
    stream = await EventStream.open(address, "/rooms/general/events")
    assert stream.status == 200
    await next_of(stream, "presence")  # our own join
    posted = await _post(address, "/rooms/general/messages", {"text": "hello room"})
    assert posted.status == 201, posted.body
    body = json_object(posted)
    event = await next_of(stream, "message")
    data = event_data(event)
    assert data == body
    assert data["room"] == "general"
    assert data["text"] == "hello room"
    assert data["from"] == {"id": me["id"], "name": me["name"]}
    assert data["at"].endswith("Z")
    assert "T" in data["at"]
    assert event.last_event_id  # resumable
    assert (await _post(address, "/rooms/general/messages", {"text": "x" * 51})).status == 413
    assert (await _post(address, "/rooms/general/messages", {"text": "  "})).status == 400
    assert (await _post(address, "/rooms/general/messages", {"msg": "x"})).status == 400
    await stream.close()


async def test_room_posts_count_against_the_room_post_limit(make_server: MakeServer) -> None:
    server = await make_server(limits="on", room_post_burst=2, room_posts_per_s=0.01)
    address = server.address
    for _ in range(2):
        assert (await _post(address, "/rooms/lobby/messages", {"text": "hi"})).status == 201
    refused = await _post(address, "/rooms/lobby/messages", {"text": "hi"})
    assert refused.status == 429
    assert json_object(refused)["limit"] == "room_posts"


async def test_scrollback_pages_back_past_the_in_memory_history(make_server: MakeServer) -> None:
    server = await make_server(history_size=5)
    address = server.address
    await _post(address, "/rooms", {"name": "long"})
    for i in range(23):
        assert (await _post(address, "/rooms/long/messages", {"text": f"m{i}"})).status == 201
    newest = json_object(await _get(address, "/rooms/long/messages?limit=10"))
    assert [m["text"] for m in newest["messages"]] == [f"m{i}" for i in range(13, 23)]
    seen = [m["text"] for m in newest["messages"]]
    before = newest["before"]
    while before is not None:
        page = json_object(await _get(address, f"/rooms/long/messages?limit=10&before={before}"))
        seen = [m["text"] for m in page["messages"]] + seen
        before = page.get("before")
    assert seen == [f"m{i}" for i in range(23)]
    default = json_object(await _get(address, "/rooms/long/messages"))
    assert len(default["messages"]) == 23
    assert "before" not in default
    for bad in ["limit=0", "limit=201", "limit=x", "before=-1", "before=1e3"]:
        assert (await _get(address, f"/rooms/long/messages?{bad}")).status == 400, bad


async def test_a_restart_keeps_a_rooms_messages(make_server: MakeServer, tmp_path: Any) -> None:
    db = tmp_path / "rooms.sqlite3"
    first = await make_server(db_path=db)
    await _post(first.address, "/rooms", {"name": "kept"})
    await _post(first.address, "/rooms/kept/messages", {"text": "before the restart"})
    await first.stop()
    second = await make_server(db_path=db)
    page = json_object(await _get(second.address, "/rooms/kept/messages"))
    assert [m["text"] for m in page["messages"]] == ["before the restart"]
    assert "kept" in [r["name"] for r in json_object(await _get(second.address, "/rooms"))["rooms"]]


async def test_a_seed_post_reaches_the_lobby_with_its_sender(make_server: MakeServer) -> None:
    server = await make_server()
    address = server.address
    me = await _me(address)  # the default jar is now a guest
    seed = await EventStream.open(address, "/events")
    lobby = await EventStream.open(address, "/rooms/lobby/events")
    first = await seed.next_event()
    assert first.data == "A new user joined!"  # the seed's stream, as it always was
    response = await post_message(address, "from the seed")
    assert response.status == 200
    assert response.body == b"Message sent successfully!"
    plain = await seed.next_event()
    assert plain.data == "from the seed"
    assert plain.type == "message"
    data = event_data(await next_of(lobby, "message"))
    assert data["text"] == "from the seed"
    assert data["room"] == "lobby"
    assert data["from"] == {"id": me["id"], "name": me["name"]}
    # Without a cookie: anonymous, and the seed's answer is the same.
    assert (await post_message_as(address, "nobody's", None)).status == 200
    assert event_data(await next_of(lobby, "message"))["from"] == {
        "id": "anonymous",
        "name": "Anonymous",
    }
    # A lobby post through the rooms API reaches the seed's streams as plain text.
    await _post(address, "/rooms/lobby/messages", {"text": "from the room"})
    assert (await seed.next_event()).data == "nobody's"
    assert (await seed.next_event()).data == "from the room"
    kept = json_object(await _get(address, "/rooms/lobby/messages"))["messages"]
    assert [m["text"] for m in kept] == ["from the seed", "nobody's", "from the room"]
    await seed.close()
    await lobby.close()


async def post_message_as(address: Address, message: str, jar: CookieJar | None) -> Response:
    body = json.dumps({"message": message}).encode()
    return await request(address, "POST", "/send-message", _JSON, body, jar=jar)


async def test_presence_joins_with_the_first_stream_and_leaves_after_the_grace(
    make_server: MakeServer,
) -> None:
    server = await make_server(presence_grace_s=0.2)
    address = server.address
    watcher_jar = CookieJar()
    watcher_me = await _me(address, jar=watcher_jar)  # a cookie first: streams do not set one
    watcher = await EventStream.open(address, "/rooms/lobby/events", jar=watcher_jar)
    joined = event_data(await next_of(watcher, "presence"))
    assert joined["user"]["id"] == watcher_me["id"]
    assert joined["count"] == 1
    me = await _me(address)
    first = await EventStream.open(address, "/rooms/lobby/events")
    second = await EventStream.open(address, "/rooms/lobby/events")
    event = await next_of(watcher, "presence")
    assert not event.last_event_id  # ephemeral: no id
    data = event_data(event)
    assert data == {
        "room": "lobby",
        "action": "join",
        "user": {"id": me["id"], "name": me["name"]},
        "count": 2,
    }
    presence = json_object(await _get(address, "/rooms/lobby/presence"))
    assert presence["count"] == 2
    assert {u["id"] for u in presence["users"]} == {me["id"], watcher_me["id"]}
    rooms = json_object(await _get(address, "/rooms"))["rooms"]
    assert rooms == [{"name": "lobby", "members": 2}]
    await first.close()
    await second.close()
    left = event_data(await next_of(watcher, "presence"))
    assert left["action"] == "leave"
    assert left["user"]["id"] == me["id"]
    assert left["count"] == 1
    assert json_object(await _get(address, "/rooms/lobby/presence"))["count"] == 1
    await watcher.close()


async def test_a_reconnect_within_the_grace_neither_leaves_nor_joins(
    make_server: MakeServer,
) -> None:
    server = await make_server(presence_grace_s=60.0)
    address = server.address
    watcher = await EventStream.open(address, "/rooms/lobby/events", jar=CookieJar())
    await next_of(watcher, "presence")
    await _me(address)  # the person's cookie, so both streams below are one person
    person = await EventStream.open(address, "/rooms/lobby/events")
    assert event_data(await next_of(watcher, "presence"))["action"] == "join"
    await person.close()
    await wait_until(lambda: len(server.streams) == 1, what="the stream to close")
    again = await EventStream.open(address, "/rooms/lobby/events")
    await _post(address, "/rooms/lobby/messages", {"text": "still here"})
    between = []
    while (event := await watcher.next_event(10.0)).type != "message":
        between.append(event)
    assert between == [], "a reconnect within the grace showed as a leave or a join"
    assert json_object(await _get(address, "/rooms/lobby/presence"))["count"] == 2
    await again.close()
    await watcher.close()


async def test_typing_is_ephemeral_and_throttled(make_server: MakeServer) -> None:
    server = await make_server()
    address = server.address
    me = await _me(address)
    stream = await EventStream.open(address, "/rooms/lobby/events", jar=CookieJar())
    await next_of(stream, "presence")
    first = await _post(address, "/rooms/lobby/typing", {})
    assert first.status == 202
    assert json_object(first) == {"published": True}
    throttled = await _post(address, "/rooms/lobby/typing", {})
    assert throttled.status == 202
    assert json_object(throttled) == {"published": False}
    typing = await next_of(stream, "typing")
    assert not typing.last_event_id
    assert event_data(typing) == {"room": "lobby", "user": {"id": me["id"], "name": me["name"]}}
    posted = json_object(await _post(address, "/rooms/lobby/messages", {"text": "after"}))
    message = await next_of(stream, "message")  # the throttled one published nothing
    assert event_data(message)["id"] == posted["id"]
    # Resuming from before the typing replays the messages only.
    await _post(address, "/rooms/lobby/messages", {"text": "later"})
    await next_of(stream, "message")
    await stream.close()
    resumed = await EventStream.open(
        address, "/rooms/lobby/events", [("last-event-id", message.last_event_id)], jar=CookieJar()
    )
    replayed = await resumed.next_event()
    assert replayed.type == "message"
    assert event_data(replayed)["text"] == "later"
    await resumed.close()


async def test_typing_needs_a_room(make_server: MakeServer) -> None:
    server = await make_server()
    assert (await _post(server.address, "/rooms/nowhere/typing", {})).status == 404


async def test_a_second_identity_sees_the_same_public_rooms(make_server: MakeServer) -> None:
    server = await make_server()
    address = server.address
    await _post(address, "/rooms", {"name": "shared"})
    await _post(address, "/rooms/shared/messages", {"text": "for everyone"})
    other = CookieJar()
    names = [r["name"] for r in json_object(await _get(address, "/rooms", jar=other))["rooms"]]
    assert "shared" in names
    page = json_object(await _get(address, "/rooms/shared/messages", jar=other))
    assert [m["text"] for m in page["messages"]] == ["for everyone"]
    answer = await _post(address, "/rooms/shared/messages", {"text": "me too"}, jar=other)
    assert answer.status == 201
    assert json_object(answer)["from"]["id"] == (await _me(address, jar=other))["id"]


async def test_rooms_need_an_identity_in_jwt_mode(make_server: MakeServer) -> None:
    server = await make_server(auth="jwt", jwt_secret=HMAC_SECRET)
    address = server.address
    for method, target in [
        ("GET", "/rooms"),
        ("POST", "/rooms"),
        ("GET", "/rooms/lobby/messages"),
        ("POST", "/rooms/lobby/messages"),
        ("GET", "/rooms/lobby/presence"),
        ("POST", "/rooms/lobby/typing"),
        ("GET", "/rooms/lobby/events"),
    ]:
        refused = await request(address, method, target, _JSON, b"{}", jar=None)
        assert refused.status == 401, (method, target)
    bearer = [("authorization", f"Bearer {token(HMAC_SECRET, sub='ann', name='Ann')}")]
    body = json.dumps({"text": "signed"}).encode()
    posted = await request(address, "POST", "/rooms/lobby/messages", [*_JSON, *bearer], body)
    assert posted.status == 201
    assert json_object(posted)["from"] == {"id": "ann", "name": "Ann"}


async def test_a_resume_past_the_rooms_history_gets_a_gap(make_server: MakeServer) -> None:
    server = await make_server(history_size=2)
    address = server.address
    stream = await EventStream.open(address, "/rooms/lobby/events", jar=CookieJar())
    await _post(address, "/rooms/lobby/messages", {"text": "first"})
    first = await next_of(stream, "message")
    for i in range(4):
        await _post(address, "/rooms/lobby/messages", {"text": f"later {i}"})
    await stream.close()
    resumed = await EventStream.open(
        address, "/rooms/lobby/events", [("last-event-id", first.last_event_id)], jar=CookieJar()
    )
    gap = await resumed.next_event()
    assert gap.type == "gap"
    replayed = [await next_of(resumed, "message") for _ in range(2)]
    assert [event_data(e)["text"] for e in replayed] == ["later 2", "later 3"]
    await resumed.close()


async def test_a_seed_post_with_an_accounts_cookie_shows_the_account(
    make_server: MakeServer,
) -> None:
    server = await make_server(auth="accounts")
    address = server.address
    account = {"username": "ann", "password": "correct horse 1"}
    signed = await _post(address, "/auth/signup", account)
    assert signed.status == 201, signed.body
    me = await _me(address)
    assert me["kind"] == "account"
    lobby = await EventStream.open(address, "/rooms/lobby/events", jar=CookieJar())
    assert (await post_message(address, "as an account")).status == 200
    data = event_data(await next_of(lobby, "message"))
    # Named by the account, never by its sign-in (which `Gate.peek` alone would give).
    assert data["from"] == {"id": me["id"], "name": me["name"]}
    await lobby.close()


async def test_messages_posted_at_once_are_all_kept_in_order(make_server: MakeServer) -> None:
    server = await make_server()
    address = server.address
    stream = await EventStream.open(address, "/rooms/lobby/events", jar=CookieJar())
    texts = [f"burst {i}" for i in range(40)]
    posted = await asyncio.gather(
        *(_post(address, "/rooms/lobby/messages", {"text": t}) for t in texts),
        *(post_message(address, f"seed {i}") for i in range(20)),
    )
    assert all(r.status in (200, 201) for r in posted)
    kept = json_object(await _get(address, "/rooms/lobby/messages?limit=200"))["messages"]
    assert sorted(m["text"] for m in kept) == sorted([*texts, *(f"seed {i}" for i in range(20))])
    ids = [int(m["id"]) for m in kept]
    assert ids == sorted(set(ids))
    live = [event_data(await next_of(stream, "message")) for _ in range(60)]
    assert sorted(m["text"] for m in live) == sorted(m["text"] for m in kept)
    await stream.close()
