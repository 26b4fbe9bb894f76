"""load_static: which files of the page's folder are served, and as what."""

from __future__ import annotations

from pathlib import Path

from sse.app.static import load_static
from tests.support.servers import ROOT


def _folder(tmp_path: Path) -> Path:
    """A page folder with a file of each kind that must, or must not, be served."""
    root = tmp_path / "client"
    (root / "vendor" / "deeper").mkdir(parents=True)
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html>")
    (root / "main.js").write_text("export {};")
    (root / ".secret.js").write_text("no")
    (root / "package.json").write_text("{}")
    (root / "package-lock.json").write_text("{}")
    (root / "notes.txt").write_text("no")
    (root / "vendor" / "lib.mjs").write_text("export default 1;")
    (root / "vendor" / "theme.css").write_text("pre {}")
    (root / "vendor" / "LICENSE.lib.txt").write_text("MIT")
    (root / "vendor" / "deeper" / "inner.js").write_text("no")
    (root / "node_modules" / "x" / "index.js").write_text("no")
    (root / "node_modules" / "top.js").write_text("no")
    outside = tmp_path / "outside.js"
    outside.write_text("no")
    (root / "linked.js").symlink_to(outside)
    (root / "vendor" / "linked.mjs").symlink_to(outside)
    return root


def test_only_top_level_and_vendor_files_of_known_types_are_served(tmp_path: Path) -> None:
    files = load_static(_folder(tmp_path))
    assert sorted(files) == [
        "/",
        "/index.html",
        "/main.js",
        "/vendor/lib.mjs",
        "/vendor/theme.css",
    ]
    assert files["/vendor/lib.mjs"].content_type == "text/javascript; charset=utf-8"
    assert files["/vendor/lib.mjs"].body == b"export default 1;"
    assert files["/vendor/theme.css"].content_type == "text/css; charset=utf-8"


def test_a_symlinked_vendor_folder_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "client"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "lib.mjs").write_text("no")
    (root / "vendor").symlink_to(elsewhere, target_is_directory=True)
    assert load_static(root) == {}


def test_the_real_page_serves_its_vendored_libraries_as_javascript_and_css() -> None:
    files = load_static(ROOT / "client")
    for name in ("markdown-it.mjs", "purify.mjs", "highlight.mjs"):
        assert files[f"/vendor/{name}"].content_type.startswith("text/javascript")
    for name in ("highlight-light.css", "highlight-dark.css"):
        assert files[f"/vendor/{name}"].content_type.startswith("text/css")
    assert "/package.json" not in files
    assert "/package-lock.json" not in files
