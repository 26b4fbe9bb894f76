"""The browser page's files, read once at start-up and served from memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["StaticFile", "load_static"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# The one folder below the page's whose files are served too (under /vendor/): the
# browser libraries `make vendor` copies from npm (tools/vendor_client.py).
_SUBFOLDERS = ("vendor",)
# In the folder but not the page's: npm's files, which pin what vendor/ holds.
_NOT_SERVED = frozenset({"package.json", "package-lock.json"})


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the page: its media type and bytes."""

    content_type: str
    body: bytes


def load_static(root: Path) -> dict[str, StaticFile]:
    """Map URL paths to the files directly under `root` and its vendor/; `/` is `index.html`.

    Only regular files with a known type are served, listed by walking the folders
    (never by resolving a requested path), so nothing outside them, no symlink, and
    no stray dotfile in them can be reached by a crafted path.
    """
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        return files
    files.update(_files_in(root, "/"))
    for name in _SUBFOLDERS:
        folder = root / name
        if folder.is_dir() and not folder.is_symlink():
            files.update(_files_in(folder, f"/{name}/"))
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def _files_in(folder: Path, prefix: str) -> dict[str, StaticFile]:
    """The servable files directly in `folder`, by URL path (`prefix` + name)."""
    files: dict[str, StaticFile] = {}
    for path in sorted(folder.iterdir()):
        kind = _TYPES.get(path.suffix)
        if kind is None or path.name.startswith(".") or path.name in _NOT_SERVED:
            continue
        if path.is_symlink() or not path.is_file():
            continue
        files[prefix + path.name] = StaticFile(kind, path.read_bytes())
    return files
