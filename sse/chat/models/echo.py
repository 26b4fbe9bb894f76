"""The built-in echo model: needs nothing, replies with the user's own words, paced."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence

from sse.chat.models.base import ChatTurn, Finish, Piece

__all__ = ["EchoModel"]

# A word with the white space after it, so that joining the pieces gives the text back.
_WORDS = re.compile(r"\s*\S+\s*|\s+")


class EchoModel:
    """Streams back a reply built from the last user message, word by word."""

    name = "echo"
    label = "built-in echo model"
    free = True

    def __init__(self, *, delay_s: float = 0.05, max_pieces: int = 1000) -> None:
        if delay_s < 0 or max_pieces <= 0:
            raise ValueError("delay_s must be >= 0 and max_pieces > 0")
        self._delay_s = delay_s
        self._max_pieces = max_pieces

    async def reply(self, history: Sequence[ChatTurn]) -> AsyncGenerator[Piece, None]:
        """Yield "You said: <message>" a word at a time; `Finish("length")` past the cap."""
        last = next((t.content for t in reversed(history) if t.role == "user"), "")
        text = f"You said: {last}" if last.strip() else "You said nothing."
        for count, word in enumerate(_WORDS.findall(text)):
            if count == self._max_pieces:
                yield Finish("length")
                return
            await asyncio.sleep(self._delay_s)
            yield word

    async def aclose(self) -> None:
        """Nothing to release."""
