"""Answering again: regenerate the last reply, or edit a user message and continue from it.

Both start a reply exactly as a new message does (`ChatService.begin`): the
same slot, the same `start`/`delta`/`done` events, the conversation's model
and system prompt. Before them a `truncate` event names the first message the
transcript no longer has; an edit's message is removed and comes back at once
as a `user` event with its new content (and its id), so every page that shows
the conversation, on every node, ends up with what the store holds.
"""

from __future__ import annotations

from sse.chat.service import ChatService, ReplyEnded
from sse.chat.store.base import Revision, StoredMessage
from sse.errors import ClientError, NothingToRevise

__all__ = ["edit", "regenerate"]


async def regenerate(
    service: ChatService, owner: str, conversation_id: str, ended: ReplyEnded | None = None
) -> tuple[StoredMessage, str]:
    """Replace the conversation's last reply with a new one; (the user message, the reply id).

    Raises:
        ClientError: 404 for an unknown conversation, 409 while a reply streams or
            when there is no message to answer again, 503 while shutting down.
    """

    async def write(model: str) -> Revision | None:
        try:
            return await service.store.restart_reply(owner, conversation_id, model)
        except NothingToRevise as exc:
            raise ClientError(409, str(exc)) from None

    return await service.begin(owner, conversation_id, write, ended)


async def edit(
    service: ChatService,
    owner: str,
    conversation_id: str,
    message_id: str,
    content: str,
    ended: ReplyEnded | None = None,
) -> tuple[StoredMessage, str]:
    """Replace a user message's content, drop every later message, and answer it anew.

    Raises:
        ClientError: 404 for an unknown conversation or no such user message in it,
            409 while a reply streams, 503 while shutting down.
    """

    async def write(model: str) -> Revision | None:
        try:
            return await service.store.edit_reply(
                owner, conversation_id, message_id, content, model
            )
        except NothingToRevise as exc:
            raise ClientError(404, str(exc)) from None

    return await service.begin(owner, conversation_id, write, ended)
