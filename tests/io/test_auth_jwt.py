"""`--auth jwt` over real sockets: keys, refusals, privacy, the room, streams, tickets, logs.

Keys are made in the test (RSA 2048, EC P-256) and tokens minted with PyJWT;
the forged ones (`alg: none`, HS256 keyed with our RSA public key) are built by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from sse.io.server import Server
from tests.support.client import (
    EventStream,
    Response,
    event_data,
    json_object,
    request,
    wait_until,
)
from tests.support.jwt_keys import (
    HMAC_SECRET,
    ec_pair,
    hs256_by_hand,
    jwks_server,
    rsa_pair,
    token,
    unsigned_token,
)
from tests.support.redis_server import RedisServer
from tests.support.servers import ROOT, MakeServer, ServerProcess
from tests.support.sockets import closed_by_server

Spawn = Callable[..., ServerProcess]
Address = tuple[str, int]
JSON = [("content-type", "application/json")]
SESSION_SECRET = "s" * 40
NOBODYS = "00000000-0000-4000-8000-000000000000"

_MESSAGES = {
    "missing": "sign-in required: send a token (Authorization: Bearer) or a ticket",
    "expired": "the credential has expired",
    "invalid": "the credential is not valid",
}


def _bearer(value: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {value}")]


def _cookie(value: str) -> list[tuple[str, str]]:
    return [("cookie", f"ssechat_token={value}")]


async def _get(address: Address, target: str, headers: list[tuple[str, str]]) -> Response:
    return await request(address, "GET", target, headers, jar=None)


def _assert_refused(response: Response, reason: str) -> None:
    assert response.status == 401, response
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/json")
    assert json_object(response) == {"error": _MESSAGES[reason], "reason": reason}


async def _assert_reauth(stream: EventStream, reason: str) -> None:
    """A 200 event stream with a `retry:`, one `event: reauth` for `reason`, and the end."""
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    event = await stream.next_event(10)
    assert event.type == "reauth"
    assert event_data(event)["reason"] == reason
    await stream.wait_ended(10)
    assert stream.ended
    assert b"\nretry: " in b"\n" + bytes(stream.raw)
    await stream.close()


async def wait_for_data(stream: EventStream, text: str, count: int = 5) -> None:
    """Read events until one carries `text` (at most `count` events, each bounded)."""
    seen: list[str] = []
    while not any(text in data for data in seen):
        assert len(seen) < count, seen
        seen.append((await stream.next_event()).data)


async def _create(address: Address, tok: str) -> str:
    response = await request(address, "POST", "/conversations", _bearer(tok), jar=None)
    assert response.status == 201, response
    return str(json_object(response)["id"])


async def _hs_server(make_server: MakeServer, **overrides: Any) -> Server:
    return await make_server(auth="jwt", jwt_secret=HMAC_SECRET, **overrides)


# -- 1. each kind of key ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["HS256", "RS256", "ES256", "JWKS RS256", "JWKS ES256"])
async def test_a_valid_token_names_its_subject_by_header_and_by_cookie(
    make_server: MakeServer, tmp_path: Path, kind: str
) -> None:
    if kind == "HS256":
        server = await _hs_server(make_server)
        tok = token(HMAC_SECRET, sub="alice", name="Alice A")
        await _check_me(server.address, tok)
        return
    pair = rsa_pair() if "RS256" in kind else ec_pair()
    if not kind.startswith("JWKS"):
        server = await make_server(auth="jwt", jwt_public_key=pair.write_public(tmp_path / "k.pem"))
        await _check_me(server.address, token(pair, sub="alice", name="Alice A"))
        return
    other = ec_pair() if "RS256" in kind else rsa_pair()
    with jwks_server([other.jwk("other"), pair.jwk("current")]) as url:
        server = await make_server(auth="jwt", jwks_url=url)
        await _check_me(server.address, token(pair, sub="alice", name="Alice A", kid="current"))
        # A kid the set does not hold, and a token without one, are refused.
        _assert_refused(await _get(server.address, "/me", _bearer(token(pair, kid="x"))), "invalid")
        _assert_refused(await _get(server.address, "/me", _bearer(token(pair))), "invalid")


async def _check_me(address: Address, tok: str) -> None:
    for headers in (_bearer(tok), _cookie(tok)):
        response = await _get(address, "/me", headers)
        assert response.status == 200, response
        assert json_object(response) == {"id": "alice", "name": "Alice A", "kind": "jwt"}


async def test_a_token_without_a_name_is_shown_by_its_subject(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    response = await _get(server.address, "/me", _bearer(token(HMAC_SECRET, name=None)))
    assert json_object(response) == {"id": "alice", "name": "alice", "kind": "jwt"}


# -- 2. refusals ----------------------------------------------------------------


async def test_no_token_is_401_missing_with_a_bearer_challenge(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    _assert_refused(await _get(server.address, "/me", []), "missing")
    _assert_refused(await _get(server.address, "/me", [("authorization", "Basic YTpi")]), "missing")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"exp_in_s": -30}, "expired", id="expired"),
        pytest.param({"nbf": int(time.time()) + 3600}, "invalid", id="not yet valid"),
        pytest.param({"sub": None}, "invalid", id="no sub"),
        pytest.param({"sub": ""}, "invalid", id="empty sub"),
        pytest.param({"sub": 7}, "invalid", id="sub not a string"),
        pytest.param({"exp_in_s": None}, "invalid", id="no exp"),
    ],
)
async def test_a_token_with_bad_claims_is_refused(
    make_server: MakeServer, claims: dict[str, Any], reason: str
) -> None:
    server = await _hs_server(make_server)
    _assert_refused(
        await _get(server.address, "/me", _bearer(token(HMAC_SECRET, **claims))), reason
    )
    _assert_refused(
        await _get(server.address, "/me", _cookie(token(HMAC_SECRET, **claims))), reason
    )


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"aud": "someone-else", "iss": "https://idp.example"}, id="wrong aud"),
        pytest.param({"aud": "ssechat", "iss": "https://evil.example"}, id="wrong iss"),
        pytest.param({"iss": "https://idp.example"}, id="no aud"),
        pytest.param({"aud": "ssechat"}, id="no iss"),
        pytest.param({"aud": ["other", "more"], "iss": "https://idp.example"}, id="aud list"),
    ],
)
async def test_audience_and_issuer_are_required_when_configured(
    make_server: MakeServer, claims: dict[str, Any]
) -> None:
    server = await _hs_server(make_server, jwt_audience="ssechat", jwt_issuer="https://idp.example")
    good = token(HMAC_SECRET, aud="ssechat", iss="https://idp.example")
    assert (await _get(server.address, "/me", _bearer(good))).status == 200
    _assert_refused(
        await _get(server.address, "/me", _bearer(token(HMAC_SECRET, **claims))), "invalid"
    )


async def test_forged_and_foreign_tokens_are_refused(
    make_server: MakeServer, tmp_path: Path
) -> None:
    pair = rsa_pair()
    server = await make_server(auth="jwt", jwt_public_key=pair.write_public(tmp_path / "k.pem"))
    hs_server = await _hs_server(make_server)
    forged = [
        unsigned_token(),
        # The algorithm-confusion attack: our public key's PEM as an HMAC secret.
        hs256_by_hand(pair.public_pem),
        token(rsa_pair()),  # another RSA key
        token(ec_pair()),  # another kind of key
        token(HMAC_SECRET),
    ]
    for tok in forged:
        _assert_refused(await _get(server.address, "/me", _bearer(tok)), "invalid")
        _assert_refused(await _get(server.address, "/me", _cookie(tok)), "invalid")
    for tok in [unsigned_token(), token("another-secret-of-at-least-32-characters"), token(pair)]:
        _assert_refused(await _get(hs_server.address, "/me", _bearer(tok)), "invalid")


@pytest.mark.parametrize(
    "garbage",
    ["abc", "a.b.c", "x" * 10_000, "...", "eyJ.eyJ.", "a.b.c.d.e", "Bearer"],
    ids=["abc", "a.b.c", "10KB", "dots", "stubs", "five parts", "word"],
)
async def test_garbage_is_401_never_500(make_server: MakeServer, garbage: str) -> None:
    server = await _hs_server(make_server)
    for headers in (_bearer(garbage), _cookie(garbage)):
        response = await _get(server.address, "/me", headers)
        _assert_refused(response, "invalid")
    assert (await _get(server.address, "/healthz", [])).status == 200


# -- 3. privacy across two subjects --------------------------------------------


async def test_one_subjects_conversations_are_404_to_another(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    alice = token(HMAC_SECRET, sub="alice", name="Alice")
    bob = token(HMAC_SECRET, sub="bob", name="Bob")
    cid = await _create(server.address, alice)
    mine = await _create(server.address, bob)
    base = f"/conversations/{cid}"
    body = json.dumps({"content": "hi"}).encode()
    attempts = [
        ("GET", base, b""),
        ("PATCH", base, json.dumps({"title": "bob's now"}).encode()),
        ("DELETE", base, b""),
        ("POST", f"{base}/messages", body),
        ("POST", f"{base}/stop", b""),
    ]
    for method, target, payload in attempts:
        response = await request(
            server.address, method, target, [*_bearer(bob), *JSON], payload, jar=None
        )
        assert response.status == 404, (method, target, response)
        assert response.headers["content-type"].startswith("application/json")
        missing = await request(
            server.address,
            method,
            target.replace(cid, NOBODYS),
            [*_bearer(bob), *JSON],
            payload,
            jar=None,
        )
        assert missing.status == 404
        # Exactly the answer for an id that does not exist, but for the id itself.
        assert missing.body == response.body.replace(cid.encode(), NOBODYS.encode())
    stream = await EventStream.open(server.address, f"{base}/events", _bearer(bob), jar=None)
    assert stream.status == 404
    await stream.close()
    host, port = server.address
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"ws://{host}:{port}{base}/ws", additional_headers=_bearer(bob), open_timeout=5
        ):
            pass
    assert refused.value.response.status_code == 404
    # Alice's conversation is untouched, and each list shows only its owner's.
    still = await request(server.address, "GET", base, _bearer(alice), jar=None)
    assert still.status == 200
    assert json_object(still)["title"] == "New conversation"
    for tok, own in ((alice, cid), (bob, mine)):
        listed = json_object(await _get(server.address, "/conversations", _bearer(tok)))
        assert [c["id"] for c in listed["conversations"]] == [own]


# -- 4. the room -----------------------------------------------------------------


async def test_the_room_needs_a_token_in_jwt_mode(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    message = json.dumps({"message": "hello"}).encode()
    send = await request(server.address, "POST", "/send-message", JSON, message, jar=None)
    _assert_refused(send, "missing")
    stream = await EventStream.open(server.address, "/events", jar=None)
    assert stream.status == 401
    await stream.close()
    tok = token(HMAC_SECRET)
    stream = await EventStream.open(server.address, "/events", _bearer(tok), jar=None)
    assert stream.status == 200
    sent = await request(
        server.address, "POST", "/send-message", [*JSON, *_bearer(tok)], message, jar=None
    )
    assert sent.status == 200
    await wait_for_data(stream, "hello")
    await stream.close()


async def test_a_public_room_needs_no_token(make_server: MakeServer) -> None:
    server = await _hs_server(make_server, public_room=True)
    stream = await EventStream.open(server.address, "/events", jar=None)
    assert stream.status == 200
    message = json.dumps({"message": "hello"}).encode()
    sent = await request(server.address, "POST", "/send-message", JSON, message, jar=None)
    assert sent.status == 200
    await stream.close()
    # Conversations stay private even with a public room.
    _assert_refused(await _get(server.address, "/conversations", []), "missing")


# -- 5. streams -----------------------------------------------------------------


async def test_a_first_stream_without_a_credential_is_401(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    cid = await _create(server.address, token(HMAC_SECRET))
    for target in (f"/conversations/{cid}/events", "/events"):
        stream = await EventStream.open(server.address, target, jar=None)
        assert stream.status == 401
        assert stream.headers["www-authenticate"] == "Bearer"
        await stream.close()


async def test_a_stream_with_an_expired_token_is_told_to_reauth(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    cid = await _create(server.address, token(HMAC_SECRET))
    expired = token(HMAC_SECRET, exp_in_s=-5)
    for target in (f"/conversations/{cid}/events", "/events"):
        for headers in (_bearer(expired), _cookie(expired)):
            stream = await EventStream.open(server.address, target, headers, jar=None)
            await _assert_reauth(stream, "expired")
    bad = await EventStream.open(server.address, "/events", _bearer("a.b.c"), jar=None)
    await _assert_reauth(bad, "invalid")


async def test_a_stream_ends_with_reauth_when_its_token_expires(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    alice = token(HMAC_SECRET)
    cid = await _create(server.address, alice)
    short = token(HMAC_SECRET, exp_in_s=3)
    stream = await EventStream.open(
        server.address, f"/conversations/{cid}/events", _bearer(short), jar=None
    )
    assert stream.status == 200
    # Open, not refused: an open stream has no length, a refusal has one.
    assert "content-length" not in stream.headers
    event = await stream.next_event(15)
    assert event.type == "reauth"
    assert event_data(event)["reason"] == "expired"
    await stream.wait_ended(5)
    assert stream.ended
    await stream.close()
    # And the next attempt with it is refused at once.
    again = await EventStream.open(server.address, "/events", _bearer(short), jar=None)
    await _assert_reauth(again, "expired")


@pytest.mark.parametrize("path", ["/ws", "/conversations/{cid}/ws"])
async def test_a_websocket_closes_with_4001_when_its_token_expires(
    make_server: MakeServer, path: str
) -> None:
    server = await _hs_server(make_server)
    cid = await _create(server.address, token(HMAC_SECRET))
    host, port = server.address
    short = token(HMAC_SECRET, exp_in_s=3)
    async with connect(
        f"ws://{host}:{port}{path.format(cid=cid)}",
        additional_headers=_bearer(short),
        open_timeout=5,
    ) as ws:
        closed = await closed_by_server(ws, 15.0)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4001


# -- 6. stream tickets ------------------------------------------------------------


async def _ticket(address: Address, tok: str) -> str:
    response = await request(address, "POST", "/stream-tickets", _bearer(tok), jar=None)
    assert response.status == 200, response
    body = json_object(response)
    assert set(body) == {"ticket", "expires_in"}
    assert body["expires_in"] == 60
    assert isinstance(body["ticket"], str)
    return body["ticket"]


async def test_a_ticket_opens_one_stream_once(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    alice = token(HMAC_SECRET)
    cid = await _create(server.address, alice)
    ticket = await _ticket(server.address, alice)
    target = f"/conversations/{cid}/events?ticket={ticket}"
    stream = await EventStream.open(server.address, target, jar=None)
    assert stream.status == 200
    assert "content-length" not in stream.headers
    body = json.dumps({"content": "hello"}).encode()
    posted = await request(
        server.address, "POST", f"/conversations/{cid}/messages", [*_bearer(alice), *JSON], body,
        jar=None,
    )  # fmt: skip
    assert posted.status == 202
    assert (await stream.next_event(10)).type == "user"
    await stream.close()
    again = await EventStream.open(server.address, target, jar=None)
    await _assert_reauth(again, "revoked")


async def test_a_ticket_is_for_its_subjects_streams_only(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    alice = token(HMAC_SECRET)
    cid = await _create(server.address, alice)
    bobs = await _ticket(server.address, token(HMAC_SECRET, sub="bob"))
    stream = await EventStream.open(
        server.address, f"/conversations/{cid}/events?ticket={bobs}", jar=None
    )
    assert stream.status == 404
    await stream.close()


async def test_a_tampered_ticket_is_invalid(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    ticket = await _ticket(server.address, token(HMAC_SECRET))
    middle = len(ticket) // 2
    flipped = "A" if ticket[middle] != "A" else "B"
    for forged in (ticket[:middle] + flipped + ticket[middle + 1 :], ticket[:-2], "x" * 2000):
        stream = await EventStream.open(server.address, f"/events?ticket={forged}", jar=None)
        await _assert_reauth(stream, "invalid")
    # The original, untouched, still opens its stream.
    stream = await EventStream.open(server.address, f"/events?ticket={ticket}", jar=None)
    assert stream.status == 200
    assert (await stream.next_event()).type != "reauth"
    await stream.close()


async def test_a_ticket_is_not_a_credential_outside_streams(make_server: MakeServer) -> None:
    server = await _hs_server(make_server)
    alice = token(HMAC_SECRET)
    cid = await _create(server.address, alice)
    ticket = await _ticket(server.address, alice)
    _assert_refused(await _get(server.address, f"/me?ticket={ticket}", []), "missing")
    _assert_refused(await _get(server.address, f"/conversations?ticket={ticket}", []), "missing")
    _assert_refused(
        await _get(server.address, f"/conversations/{cid}?ticket={ticket}", []), "missing"
    )
    minted = await request(server.address, "POST", f"/stream-tickets?ticket={ticket}", jar=None)
    _assert_refused(minted, "missing")
    # Refused there, it was not spent: it still opens a stream.
    stream = await EventStream.open(server.address, f"/events?ticket={ticket}", jar=None)
    assert stream.status == 200
    assert (await stream.next_event()).type != "reauth"
    await stream.close()


async def test_a_ticket_from_one_node_works_once_on_another(
    redis_server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    shared = [
        "--auth", "jwt", "--jwt-secret", HMAC_SECRET, "--redis-url", redis_server.url,
        "--session-secret", SESSION_SECRET, "--db", str(tmp_path / "shared.sqlite3"),
    ]  # fmt: skip
    a = spawn(*shared)
    b = spawn(*shared)
    ticket = await _ticket(a.address, token(HMAC_SECRET))
    on_b = await EventStream.open(b.address, f"/events?ticket={ticket}", jar=None)
    assert on_b.status == 200
    assert (await on_b.next_event()).type != "reauth"
    await on_b.close()
    for node in (a, b):
        again = await EventStream.open(node.address, f"/events?ticket={ticket}", jar=None)
        await _assert_reauth(again, "revoked")


# -- 7. secrets stay out of the log ------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_tokens_tickets_and_cookies_never_reach_the_log(
    spawn: Spawn, log_format: str
) -> None:
    proc = spawn(
        "--auth", "jwt", "--jwt-secret", HMAC_SECRET, "--log-level", "debug",
        "--log-format", log_format,
    )  # fmt: skip
    tok = token(HMAC_SECRET, sub="alice")
    cookie_tok = token(HMAC_SECRET, sub="carol")
    assert (await _get(proc.address, "/me", _bearer(tok))).status == 200
    assert (await _get(proc.address, "/me", _cookie(cookie_tok))).status == 200
    refused = token("another-secret-of-at-least-32-characters")
    assert (await _get(proc.address, "/me", _bearer(refused))).status == 401
    ticket = await _ticket(proc.address, tok)
    stream = await EventStream.open(proc.address, f"/events?ticket={ticket}&x=1", jar=None)
    assert stream.status == 200
    await stream.next_event()
    await stream.close()
    spent = await EventStream.open(proc.address, f"/events?ticket={ticket}", jar=None)
    await _assert_reauth(spent, "revoked")
    # The access line of each stream is written when it ends.
    line = '"route": "/events"' if log_format == "json" else '"GET /events?ticket=***'
    await wait_until(lambda: proc.log.count(line) == 2, what="both streams' access lines")
    log = proc.log
    for secret in (tok, cookie_tok, refused, ticket, HMAC_SECRET):
        assert secret not in log
        # Nor any of a token's parts (its signature or its payload).
        for part in secret.split("."):
            if len(part) >= 16:
                assert part not in log
    if log_format == "text":
        # The query is shown, its ticket masked, its other parameters kept.
        assert '"GET /events?ticket=***&x=1 HTTP/1.1" 200' in log
        assert '"GET /events?ticket=*** HTTP/1.1" 200' in log
    else:
        # JSON lines name the route, never the target with its query.
        access = [json.loads(line) for line in log.splitlines()]
        routes = [r["route"] for r in access if r["logger"] == "ssechat.access"]
        assert routes.count("/events") == 2
        assert "ticket=" not in log


# -- 8. settings that cannot work --------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--auth", "jwt"],
            "--auth jwt needs exactly one of --jwt-secret, --jwt-public-key or --jwks-url "
            "(got none)",
            id="no key",
        ),
        pytest.param(
            ["--auth", "jwt", "--jwt-secret", HMAC_SECRET, "--jwks-url", "http://127.0.0.1:9/k"],
            "--auth jwt needs exactly one of --jwt-secret, --jwt-public-key or --jwks-url "
            "(got --jwt-secret, --jwks-url)",
            id="two keys",
        ),
        pytest.param(
            ["--auth", "jwt", "--jwt-secret", "short"],
            "--jwt-secret must be at least 32 characters long",
            id="short secret",
        ),
        pytest.param(
            ["--auth", "jwt", "--jwt-public-key", "{pem}", "--jwt-algorithm", "HS256"],
            "--jwt-algorithm HS256 cannot be used with a public key",
            id="HS256 with a public key",
        ),
        pytest.param(
            ["--auth", "jwt", "--jwt-secret", HMAC_SECRET, "--jwt-algorithm", "RS256"],
            "--jwt-algorithm RS256 cannot be used with a shared secret",
            id="RS256 with a secret",
        ),
        pytest.param(
            ["--jwt-secret", HMAC_SECRET],
            "the --jwt-* options and --public-room need --auth jwt",
            id="secret without jwt",
        ),
        pytest.param(
            ["--auth", "accounts", "--jwt-audience", "ssechat"],
            "the --jwt-* options and --public-room need --auth jwt",
            id="audience without jwt",
        ),
        pytest.param(
            ["--public-room"],
            "the --jwt-* options and --public-room need --auth jwt",
            id="public room without jwt",
        ),
        pytest.param(
            ["--auth", "jwt", "--jwt-public-key", "{missing}"],
            "cannot read --jwt-public-key",
            id="no such key file",
        ),
        pytest.param(
            ["--auth", "jwt", "--jwt-public-key", "{garbage}"],
            "is not a PEM public key",
            id="not a PEM",
        ),
    ],
)
def test_jwt_settings_that_cannot_work_stop_the_server_at_start(
    tmp_path: Path, args: list[str], message: str
) -> None:
    pem = rsa_pair().write_public(tmp_path / "k.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    paths = {"{pem}": pem, "{missing}": tmp_path / "nope.pem", "{garbage}": garbage}
    argv = [str(paths.get(arg, arg)) for arg in args]
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--port", "0", "--db",
         str(tmp_path / "chat.sqlite3"), *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "listening on" not in done.stderr
    assert HMAC_SECRET not in done.stderr
