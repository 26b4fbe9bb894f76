"""The `ssechat` command: start the Server-Sent Events chat server.

Builds a `Config` from the command line, the environment and the --config file
(`sse.cli`) and runs the server until SIGINT or SIGTERM, then shuts down gracefully
and exits 0. With `--workers N` it
supervises N such servers sharing the port instead (`sse.io.workers`).

The installed `ssechat` command, `python -m sse.main` and a checkout's `python server.py`
all run `main`; they differ only in how a worker of `--workers` is started again.
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
from typing import Any

from sse.cli import parse_config, version
from sse.config import Config
from sse.errors import ConfigError, StartError
from sse.io.logs import JsonFormatter
from sse.io.server import Server
from sse.io.workers import Lifeline, WorkerSlot, supervise, worker_slot_from_env
from sse.metrics import BUILD_INFO

__all__ = ["SELF", "main", "serve"]

log = logging.getLogger("ssechat")

# How a worker of --workers runs this module again: by module name, which finds the
# package wherever it is installed (a checkout's server.py passes its own path instead).
# -P: the working directory is not put on sys.path, so `ssechat` started inside a checkout
# runs the installed copy in its workers too, like in its supervisor.
SELF = (sys.executable, "-P", "-m", "sse.main")

# Descriptors the process keeps for itself (listener, logs, the loop's own).
_RESERVED_FDS = 64


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
        return dataclasses.replace(config, max_connections=max(room, 1))
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
    BUILD_INFO.labels(version()).set(1)
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


def main(argv: Sequence[str] | None = None, command: Sequence[str] = SELF) -> int:
    """Entry point: parse, configure logging, serve; returns the exit status.

    `command` starts this program again, for each worker of `--workers`.
    """
    parser, config = parse_config(argv)
    # Set by the supervisor of --workers in each worker process it starts.
    slot = worker_slot_from_env(os.environ)
    # Workers share the supervisor's stderr: each line says whose it is.
    who = "" if slot is None else f"worker {slot.index} [%(process)d] "
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter(None if slot is None else slot.index))
    runner = _loop_runner(config.loop, parser)
    if slot is None and config.workers > 1:
        return supervise(config, command, sys.argv[1:] if argv is None else argv)
    if slot is not None:
        # The supervisor serves --metrics-listen for every worker (sse.io.workers).
        config = dataclasses.replace(config, reuse_port=True, metrics_listen=None)
    # Per process: each worker raises its own limit and fits its own connections.
    config = _fit_open_files(config)
    try:
        runner(serve(config, slot))
    except StartError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except ConfigError as exc:
        # Settings only found wrong at start (a key file that cannot be read) are
        # refused like the rest: the message and status 2, not a traceback.
        parser.error(str(exc))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
