"""Exceptions of ssechat; the class name says whose fault it is."""

from __future__ import annotations


class SSEChatError(Exception):
    """Base class of every exception ssechat raises on purpose."""


class ClientError(SSEChatError):
    """The peer sent something we refuse; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConfigError(SSEChatError):
    """The operator gave a setting that cannot work."""


class StartError(SSEChatError):
    """The server cannot start: a service it needs (Redis, the database) is not there."""


class StoreUnavailable(SSEChatError):
    """The database cannot do what was asked now (disk full, file gone, connection lost).

    Neither the client's fault nor a bug of ours: the message says what the
    database reported, and the request is answered 503.
    """
