"""Helpers for tests that speak WebSocket through the `websockets` client."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed


async def closed_by_server(ws: ClientConnection, timeout: float = 5.0) -> ConnectionClosed:
    """Read on until the server closes the socket; how it closed (its code and reason)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed
