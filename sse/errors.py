"""Every exception ssechat raises on purpose, under one base; its name says whose fault it is."""

from __future__ import annotations


class SSEChatError(Exception):
    """Base class of every exception ssechat raises on purpose."""


class ClientError(SSEChatError):
    """The peer sent something we refuse; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class OverLimit(ClientError):
    """A client went over one of its limits: 429 with Retry-After (a stream: `event: busy`)."""

    def __init__(self, limit: str, retry_after_s: float, message: str) -> None:
        super().__init__(429, message)
        self.limit = limit
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> int:
        """Whole seconds for a Retry-After header: at least 1."""
        return max(1, int(self.retry_after_s + 0.999))


class ConfigError(SSEChatError):
    """The operator gave a setting that cannot work."""


class StartError(SSEChatError):
    """The server cannot start: a service it needs (Redis, the database) is not there."""


class EncodeError(SSEChatError):
    """A caller tried to put a value on the wire that the event-stream format cannot carry."""


class BrokerUnavailable(SSEChatError):
    """The broker cannot take or give events now (Redis is unreachable)."""


class ModelError(SSEChatError):
    """The model (or the service behind it) failed; the message is for a person to read."""


class StoreError(SSEChatError):
    """The store was used in a way it does not allow (a bug of ours)."""


class StoreUnavailable(SSEChatError):
    """The database cannot do what was asked now (disk full, file gone, connection lost).

    Neither the client's fault nor a bug of ours: the message says what the
    database reported, and the request is answered 503.
    """


class ReplyInProgress(SSEChatError):
    """The conversation has a streaming reply already, made by this node or another.

    The database decides, not the node's memory: nodes sharing a database
    (PostgreSQL, or processes on one SQLite file) must not both start a reply.
    A reply of a crashed node stops counting once recovery marks it interrupted.

    Why a unique partial index on the messages, not a Redis key (SET NX with an
    expiry): the guard then lives in the rows it guards. The refusal and the
    insert of the user's message are one transaction, so a 409 leaves nothing
    behind; the lease recovery that already marks a dead node's replies
    interrupted frees the conversation too, with no second timeout to tune
    that could expire under a paused live node or outlive a dead one; and it
    holds where there is no Redis (`--workers` on one SQLite file).
    """


class NothingToRevise(SSEChatError):
    """A regenerate or edit names nothing that can be answered again.

    A conversation with no user message has no reply to regenerate; an edit
    must name a user message of the conversation.
    """
