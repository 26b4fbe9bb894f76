"""Every metric `/metrics` exports (prometheus-client), defined once, for every layer to count.

A low layer of its own (just above `sse.config`): the broker, the chat service, the limits,
the app and the I/O edge each count where the thing happens, with one call.

Labels stay bounded: a transport, a reason from a fixed list, a route's pattern, a model's
configured name, a limit's name. Never a user, a room, a conversation or a raw path: each
label value is a time series kept for the life of the process (and, with --workers, in a file).

Multiprocess mode (--workers with --metrics-listen): prometheus-client picks its value
store when it is imported, from PROMETHEUS_MULTIPROC_DIR. The supervisor (`sse.io.workers`)
sets that variable before it starts the workers, which are new programs (exec, not fork):
each imports this module with the variable already set and writes its values to files
there. Gauges say how the workers' values combine: `livesum` (open streams add up),
`livemin` (the broker is up only where every live worker reaches it), `livemax`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

__all__ = [
    "AUTH_FAILURES",
    "BROKER_UP",
    "BUILD_INFO",
    "EVENTS_PUBLISHED",
    "EVENTS_SENT",
    "GENERATIONS",
    "GENERATION_DURATION",
    "GENERATION_FIRST_TOKEN",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "MODEL_TOKENS",
    "PUBLISH_FANOUT",
    "RATE_LIMITED",
    "RATE_LIMIT_WOULD_REFUSE",
    "RESUMES",
    "SENT_BYTES",
    "SSE",
    "STREAMS_CLOSED",
    "STREAMS_OPEN",
    "STREAMS_OPENED",
    "STREAM_LIFETIME",
    "WS",
    "close_reason",
    "generation_ended",
    "http_request",
    "method_label",
    "replayed",
    "sent",
    "stream_closed",
    "stream_opened",
]

# No `_created` series beside each counter and histogram: twice the series for a start
# time that process_start_time_seconds says once.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus-client

# The two transports a stream may use: an event stream (GET .../events) or a WebSocket.
SSE: Final = "sse"
WS: Final = "ws"

# Lifetimes up to a day, with a fine grain around 60 s: a peak there is a proxy that cuts
# idle or long responses after its default timeout (nginx proxy_read_timeout 60s).
_LIFETIME_BUCKETS_S = (1, 5, 15, 30, 50, 59, 61, 90, 120, 300, 600, 1800, 3600, 14400, 43200,
                       86400)  # fmt: skip
_FANOUT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0)  # fmt: skip
_REQUEST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                      2.5, 5.0, 10.0)  # fmt: skip
_MODEL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

STREAMS_OPEN = Gauge(
    "ssechat_streams_open",
    "Streams open now, by transport (sse: GET .../events; ws: WebSockets)",
    ["transport"],
    multiprocess_mode="livesum",
)
STREAMS_OPENED = Counter("ssechat_streams_opened", "Streams opened, by transport", ["transport"])
STREAMS_CLOSED = Counter(
    "ssechat_streams_closed",
    "Streams closed, by transport and reason (client, slow, shutdown, auth, deleted, "
    "timeout, limit, error)",
    ["transport", "reason"],
)
STREAM_LIFETIME = Histogram(
    "ssechat_stream_lifetime_seconds",
    "How long streams stayed open, by transport",
    ["transport"],
    buckets=_LIFETIME_BUCKETS_S,
)
EVENTS_PUBLISHED = Counter(
    "ssechat_events_published",
    "Events this node published, by kind (the event's name; message for unnamed ones)",
    ["kind"],
)
EVENTS_SENT = Counter(
    "ssechat_events_sent",
    "Events handed to streams (one per event per stream), broadcasts and replays, by transport",
    ["transport"],
)
SENT_BYTES = Counter(
    "ssechat_sent_bytes",
    "Bytes of events handed to streams, in the event-stream encoding (before chunk or "
    "WebSocket framing and compression), by transport",
    ["transport"],
)
PUBLISH_FANOUT = Histogram(
    "ssechat_publish_fanout_seconds",
    "How long one broadcast (every pending event to every stream of its channel) took",
    buckets=_FANOUT_BUCKETS_S,
)
RESUMES = Counter(
    "ssechat_resumes",
    "Streams that came back with Last-Event-ID: full (every missed event replayed) or gap",
    ["result"],
)
HTTP_REQUESTS = Counter(
    "ssechat_http_requests",
    "HTTP requests answered, by route pattern, method and status",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "ssechat_http_request_duration_seconds",
    "Time from a request's first byte to its answer (for a stream: to its opening), by route",
    ["route"],
    buckets=_REQUEST_BUCKETS_S,
)
GENERATIONS = Counter(
    "ssechat_generations",
    "Model replies ended, by model and outcome (complete, cancelled, interrupted, error)",
    ["model", "outcome"],
)
GENERATION_FIRST_TOKEN = Histogram(
    "ssechat_generation_first_token_seconds",
    "Time from a reply's start to its first piece of text, by model",
    ["model"],
    buckets=_MODEL_BUCKETS_S,
)
GENERATION_DURATION = Histogram(
    "ssechat_generation_duration_seconds",
    "Time from a reply's start to its end, by model",
    ["model"],
    buckets=_MODEL_BUCKETS_S,
)
MODEL_TOKENS = Counter(
    "ssechat_model_tokens",
    "Completion tokens of replies, by model and kind (reported by the upstream, or "
    "estimated from the text when it reports none)",
    ["model", "kind"],
)
RATE_LIMITED = Counter(
    "ssechat_rate_limited",
    "Actions refused by a limit (--limits on), by the limit's name",
    ["limit"],
)
RATE_LIMIT_WOULD_REFUSE = Counter(
    "ssechat_rate_limit_would_refuse",
    "Actions a limit would have refused (--limits dry-run), by the limit's name",
    ["limit"],
)
AUTH_FAILURES = Counter(
    "ssechat_auth_failures",
    "Requests refused for who they are, by reason (missing, invalid, expired, revoked, "
    "wrong_password)",
    ["reason"],
)
BROKER_UP = Gauge(
    "ssechat_broker_up",
    "1 while the broker carries events (always, in memory; Redis answering); with "
    "--workers the lowest of the live workers",
    multiprocess_mode="livemin",
)
BUILD_INFO = Gauge(
    "ssechat_build_info",
    "Always 1; the version label says which release runs",
    ["version"],
    multiprocess_mode="livemax",
)

# Label children made once: the hot paths need no label lookup.
_OPEN = {t: STREAMS_OPEN.labels(t) for t in (SSE, WS)}
_OPENED = {t: STREAMS_OPENED.labels(t) for t in (SSE, WS)}
_LIFETIME = {t: STREAM_LIFETIME.labels(t) for t in (SSE, WS)}
_SENT = {t: EVENTS_SENT.labels(t) for t in (SSE, WS)}
_BYTES = {t: SENT_BYTES.labels(t) for t in (SSE, WS)}

# Methods a route may answer; anything else a client sends is "other", so a client
# cannot make a new series with each made-up method.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

# The reason label of a closed stream, from the start of the reason the edge logs.
_REASONS = (
    ("client", "client"),
    ("connection lost", "client"),
    ("slow client", "slow"),
    ("server shutting down", "shutdown"),
    ("shutdown", "shutdown"),
    ("auth", "auth"),
    ("reauth", "auth"),
    ("deleted", "deleted"),
    ("no pong", "timeout"),
    ("too many", "limit"),  # a WebSocket over a stream cap, closed (1013) after its 101
)


def close_reason(reason: str) -> str:
    """The bounded label for a stream's free-text close reason; `error` for anything else."""
    for prefix, label in _REASONS:
        if reason.startswith(prefix):
            return label
    return "error"


def method_label(method: str) -> str:
    """`method` if a route could answer it, else `other`."""
    return method if method in _METHODS else "other"


def stream_opened(transport: str) -> None:
    """A stream of `transport` opened."""
    _OPEN[transport].inc()
    _OPENED[transport].inc()


def replayed(transport: str, sizes: Sequence[int], resumed: bool, gap: bool) -> None:
    """A stream of `transport` opens with the events of `sizes` (bytes each) replayed.

    `resumed`: it came with Last-Event-ID; `gap`: not every missed event could follow.
    """
    if sizes:
        _SENT[transport].inc(len(sizes))
        _BYTES[transport].inc(sum(sizes))
    if resumed:
        RESUMES.labels("gap" if gap else "full").inc()


def stream_closed(transport: str, reason: str, lifetime_s: float) -> None:
    """A stream of `transport` that `stream_opened` counted closed after `lifetime_s`."""
    _OPEN[transport].dec()
    STREAMS_CLOSED.labels(transport, close_reason(reason)).inc()
    _LIFETIME[transport].observe(lifetime_s)


def sent(sse_events: int, sse_bytes: int, ws_events: int, ws_bytes: int) -> None:
    """What one broadcast handed to streams: four increments, however many streams."""
    if sse_events:
        _SENT[SSE].inc(sse_events)
        _BYTES[SSE].inc(sse_bytes)
    if ws_events:
        _SENT[WS].inc(ws_events)
        _BYTES[WS].inc(ws_bytes)


# Requests are tallied in plain dicts and handed to prometheus-client in batches
# (`flush_requests`, every second and before each export): one `labels()`, `inc()`
# and `observe()` per request cost about 60,000 instructions, a tenth of what the
# whole POST costs. Bounded as the labels are (route patterns, methods, statuses).
_REQUEST_COUNTS: dict[tuple[str, str, int], int] = {}
_REQUEST_BUCKETS: dict[str, list[int]] = {}  # per route: one count per bucket, +Inf last
_REQUEST_SUMS: dict[str, float] = {}
_PUBLISHED_CHILDREN: dict[str | None, Any] = {}


def http_request(route: str, method: str, status: int, took_s: float) -> None:
    """One answered request, counted when the tallies are next flushed."""
    key = (route, method, status)
    _REQUEST_COUNTS[key] = _REQUEST_COUNTS.get(key, 0) + 1
    buckets = _REQUEST_BUCKETS.get(route)
    if buckets is None:
        buckets = _REQUEST_BUCKETS[route] = [0] * (len(_REQUEST_BUCKETS_S) + 1)
        _REQUEST_SUMS[route] = 0.0
    # The first bound at or above it, as Histogram.observe picks (`amount <= bound`).
    buckets[bisect.bisect_left(_REQUEST_BUCKETS_S, took_s)] += 1
    _REQUEST_SUMS[route] += took_s


def flush_requests() -> None:
    """Hand the request tallies to prometheus-client (in multiprocess mode: to the files)."""
    for (route, method, status), count in _REQUEST_COUNTS.items():
        HTTP_REQUESTS.labels(route, method_label(method), str(status)).inc(count)
    _REQUEST_COUNTS.clear()
    for route, buckets in _REQUEST_BUCKETS.items():
        if not any(buckets):
            continue
        child = HTTP_REQUEST_DURATION.labels(route)
        # A histogram child keeps one value per bucket (cumulated when collected)
        # and the sum: what `observe` adds to, here added to many at once.
        for index, count in enumerate(buckets):
            if count:
                child._buckets[index].inc(count)
                buckets[index] = 0
        child._sum.inc(_REQUEST_SUMS[route])
        _REQUEST_SUMS[route] = 0.0


def event_published(event: str | None) -> None:
    """One event published by this node, by its name (`message` for an unnamed one)."""
    counter = _PUBLISHED_CHILDREN.get(event)
    if counter is None:
        counter = _PUBLISHED_CHILDREN[event] = EVENTS_PUBLISHED.labels(event or "message")
    counter.inc()


def generation_ended(
    model: str, outcome: str, first_token_s: float | None, duration_s: float, tokens: int,
    reported: bool,
) -> None:  # fmt: skip
    """A model reply ended with `outcome` after `duration_s`, having cost `tokens`."""
    GENERATIONS.labels(model, outcome).inc()
    if first_token_s is not None:
        GENERATION_FIRST_TOKEN.labels(model).observe(first_token_s)
    GENERATION_DURATION.labels(model).observe(duration_s)
    if tokens:
        MODEL_TOKENS.labels(model, "completion" if reported else "estimated").inc(tokens)
