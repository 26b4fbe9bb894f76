"""Account passwords, hashed with argon2id (argon2-cffi) on a worker thread.

A hash takes tens of milliseconds of CPU by design: run on the event loop it
would stall every stream of the server for that long.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["Passwords"]


class Passwords:
    """Hashes and checks passwords off the event loop."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher()  # argon2id, with argon2-cffi's recommended cost
        # Checked against when the username is unknown, so that an unknown name
        # takes as long as a wrong password and does not give itself away.
        self._dummy = self._hasher.hash("no such account")

    async def hash(self, password: str) -> str:
        """The encoded argon2id hash of `password`."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, encoded: str | None, password: str) -> bool:
        """Whether `password` matches `encoded` (None: no such account, always False)."""
        return await asyncio.to_thread(self._check, encoded, password)

    def _check(self, encoded: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(encoded or self._dummy, password) and encoded is not None
        except (VerificationError, InvalidHashError):
            return False
