"""Guests and accounts over real sockets: cookies, names, ownership, sign-in, sign-out, restarts.

Two people are two cookie jars; someone else's conversation must answer exactly
as a missing one, on every route, and stay untouched.
"""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sse.app.room import SENT_REPLY
from sse.io.server import Server
from tests.support.client import (
    CookieJar,
    EventStream,
    Response,
    assert_reauth,
    default_jar,
    events_until,
    json_object,
    post_message,
    request,
    wait_until,
)
from tests.support.servers import MakeServer, ServerProcess

Address = tuple[str, int]
JSON = [("content-type", "application/json")]
COOKIE = "ssechat_session"


def _set_cookie(response: Response) -> str:
    value = response.headers.get("set-cookie")
    assert value is not None, f"no Set-Cookie on {response.status} {response.body!r}"
    assert value.count(f"{COOKIE}=") == 1, value
    return value


def _cookie_value(response: Response) -> str:
    return _set_cookie(response).split(";", 1)[0].removeprefix(f"{COOKIE}=")


async def _me(address: Address, jar: CookieJar | None = None, **kw: Any) -> Response:
    if jar is None:
        return await request(address, "GET", "/me", **kw)
    return await request(address, "GET", "/me", jar=jar, **kw)


async def _create(address: Address, jar: CookieJar | None = None) -> str:
    response = await (
        request(address, "POST", "/conversations")
        if jar is None
        else request(address, "POST", "/conversations", jar=jar)
    )
    assert response.status == 201, response.body
    return str(json_object(response)["id"])


async def _post(address: Address, cid: str, content: str, **kw: Any) -> Response:
    body = json.dumps({"content": content}).encode()
    return await request(address, "POST", f"/conversations/{cid}/messages", JSON, body, **kw)


async def _listed(address: Address, **kw: Any) -> list[str]:
    response = await request(address, "GET", "/conversations", **kw)
    assert response.status == 200, response.body
    return [c["id"] for c in json_object(response)["conversations"]]


async def _json(address: Address, method: str, target: str, payload: object, **kw: Any) -> Response:
    body = json.dumps(payload).encode()
    return await request(address, method, target, JSON, body, **kw)


async def _read_until_closed(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 5.0)


def _ws_url(address: Address, path: str) -> str:
    return f"ws://{address[0]}:{address[1]}{path}"


# -- guests ------------------------------------------------------------------------


async def test_first_visit_sets_an_httponly_lax_session_cookie(server: Server) -> None:
    response = await _me(server.address)
    assert response.status == 200
    me = json_object(response)
    assert me["kind"] == "guest"
    assert set(me) == {"id", "name", "kind"}
    attributes = [a.strip() for a in _set_cookie(response).split(";")][1:]
    assert "HttpOnly" in attributes
    assert "SameSite=Lax" in attributes
    assert "Path=/" in attributes
    assert [a for a in attributes if a.startswith("Max-Age=")] == [f"Max-Age={400 * 86400}"]
    assert "Secure" not in attributes
    assert response.headers["cache-control"] == "no-store"


async def test_an_https_public_url_makes_the_cookie_secure(make_server: MakeServer) -> None:
    server = await make_server(public_url="https://chat.example")
    response = await _me(server.address)
    attributes = [a.strip() for a in _set_cookie(response).split(";")]
    assert "Secure" in attributes


async def test_the_cookie_keeps_the_same_guest(server: Server) -> None:
    first = json_object(await _me(server.address))
    again = await _me(server.address)
    assert again.status == 200
    assert json_object(again) == first
    assert "set-cookie" not in again.headers  # nothing new to remember


async def test_a_guest_renames_and_the_new_cookie_carries_the_name(server: Server) -> None:
    before = json_object(await _me(server.address))
    old = default_jar(server.address).cookies[COOKIE]
    renamed = await _json(server.address, "PATCH", "/me", {"name": "  Ada  "})
    assert renamed.status == 200
    assert json_object(renamed) == {"id": before["id"], "name": "Ada", "kind": "guest"}
    assert _cookie_value(renamed) != old
    shown = await _me(server.address)
    assert json_object(shown) == {"id": before["id"], "name": "Ada", "kind": "guest"}


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        ({"name": ""}, 400, '"name" must not be empty'),
        ({"name": "   "}, 400, '"name" must not be empty'),
        ({"name": "x" * 65}, 413, '"name" is longer than 64 characters'),
        ({"name": "a\x00b"}, 400, '"name" must not hold control or format characters'),
        ({"name": "a\u200eb"}, 400, '"name" must not hold control or format characters'),
        ({"name": 7}, 400, '"name" must be a string'),
        ({"name": None}, 400, '"name" must be a string'),
        ({}, 400, 'missing "name"'),
    ],
)
async def test_bad_names_are_refused(
    server: Server, payload: object, status: int, error: str
) -> None:
    before = json_object(await _me(server.address))
    response = await _json(server.address, "PATCH", "/me", payload)
    assert response.status == status
    assert json_object(response) == {"error": error}
    assert json_object(await _me(server.address)) == before


async def test_a_64_character_name_is_the_longest_allowed(server: Server) -> None:
    response = await _json(server.address, "PATCH", "/me", {"name": "x" * 64})
    assert response.status == 200
    assert json_object(response)["name"] == "x" * 64


def _flip_signature(value: str) -> str:
    # The signature is the last dot-separated part; change its first character.
    head, _, signature = value.rpartition(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{flipped}{signature[1:]}"


@pytest.mark.parametrize("forgery", ["tampered", "garbage", "other-secret", "too-long"])
async def test_a_forged_cookie_becomes_a_new_guest_never_an_error(
    make_server: MakeServer, tmp_path: Path, forgery: str
) -> None:
    server = await make_server()
    first = await _me(server.address)
    mine = json_object(first)
    value = _cookie_value(first)
    if forgery == "tampered":
        cookie = _flip_signature(value)
    elif forgery == "garbage":
        cookie = "garbage.%%%.\x7f"
    elif forgery == "too-long":
        cookie = "a" * 5000
    else:
        other = await make_server(session_secret="s" * 40)
        cookie = _cookie_value(await _me(other.address, jar=CookieJar()))
    assert cookie != value
    response = await _me(server.address, jar=None, headers=[("cookie", f"{COOKIE}={cookie}")])
    assert response.status == 200
    someone = json_object(response)
    assert someone["kind"] == "guest"
    assert someone["id"] != mine["id"]
    assert _cookie_value(response) not in (cookie, value)


# -- someone else's conversation ----------------------------------------------------


async def _transcript(address: Address, cid: str, **kw: Any) -> Response:
    return await request(address, "GET", f"/conversations/{cid}", **kw)


async def test_every_conversation_route_of_another_person_is_a_404_like_a_missing_one(
    server: Server,
) -> None:
    address = server.address
    cid = await _create(address)
    stream = await EventStream.open(address, f"/conversations/{cid}/events")
    assert (await _post(address, cid, "mine alone")).status == 202
    await events_until(stream, "done")
    await stream.close()
    renamed = await _json(address, "PATCH", f"/conversations/{cid}", {"title": "Secret plans"})
    assert renamed.status == 200
    before = json_object(await _transcript(address, cid))

    bob = CookieJar()
    bobs = await _create(address, bob)
    missing = str(uuid.uuid4())

    async def both(method: str, suffix: str, payload: object | None = None) -> None:
        answers = []
        for target in (cid, missing):
            path = f"/conversations/{target}{suffix}"
            if payload is None:
                answers.append(await request(address, method, path, jar=bob))
            else:
                answers.append(await _json(address, method, path, payload, jar=bob))
        theirs, nobodys = answers
        assert (theirs.status, nobodys.status) == (404, 404), (method, suffix)
        assert json_object(theirs) == {"error": f"no conversation {cid}"}
        assert json_object(nobodys) == {"error": f"no conversation {missing}"}
        assert theirs.headers.keys() == nobodys.headers.keys()

    await both("GET", "")
    await both("PATCH", "", {"title": "Bob was here"})
    await both("DELETE", "")
    await both("POST", "/messages", {"content": "let me in"})
    await both("POST", "/stop")
    for target in (cid, missing):
        bobs_stream = await EventStream.open(address, f"/conversations/{target}/events", jar=bob)
        assert bobs_stream.status == 404
        await bobs_stream.close()
        cookie = bob.header()
        assert cookie is not None
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                _ws_url(address, f"/conversations/{target}/ws"),
                additional_headers=[("cookie", cookie)],
            ):
                pass
        assert refused.value.response.status_code == 404
        assert json.loads(refused.value.response.body or b"") == {
            "error": f"no conversation {target}"
        }
    assert await _listed(address, jar=bob) == [bobs]
    # Nothing of the owner's changed.
    assert await _listed(address) == [cid]
    after = json_object(await _transcript(address, cid))
    assert after == before
    assert after["title"] == "Secret plans"


async def test_the_owner_renames_and_deletes(server: Server) -> None:
    address = server.address
    cid = await _create(address)
    renamed = await _json(address, "PATCH", f"/conversations/{cid}", {"title": "  Trip  notes "})
    assert renamed.status == 200
    assert json_object(renamed)["title"] == "Trip notes"
    listing = json_object(await request(address, "GET", "/conversations"))["conversations"]
    assert [(c["id"], c["title"]) for c in listing] == [(cid, "Trip notes")]
    deleted = await request(address, "DELETE", f"/conversations/{cid}")
    assert (deleted.status, deleted.body) == (204, b"")
    gone = await _transcript(address, cid)
    assert gone.status == 404
    assert json_object(gone) == {"error": f"no conversation {cid}"}
    assert (await request(address, "DELETE", f"/conversations/{cid}")).status == 404
    assert await _listed(address) == []


async def test_deleting_ends_open_streams_sockets_and_the_reply(make_server: MakeServer) -> None:
    server = await make_server(echo_delay_s=0.02)
    address = server.address
    cid = await _create(address)
    stream = await EventStream.open(address, f"/conversations/{cid}/events")
    cookie = default_jar(address).header()
    assert cookie is not None
    async with connect(
        _ws_url(address, f"/conversations/{cid}/ws"), additional_headers=[("cookie", cookie)]
    ) as ws:
        assert (await _post(address, cid, "word " * 500)).status == 202
        await events_until(stream, "delta")
        deleted = await request(address, "DELETE", f"/conversations/{cid}")
        assert deleted.status == 204
        seen = await events_until(stream, "deleted")
        assert seen[-1].type == "deleted"
        await stream.wait_ended()
        assert stream.ended
        with pytest.raises(ConnectionClosed) as closed:
            await _read_until_closed(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4004
    # The reply stopped (the service holds no task for it), and nothing was saved back.
    await wait_until(lambda: not server.chat.replying(cid), what="the reply to stop")
    assert (await _transcript(address, cid)).status == 404
    assert await _listed(address) == []


# -- the room stays the seed's --------------------------------------------------------


@pytest.mark.parametrize("auth", ["guest", "accounts"])
@pytest.mark.parametrize("cookie", [None, f"{COOKIE}=garbage"])
async def test_the_room_needs_no_cookie_and_sets_none(
    make_server: MakeServer, auth: str, cookie: str | None
) -> None:
    server = await make_server(auth=auth)
    headers = [] if cookie is None else [("cookie", cookie)]
    stream = await EventStream.open(server.address, "/events", headers, jar=None)
    assert stream.status == 200
    assert "set-cookie" not in stream.headers
    body = json.dumps({"message": "hello room"}).encode()
    sent = await request(server.address, "POST", "/send-message", [*JSON, *headers], body, jar=None)
    assert (sent.status, sent.body) == (200, SENT_REPLY)
    assert "set-cookie" not in sent.headers
    while True:
        event = await stream.next_event()
        if "hello room" in event.data:
            break
    await stream.close()
    seed = await post_message(server.address, "seed")
    assert (seed.status, seed.body) == (200, SENT_REPLY)


# -- accounts ---------------------------------------------------------------------------


async def _signup(address: Address, username: str, password: str, **kw: Any) -> Response:
    payload = {"username": username, "password": password}
    return await _json(address, "POST", "/auth/signup", payload, **kw)


async def _login(address: Address, username: str, password: str, **kw: Any) -> Response:
    payload = {"username": username, "password": password}
    return await _json(address, "POST", "/auth/login", payload, **kw)


async def test_signup_makes_an_account_and_signs_in(make_server: MakeServer) -> None:
    server = await make_server(auth="accounts")
    response = await _signup(server.address, "ada", "correct horse")
    assert response.status == 201
    body = json_object(response)
    assert (body["kind"], body["name"], body["username"]) == ("account", "ada", "ada")
    attributes = [a.strip() for a in _set_cookie(response).split(";")]
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    me = json_object(await _me(server.address))
    assert me == {"id": body["id"], "name": "ada", "kind": "account"}


@pytest.mark.parametrize(
    ("username", "password", "status", "error"),
    [
        ("ADA", "another one", 409, "the username 'ADA' is taken"),
        ("ab", "long enough", 400, "the username must be 3 to 32"),
        ("a" * 33, "long enough", 400, "the username must be 3 to 32"),
        ("bad name", "long enough", 400, "the username must be 3 to 32"),
        ("bob", "short", 400, "the password must be at least 8 characters"),
        ("bob", "p" * 300, 413, "the password is longer than 256 characters"),
    ],
)
async def test_bad_signups_are_refused(
    make_server: MakeServer, username: str, password: str, status: int, error: str
) -> None:
    server = await make_server(auth="accounts")
    assert (await _signup(server.address, "ada", "correct horse", jar=CookieJar())).status == 201
    response = await _signup(server.address, username, password)
    assert response.status == status
    assert json_object(response)["error"].startswith(error)
    assert json_object(await _me(server.address))["kind"] == "guest"


async def test_login_right_and_wrong(make_server: MakeServer) -> None:
    server = await make_server(auth="accounts")
    made = json_object(await _signup(server.address, "ada", "correct horse", jar=CookieJar()))
    wrong = await _login(server.address, "ada", "wrong horse!")
    unknown = await _login(server.address, "nobody", "correct horse")
    assert (wrong.status, unknown.status) == (401, 401)
    assert wrong.body == unknown.body
    assert json_object(wrong) == {"error": "wrong username or password"}
    assert json_object(await _me(server.address))["kind"] == "guest"
    right = await _login(server.address, "ada", "correct horse")
    assert right.status == 200
    assert json_object(right)["id"] == made["id"]
    assert json_object(await _me(server.address)) == {
        "id": made["id"],
        "name": "ada",
        "kind": "account",
    }


async def test_a_guests_conversations_follow_it_into_the_account(make_server: MakeServer) -> None:
    server = await make_server(auth="accounts")
    address = server.address
    cid = await _create(address)
    assert (await _signup(address, "ada", "correct horse")).status == 201
    assert await _listed(address) == [cid]
    other = CookieJar()
    theirs = await _create(address, other)
    assert (await _login(address, "ada", "correct horse", jar=other)).status == 200
    assert sorted(await _listed(address, jar=other)) == sorted([cid, theirs])
    assert sorted(await _listed(address)) == sorted([cid, theirs])


async def test_logout_revokes_the_session_everywhere(make_server: MakeServer) -> None:
    server = await make_server(auth="accounts")
    address = server.address
    made = json_object(await _signup(address, "ada", "correct horse"))
    cid = await _create(address)
    old = default_jar(address).cookies[COOKIE]
    out = await request(address, "POST", "/auth/logout")
    assert out.status == 200
    assert json_object(out) == {"signed_out": True}
    cleared = _set_cookie(out)
    assert cleared.startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in cleared
    assert COOKIE not in default_jar(address).cookies
    replay = [("cookie", f"{COOKIE}={old}")]
    me = await _me(address, jar=None, headers=replay)
    assert me.status == 200
    assert json_object(me)["kind"] == "guest"
    assert json_object(me)["id"] != made["id"]
    assert "set-cookie" in me.headers
    stream = await EventStream.open(address, f"/conversations/{cid}/events", replay, jar=None)
    await assert_reauth(stream, "revoked")
    # Signing in again finds the conversation.
    assert (await _login(address, "ada", "correct horse")).status == 200
    assert await _listed(address) == [cid]


@pytest.mark.parametrize("path", ["/auth/signup", "/auth/login", "/auth/logout"])
async def test_auth_routes_do_not_exist_in_guest_mode(server: Server, path: str) -> None:
    response = await _json(server.address, "POST", path, {"username": "ada", "password": "x" * 9})
    assert response.status == 404
    assert json_object(response) == {"error": f"no such path: {path}"}


def test_passwords_and_session_cookies_never_reach_the_log(spawn: Any, tmp_path: Path) -> None:
    proc: ServerProcess = spawn("--auth", "accounts", "--log-level", "debug")

    async def scenario() -> list[str]:
        address = proc.address
        signed = await _signup(address, "ada", "Sup3r-secret-pw")
        assert signed.status == 201
        assert (await _login(address, "ada", "Wr0ng-guess-pw")).status == 401
        logged = await _login(address, "ada", "Sup3r-secret-pw")
        assert logged.status == 200
        assert (await request(address, "GET", "/conversations")).status == 200
        return [_cookie_value(signed), _cookie_value(logged)]

    cookies = asyncio.run(scenario())
    proc.wait_for_log("POST /auth/login")
    log = proc.log
    for secret in ("Sup3r-secret-pw", "Wr0ng-guess-pw", *cookies):
        assert secret not in log
    # The session's signature, too, even cut out of its cookie.
    for cookie in cookies:
        assert cookie.rpartition(".")[2] not in log


# -- a restart ----------------------------------------------------------------------------


def test_a_session_survives_a_restart_with_the_key_kept_beside_the_db(tmp_path: Path) -> None:
    db = tmp_path / "kept.sqlite3"
    procs: list[ServerProcess] = []
    try:
        first = ServerProcess("--port", "0", "--db", str(db))
        procs.append(first)
        key = db.with_name(db.name + ".secret")
        assert key.exists()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

        cid = asyncio.run(_create(first.address))
        me = asyncio.run(_me(first.address))
        assert first.terminate() == 0
        second = ServerProcess("--port", "0", "--db", str(db))
        procs.append(second)

        async def after() -> tuple[list[str], dict[str, Any]]:
            return await _listed(second.address), json_object(await _me(second.address))

        listed, again = asyncio.run(after())
        assert listed == [cid]
        assert again == json_object(me)
    finally:
        for proc in procs:
            proc.kill()
