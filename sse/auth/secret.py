"""The key that signs session cookies and tickets: given, or generated once and kept."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sse.config import Config
from sse.errors import ConfigError

__all__ = ["secret_file", "session_secret"]

_SECRET_BYTES = 32


def secret_file(config: Config) -> Path:
    """Where a generated key is kept: beside the SQLite file, or in the working directory."""
    if config.session_secret_file is not None:
        return config.session_secret_file
    if config.db_url is None and str(config.db_path) != ":memory:":
        return config.db_path.with_name(config.db_path.name + ".secret")
    return Path("ssechat.secret")


def session_secret(config: Config) -> bytes:
    """The signing key: --session-secret, else the kept file, made on first use.

    Sessions then survive a restart, and `--workers` share the key by reading
    the one file. Made with a private name and linked into place, so processes
    starting together agree on a single key and none reads a half-written one.

    Raises:
        ConfigError: the file cannot be read or made, or is too short to be a key.
    """
    if config.session_secret is not None:
        return config.session_secret.encode()
    path = secret_file(config)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read the session key {path}: {exc.strerror}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(_SECRET_BYTES) + "\n")
            with contextlib.suppress(FileExistsError):  # another process was first
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
        return _read(path)
    except OSError as exc:
        raise ConfigError(f"cannot keep the session key in {path}: {exc.strerror}") from None


def _read(path: Path) -> bytes:
    key = path.read_text().strip()
    if len(key) < 32:
        raise ConfigError(f"the session key in {path} is shorter than 32 characters")
    return key.encode()
