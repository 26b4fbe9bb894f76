"""What a WebSocket client's text messages mean: commands in, JSON answers out.

The socket's twin of an HTTP handler: `sse.io.websocket` hands each complete
text message to the `SocketCommands` its route chose and writes back the
answer, now or once the awaitable has it. Nothing here holds a transport.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sse.app.inputs import require_text
from sse.app.values import SocketCommands
from sse.chat.store.base import StoredMessage
from sse.errors import ClientError, StoreUnavailable

__all__ = [
    "PostCommand",
    "SendCommand",
    "ack",
    "conversation_commands",
    "error",
    "parse_command",
    "room_commands",
]


@dataclass(frozen=True, slots=True)
class SendCommand:
    """`{"type": "send", "message": ...}` on the room's socket: broadcast `message`."""

    message: str


@dataclass(frozen=True, slots=True)
class PostCommand:
    """`{"type": "message", "content": ...}` on a conversation's socket: post it."""

    content: str


def parse_command(
    text: str, *, conversation: bool, max_content_chars: int
) -> SendCommand | PostCommand:
    """What a client's text message asks for, checked like the matching POST body.

    Raises:
        ClientError: 400 for anything but the expected JSON object, 413 for a
            conversation message longer than `max_content_chars`.
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ClientError(400, f"message is not valid JSON: {exc}") from None
    except ValueError as exc:
        # int() refuses a number of more than 4,300 digits (CPython's limit).
        raise ClientError(400, f"message holds a number too long to read: {exc}") from None
    if not isinstance(value, dict):
        raise ClientError(400, "message must be a JSON object")
    expected = "message" if conversation else "send"
    if value.get("type") != expected:
        where = "a conversation's" if conversation else "the room's"
        raise ClientError(400, f'"type" must be "{expected}" on {where} socket')
    if not conversation:
        return SendCommand(require_text(value, "message"))
    content = require_text(value, "content")
    if not content.strip():
        raise ClientError(400, '"content" must not be empty')
    if len(content) > max_content_chars:
        raise ClientError(
            413, f'"content" is longer than the limit of {max_content_chars} characters'
        )
    return PostCommand(content)


def _json(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def ack(**fields: str) -> bytes:
    """The JSON text answering a command that was carried out."""
    return _json({"type": "ack", **fields})


def error(status: int, message: str) -> bytes:
    """The JSON text answering a command that was refused, with the HTTP status it would get."""
    return _json({"type": "error", "status": status, "error": message})


def room_commands(send: Callable[[str], str | Awaitable[str]]) -> SocketCommands:
    """The room's socket: `send` broadcasts, answered with the event's id."""

    def answer(text: str) -> bytes | Awaitable[bytes]:
        try:
            command = parse_command(text, conversation=False, max_content_chars=0)
            assert isinstance(command, SendCommand)
            sent = send(command.message)
        except ClientError as exc:
            return error(exc.status, exc.message)
        return ack(id=sent) if isinstance(sent, str) else _acked(sent)

    return answer


async def _acked(sent: Awaitable[str]) -> bytes:
    try:
        return ack(id=await sent)
    except ClientError as exc:
        return error(exc.status, exc.message)


def conversation_commands(
    post: Callable[[str], Awaitable[tuple[StoredMessage, str]]], *, max_content_chars: int
) -> SocketCommands:
    """A conversation's socket: `message` posts, answered with the ids of the message and reply."""

    def answer(text: str) -> bytes | Awaitable[bytes]:
        try:
            command = parse_command(text, conversation=True, max_content_chars=max_content_chars)
        except ClientError as exc:
            return error(exc.status, exc.message)
        assert isinstance(command, PostCommand)
        return _posted(post, command.content)

    return answer


async def _posted(
    post: Callable[[str], Awaitable[tuple[StoredMessage, str]]], content: str
) -> bytes:
    try:
        user, reply_id = await post(content)
    except ClientError as exc:
        return error(exc.status, exc.message)
    except StoreUnavailable as exc:  # the database's failure: no traceback
        return error(503, f"the conversations cannot be stored or read now: {exc}")
    return ack(message_id=user.id, reply_id=reply_id)
