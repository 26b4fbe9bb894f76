"""Every setting and limit of the server, in one frozen value.

Each field that a user may set carries its command-line flag, help text and
group as metadata (`Option`), so an option is declared once: `sse.cli` builds
the parser, the SSECHAT_ environment variables, the keys of the --config file
and the `Config` from these fields.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sse.errors import ConfigError

__all__ = [
    "AUTH_MODES",
    "CLIENT_DIR",
    "GROUPS",
    "MODELS",
    "WS_COMPRESSION",
    "Config",
    "Option",
    "parse_listen",
]

MODELS = ("echo", "openai")
# How many models --model-name may offer: a picker, not a catalogue.
_MAX_MODELS = 32
# Who a request is: a signed guest cookie; that or an account; or a host application's JWT.
AUTH_MODES = ("guest", "accounts", "jwt")
# Rate limits and caps: enforced, not at all, or only logged and counted.
LIMITS_MODES = ("on", "off", "dry-run")
# Signature algorithms a JWT may use, by the kind of key configured; never "none".
JWT_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
JWT_KEY_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
# permessage-deflate (RFC 7692) on WebSockets: not offered; offered without
# server context takeover, so each event is compressed once for every client;
# or with it, so each connection keeps its own compressor (see sse.io.websocket).
WS_COMPRESSION = ("off", "shared", "per-connection")
LOOPS = ("auto", "uvloop", "asyncio")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_PACKAGE_DIR = Path(__file__).resolve().parent
# The browser page: an installed wheel carries it inside the package (pyproject.toml,
# force-include of client/ as sse/client/); a checkout has it beside the package.
_PACKAGED_CLIENT = _PACKAGE_DIR / "client"
CLIENT_DIR = _PACKAGED_CLIENT if _PACKAGED_CLIENT.is_dir() else _PACKAGE_DIR.parent / "client"

# The sections of --help, in order; "" is the parser's own (ungrouped) section.
GROUPS = (
    "listening",
    "several processes and machines",
    "event streams",
    "WebSockets (GET /ws, /conversations/{id}/ws)",
    "request limits",
    "conversations and models",
    "named rooms (GET /rooms, /rooms/{name}/...)",
    "identity and access",
    "limits per client",
    "operations",
    "",
)


@dataclass(frozen=True, slots=True)
class Option:
    """How a `Config` field is set: its flag, and from it its file key and environment variable."""

    flag: str
    help: str
    group: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    # For a bool: the flag turns the setting off (--no-...) instead of on.
    negates: bool = False
    # How the flag's value becomes fields, when it is not just this one field.
    to_fields: Callable[[Any], Mapping[str, object]] | None = None
    # What --help says the default is, when the field's own default would mislead.
    shown_default: str | None = None

    @property
    def key(self) -> str:
        """Its key in a --config file: the flag without dashes (and `no-`, if it negates)."""
        name = self.flag.removeprefix("--")
        return name.removeprefix("no-") if self.negates else name

    @property
    def env_var(self) -> str:
        """Its environment variable: SSECHAT_ and the key, upper-cased, dashes as underscores."""
        return "SSECHAT_" + self.key.upper().replace("-", "_")


def _opt(default: Any, flag: str, help: str, group: str, **more: Any) -> Any:
    """A field with its `Option`; `repr=False` for secrets."""
    secret = more.pop("secret", False)
    return field(
        default=default, metadata={"option": Option(flag, help, group, **more)}, repr=not secret
    )


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9100` for IPv6) as a host and a port.

    Raises:
        ConfigError: it is not such an address.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics_listen must be HOST:PORT (port 0..65535), got {value!r}")
    return host, int(port)


def _db_fields(value: str) -> Mapping[str, object]:
    if value.startswith(_POSTGRES_SCHEMES):
        return {"db_url": value}
    return {"db_path": Path(value)}


_NET = "listening"
_SCALE = "several processes and machines"
_STREAMS = "event streams"
_WS = "WebSockets (GET /ws, /conversations/{id}/ws)"
_LIMITS = "request limits"
_CHAT = "conversations and models"
_ROOMS = "named rooms (GET /rooms, /rooms/{name}/...)"
_AUTH = "identity and access"
_PER_CLIENT = "limits per client"


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one server; defaults are the embedded ones `make run` uses."""

    host: str = _opt("127.0.0.1", "--host", "address to listen on", _NET)
    port: int = _opt(
        3000,
        "--port",
        "TCP port (also from the PORT environment variable; 0 picks a free one)",
        _NET,
    )
    cors_origins: tuple[str, ...] = _opt(
        ("*",),
        "--cors-origin",
        "origin allowed to use the API from another site, e.g. "
        "https://chat.example.com; repeat for several; '*' lets any site use it "
        "without cookies, never with them: only origins named here may send "
        "cookies (and get Access-Control-Allow-Credentials) [default: *]",
        _NET,
        metavar="ORIGIN",
    )
    client_dir: Path = _opt(
        CLIENT_DIR, "--client-dir", "folder with the browser page served at /", _NET
    )
    # redis://... : events fan out through Redis Streams, across processes and machines.
    redis_url: str | None = _opt(
        None,
        "--redis-url",
        "fan events out through Redis Streams, e.g. redis://127.0.0.1:6379/0, so "
        "that every process and machine pointed at the same Redis serves the same "
        "rooms; history and resuming by Last-Event-ID then live in Redis "
        "[default: in this process only]",
        _SCALE,
        secret=True,
    )
    # Processes serving the port together (SO_REUSEPORT); more than one needs Redis.
    workers: int = _opt(
        1,
        "--workers",
        "processes serving the port together (SO_REUSEPORT), each on its own "
        "core, restarted when one dies; more than 1 needs --redis-url",
        _SCALE,
    )
    history_size: int = _opt(
        1000,
        "--history-size",
        "events kept per channel for clients that resume with Last-Event-ID",
        _STREAMS,
    )
    # Wire bytes of the events kept for resuming, per channel and all channels
    # together (with or without listeners), and the most one resume replays.
    history_bytes: int = _opt(
        1024 * 1024,
        "--history-bytes",
        "bytes of events kept per channel (whichever of this and --history-size "
        "is reached first); the oldest go first, and a client resuming from before "
        "them gets a gap event",
        _STREAMS,
    )
    history_total_bytes: int = _opt(
        64 * 1024 * 1024,
        "--history-total-bytes",
        "bytes of events kept in all channels together, listened to or not; past "
        "it, the channel least recently published to gives up its oldest events first",
        _STREAMS,
    )
    max_replay_bytes: int = _opt(
        1024 * 1024,
        "--max-replay-bytes",
        "most bytes of events one resume replays (also from Redis); past it the "
        "client gets a gap event, then the newest events that fit",
        _STREAMS,
    )
    max_channels: int = _opt(
        1000,
        "--max-channels",
        "channels (the room, each conversation) kept in memory with their history; "
        "past it, the least recently used one without listeners is forgotten (its "
        "clients then get a gap event and reload the transcript)",
        _STREAMS,
    )
    max_flush_delay_s: float = _opt(
        0.05,
        "--max-flush-delay",
        "events published together go to each stream in one write; while "
        "broadcasts are costly (many streams), the next one waits up to 4x as long as "
        "the last took, at most this long, so bursts batch (0: never wait). An event "
        "after a quiet spell goes out at once",
        _STREAMS,
        metavar="SECONDS",
    )
    ping_interval_s: float = _opt(
        15.0,
        "--ping-interval",
        "an idle stream gets a comment line this often, so proxies keep it open",
        _STREAMS,
        metavar="SECONDS",
    )
    retry_ms: int = _opt(
        3000,
        "--retry-ms",
        "reconnection delay sent to browsers in the stream's retry: field",
        _STREAMS,
    )
    retry_jitter_ms: int = _opt(
        2000,
        "--retry-jitter-ms",
        "up to this much is added at random to every retry: value, so that a "
        "restart does not make every browser reconnect at the same moment",
        _STREAMS,
    )
    overload_retry_ms: int = _opt(
        10_000,
        "--overload-retry-ms",
        "retry: sent with a stream refused because the server is full",
        _STREAMS,
    )
    backlog_limit_bytes: int = _opt(
        256 * 1024,
        "--backlog-limit-bytes",
        "bytes that may wait unsent for one stream; a client that falls further "
        "behind is disconnected and resumes by Last-Event-ID when it reconnects",
        _STREAMS,
    )
    join_announcement: bool = _opt(
        True,
        "--no-join-announcement",
        "do not broadcast 'A new user joined!' when a stream opens",
        _STREAMS,
        negates=True,
    )
    ws_max_message_bytes: int = _opt(
        64 * 1024,
        "--ws-max-message-bytes",
        "largest message a WebSocket client may send (after decompression); a "
        "larger one closes the connection with code 1009",
        _WS,
    )
    ws_ping_interval_s: float = _opt(
        20.0,
        "--ws-ping-interval",
        "a WebSocket gets a ping this often, so proxies keep it open and dead peers are found",
        _WS,
        metavar="SECONDS",
    )
    ws_ping_timeout_s: float = _opt(
        20.0,
        "--ws-ping-timeout",
        "a WebSocket whose pong (or, when closing, whose Close) does not come "
        "within this long is cut",
        _WS,
        metavar="SECONDS",
    )
    ws_compression: str = _opt(
        "off",
        "--ws-compression",
        "offer permessage-deflate: 'shared' compresses each event once for every "
        "client (no context takeover); 'per-connection' keeps a compressor per client "
        "(smaller frames, more CPU and memory); see README 'SSE or WebSocket?'",
        _WS,
        choices=WS_COMPRESSION,
    )
    max_body_bytes: int = _opt(
        64 * 1024,
        "--max-body-bytes",
        "largest request body accepted; larger ones get 413",
        _LIMITS,
    )
    max_header_bytes: int = _opt(
        16 * 1024,
        "--max-header-bytes",
        "largest request line plus headers; larger ones get 431",
        _LIMITS,
    )
    header_timeout_s: float = _opt(
        10.0,
        "--header-timeout",
        "a connection that has not sent a whole request head this long after "
        "opening (or after its previous reply) is closed; also the keep-alive idle time",
        _LIMITS,
        metavar="SECONDS",
    )
    body_timeout_s: float = _opt(
        30.0,
        "--body-timeout",
        "a request body not received this long after its head gets 408",
        _LIMITS,
        metavar="SECONDS",
    )
    max_connections: int = _opt(
        10_000,
        "--max-connections",
        "open connections; past it a stream gets 200 with a long retry: and is "
        "closed (browsers then retry later), other requests get 503",
        _LIMITS,
    )
    shutdown_timeout_s: float = _opt(
        10.0,
        "--shutdown-timeout",
        "on SIGINT/SIGTERM, how long requests in flight may take before connections are cut",
        _LIMITS,
        metavar="SECONDS",
    )
    db_path: Path = _opt(
        Path("ssechat.sqlite3"),
        "--db",
        "where conversations are kept: a SQLite file (created if missing), or a "
        "PostgreSQL URL, postgresql://user:password@host:5432/dbname, for several "
        "nodes (tables are created on start)",
        _CHAT,
        metavar="DB",
        to_fields=_db_fields,
    )
    # postgresql://... : conversations in PostgreSQL instead of the SQLite file (set by --db).
    db_url: str | None = field(default=None, repr=False, metadata={"set_by": "--db"})
    model: str = _opt(
        "echo",
        "--model",
        "who writes the replies: 'echo' is built in and needs nothing; 'openai' "
        "calls any OpenAI-compatible Chat Completions endpoint (key from OPENAI_API_KEY)",
        _CHAT,
        choices=MODELS,
    )
    model_url: str | None = _opt(
        None,
        "--model-url",
        "base URL of the OpenAI-compatible API, e.g. https://api.openai.com/v1 or "
        "http://127.0.0.1:8000/v1 (vLLM, llama.cpp, Ollama, LiteLLM)",
        _CHAT,
    )
    model_name: str | None = _opt(
        None,
        "--model-name",
        "model to ask for, e.g. gpt-4o-mini; several, comma separated, let each "
        "conversation pick one (the first is the default)",
        _CHAT,
    )
    # From OPENAI_API_KEY only: a key on the command line would show in `ps`.
    model_api_key: str | None = field(default=None, repr=False)
    model_connect_timeout_s: float = _opt(
        10.0,
        "--model-connect-timeout",
        "give up connecting to the model's API after this long",
        _CHAT,
        metavar="SECONDS",
    )
    model_read_timeout_s: float = _opt(
        60.0,
        "--model-read-timeout",
        "give up on a reply when the model sends nothing for this long",
        _CHAT,
        metavar="SECONDS",
    )
    context_messages: int = _opt(
        50,
        "--context-messages",
        "how many of the latest messages of a conversation the model is sent",
        _CHAT,
    )
    max_content_chars: int = _opt(
        32_000,
        "--max-content-chars",
        "longest user message accepted in a conversation; longer ones get 413",
        _CHAT,
    )
    max_rooms: int = _opt(
        1000, "--max-rooms", "rooms that may exist; creating more answers 409", _ROOMS
    )
    room_message_chars: int = _opt(
        4000,
        "--room-message-chars",
        "longest message accepted in a named room; longer ones get 413",
        _ROOMS,
    )
    presence_grace_s: float = _opt(
        10.0,
        "--presence-grace",
        "a person leaves a room this long after their last stream of it closed, so "
        "a reconnect does not show as a leave and a join",
        _ROOMS,
        metavar="SECONDS",
    )
    presence_lease_s: float = _opt(
        30.0,
        "--presence-lease",
        "with --redis-url: how long a node's hold on its people's presence lasts "
        "unless renewed (every third of it); the people of a node that died leave after it",
        _ROOMS,
        metavar="SECONDS",
    )
    rooms_per_min: float = _opt(
        10.0,
        "--rooms-per-minute",
        "rooms each identity may create per minute (POST /rooms, also for an existing name)",
        _PER_CLIENT,
        metavar="N",
    )
    echo_delay_s: float = _opt(
        0.05,
        "--echo-delay",
        "pause of the echo model before each word, to look like a model typing",
        _CHAT,
        metavar="SECONDS",
    )
    echo_max_pieces: int = _opt(
        1000,
        "--echo-max-pieces",
        "the echo model stops with finish reason 'length' after this many words",
        _CHAT,
    )
    loop: str = _opt(
        "auto",
        "--loop",
        "event loop: uvloop is used when installed ('auto'); it writes to sockets "
        "in C, which is most of the work of a broadcast",
        "",
        choices=LOOPS,
    )
    log_level: str = _opt(
        "info",
        "--log-level",
        "logging level; info logs one line per request and per stream opened/closed",
        "",
        choices=LOG_LEVELS,
    )
    log_format: str = _opt(
        "text",
        "--log-format",
        "text lines, or json: one object per line with the request id, route and status",
        "",
        choices=LOG_FORMATS,
    )
    auth: str = _opt(
        "guest",
        "--auth",
        "who a request is: 'guest' gives each browser a signed session cookie; "
        "'accounts' adds sign-up and sign-in with a username and password; 'jwt' "
        "trusts tokens minted by the host application (Authorization: Bearer, or "
        "the ssechat_token cookie)",
        _AUTH,
        choices=AUTH_MODES,
    )
    session_secret: str | None = _opt(
        None,
        "--session-secret",
        "key that signs session cookies and stream tickets (32 characters or more); "
        "every node behind one address must have the same one "
        "[default: generated once, kept in --session-secret-file]",
        _AUTH,
        secret=True,
    )
    session_secret_file: Path | None = _opt(
        None,
        "--session-secret-file",
        "where the generated session key is kept (mode 0600) when --session-secret "
        "is not given [default: beside the SQLite file, <db>.secret; with "
        "PostgreSQL, ssechat.secret in the working directory]",
        _AUTH,
        metavar="FILE",
    )
    public_url: str | None = _opt(
        None,
        "--public-url",
        "the address browsers use, e.g. https://chat.example.com: its origin is "
        "this server's own, and https makes the cookies Secure [default: taken "
        "from each request's Host]",
        _AUTH,
        metavar="URL",
    )
    session_days: float = _opt(
        30.0,
        "--session-days",
        "how long an account's sign-in lasts",
        _AUTH,
        metavar="DAYS",
    )
    jwt_secret: str | None = _opt(
        None,
        "--jwt-secret",
        "verify tokens signed with this shared key (HS256); with --auth jwt",
        _AUTH,
        secret=True,
    )
    jwt_public_key: Path | None = _opt(
        None,
        "--jwt-public-key",
        "verify tokens with this PEM public key (RS256 for RSA, ES256 for EC P-256); "
        "with --auth jwt",
        _AUTH,
        metavar="FILE",
    )
    jwks_url: str | None = _opt(
        None,
        "--jwks-url",
        "verify tokens with the keys published at this JWKS URL (RS256 and ES256); with --auth jwt",
        _AUTH,
        metavar="URL",
    )
    jwt_algorithms: tuple[str, ...] = _opt(
        (),
        "--jwt-algorithm",
        "signature algorithm a token may use; repeat for several; never taken from "
        "the token itself [default: by the key: HS256; RS256 or ES256]",
        _AUTH,
        metavar="ALG",
    )
    jwt_audience: str | None = _opt(
        None, "--jwt-audience", "tokens must carry this 'aud' claim", _AUTH
    )
    jwt_issuer: str | None = _opt(None, "--jwt-issuer", "tokens must carry this 'iss' claim", _AUTH)
    public_room: bool = _opt(
        False,
        "--public-room",
        "with --auth jwt, let anyone use the room (GET /events, POST /send-message) "
        "without a token, as in the other modes",
        _AUTH,
    )
    limits: str = _opt(
        "on",
        "--limits",
        "the per-client limits below: 'on' refuses what is over them; 'off' for "
        "benchmarks and trusted networks; 'dry-run' refuses nothing but logs and "
        "counts what would have been refused",
        _PER_CLIENT,
        choices=LIMITS_MODES,
    )
    trusted_proxies: tuple[str, ...] = _opt(
        (),
        "--trusted-proxy",
        "address or CIDR of a proxy in front (e.g. 10.0.0.0/8); only from these is "
        "X-Forwarded-For / Forwarded believed, and X-Request-Id taken; repeat for "
        "several [default: none, the peer address is the client]",
        _PER_CLIENT,
        metavar="CIDR",
    )
    room_posts_per_s: float = _opt(
        5.0,
        "--room-posts-per-second",
        "room messages each client may post per second, on average",
        _PER_CLIENT,
        metavar="N",
    )
    room_post_burst: int = _opt(
        20, "--room-post-burst", "room messages a client may post at once", _PER_CLIENT
    )
    conversations_per_min: float = _opt(
        30.0,
        "--conversations-per-minute",
        "conversations each identity may create per minute",
        _PER_CLIENT,
        metavar="N",
    )
    replies_per_min: float = _opt(
        10.0,
        "--replies-per-minute",
        "model replies each identity may start per minute",
        _PER_CLIENT,
        metavar="N",
    )
    replies_at_once: int = _opt(
        2,
        "--replies-at-once",
        "model replies one identity may have generating at once",
        _PER_CLIENT,
    )
    streams_per_identity: int = _opt(
        16,
        "--streams-per-identity",
        "event streams and WebSockets one identity may have open at once",
        _PER_CLIENT,
    )
    streams_per_ip: int = _opt(
        512,
        "--streams-per-ip",
        "event streams and WebSockets one IP address may have open at once (an "
        "office behind one NAT is one address)",
        _PER_CLIENT,
    )
    cap_retry_s: float = _opt(
        15.0,
        "--cap-retry",
        "how long a stream refused for a cap that is full (--streams-per-identity, "
        "--streams-per-ip) is told to wait before it reconnects (its `retry:`, jittered), "
        "and a POST over --replies-at-once its Retry-After",
        _PER_CLIENT,
        metavar="SECONDS",
    )
    stream_opens_per_s: float = _opt(
        20.0,
        "--stream-opens-per-second",
        "streams and WebSockets one IP address may open per second, on average "
        "(bursts of ten times as many)",
        _PER_CLIENT,
        metavar="N",
    )
    requests_per_s: float = _opt(
        200.0,
        "--requests-per-second",
        "requests one IP address may make per second, on average (bursts of five times as many)",
        _PER_CLIENT,
        metavar="N",
    )
    guests_per_min: float = _opt(
        60.0,
        "--guests-per-minute",
        "new guest identities one IP address may be given per minute",
        _PER_CLIENT,
        metavar="N",
    )
    model_max_tokens: int = _opt(
        1024,
        "--model-max-tokens",
        "max_tokens asked of the upstream model for one reply (not for the echo model)",
        _PER_CLIENT,
    )
    model_daily_tokens: int = _opt(
        100_000,
        "--model-daily-tokens",
        "completion tokens an account or token holder may use per day (UTC), counted "
        "from the upstream's usage report; 0 for no budget",
        _PER_CLIENT,
    )
    model_guest_daily_tokens: int = _opt(
        10_000,
        "--model-guest-daily-tokens",
        "completion tokens a guest may use per day (UTC); 0 for no budget",
        _PER_CLIENT,
    )
    model_concurrency: int = _opt(
        16,
        "--model-concurrency",
        "upstream model requests this process may have open at once, for everyone together",
        _PER_CLIENT,
    )
    metrics_listen: str | None = _opt(
        None,
        "--metrics-listen",
        "serve Prometheus metrics at GET /metrics on this address, its own listener (keep "
        "it off the public one); with --workers, the sum over all workers",
        "operations",
        metavar="HOST:PORT",
    )
    # Set for each worker of --workers, never by hand.
    reuse_port: bool = False

    def __post_init__(self) -> None:
        """Refuse settings that cannot work.

        Raises:
            ConfigError: a limit is out of range.
        """
        positive = {
            "history_size": self.history_size,
            "history_bytes": self.history_bytes,
            "history_total_bytes": self.history_total_bytes,
            "max_replay_bytes": self.max_replay_bytes,
            "max_channels": self.max_channels,
            "ping_interval_s": self.ping_interval_s,
            "backlog_limit_bytes": self.backlog_limit_bytes,
            "max_body_bytes": self.max_body_bytes,
            "max_header_bytes": self.max_header_bytes,
            "header_timeout_s": self.header_timeout_s,
            "body_timeout_s": self.body_timeout_s,
            "max_connections": self.max_connections,
            "shutdown_timeout_s": self.shutdown_timeout_s,
            "max_content_chars": self.max_content_chars,
            "model_connect_timeout_s": self.model_connect_timeout_s,
            "model_read_timeout_s": self.model_read_timeout_s,
            "context_messages": self.context_messages,
            "echo_max_pieces": self.echo_max_pieces,
            "ws_max_message_bytes": self.ws_max_message_bytes,
            "ws_ping_interval_s": self.ws_ping_interval_s,
            "ws_ping_timeout_s": self.ws_ping_timeout_s,
            "session_days": self.session_days,
            "room_posts_per_s": self.room_posts_per_s,
            "room_post_burst": self.room_post_burst,
            "conversations_per_min": self.conversations_per_min,
            "max_rooms": self.max_rooms,
            "room_message_chars": self.room_message_chars,
            "presence_grace_s": self.presence_grace_s,
            "presence_lease_s": self.presence_lease_s,
            "rooms_per_min": self.rooms_per_min,
            "replies_per_min": self.replies_per_min,
            "replies_at_once": self.replies_at_once,
            "streams_per_identity": self.streams_per_identity,
            "streams_per_ip": self.streams_per_ip,
            "cap_retry_s": self.cap_retry_s,
            "stream_opens_per_s": self.stream_opens_per_s,
            "requests_per_s": self.requests_per_s,
            "guests_per_min": self.guests_per_min,
            "model_max_tokens": self.model_max_tokens,
            "model_concurrency": self.model_concurrency,
        }
        for name, value in positive.items():
            if not value > 0:  # not `<= 0`: NaN (float("nan") from any source) must fail too
                raise ConfigError(f"{name} must be positive, got {value}")
        for name, value in {
            "max_flush_delay_s": self.max_flush_delay_s,
            "retry_ms": self.retry_ms,
            "retry_jitter_ms": self.retry_jitter_ms,
            "overload_retry_ms": self.overload_retry_ms,
            "model_daily_tokens": self.model_daily_tokens,
            "model_guest_daily_tokens": self.model_guest_daily_tokens,
        }.items():
            if not value >= 0:
                raise ConfigError(f"{name} must not be negative, got {value}")
        if self.history_bytes > self.history_total_bytes:
            raise ConfigError(
                f"history_bytes ({self.history_bytes}) must not exceed history_total_bytes "
                f"({self.history_total_bytes}): one channel cannot hold more than all of them"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
        if not self.echo_delay_s >= 0:
            raise ConfigError(f"echo_delay_s must not be negative, got {self.echo_delay_s}")
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.model == "openai" and not (self.model_url and self.model_names):
            raise ConfigError("the openai model needs --model-url and --model-name")
        if len(set(self.model_names)) != len(self.model_names):
            raise ConfigError(f"--model-name names a model twice: {self.model_name}")
        if len(self.model_names) > _MAX_MODELS:
            raise ConfigError(f"--model-name may name at most {_MAX_MODELS} models")
        if self.ws_compression not in WS_COMPRESSION:
            choices = ", ".join(WS_COMPRESSION)
            raise ConfigError(
                f"ws_compression must be one of {choices}, got {self.ws_compression!r}"
            )
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                f"--workers {self.workers} needs --redis-url: each worker is a separate "
                "process, and only Redis carries an event from one to the others"
            )
        if self.db_url is not None and not self.db_url.startswith(_POSTGRES_SCHEMES):
            raise ConfigError(f"db_url must be a postgresql:// URL, got {self.db_url!r}")
        if self.redis_url is not None and not self.redis_url.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                f"redis_url must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
            )
        if not self.cors_origins:
            raise ConfigError("cors_origins must name at least one origin, or '*'")
        self._check_auth()
        if self.limits not in LIMITS_MODES:
            raise ConfigError(
                f"limits must be one of {', '.join(LIMITS_MODES)}, got {self.limits!r}"
            )
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(
                    f"--trusted-proxy {cidr!r} is not an IP address or CIDR block"
                ) from None

    @property
    def model_names(self) -> tuple[str, ...]:
        """The models of --model-name, in order (the first is the default); () if none."""
        if not self.model_name:
            return ()
        return tuple(name.strip() for name in self.model_name.split(",") if name.strip())

    def _check_auth(self) -> None:
        if self.auth not in AUTH_MODES:
            choices = ", ".join(AUTH_MODES)
            raise ConfigError(f"auth must be one of {choices}, got {self.auth!r}")
        if self.session_secret is not None and len(self.session_secret) < 32:
            raise ConfigError("--session-secret must be at least 32 characters long")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"--public-url must be an http:// or https:// URL, got {self.public_url!r}"
            )
        keys = {
            "--jwt-secret": self.jwt_secret,
            "--jwt-public-key": self.jwt_public_key,
            "--jwks-url": self.jwks_url,
        }
        given = [flag for flag, value in keys.items() if value]
        if self.auth != "jwt":
            jwt_only = [*given, *(["--jwt-algorithm"] if self.jwt_algorithms else [])]
            if jwt_only or self.jwt_audience or self.jwt_issuer or self.public_room:
                raise ConfigError("the --jwt-* options and --public-room need --auth jwt")
            return
        if len(given) != 1:
            raise ConfigError(
                "--auth jwt needs exactly one of --jwt-secret, --jwt-public-key or "
                f"--jwks-url (got {', '.join(given) or 'none'})"
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise ConfigError("--jwt-secret must be at least 32 characters long (RFC 7518, 3.2)")
        allowed = JWT_HMAC_ALGORITHMS if self.jwt_secret else JWT_KEY_ALGORITHMS
        for algorithm in self.jwt_algorithms:
            if algorithm not in allowed:
                kind = "a shared secret" if self.jwt_secret else "a public key"
                raise ConfigError(
                    f"--jwt-algorithm {algorithm} cannot be used with {kind}; "
                    f"choose from {', '.join(allowed)}"
                )
