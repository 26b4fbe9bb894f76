"""Model budgets and the model's concurrency over real sockets, against a fake upstream.

The fake reports what each reply cost (a usage chunk) or nothing (then the server
estimates); servers run with --limits on and small budgets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.client import DEFAULT as DEFAULT_JAR
from tests.support.client import (
    Connection,
    CookieJar,
    EventStream,
    Response,
    event_data,
    events_until,
    json_object,
    request,
    wait_until,
)
from tests.support.fake_openai import FakeOpenAI, Script
from tests.support.redis_server import RedisServer
from tests.support.servers import MakeServer, ServerProcess

Address = tuple[str, int]
JSON = [("content-type", "application/json")]
# Limits that stay out of the way of these tests: only the budgets and the
# model's concurrency are meant to refuse.
ROOMY = {"replies_per_min": 600.0, "conversations_per_min": 600.0, "replies_at_once": 4}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


async def _paid(make_server: MakeServer, fake: FakeOpenAI, **overrides: Any) -> Address:
    settings: dict[str, Any] = {
        "model": "openai",
        "model_url": fake.url,
        "model_name": "x",
        "limits": "on",
        **ROOMY,
    }
    settings.update(overrides)
    server = await make_server(**settings)
    return server.address


async def _send(
    address: Address,
    method: str,
    target: str,
    payload: object = None,
    jar: CookieJar | None = DEFAULT_JAR,
    local_ip: str | None = None,
) -> Response:
    """One request; from `local_ip` (another client's address) if given."""
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = JSON if body else []
    if local_ip is None:
        return await request(address, method, target, headers, body, jar=jar)
    reader, writer = await asyncio.open_connection(*address, local_addr=(local_ip, 0))
    conn = Connection(reader, writer, jar)
    try:
        return await conn.request(method, target, headers, body)
    finally:
        await conn.close()


async def _conversation(
    address: Address, jar: CookieJar | None = DEFAULT_JAR, local_ip: str | None = None
) -> str:
    created = await _send(address, "POST", "/conversations", jar=jar, local_ip=local_ip)
    assert created.status == 201, created.body
    return str(json_object(created)["id"])


async def _say(
    address: Address,
    cid: str,
    content: str,
    jar: CookieJar | None = DEFAULT_JAR,
    local_ip: str | None = None,
) -> Response:
    target = f"/conversations/{cid}/messages"
    return await _send(address, "POST", target, {"content": content}, jar, local_ip)


async def _reply(
    address: Address, cid: str, content: str, jar: CookieJar | None = DEFAULT_JAR
) -> str:
    """Post `content` and read the reply to its end on a stream of the conversation."""
    stream = await EventStream.open(address, f"/conversations/{cid}/events", jar=jar)
    try:
        assert stream.status == 200
        posted = await _say(address, cid, content, jar)
        assert posted.status == 202, posted.body
        events = await events_until(stream, "done")
        return "".join(event_data(e)["text"] for e in events if e.type == "delta")
    finally:
        await stream.close()


def _assert_refused(response: Response, limit: str) -> dict[str, Any]:
    assert response.status == 429, response.body
    payload = json_object(response)
    assert payload["limit"] == limit
    assert int(response.headers["retry-after"]) >= 1
    assert payload["retry_after"] == int(response.headers["retry-after"])
    return payload


async def _messages(address: Address, cid: str, jar: CookieJar | None = DEFAULT_JAR) -> list[Any]:
    got = await _send(address, "GET", f"/conversations/{cid}", jar=jar)
    assert got.status == 200
    messages = json_object(got)["messages"]
    assert isinstance(messages, list)
    return messages


# A budget reached mid-conversation


async def test_the_budget_runs_out_mid_conversation_and_the_stream_is_told(
    spawn: Callable[..., ServerProcess], fake: FakeOpenAI
) -> None:
    proc = spawn(
        "--model", "openai", "--model-url", fake.url, "--model-name", "x",
        "--limits", "on", "--model-guest-daily-tokens", "30", "--model-max-tokens", "64",
        "--replies-per-minute", "600",
    )  # fmt: skip
    address = proc.address
    fake.script = Script(pieces=["one ", "reply"], usage=20)
    cid = await _conversation(address)
    stream = await EventStream.open(address, f"/conversations/{cid}/events")
    assert stream.status == 200
    for content in ("first", "second"):
        assert (await _say(address, cid, content)).status == 202
        events = await events_until(stream, "done")
        assert [e.type for e in events if e.type in ("delta", "error")] == ["delta", "delta"]
    assert [r.body["max_tokens"] for r in fake.requests] == [64, 64]  # type: ignore[index]  # JSON bodies
    before = await _messages(address, cid)
    assert len(before) == 4

    # 40 tokens spent of 30: the third reply does not start.
    refused = await _say(address, cid, "third")
    payload = _assert_refused(refused, "model_daily_tokens")
    assert "daily limit" in payload["error"]
    event = await stream.next_event(10)
    assert event.type == "error"
    said = event_data(event)
    assert said["message_id"] is None
    assert "daily limit" in said["message"]
    assert "resets at" in said["message"]
    assert len(fake.requests) == 2  # the upstream was never asked
    assert await _messages(address, cid) == before  # nothing stored
    # The person's other conversations are refused the same way.
    other = await _conversation(address)
    _assert_refused(await _say(address, other, "elsewhere"), "model_daily_tokens")
    assert await _messages(address, other) == []
    await stream.close()


async def test_an_account_gets_the_bigger_budget(make_server: MakeServer, fake: FakeOpenAI) -> None:
    address = await _paid(
        make_server, fake, auth="accounts", model_guest_daily_tokens=20, model_daily_tokens=60
    )
    fake.script = Script(pieces=["ok"], usage=20)
    guest = CookieJar()
    guest_cid = await _conversation(address, guest)
    await _reply(address, guest_cid, "hi", guest)
    _assert_refused(await _say(address, guest_cid, "more", guest), "model_daily_tokens")

    signed_up = await _send(
        address, "POST", "/auth/signup", {"username": "ada", "password": "correct horse"}
    )
    assert signed_up.status == 201, signed_up.body
    cid = await _conversation(address)
    for turn in range(3):
        assert await _reply(address, cid, f"turn {turn}") == "ok"
    _assert_refused(await _say(address, cid, "one too many"), "model_daily_tokens")


async def test_without_a_usage_report_the_cost_is_estimated_from_the_text(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    address = await _paid(make_server, fake, model_guest_daily_tokens=10)
    # 200 characters: about 50 tokens, five times the budget; no usage chunk.
    fake.script = Script(pieces=["x" * 50] * 4)
    cid = await _conversation(address)
    assert len(await _reply(address, cid, "long please")) == 200
    _assert_refused(await _say(address, cid, "again"), "model_daily_tokens")
    assert len(fake.requests) == 1


async def test_the_echo_model_is_never_budgeted(make_server: MakeServer) -> None:
    server = await make_server(
        model="echo", limits="on", model_guest_daily_tokens=1, echo_delay_s=0.0, **ROOMY
    )
    cid = await _conversation(server.address)
    for turn in range(6):
        text = await _reply(server.address, cid, f"a long enough message, turn {turn}")
        assert text, turn


# The model's concurrency


async def test_a_busy_model_refuses_another_identity_until_its_reply_ends(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    address = await _paid(make_server, fake, model_concurrency=1)
    release = asyncio.Event()
    fake.script = Script(pieces=["slow", " reply"], hold={1: release}, usage=2)
    first = await _conversation(address)
    stream = await EventStream.open(address, f"/conversations/{first}/events")
    assert (await _say(address, first, "go")).status == 202
    events = await events_until(stream, "delta")
    assert event_data(events[-1])["text"] == "slow"

    other = CookieJar()
    second = await _conversation(address, other)
    busy = await _say(address, second, "me too", other)
    _assert_refused(busy, "model_concurrency")
    assert await _messages(address, second, other) == []

    release.set()
    await events_until(stream, "done")
    await stream.close()
    fake.script = Script(pieces=["now"], usage=1)
    assert await _reply(address, second, "me too", other) == "now"


# Guests on one address


async def test_guests_dropping_their_cookie_share_their_addresss_budget(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    # Each guest may spend 20 a day, every guest of one address together 10 x 20.
    address = await _paid(make_server, fake, model_guest_daily_tokens=20, guests_per_min=600.0)
    fake.script = Script(pieces=["ok"], usage=20)
    for fresh in range(10):
        guest = CookieJar()
        cid = await _conversation(address, guest)
        assert await _reply(address, cid, "hi", guest) == "ok", fresh
        _assert_refused(await _say(address, cid, "more", guest), "model_daily_tokens")

    # The eleventh new guest from 127.0.0.1 finds the address's budget spent.
    eleventh = CookieJar()
    cid = await _conversation(address, eleventh)
    _assert_refused(await _say(address, cid, "hi", eleventh), "model_daily_tokens")
    # A guest at another address still has its own.
    elsewhere = CookieJar()
    cid = await _conversation(address, elsewhere, "127.0.0.2")
    said = await _say(address, cid, "hi", elsewhere, "127.0.0.2")
    assert said.status == 202, said.body
    await wait_until(lambda: len(fake.requests) == 11, 10, "the reply to the other address")


async def test_posts_racing_for_the_last_model_slot_start_one_reply(
    make_server: MakeServer, fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    # With Redis, checking the rate and the budget waits on the network: the
    # model's slot must still be counted once, after those waits.
    address = await _paid(make_server, fake, model_concurrency=1, redis_url=redis_server.url)
    release = asyncio.Event()
    fake.script = Script(pieces=["slow"], hold={0: release}, usage=1)
    people = [CookieJar() for _ in range(4)]
    cids = [await _conversation(address, jar) for jar in people]
    said = await asyncio.gather(
        *(_say(address, cid, "now", jar) for cid, jar in zip(cids, people, strict=True))
    )
    assert sorted(r.status for r in said) == [202, 429, 429, 429]
    for refused in (r for r in said if r.status == 429):
        _assert_refused(refused, "model_concurrency")
    release.set()


async def test_dry_run_lets_a_busy_model_through_and_counts_it(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    address = await _paid(make_server, fake, model_concurrency=1, limits="dry-run")
    release = asyncio.Event()
    fake.script = Script(pieces=["slow"], hold={0: release}, usage=1)
    first = await _conversation(address)
    assert (await _say(address, first, "go")).status == 202
    await wait_until(lambda: len(fake.requests) == 1, 10, "the first reply to start")
    other = CookieJar()
    second = await _conversation(address, other)
    assert (await _say(address, second, "me too", other)).status == 202
    health = json_object(await _send(address, "GET", "/healthz", jar=None))
    assert health["limits"]["would_refuse"] == {"model_concurrency": 1}
    release.set()


async def test_a_refusal_for_a_busy_model_is_counted_in_healthz(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    address = await _paid(make_server, fake, model_concurrency=1)
    release = asyncio.Event()
    fake.script = Script(pieces=["slow"], hold={0: release}, usage=1)
    first = await _conversation(address)
    assert (await _say(address, first, "go")).status == 202
    other = CookieJar()
    second = await _conversation(address, other)
    _assert_refused(await _say(address, second, "me too", other), "model_concurrency")
    health = json_object(await _send(address, "GET", "/healthz", jar=None))
    assert health["limits"]["refused"] == {"model_concurrency": 1}
    release.set()
