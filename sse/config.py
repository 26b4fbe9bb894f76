"""Every setting and limit of the server, in one frozen value built by `server.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sse.errors import ConfigError

__all__ = ["CLIENT_DIR", "MODELS", "WS_COMPRESSION", "Config"]

MODELS = ("echo", "openai")
# permessage-deflate (RFC 7692) on WebSockets: not offered; offered without
# server context takeover, so each event is compressed once for every client;
# or with it, so each connection keeps its own compressor (see sse.ws).
WS_COMPRESSION = ("off", "shared", "per-connection")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one server; defaults are the embedded ones `make run` uses."""

    host: str = "127.0.0.1"
    port: int = 3000
    cors_origins: tuple[str, ...] = ("*",)
    history_size: int = 1000
    # Wire bytes of the events kept for resuming, per channel and all channels
    # together (with or without listeners), and the most one resume replays.
    history_bytes: int = 1024 * 1024
    history_total_bytes: int = 64 * 1024 * 1024
    max_replay_bytes: int = 1024 * 1024
    max_channels: int = 1000
    ping_interval_s: float = 15.0
    max_flush_delay_s: float = 0.05
    retry_ms: int = 3000
    retry_jitter_ms: int = 2000
    overload_retry_ms: int = 10_000
    backlog_limit_bytes: int = 256 * 1024
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 10_000
    shutdown_timeout_s: float = 10.0
    join_announcement: bool = True
    client_dir: Path = field(default=CLIENT_DIR)
    db_path: Path = Path("ssechat.sqlite3")
    # postgresql://... : conversations in PostgreSQL instead of the SQLite file.
    db_url: str | None = field(default=None, repr=False)
    # redis://... : events fan out through Redis Streams, across processes and machines.
    redis_url: str | None = field(default=None, repr=False)
    # Processes serving the port together (SO_REUSEPORT); more than one needs Redis.
    workers: int = 1
    reuse_port: bool = False
    max_content_chars: int = 32_000
    model: str = "echo"
    model_url: str | None = None
    model_name: str | None = None
    model_api_key: str | None = field(default=None, repr=False)
    model_connect_timeout_s: float = 10.0
    model_read_timeout_s: float = 60.0
    context_messages: int = 50
    echo_delay_s: float = 0.05
    echo_max_pieces: int = 1000
    ws_max_message_bytes: int = 64 * 1024
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    ws_compression: str = "off"

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
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        for name, value in {
            "max_flush_delay_s": self.max_flush_delay_s,
            "retry_ms": self.retry_ms,
            "retry_jitter_ms": self.retry_jitter_ms,
            "overload_retry_ms": self.overload_retry_ms,
        }.items():
            if value < 0:
                raise ConfigError(f"{name} must not be negative, got {value}")
        if self.history_bytes > self.history_total_bytes:
            raise ConfigError(
                f"history_bytes ({self.history_bytes}) must not exceed history_total_bytes "
                f"({self.history_total_bytes}): one channel cannot hold more than all of them"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.echo_delay_s < 0:
            raise ConfigError(f"echo_delay_s must not be negative, got {self.echo_delay_s}")
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.model == "openai" and not (self.model_url and self.model_name):
            raise ConfigError("the openai model needs --model-url and --model-name")
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
