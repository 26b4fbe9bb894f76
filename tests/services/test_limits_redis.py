"""Per-client limits shared by several nodes through a real Redis, and Redis going away.

Each node is a `python server.py --redis-url ... --limits on` process with small
limits. Clients are told apart by their loopback source address (127.0.0.2,
127.0.0.3, ...) and by their cookie jar (a jar is one person).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.client import Connection, CookieJar, EventStream, Response, json_object
from tests.support.fake_openai import FakeOpenAI
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess

Spawn = Callable[..., ServerProcess]
Address = tuple[str, int]
JSON = [("content-type", "application/json")]
DOWN = "limits: Redis does not answer"
BACK = "limits: Redis answers again"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


async def _connect(address: Address, source: str, jar: CookieJar | None) -> Connection:
    reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0))
    return Connection(reader, writer, jar)


async def _call(
    address: Address,
    method: str,
    target: str,
    *,
    source: str,
    jar: CookieJar | None = None,
    body: bytes = b"",
) -> Response:
    """One request from `source` (a loopback address), as the person holding `jar`."""
    conn = await _connect(address, source, jar)
    try:
        return await conn.request(method, target, JSON if body else (), body)
    finally:
        await conn.close()


async def _post_room(address: Address, source: str, text: str) -> Response:
    body = json.dumps({"message": text}).encode()
    return await _call(address, "POST", "/send-message", source=source, body=body)


async def _create(address: Address, source: str, jar: CookieJar) -> Response:
    return await _call(address, "POST", "/conversations", source=source, jar=jar)


async def _say(address: Address, cid: str, source: str, jar: CookieJar) -> Response:
    body = json.dumps({"content": "hello"}).encode()
    target = f"/conversations/{cid}/messages"
    return await _call(address, "POST", target, source=source, jar=jar, body=body)


async def _open(address: Address, target: str, source: str, jar: CookieJar) -> EventStream:
    conn = await _connect(address, source, jar)
    await conn.send_request("GET", target, [("accept", "text/event-stream")])
    status, headers = await conn.read_head()
    return EventStream(conn, status, headers)


def _refused(response: Response, limit: str) -> dict[str, object]:
    assert response.status == 429, response.body
    payload = json_object(response)
    assert payload["limit"] == limit, payload
    assert int(response.headers["retry-after"]) >= 1
    return payload


def _is_busy(stream: EventStream) -> bool:
    # A refusal is a whole short body; an open stream is chunked and goes on.
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    return "content-length" in stream.headers


async def _assert_busy(stream: EventStream, limit: str) -> None:
    assert _is_busy(stream), stream.headers
    event = await stream.next_event()
    assert event.type == "busy"
    payload = json.loads(event.data)
    assert payload["limit"] == limit
    assert f"retry: {payload['retry_after_ms']}".encode() in stream.raw
    await stream.wait_ended()
    await stream.close()


async def _open_when_free(
    address: Address, target: str, source: str, jar: CookieJar, timeout: float
) -> EventStream:
    """A stream opened as soon as a slot is free; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        stream = await _open(address, target, source, jar)
        if not _is_busy(stream):
            return stream
        await _assert_busy(stream, "streams")
        if time.monotonic() > deadline:
            raise AssertionError(f"no stream slot came free within {timeout}s")
        await asyncio.sleep(0.2)  # bounded by the deadline; stays far below stream_opens


async def _assert_limit_keys_expire(url: str) -> None:
    """Every key under ssechat:limit: has a TTL: nothing the limits write stays for good."""
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match="ssechat:limit:*")]
        assert keys, "no limit was counted in Redis"
        ttls = {key.decode(): await client.pttl(key) for key in keys}
    finally:
        await client.aclose()
    # -1: a key without a TTL; -2: one gone since the scan (a cap emptied by a release).
    assert all(ttl > 0 or ttl == -2 for ttl in ttls.values()), ttls
    assert any(ttl > 0 for ttl in ttls.values()), ttls


def _node(
    spawn: Spawn, redis: RedisServer, *args: str, env: dict[str, str] | None = None
) -> ServerProcess:
    """A node on `redis` with the limits on (and `args`, the small limits under test)."""
    return spawn(
        "--redis-url", redis.url, "--limits", "on", "--no-join-announcement", *args, env=env
    )


# -- rates shared by two nodes ------------------------------------------------------


async def test_a_room_post_burst_is_spent_once_across_two_nodes_and_other_addresses_keep_theirs(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    small = ("--room-post-burst", "4", "--room-posts-per-second", "0.01")
    a, b = _node(spawn, redis_server, *small), _node(spawn, redis_server, *small)
    for i in range(4):
        node = (a, b)[i % 2]
        response = await _post_room(node.address, "127.0.0.2", f"post {i}")
        assert response.status == 200, response.body
    for node in (a, b, a, b):
        _refused(await _post_room(node.address, "127.0.0.2", "one too many"), "room_posts")
    for node in (b, a):
        assert (await _post_room(node.address, "127.0.0.3", "someone else")).status == 200
    await _assert_limit_keys_expire(redis_server.url)


async def test_conversations_per_identity_are_counted_once_across_two_nodes(
    redis_server: RedisServer, spawn: Spawn, postgres_url: str
) -> None:
    shared = ("--db", postgres_url, "--session-secret", "s" * 40)
    small = ("--conversations-per-minute", "3")
    a = _node(spawn, redis_server, *shared, *small)
    b = _node(spawn, redis_server, *shared, *small)
    person = CookieJar()
    for node in (a, b, a):
        response = await _create(node.address, "127.0.0.2", person)
        assert response.status == 201, response.body
    for node in (b, a):
        _refused(await _create(node.address, "127.0.0.2", person), "conversations")
    # The same person on both nodes: one identity, its three conversations seen from B.
    listed = await _call(b.address, "GET", "/conversations", source="127.0.0.2", jar=person)
    assert listed.status == 200
    assert len(json_object(listed)["conversations"]) == 3, listed.body
    # Someone else, even from the same address (a guest's address allows ten times more).
    other = CookieJar()
    for node in (b, a):
        assert (await _create(node.address, "127.0.0.2", other)).status == 201
    await _assert_limit_keys_expire(redis_server.url)


# -- caps shared by two nodes --------------------------------------------------------


async def _conversation(address: Address, source: str, person: CookieJar) -> str:
    created = await _create(address, source, person)
    assert created.status == 201, created.body
    return f"/conversations/{json_object(created)['id']}/events"


async def test_streams_per_identity_are_one_cap_across_two_nodes_and_a_close_frees_a_slot(
    redis_server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    shared = ("--db", str(tmp_path / "shared.sqlite3"), "--streams-per-identity", "2")
    a, b = _node(spawn, redis_server, *shared), _node(spawn, redis_server, *shared)
    person = CookieJar()
    events = await _conversation(a.address, "127.0.0.2", person)
    on_a = await _open(a.address, events, "127.0.0.2", person)
    on_b = await _open(b.address, events, "127.0.0.2", person)
    assert not _is_busy(on_a)
    assert not _is_busy(on_b)
    for node in (a, b):
        await _assert_busy(await _open(node.address, events, "127.0.0.2", person), "streams")
    # Another person is not counted with this one.
    other = CookieJar()
    theirs = await _open(
        b.address, await _conversation(b.address, "127.0.0.2", other), "127.0.0.2", other
    )
    assert not _is_busy(theirs)
    await on_a.close()
    again = await _open_when_free(b.address, events, "127.0.0.2", person, timeout=10)
    await _assert_busy(await _open(a.address, events, "127.0.0.2", person), "streams")
    for stream in (on_b, again, theirs):
        await stream.close()
    await _assert_limit_keys_expire(redis_server.url)


# A node whose cap leases last 3 s instead of CAP_LEASE_S (60 s), so that a test that kills
# it need not wait a minute. Not an option: no operator needs it, and the CLI rightly refuses
# SSECHAT_ variables that name none. Set before sse.main imports the policy, which reads it.
_SHORT_LEASE = (
    sys.executable,
    "-c",
    "import sys; import sse.limits.redis as r; r.CAP_LEASE_S = 3; "
    "from sse.main import main; sys.exit(main())",
)


@pytest.fixture
def short_lease_node(
    redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Start nodes with 3 s cap leases (killed afterwards), sharing one SQLite file."""
    procs: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        proc = ServerProcess(
            *("--port", "0", "--db", str(tmp_path / "shared.sqlite3")),
            *("--session-secret-file", str(tmp_path / "session.secret")),
            *("--redis-url", redis_server.url, "--limits", "on", "--no-join-announcement"),
            *args,
            command=_SHORT_LEASE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


async def test_a_node_killed_gives_its_stream_slots_back_within_the_lease(
    redis_server: RedisServer, short_lease_node: Callable[..., ServerProcess]
) -> None:
    a = short_lease_node("--streams-per-identity", "2")
    b = short_lease_node("--streams-per-identity", "2")
    person = CookieJar()
    events = await _conversation(a.address, "127.0.0.2", person)
    held = [await _open(a.address, events, "127.0.0.2", person) for _ in range(2)]
    assert not any(_is_busy(stream) for stream in held)
    await _assert_busy(await _open(b.address, events, "127.0.0.2", person), "streams")
    # A renews its leases while it lives: past a whole lease its streams still count.
    await asyncio.sleep(4)  # longer than the lease, to show renewal (not a speed assertion)
    await _assert_busy(await _open(b.address, events, "127.0.0.2", person), "streams")
    a.kill()  # SIGKILL: A gives nothing back itself, its leases lapse
    for stream in held:
        await stream.close()
    first = await _open_when_free(b.address, events, "127.0.0.2", person, timeout=15)
    second = await _open(b.address, events, "127.0.0.2", person)
    assert not _is_busy(second)  # both of A's slots came back
    await _assert_busy(await _open(b.address, events, "127.0.0.2", person), "streams")
    for stream in (first, second):
        await stream.close()
    await _assert_limit_keys_expire(redis_server.url)


# -- Redis going away ----------------------------------------------------------------


async def test_while_redis_is_down_rates_fall_back_to_each_node_and_sharing_resumes_after(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    small = ("--conversations-per-minute", "3")
    a, b = _node(spawn, redis_server, *small), _node(spawn, redis_server, *small)
    # Shared: three in all, across both nodes.
    before = CookieJar()
    for node in (a, b, a):
        assert (await _create(node.address, "127.0.0.2", before)).status == 201
    _refused(await _create(b.address, "127.0.0.2", before), "conversations")

    redis_server.stop()
    during = CookieJar()
    for node in (a, b):  # each node counts on its own: three on each
        for _ in range(3):
            response = await _create(node.address, "127.0.0.3", during)
            assert response.status == 201, response.body
        _refused(await _create(node.address, "127.0.0.3", during), "conversations")
    # Across several retry periods (1 s) of a still absent Redis: refusals go on, one warning.
    await asyncio.sleep(1.5)
    for node in (a, b):
        _refused(await _create(node.address, "127.0.0.3", during), "conversations")
        node.wait_for_log(DOWN)
    await asyncio.sleep(1.5)
    for node in (a, b):
        _refused(await _create(node.address, "127.0.0.3", during), "conversations")
    for node in (a, b):
        assert node.log.count(DOWN) == 1, node.log
        assert BACK not in node.log
        assert (await _limits_report(node))["shared"] is False

    redis_server.start()
    for node in (a, b):
        await _until_logged(node, BACK, "127.0.0.4")
    after = CookieJar()
    for node in (a, b, a):
        assert (await _create(node.address, "127.0.0.5", after)).status == 201
    _refused(await _create(b.address, "127.0.0.5", after), "conversations")
    for node in (a, b):
        assert node.log.count(DOWN) == 1, node.log
        assert node.log.count(BACK) == 1, node.log
        assert (await _limits_report(node))["shared"] is True
    await _assert_limit_keys_expire(redis_server.url)


async def _limits_report(node: ServerProcess) -> dict[str, object]:
    health = json_object(await _call(node.address, "GET", "/healthz", source="127.0.0.9"))
    report = health["limits"]
    assert isinstance(report, dict)
    return report


async def _until_logged(node: ServerProcess, text: str, source: str, timeout: float = 15) -> None:
    """Requests that use the limits (a new guest each) until `node` logs `text`."""
    deadline = time.monotonic() + timeout
    while text not in node.log:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged within {timeout}s:\n{node.log}")
        await _call(node.address, "GET", "/me", source=source, jar=CookieJar())
        await asyncio.sleep(0.2)  # bounded by the deadline; far below the guests limit


async def test_while_redis_is_down_a_budgeted_model_refuses_and_the_echo_model_answers(
    redis_server: RedisServer, spawn: Spawn, fake: FakeOpenAI
) -> None:
    relay = _node(
        spawn,
        redis_server,
        *("--model", "openai", "--model-url", fake.url, "--model-name", "gpt-test"),
        env={"OPENAI_API_KEY": "sk-test"},
    )
    echo = _node(spawn, redis_server)
    person = CookieJar()
    paid = str(json_object(await _create(relay.address, "127.0.0.2", person))["id"])
    free = str(json_object(await _create(echo.address, "127.0.0.2", person))["id"])
    redis_server.stop()
    refused = _refused(await _say(relay.address, paid, "127.0.0.2", person), "model_daily_tokens")
    assert refused["error"] == "the model's budget cannot be checked now"
    assert fake.requests == []  # nothing was asked of (and paid to) the upstream
    # The echo model has no budget: its post passes the limits. With Redis down the
    # broker cannot announce it (the room and conversations publish through Redis): 503.
    answered = await _say(echo.address, free, "127.0.0.2", person)
    assert answered.status == 503, answered.body
    assert "saved but not announced" in json_object(answered)["error"]
    relay.wait_for_log(DOWN)
