"""`/metrics` over real sockets: a `python server.py` child with --metrics-listen.

Each test has a process of its own, so every metric starts at zero and the numbers are exact.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect

from sse.metrics import WS, close_reason, method_label
from sse.protocol.frame import Frame
from sse.pubsub.hub import Hub
from tests.support.client import (
    EventStream,
    events_until,
    json_object,
    post_message,
    request,
    wait_until,
)
from tests.support.jwt_keys import HMAC_SECRET
from tests.support.metrics import Scrape, metrics_address, scrape
from tests.support.servers import ROOT, ServerProcess

JSON = [("content-type", "application/json")]
_LISTEN = ("--metrics-listen", "127.0.0.1:0")

Spawn = Callable[..., ServerProcess]


async def _until(
    where: tuple[str, int], check: Callable[[Scrape], bool], what: str, timeout: float = 5.0
) -> Scrape:
    """Scrape until `check` holds (counts taken after an answer went out may lag a little)."""
    last: list[Scrape] = []

    async def holds() -> bool:
        last[:] = [await scrape(where)]
        return check(last[0])

    await wait_until(holds, timeout, what)
    return last[0]


def _readme_metrics() -> dict[str, set[str]]:
    """Each metric the README's Metrics table names, with the labels it lists."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Metrics") :]
    section = section[: section.index("\n## ")]
    rows = re.findall(r"^\| `(ssechat_[a-z_]+)` \| \w+ \|([^|]*)\|", section, re.MULTILINE)
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


async def test_off_by_default_and_its_own_listener(spawn: Spawn) -> None:
    plain = spawn()
    assert "metrics on" not in plain.log
    response = await request(plain.address, "GET", "/metrics", jar=None)
    assert response.status == 404  # never on the public port
    proc = spawn(*_LISTEN)
    where = metrics_address(proc)
    assert where != proc.address
    assert (await request(where, "GET", "/", jar=None)).status == 404
    assert (await request(where, "POST", "/metrics", jar=None)).status == 405
    head = await request(where, "HEAD", "/metrics", jar=None)
    assert head.status == 200
    assert head.body == b""
    first = await scrape(where)
    assert first.value("ssechat_build_info", version="0.1.0") == 1
    assert first.value("ssechat_broker_up") == 1


async def test_streams_open_close_and_carry_events(spawn: Spawn) -> None:
    proc = spawn(*_LISTEN)
    where = metrics_address(proc)
    stream = await EventStream.open(proc.address, jar=None)
    assert stream.status == 200
    ws = await connect(f"ws://{proc.address[0]}:{proc.address[1]}/ws")
    opened = await _until(
        where, lambda s: s.total("ssechat_streams_open") == 2, "both streams counted open"
    )
    assert opened.value("ssechat_streams_open", transport="sse") == 1
    assert opened.value("ssechat_streams_open", transport="ws") == 1
    assert opened.value("ssechat_streams_opened_total", transport="sse") == 1
    assert opened.value("ssechat_streams_opened_total", transport="ws") == 1

    before = opened.total("ssechat_events_sent_total")
    published = opened.total("ssechat_events_published_total")
    fanouts = opened.value("ssechat_publish_fanout_seconds_count")
    assert (await post_message(proc.address, "hello")).status == 200
    after = await _until(
        where,
        lambda s: s.value("ssechat_events_published_total", kind="message") >= published + 1,
        "the post counted as published",
    )
    # One event to each of two streams: two sent, counted once per broadcast.
    after = await _until(
        where, lambda s: s.total("ssechat_events_sent_total") >= before + 2, "the fan-out"
    )
    assert after.value("ssechat_events_sent_total", transport="sse") >= 1
    assert after.value("ssechat_events_sent_total", transport="ws") >= 1
    assert after.value("ssechat_sent_bytes_total", transport="sse") > 0
    assert after.value("ssechat_sent_bytes_total", transport="ws") > 0
    assert after.value("ssechat_publish_fanout_seconds_count") > fanouts
    assert (
        after.value(
            "ssechat_http_requests_total", route="/send-message", method="POST", status="200"
        )
        == 1
    )
    assert (
        after.value("ssechat_http_requests_total", route="/events", method="GET", status="200") == 1
    )
    assert after.value("ssechat_http_request_duration_seconds_count", route="/send-message") == 1

    await stream.close()
    await ws.close()
    closed = await _until(
        where, lambda s: s.total("ssechat_streams_open") == 0, "both streams counted closed"
    )
    assert closed.value("ssechat_streams_closed_total", transport="sse", reason="client") == 1
    assert closed.value("ssechat_streams_closed_total", transport="ws", reason="client") == 1
    assert closed.value("ssechat_stream_lifetime_seconds_count", transport="sse") == 1
    assert closed.value("ssechat_stream_lifetime_seconds_count", transport="ws") == 1
    # The lifetime buckets reach a day.
    assert ("ssechat_stream_lifetime_seconds_bucket", frozenset(
        {("transport", "sse"), ("le", "86400.0")}
    )) in closed.samples  # fmt: skip


async def test_resumes_count_full_and_gap(spawn: Spawn) -> None:
    proc = spawn(*_LISTEN)
    where = metrics_address(proc)
    first = await EventStream.open(proc.address, jar=None)
    assert (await post_message(proc.address, "one")).status == 200
    event = next(e for e in await first.events(2) if e.data == "one")
    await first.close()
    again = await EventStream.open(
        proc.address, headers=[("last-event-id", event.last_event_id)], jar=None
    )
    lost = await EventStream.open(proc.address, headers=[("last-event-id", "999-1")], jar=None)
    counted = await _until(
        where, lambda s: s.total("ssechat_resumes_total") == 2, "both resumes counted"
    )
    assert counted.value("ssechat_resumes_total", result="full") == 1
    assert counted.value("ssechat_resumes_total", result="gap") == 1
    await again.close()
    await lost.close()


async def test_a_conversation_reply_counts_a_generation(spawn: Spawn) -> None:
    proc = spawn(*_LISTEN)
    where = metrics_address(proc)
    created = await request(proc.address, "POST", "/conversations")
    assert created.status == 201
    cid = json_object(created)["id"]
    stream = await EventStream.open(proc.address, f"/conversations/{cid}/events")
    body = json.dumps({"content": "hello there"}).encode()
    posted = await request(proc.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    assert posted.status == 202
    await events_until(stream, "done")
    done = await _until(
        where,
        lambda s: s.value("ssechat_generations_total", model="echo", outcome="complete") == 1,
        "the reply counted",
    )
    assert done.value("ssechat_generation_first_token_seconds_count", model="echo") == 1
    assert done.value("ssechat_generation_duration_seconds_count", model="echo") == 1
    assert done.value("ssechat_model_tokens_total", model="echo", kind="estimated") > 0
    assert done.value("ssechat_events_published_total", kind="start") == 1
    assert done.value("ssechat_events_published_total", kind="done") == 1
    assert done.value("ssechat_events_published_total", kind="delta") >= 1
    # Routes are their patterns, never the conversation's id.
    assert (
        done.value(
            "ssechat_http_requests_total",
            route="/conversations/{id}/messages",
            method="POST",
            status="202",
        )
        == 1
    )
    assert not any(cid in str(labels) for _, labels in done.samples)
    await stream.close()


async def test_a_refusal_counts_its_limit(spawn: Spawn) -> None:
    proc = spawn(
        *_LISTEN, "--limits", "on", "--room-post-burst", "1", "--room-posts-per-second", "0.01"
    )
    where = metrics_address(proc)
    assert (await post_message(proc.address, "one")).status == 200
    refused = await post_message(proc.address, "two")
    assert refused.status == 429
    counted = await _until(
        where, lambda s: s.value("ssechat_rate_limited_total", limit="room_posts") == 1, "refusal"
    )
    assert (
        counted.value(
            "ssechat_http_requests_total", route="/send-message", method="POST", status="429"
        )
        == 1
    )
    assert counted.value("ssechat_rate_limit_would_refuse_total", limit="room_posts") == 0


async def test_dry_run_counts_what_it_would_refuse(spawn: Spawn) -> None:
    proc = spawn(
        *_LISTEN, "--limits", "dry-run", "--room-post-burst", "1", "--room-posts-per-second", "0.01"
    )
    where = metrics_address(proc)
    for text in ("one", "two"):
        assert (await post_message(proc.address, text)).status == 200
    counted = await _until(
        where,
        lambda s: s.value("ssechat_rate_limit_would_refuse_total", limit="room_posts") == 1,
        "the dry-run count",
    )
    assert counted.value("ssechat_rate_limited_total", limit="room_posts") == 0


async def test_auth_failures_count_their_reason(spawn: Spawn) -> None:
    proc = spawn(*_LISTEN, "--auth", "jwt", "--jwt-secret", HMAC_SECRET)
    where = metrics_address(proc)
    bad = await request(proc.address, "GET", "/me", [("authorization", "Bearer not.a.token")])
    assert bad.status == 401
    missing = await request(proc.address, "GET", "/me", jar=None)
    assert missing.status == 401
    counted = await _until(
        where,
        lambda s: (
            s.value("ssechat_auth_failures_total", reason="invalid") == 1
            and s.value("ssechat_auth_failures_total", reason="missing") == 1
        ),
        "both failures",
    )
    assert (
        counted.value("ssechat_http_requests_total", route="/me", method="GET", status="401") == 2
    )


async def test_a_wrong_password_counts(spawn: Spawn) -> None:
    proc = spawn(*_LISTEN, "--auth", "accounts")
    where = metrics_address(proc)
    body = json.dumps({"username": "nobody", "password": "not-the-password"}).encode()
    refused = await request(proc.address, "POST", "/auth/login", JSON, body)
    assert refused.status == 401
    await _until(
        where,
        lambda s: s.value("ssechat_auth_failures_total", reason="wrong_password") == 1,
        "the refused sign-in",
    )


async def test_every_metric_the_readme_names_is_exported_and_the_reverse(spawn: Spawn) -> None:
    proc = spawn(*_LISTEN)
    where = metrics_address(proc)
    # Some activity, so the labelled families have samples whose labels can be compared.
    stream = await EventStream.open(proc.address, jar=None)
    assert (await post_message(proc.address, "hi")).status == 200
    await stream.close()
    exported = await scrape(where)
    ours = {name: kind for name, kind in exported.types.items() if name.startswith("ssechat_")}
    readme = _readme_metrics()
    assert set(readme) == set(ours), (
        f"in the README only: {sorted(set(readme) - set(ours))}; "
        f"exported only: {sorted(set(ours) - set(readme))}"
    )
    for name, labels in readme.items():
        if exported.labels[name] is not None:  # a family with samples: these labels
            assert exported.labels[name] == labels, name


# -- pure: what a broadcast counts, and the bounded reason labels ----------------------


class _Sink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def push(self, frame: Frame) -> None:
        self.frames.append(frame)


class _SocketSink(_Sink):
    metric_transport = WS


def test_a_broadcast_counts_events_and_bytes_per_transport_once() -> None:
    flushes: list[Callable[[], int]] = []
    hub = Hub(history_size=10, epoch="1", schedule=flushes.append)
    stream, other, sock = _Sink(), _Sink(), _SocketSink()
    leaving = uuid.uuid4()
    hub.subscribe("room", leaving, stream)
    hub.subscribe("room", uuid.uuid4(), other)
    hub.subscribe("room", uuid.uuid4(), sock)
    one = hub.publish("room", "one")
    late = _Sink()
    hub.subscribe("room", uuid.uuid4(), late)  # joins the pending batch: gets only its tail
    two = hub.publish("room", "two")
    assert flushes[0]() == 2
    size = len(one.raw) + len(two.raw)
    assert [len(s.frames) for s in (stream, other, sock, late)] == [1, 1, 1, 1]
    assert hub.take_sent() == (2 * 2 + 1, 2 * size + len(two.raw), 2, size)
    assert hub.take_sent() == (0, 0, 0, 0)
    hub.unsubscribe("room", leaving)
    three = hub.publish("room", "three")
    assert flushes[1]() == 1
    assert hub.take_sent() == (2, 2 * len(three.raw), 1, len(three.raw))


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("client closed", "client"),
        ("client closed: bye", "client"),
        ("connection lost", "client"),
        ("client sent data on an open stream", "client"),
        ("slow client: backlog over the limit", "slow"),
        ("server shutting down", "shutdown"),
        ("shutdown timeout", "shutdown"),
        ("auth", "auth"),
        ("reauth: the token has expired", "auth"),
        ("deleted: {}", "deleted"),
        ("no pong within the ping timeout", "timeout"),
        ("too many streams open from this address", "limit"),
        ("failed to open", "error"),
        ("message over the limit of 65536 bytes once inflated", "error"),
        ("anything a peer could write\r\n", "error"),
    ],
)
def test_close_reasons_become_a_few_labels(reason: str, label: str) -> None:
    assert close_reason(reason) == label


def test_methods_nobody_routes_are_one_label() -> None:
    assert [method_label(m) for m in ("GET", "POST", "BREW", "-")] == [
        "GET",
        "POST",
        "other",
        "other",
    ]
