"""Dropping a connection with a reset, so the kernel lets go of what it still holds for it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["reset"]

# SO_LINGER on with a zero timeout: close() discards unsent data and sends RST.
_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """Abort `transport` with a TCP reset instead of a FIN.

    A client cut for reading too slowly still has megabytes queued in the
    kernel's send buffer; a plain close keeps them, and the connection in
    FIN-WAIT-1, until the client reads them all or TCP gives up. A reset frees
    them at once. The client resumes by event id either way.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Not TCP (a Unix socket, a test's transport): a plain abort.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()
