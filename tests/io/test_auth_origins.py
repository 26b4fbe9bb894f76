"""Origins over real sockets: cookie writes from strangers refused, CORS headers, the page's CSP.

The test client sends `Host: 127.0.0.1` (no port), so this server's own origin,
as the browser would name it for that Host, is `http://127.0.0.1`. The
`websockets` client sends the port in Host, so there it is `http://127.0.0.1:<port>`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from sse.io.server import Server
from tests.support.client import Response, default_jar, json_object, request
from tests.support.servers import MakeServer

Address = tuple[str, int]
JSON = [("content-type", "application/json")]
EVIL = "https://evil.example"
APP = "https://app.example"
OWN = "http://127.0.0.1"  # matches the Host the test client sends


async def _listed(address: Address, **kw: Any) -> list[dict[str, Any]]:
    response = await request(address, "GET", "/conversations", **kw)
    assert response.status == 200, response.body
    listing = json_object(response)["conversations"]
    assert isinstance(listing, list)
    return listing


async def _create(address: Address, origin: str | None = None, **kw: Any) -> Response:
    headers = [] if origin is None else [("origin", origin)]
    return await request(address, "POST", "/conversations", headers, **kw)


async def _with_a_cookie(address: Address) -> str:
    """Become a guest with one conversation; its id."""
    made = await _create(address)
    assert made.status == 201
    assert "ssechat_session" in default_jar(address).cookies
    return str(json_object(made)["id"])


def _refusal(origin: str) -> dict[str, str]:
    return {"error": f"origin {origin!r} may not send this site's cookies; nothing was changed"}


async def test_a_strangers_page_cannot_create_with_our_cookie(server: Server) -> None:
    address = server.address
    await _with_a_cookie(address)
    before = await _listed(address)
    response = await _create(address, EVIL)
    assert response.status == 403
    assert json_object(response) == _refusal(EVIL)
    assert "set-cookie" not in response.headers
    assert await _listed(address) == before


@pytest.mark.parametrize("origin", [OWN, "https://127.0.0.1", None])
async def test_our_own_origin_or_none_may_write_with_the_cookie(
    server: Server, origin: str | None
) -> None:
    address = server.address
    first = await _with_a_cookie(address)
    response = await _create(address, origin)
    assert response.status == 201
    assert [c["id"] for c in await _listed(address)] == [str(json_object(response)["id"]), first]


async def test_an_origin_on_another_port_is_a_stranger(server: Server) -> None:
    address = server.address
    await _with_a_cookie(address)
    other = f"http://127.0.0.1:{address[1] + 1}"
    response = await _create(address, other)
    assert response.status == 403
    assert json_object(response) == _refusal(other)


async def test_a_named_origin_may_write_with_the_cookie(make_server: MakeServer) -> None:
    server = await make_server(cors_origins=(APP,))
    address = server.address
    await _with_a_cookie(address)
    response = await _create(address, APP)
    assert response.status == 201
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    evil = await _create(address, EVIL)
    assert evil.status == 403
    assert len(await _listed(address)) == 2


async def test_the_public_url_is_our_origin_and_host_no_longer_is(
    make_server: MakeServer,
) -> None:
    server = await make_server(public_url="http://chat.example:8080/path")
    address = server.address
    await _with_a_cookie(address)
    assert (await _create(address, "http://chat.example:8080")).status == 201
    assert (await _create(address, OWN)).status == 403


async def test_without_a_cookie_any_origin_may_create_as_a_new_guest(server: Server) -> None:
    address = server.address
    mine = await _with_a_cookie(address)
    response = await _create(address, EVIL, jar=None)
    assert response.status == 201
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["set-cookie"].startswith("ssechat_session=")
    # A new guest's: not the cookie holder's.
    assert [c["id"] for c in await _listed(address)] == [mine]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_rename_and_delete_from_a_stranger_change_nothing(
    server: Server, method: str
) -> None:
    address = server.address
    cid = await _with_a_cookie(address)
    before = await _listed(address)
    body = json.dumps({"title": "pwned"}).encode() if method == "PATCH" else b""
    headers = [("origin", EVIL), *(JSON if body else [])]
    response = await request(address, method, f"/conversations/{cid}", headers, body)
    assert response.status == 403
    assert json_object(response) == _refusal(EVIL)
    assert await _listed(address) == before
    # The same from our own page works.
    own = await request(
        address, method, f"/conversations/{cid}", [("origin", OWN), *headers[1:]], body
    )
    assert own.status == (200 if method == "PATCH" else 204)


async def test_messages_and_me_from_a_stranger_are_refused(server: Server) -> None:
    address = server.address
    cid = await _with_a_cookie(address)
    me = json_object(await request(address, "GET", "/me"))
    post = await request(
        address,
        "POST",
        f"/conversations/{cid}/messages",
        [("origin", EVIL), *JSON],
        json.dumps({"content": "hi"}).encode(),
    )
    assert post.status == 403
    rename = await request(
        address, "PATCH", "/me", [("origin", EVIL), *JSON], json.dumps({"name": "X"}).encode()
    )
    assert rename.status == 403
    transcript = json_object(await request(address, "GET", f"/conversations/{cid}"))
    assert transcript["messages"] == []
    assert json_object(await request(address, "GET", "/me")) == me


def _ws_url(address: Address, path: str) -> str:
    return f"ws://{address[0]}:{address[1]}{path}"


async def test_a_websocket_with_our_cookie_from_a_stranger_is_403(server: Server) -> None:
    address = server.address
    cid = await _with_a_cookie(address)
    cookie = default_jar(address).header()
    assert cookie is not None
    url = _ws_url(address, f"/conversations/{cid}/ws")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin(EVIL), additional_headers=[("cookie", cookie)]):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body or b"") == {
        "error": f"origin {EVIL!r} may not use this site's cookies"
    }
    own = Origin(f"http://127.0.0.1:{address[1]}")
    async with connect(url, origin=own, additional_headers=[("cookie", cookie)]) as ws:
        assert ws.response is not None
        assert ws.response.status_code == 101


# -- CORS -------------------------------------------------------------------------------


async def test_the_default_star_never_allows_credentials(server: Server) -> None:
    response = await request(server.address, "GET", "/conversations", [("origin", EVIL)])
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    plain = await request(server.address, "GET", "/conversations")
    assert "access-control-allow-origin" not in plain.headers


async def test_a_named_origin_is_echoed_with_credentials(make_server: MakeServer) -> None:
    server = await make_server(cors_origins=(APP,))
    response = await request(server.address, "GET", "/me", [("origin", APP)])
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"
    stranger = await request(server.address, "GET", "/me", [("origin", EVIL)])
    assert "access-control-allow-origin" not in stranger.headers
    assert "access-control-allow-credentials" not in stranger.headers
    assert stranger.headers["vary"] == "Origin"


async def test_preflight_with_star_and_with_a_named_origin(make_server: MakeServer) -> None:
    asked = [
        ("access-control-request-method", "PATCH"),
        ("access-control-request-headers", "content-type"),
    ]
    star = await make_server()
    response = await request(
        star.address, "OPTIONS", "/conversations/x", [("origin", EVIL), *asked], jar=None
    )
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["access-control-allow-methods"] == "GET, PATCH, DELETE, HEAD, OPTIONS"
    assert response.headers["access-control-allow-headers"] == "content-type"
    named = await make_server(cors_origins=(APP,))
    response = await request(
        named.address, "OPTIONS", "/conversations/x", [("origin", APP), *asked], jar=None
    )
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"
    refused = await request(
        named.address, "OPTIONS", "/conversations/x", [("origin", EVIL), *asked], jar=None
    )
    assert "access-control-allow-origin" not in refused.headers


# -- the page's headers -----------------------------------------------------------------


def _policy(response: Response) -> dict[str, str]:
    parts = [
        p.strip().split(" ", 1) for p in response.headers["content-security-policy"].split(";")
    ]
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


async def test_the_page_has_a_strict_csp(make_server: MakeServer) -> None:
    server = await make_server()
    page = await request(server.address, "GET", "/")
    assert page.status == 200
    policy = _policy(page)
    assert policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["x-frame-options"] == "DENY"


async def test_a_named_origin_may_be_connected_to_from_the_page(make_server: MakeServer) -> None:
    server = await make_server(cors_origins=(APP,))
    policy = _policy(await request(server.address, "GET", "/"))
    assert policy["connect-src"] == f"'self' {APP}"


async def test_json_replies_are_nosniff(server: Server) -> None:
    for target in ("/me", "/conversations", "/nowhere"):
        response = await request(server.address, "GET", target)
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["x-content-type-options"] == "nosniff"
