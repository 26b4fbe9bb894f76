"""client/vendor/ holds exactly what client/package-lock.json pins (no npm needed).

`make vendor` (tools/vendor_client.py) copies the browser builds from the locked npm
packages and writes client/vendor/manifest.json. These tests check the committed
files against it: every file listed, unchanged (sha256), at the version the lock
file and package.json pin, with the version banner of that release.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.support.servers import ROOT
from tools.vendor_client import VENDORED

CLIENT = ROOT / "client"
VENDOR = CLIENT / "vendor"
_MANIFEST: list[dict[str, str]] = json.loads((VENDOR / "manifest.json").read_text())["files"]
_LOCK: dict[str, Any] = json.loads((CLIENT / "package-lock.json").read_text())
_PACKAGE: dict[str, Any] = json.loads((CLIENT / "package.json").read_text())
# The banner each release's browser build starts with, by vendored file.
_BANNERS = {
    "markdown-it.mjs": "/*! markdown-it {version} ",
    "purify.mjs": "/*! @license DOMPurify {version} ",
    "highlight.mjs": "Highlight.js v{version} ",
}


def _entry(name: str) -> dict[str, str]:
    return next(entry for entry in _MANIFEST if entry["file"] == name)


def test_the_manifest_lists_what_the_vendoring_script_copies() -> None:
    listed = [(entry["package"], entry["source"], entry["file"]) for entry in _MANIFEST]
    assert listed == list(VENDORED)


def test_the_vendor_folder_holds_the_listed_files_and_nothing_else() -> None:
    present = sorted(path.name for path in VENDOR.iterdir())
    assert present == sorted([*(entry["file"] for entry in _MANIFEST), "manifest.json"])


@pytest.mark.parametrize("entry", _MANIFEST, ids=lambda entry: entry["file"])
def test_each_vendored_file_is_the_one_copied_from_its_locked_version(
    entry: dict[str, str],
) -> None:
    assert hashlib.sha256((VENDOR / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    locked = _LOCK["packages"][f"node_modules/{entry['package']}"]
    assert entry["version"] == locked["version"]
    assert locked["integrity"].startswith("sha512-")
    # Pinned exactly, not a range npm could move.
    assert _PACKAGE["dependencies"][entry["package"]] == entry["version"]


@pytest.mark.parametrize("name", sorted(_BANNERS))
def test_each_library_carries_the_banner_of_its_locked_release(name: str) -> None:
    banner = _BANNERS[name].format(version=_entry(name)["version"])
    assert banner in (VENDOR / name).read_text()[:400]


def test_the_lock_file_pins_every_dependency_of_package_json() -> None:
    root = _LOCK["packages"][""]
    assert root["dependencies"] == _PACKAGE["dependencies"]
    assert _LOCK["lockfileVersion"] >= 2
