"""What the browser tests share besides their fixtures."""

from __future__ import annotations

import uuid

__all__ = ["token"]


def token() -> str:
    """A short random word, so each test's messages are its own."""
    return uuid.uuid4().hex[:8]
