"""Whether a model reply may start for someone: its rate, how many run at once, the budget.

Checked before the user's message is stored, so a refused POST changes
nothing. Its slot and the tokens it cost are counted when it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sse.auth.identity import Identity
from sse.chat import revisions
from sse.chat.service import ChatService, ReplyEnded
from sse.chat.store.base import StoredMessage
from sse.config import Config
from sse.errors import OverLimit
from sse.limits.policy import Claim, Limits

__all__ = ["ReplyAdmission"]

# How long a refusal for a busy model asks the client to wait.
_BUSY_RETRY_S = 5.0

# Starts the reply (ChatService.post, revisions.regenerate, ...), given its `ended`.
_Start = Callable[[ReplyEnded | None], Awaitable[tuple[StoredMessage, str]]]


class ReplyAdmission:
    """Posts a message for someone, if a reply may start for them now."""

    def __init__(self, service: ChatService, config: Config, limits: Limits | None) -> None:
        self._service = service
        self._config = config
        self._limits = limits

    async def post(
        self, who: Identity, ip: str, conversation_id: str, content: str
    ) -> tuple[StoredMessage, str]:
        """`ChatService.post`, after the limits let it through.

        Raises:
            OverLimit: replies started too fast, too many at once, the model
                busy, or the daily budget spent (the conversation is told why).
            ClientError: as `ChatService.post`.
        """

        def start(ended: ReplyEnded | None) -> Awaitable[tuple[StoredMessage, str]]:
            return self._service.post(who.owner, conversation_id, content, ended)

        return await self._admit(who, ip, conversation_id, start)

    async def regenerate(
        self, who: Identity, ip: str, conversation_id: str
    ) -> tuple[StoredMessage, str]:
        """`revisions.regenerate`, after the same limits as a post.

        Raises:
            OverLimit: as `post`.
            ClientError: as `revisions.regenerate`.
        """

        def start(ended: ReplyEnded | None) -> Awaitable[tuple[StoredMessage, str]]:
            return revisions.regenerate(self._service, who.owner, conversation_id, ended)

        return await self._admit(who, ip, conversation_id, start)

    async def edit(
        self, who: Identity, ip: str, conversation_id: str, message_id: str, content: str
    ) -> tuple[StoredMessage, str]:
        """`revisions.edit`, after the same limits as a post.

        Raises:
            OverLimit: as `post`.
            ClientError: as `revisions.edit`.
        """

        def start(ended: ReplyEnded | None) -> Awaitable[tuple[StoredMessage, str]]:
            owner = who.owner
            return revisions.edit(self._service, owner, conversation_id, message_id, content, ended)

        return await self._admit(who, ip, conversation_id, start)

    async def _admit(
        self, who: Identity, ip: str, conversation_id: str, start: _Start
    ) -> tuple[StoredMessage, str]:
        limits = self._limits
        service = self._service
        if limits is None:
            return await start(None)
        # The cap first: a slot is given back, a rate's charge is not, so a message
        # refused while replies are still running costs none of the replies per minute.
        pending = limits.claim([("replies_at_once", who.owner)], uuid.uuid4().hex)
        slot = pending if isinstance(pending, Claim | OverLimit) else await pending
        if isinstance(slot, OverLimit):
            raise slot
        paid = not service.models.free

        async def ended(tokens: int) -> None:
            slot.release()
            if paid:
                await limits.spend(who, ip, tokens)

        try:
            await limits.enforce(limits.replies, who, ip)
            if paid:
                over = await limits.check_budget(who, ip)
                if over is not None:
                    if await service.store.exists(who.owner, conversation_id):
                        await service.announce_error(conversation_id, over.message)
                    raise over
            # After the last await: `start` (`service.begin`) takes its place among the generating
            # replies before it first awaits, so posts racing here cannot all see a free
            # model (the checks above wait on Redis when limits are shared).
            if paid and service.generating() >= self._config.model_concurrency:
                busy = limits.refuse("model_concurrency", _BUSY_RETRY_S)
                if busy is not None:
                    raise busy
            return await start(ended)
        except BaseException:
            # Refused by a limit, or by the service before it registered `ended`
            # (409 while a reply streams, 503 while shutting down): the slot is
            # given back here, or it leaks for good. Idempotent where `ended` ran.
            slot.release()
            raise
