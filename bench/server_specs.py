"""The servers the benchmark can compare: how to start each, and which run by default."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from paths import REPO

__all__ = ["BUILTIN_SERVERS", "DEFAULT_SERVERS", "STREAM_PATH", "ServerSpec"]

# What `ours-stream` opens: the lobby's channel, which POST /send-message also feeds.
STREAM_PATH = "/stream?ch=room:lobby"


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: a command with `{port}` (PORT is also set in its env).

    `{workdir}` in the command is an empty folder of its own for each run.
    """

    name: str
    command: str
    no_join_args: str | None = None  # appended when announcements must be off
    cwd: Path = REPO
    transport: str = "sse"  # how the loadgen talks to it: sse (GET /events, POST) or ws
    loadgen_args: tuple[str, ...] = ()  # more loadgen options, e.g. --ws-deflate
    ssechat: bool = False  # takes ssechat's options: --redis-url, --max-connections

    def argv(self, port: int, joins: bool, workdir: Path) -> list[str]:
        """The command line for `port`, with announcements on or off."""
        text = self.command.replace("{port}", str(port)).replace("{workdir}", str(workdir))
        if not joins and self.no_join_args:
            text += " " + self.no_join_args
        return shlex.split(text)


def _our_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# Its own SQLite file per run, so that runs share no state on disk. The load comes
# from one address by design: the per-client limits would refuse it (--limits off).
_OURS = (
    f"{shlex.quote(_our_python())} server.py --port {{port}} --log-level warning "
    "--db {workdir}/ssechat.sqlite3 --limits off"
)

BUILTIN_SERVERS = {
    "ours": ServerSpec("ours", _OURS, "--no-join-announcement", ssechat=True),
    # The same server and hub, spoken to over WebSockets (GET /ws, sends as frames).
    "ours-ws": ServerSpec("ours-ws", _OURS, "--no-join-announcement", transport="ws", ssechat=True),
    # permessage-deflate, offered by every stream: each event compressed once for all...
    "ours-ws-deflate": ServerSpec(
        "ours-ws-deflate",
        _OURS + " --ws-compression shared",
        "--no-join-announcement",
        transport="ws",
        loadgen_args=("--ws-deflate",),
        ssechat=True,
    ),
    # ...or by each connection's own compressor (context takeover).
    "ours-ws-deflate-ctx": ServerSpec(
        "ours-ws-deflate-ctx",
        _OURS + " --ws-compression per-connection",
        "--no-join-announcement",
        transport="ws",
        loadgen_args=("--ws-deflate",),
        ssechat=True,
    ),
    # The same server, each stream a multiplexed `GET /stream` of one channel that
    # /send-message feeds (`--stream-path` names another): against `ours`, what the
    # channel tags and composite ids cost.
    "ours-stream": ServerSpec(
        "ours-stream",
        _OURS,
        "--no-join-announcement",
        loadgen_args=("--path", STREAM_PATH),
        ssechat=True,
    ),
    "node": ServerSpec("node", "node bench/peers/node-express/server.js"),
}
# Run when --servers does not say: ours over both transports, and the seed's server.
DEFAULT_SERVERS = ("ours", "ours-ws", "node")
