"""The interface every model implements, and the error it raises."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["ChatTurn", "Finish", "FinishReason", "Model", "Piece", "Usage"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of the conversation as the model sees it."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Finish:
    """Yielded last when the model says why it stopped; absent means "stop"."""

    reason: FinishReason


@dataclass(frozen=True, slots=True)
class Usage:
    """Yielded when the upstream reports what the reply cost (stream_options.include_usage)."""

    completion_tokens: int


Piece = str | Finish | Usage


class Model(Protocol):
    """A source of replies; `reply` is cancellable at any `await`."""

    @property
    def name(self) -> str:
        """The model's name as sent in the `start` event, e.g. "echo" or "gpt-4o-mini"."""

    @property
    def label(self) -> str:
        """What the page shows, e.g. "built-in echo model"."""

    @property
    def free(self) -> bool:
        """Whether a reply costs nothing (the echo model): no budget, no concurrency ceiling."""

    def reply(self, history: Sequence[ChatTurn]) -> AsyncGenerator[Piece, None]:
        """Stream the reply to `history` (oldest first, ending with the user's turn).

        Yields text pieces as they are produced, then optionally one `Finish`.
        Cancelling the consuming task must stop the work, upstream requests included.

        Raises:
            ModelError: the reply could not be produced or was cut short.
        """

    async def aclose(self) -> None:
        """Release what the model holds (HTTP connection pools)."""
