"""ssechat: start the Server-Sent Events chat server.

Builds a `Config` from the command line and runs the server until SIGINT or
SIGTERM, then shuts down gracefully and exits 0. With `--workers N` it
supervises N such servers sharing the port instead (`sse.workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from sse.config import CLIENT_DIR, MODELS, WS_COMPRESSION, Config
from sse.errors import ConfigError, StartError
from sse.http import Server
from sse.workers import Lifeline, WorkerSlot, supervise, worker_slot_from_env

log = logging.getLogger("ssechat")

_DEFAULTS = Config()
# Descriptors the process keeps for itself (listener, logs, the loop's own).
_RESERVED_FDS = 64


def _port_default() -> int:
    value = os.environ.get("PORT", "")
    return int(value) if value.isdigit() else _DEFAULTS.port


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the None of flags whose help says what their absence means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command line; every limit of `Config` has a flag."""
    d = _DEFAULTS
    p = argparse.ArgumentParser(
        prog="server.py",
        description=(
            "ssechat: a real-time chat server that pushes to browsers over Server-Sent "
            "Events. GET /events opens a stream; POST /send-message with "
            '{"message": "..."} broadcasts to every stream; /conversations/... holds '
            "chats with an assistant whose replies stream token by token; GET / serves "
            "the page."
        ),
        formatter_class=_HelpFormatter,
    )
    net = p.add_argument_group("listening")
    net.add_argument("--host", default=d.host, help="address to listen on")
    net.add_argument(
        "--port",
        type=int,
        default=_port_default(),
        help="TCP port (also from the PORT environment variable; 0 picks a free one)",
    )
    net.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="origin allowed to read responses from another site, e.g. "
        "https://chat.example.com; repeat for several; '*' allows any "
        "(the endpoints carry no credentials) [default: *]",
    )
    net.add_argument(
        "--client-dir",
        type=Path,
        default=CLIENT_DIR,
        help="folder with the browser page served at /",
    )

    scale = p.add_argument_group("several processes and machines")
    scale.add_argument(
        "--redis-url",
        help="fan events out through Redis Streams, e.g. redis://127.0.0.1:6379/0, so "
        "that every process and machine pointed at the same Redis serves the same "
        "rooms; history and resuming by Last-Event-ID then live in Redis "
        "[default: in this process only]",
    )
    scale.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help="processes serving the port together (SO_REUSEPORT), each on its own "
        "core, restarted when one dies; more than 1 needs --redis-url",
    )

    streams = p.add_argument_group("event streams")
    streams.add_argument(
        "--history-size",
        type=int,
        default=d.history_size,
        help="events kept per channel for clients that resume with Last-Event-ID",
    )
    streams.add_argument(
        "--history-bytes",
        type=int,
        default=d.history_bytes,
        help="bytes of events kept per channel (whichever of this and --history-size "
        "is reached first); the oldest go first, and a client resuming from before "
        "them gets a gap event",
    )
    streams.add_argument(
        "--history-total-bytes",
        type=int,
        default=d.history_total_bytes,
        help="bytes of events kept in all channels together, listened to or not; past "
        "it, the channel least recently published to gives up its oldest events first",
    )
    streams.add_argument(
        "--max-replay-bytes",
        type=int,
        default=d.max_replay_bytes,
        help="most bytes of events one resume replays (also from Redis); past it the "
        "client gets a gap event, then the newest events that fit",
    )
    streams.add_argument(
        "--max-channels",
        type=int,
        default=d.max_channels,
        help="channels (the room, each conversation) kept in memory with their history; "
        "past it, the least recently used one without listeners is forgotten (its "
        "clients then get a gap event and reload the transcript)",
    )
    streams.add_argument(
        "--max-flush-delay",
        type=float,
        default=d.max_flush_delay_s,
        metavar="SECONDS",
        help="events published together go to each stream in one write; while "
        "broadcasts are costly (many streams), the next one waits up to 4x as long as "
        "the last took, at most this long, so bursts batch (0: never wait). An event "
        "after a quiet spell goes out at once",
    )
    streams.add_argument(
        "--ping-interval",
        type=float,
        default=d.ping_interval_s,
        metavar="SECONDS",
        help="an idle stream gets a comment line this often, so proxies keep it open",
    )
    streams.add_argument(
        "--retry-ms",
        type=int,
        default=d.retry_ms,
        help="reconnection delay sent to browsers in the stream's retry: field",
    )
    streams.add_argument(
        "--retry-jitter-ms",
        type=int,
        default=d.retry_jitter_ms,
        help="up to this much is added at random to every retry: value, so that a "
        "restart does not make every browser reconnect at the same moment",
    )
    streams.add_argument(
        "--overload-retry-ms",
        type=int,
        default=d.overload_retry_ms,
        help="retry: sent with a stream refused because the server is full",
    )
    streams.add_argument(
        "--backlog-limit-bytes",
        type=int,
        default=d.backlog_limit_bytes,
        help="bytes that may wait unsent for one stream; a client that falls further "
        "behind is disconnected and resumes by Last-Event-ID when it reconnects",
    )
    streams.add_argument(
        "--no-join-announcement",
        dest="join_announcement",
        action="store_false",
        help="do not broadcast 'A new user joined!' when a stream opens",
    )

    ws = p.add_argument_group("WebSockets (GET /ws, /conversations/{id}/ws)")
    ws.add_argument(
        "--ws-max-message-bytes",
        type=int,
        default=d.ws_max_message_bytes,
        help="largest message a WebSocket client may send (after decompression); a "
        "larger one closes the connection with code 1009",
    )
    ws.add_argument(
        "--ws-ping-interval",
        type=float,
        default=d.ws_ping_interval_s,
        metavar="SECONDS",
        help="a WebSocket gets a ping this often, so proxies keep it open and dead peers are found",
    )
    ws.add_argument(
        "--ws-ping-timeout",
        type=float,
        default=d.ws_ping_timeout_s,
        metavar="SECONDS",
        help="a WebSocket whose pong (or, when closing, whose Close) does not come "
        "within this long is cut",
    )
    ws.add_argument(
        "--ws-compression",
        choices=WS_COMPRESSION,
        default=d.ws_compression,
        help="offer permessage-deflate: 'shared' compresses each event once for every "
        "client (no context takeover); 'per-connection' keeps a compressor per client "
        "(smaller frames, more CPU and memory); see README 'SSE or WebSocket?'",
    )

    limits = p.add_argument_group("request limits")
    limits.add_argument(
        "--max-body-bytes",
        type=int,
        default=d.max_body_bytes,
        help="largest request body accepted; larger ones get 413",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=int,
        default=d.max_header_bytes,
        help="largest request line plus headers; larger ones get 431",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=d.header_timeout_s,
        metavar="SECONDS",
        help="a connection that has not sent a whole request head this long after "
        "opening (or after its previous reply) is closed; also the keep-alive idle time",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout_s,
        metavar="SECONDS",
        help="a request body not received this long after its head gets 408",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="open connections; past it a stream gets 200 with a long retry: and is "
        "closed (browsers then retry later), other requests get 503",
    )
    limits.add_argument(
        "--shutdown-timeout",
        type=float,
        default=d.shutdown_timeout_s,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long requests in flight may take before connections are cut",
    )

    chat = p.add_argument_group("conversations and models")
    chat.add_argument(
        "--db",
        default=str(d.db_path),
        help="where conversations are kept: a SQLite file (created if missing), or a "
        "PostgreSQL URL, postgresql://user:password@host:5432/dbname, for several "
        "nodes (tables are created on start)",
    )
    chat.add_argument(
        "--model",
        choices=MODELS,
        default=d.model,
        help="who writes the replies: 'echo' is built in and needs nothing; 'openai' "
        "calls any OpenAI-compatible Chat Completions endpoint (key from OPENAI_API_KEY)",
    )
    chat.add_argument(
        "--model-url",
        help="base URL of the OpenAI-compatible API, e.g. https://api.openai.com/v1 or "
        "http://127.0.0.1:8000/v1 (vLLM, llama.cpp, Ollama, LiteLLM)",
    )
    chat.add_argument("--model-name", help="model to ask for, e.g. gpt-4o-mini")
    chat.add_argument(
        "--model-connect-timeout",
        type=float,
        default=d.model_connect_timeout_s,
        metavar="SECONDS",
        help="give up connecting to the model's API after this long",
    )
    chat.add_argument(
        "--model-read-timeout",
        type=float,
        default=d.model_read_timeout_s,
        metavar="SECONDS",
        help="give up on a reply when the model sends nothing for this long",
    )
    chat.add_argument(
        "--context-messages",
        type=int,
        default=d.context_messages,
        help="how many of the latest messages of a conversation the model is sent",
    )
    chat.add_argument(
        "--max-content-chars",
        type=int,
        default=d.max_content_chars,
        help="longest user message accepted in a conversation; longer ones get 413",
    )
    chat.add_argument(
        "--echo-delay",
        type=float,
        default=d.echo_delay_s,
        metavar="SECONDS",
        help="pause of the echo model before each word, to look like a model typing",
    )
    chat.add_argument(
        "--echo-max-pieces",
        type=int,
        default=d.echo_max_pieces,
        help="the echo model stops with finish reason 'length' after this many words",
    )

    p.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop: uvloop is used when installed ('auto'); it writes to sockets "
        "in C, which is most of the work of a broadcast",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level; info logs one line per request and per stream opened/closed",
    )
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """The `Config` the parsed command line describes.

    Raises:
        ConfigError: a value is out of range.
    """
    origins = tuple(o for arg in (args.cors_origins or ["*"]) for o in arg.split(",") if o)
    return Config(
        host=args.host,
        port=args.port,
        cors_origins=origins,
        history_size=args.history_size,
        history_bytes=args.history_bytes,
        history_total_bytes=args.history_total_bytes,
        max_replay_bytes=args.max_replay_bytes,
        max_channels=args.max_channels,
        ping_interval_s=args.ping_interval,
        max_flush_delay_s=args.max_flush_delay,
        retry_ms=args.retry_ms,
        retry_jitter_ms=args.retry_jitter_ms,
        overload_retry_ms=args.overload_retry_ms,
        backlog_limit_bytes=args.backlog_limit_bytes,
        max_body_bytes=args.max_body_bytes,
        max_header_bytes=args.max_header_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        shutdown_timeout_s=args.shutdown_timeout,
        join_announcement=args.join_announcement,
        client_dir=args.client_dir,
        db_path=Path(args.db) if not _is_postgres(args.db) else _DEFAULTS.db_path,
        db_url=args.db if _is_postgres(args.db) else None,
        redis_url=args.redis_url,
        workers=args.workers,
        model=args.model,
        model_url=args.model_url,
        model_name=args.model_name,
        model_api_key=os.environ.get("OPENAI_API_KEY") or None,
        model_connect_timeout_s=args.model_connect_timeout,
        model_read_timeout_s=args.model_read_timeout,
        context_messages=args.context_messages,
        max_content_chars=args.max_content_chars,
        echo_delay_s=args.echo_delay,
        echo_max_pieces=args.echo_max_pieces,
        ws_max_message_bytes=args.ws_max_message_bytes,
        ws_ping_interval_s=args.ws_ping_interval,
        ws_ping_timeout_s=args.ws_ping_timeout,
        ws_compression=args.ws_compression,
    )


def _is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def _fit_open_files(config: Config) -> Config:
    """Raise the open-files limit as far as allowed; shrink max_connections to fit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    room = soft - _RESERVED_FDS
    if soft != resource.RLIM_INFINITY and config.max_connections > room:
        log.warning(
            "open-files limit is %d: max-connections lowered from %d to %d",
            soft,
            config.max_connections,
            room,
        )
        fields = {f: getattr(config, f) for f in Config.__dataclass_fields__}
        fields["max_connections"] = max(room, 1)
        return Config(**fields)
    return config


async def serve(config: Config, slot: WorkerSlot | None = None) -> None:
    """Run until SIGINT or SIGTERM (or, for a worker, its supervisor's end), then stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lifeline = Lifeline(slot) if slot is not None else None
    if lifeline is not None:
        lifeline.watch(stop.set)
    server = Server(config)
    await server.start()
    if lifeline is not None:
        lifeline.ready()
    await stop.wait()
    if lifeline is not None:
        lifeline.close()
    await server.stop()


def _loop_runner(
    choice: str, parser: argparse.ArgumentParser
) -> Callable[[Coroutine[Any, Any, None]], None]:
    """How to run the server's coroutine on the chosen event loop."""
    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            parser.error("--loop uvloop: the uvloop package is not installed")
        log.info("uvloop is not installed; using asyncio's own event loop")
        return asyncio.run
    return uvloop.run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, configure logging, serve; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Set by the supervisor of --workers in each worker process it starts.
    slot = worker_slot_from_env(os.environ)
    # Workers share the supervisor's stderr: each line says whose it is.
    who = "" if slot is None else f"worker {slot.index} [%(process)d] "
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    runner = _loop_runner(args.loop, parser)
    if slot is None and config.workers > 1:
        script = str(Path(__file__).resolve())
        return supervise(config, script, sys.argv[1:] if argv is None else argv)
    if slot is not None:
        config = dataclasses.replace(config, reuse_port=True)
    # Per process: each worker raises its own limit and fits its own connections.
    config = _fit_open_files(config)
    try:
        runner(serve(config, slot))
    except StartError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
