"""A reply's last save: made whatever cancels its caller, and retried while the store refuses.

A reply left "streaming" in the store answers 409 to its conversation on every
node, so its ending must get there. When the store refuses it, the reply is
saved as an error instead, by a task retrying with backoff for as long as the
server runs. Bounded: while the store refuses writes no reply can start, so no
new retries begin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sse.chat.store.base import Store
from sse.errors import StoreUnavailable

__all__ = ["EndingSaver"]

log = logging.getLogger("ssechat.chat")

# A refused last save is retried this often at first, doubling up to the cap.
# Past the warning time an operator is told once.
_RESAVE_FIRST_S = 0.1
_RESAVE_MAX_GAP_S = 5.0
_RESAVE_WARN_AFTER_S = 120.0


class EndingSaver:
    """Saves replies' endings for `ChatService`; keeps the retries of refused ones."""

    def __init__(
        self, store: Store, spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    ) -> None:
        self._store = store
        self._spawn = spawn
        self._retries: set[asyncio.Task[None]] = set()

    def cancel_retries(self) -> list[asyncio.Task[None]]:
        """Cancel the retries still running (a shutdown); the tasks, to wait for."""
        tasks = list(self._retries)
        for task in tasks:
            task.cancel()
        return tasks

    async def save(
        self,
        message_id: str,
        text: str,
        status: str,
        finish: str | None,
        error: str | None,
        event_id: str | None,
    ) -> str | None:
        """Save a reply's ending, whatever cancels the caller; None, or the error it ends with.

        When the store refuses, the reply is saved as an error instead, by a task
        retrying with backoff, once the store takes writes again.
        """
        saving = asyncio.ensure_future(
            self._store.save_reply(message_id, text, status, finish, error, event_id=event_id)
        )
        while not saving.done():
            # A stop arriving while the ending is saved must not lose the ending.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({saving})
        failure = saving.exception()
        if failure is None:
            return None
        if isinstance(failure, StoreUnavailable):
            log.warning("reply %s could not be saved: %s", message_id, failure)
        else:
            log.error("reply %s could not be saved", message_id, exc_info=failure)
        why = f"The reply could not be saved: {failure or type(failure).__name__}."
        task = self._spawn(self._resave(message_id, text, why, event_id))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)
        return why

    async def _resave(self, message_id: str, text: str, why: str, event_id: str | None) -> None:
        gap_s = _RESAVE_FIRST_S
        warn_at = time.monotonic() + _RESAVE_WARN_AFTER_S
        while True:
            await asyncio.sleep(gap_s)
            try:
                await self._store.save_reply(
                    message_id, text, "error", None, why, event_id=event_id
                )
            except StoreUnavailable as exc:
                if warn_at and time.monotonic() > warn_at:
                    warn_at = 0.0
                    log.error(
                        "reply %s is still not saved after %.0fs (%s); still trying",
                        message_id,
                        _RESAVE_WARN_AFTER_S,
                        exc,
                    )
                gap_s = min(gap_s * 2, _RESAVE_MAX_GAP_S)
                continue
            log.info("reply %s saved after all, as an error", message_id)
            return
