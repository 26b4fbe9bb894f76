"""`make vendor`: copy the page's browser libraries from npm into client/vendor/.

The versions are pinned by client/package.json and client/package-lock.json. npm
installs them into a scratch folder (never into client/, which the wheel ships),
with `npm ci --ignore-scripts`, so exactly the locked tarballs are used and no
package script runs. The browser builds and licence files named in VENDORED are
copied unchanged, and client/vendor/manifest.json records each file's package,
version, source path and sha256; tests/test_vendor.py checks those against the
lock file and the files, without npm. A fresh checkout needs none of this:
the vendored files are committed, so `make run` works without Node.js.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"
VENDOR = CLIENT / "vendor"
MANIFEST = VENDOR / "manifest.json"

# (npm package, path inside it, name under client/vendor/). ES module builds the
# page imports directly; the highlight.js themes it links; every licence.
VENDORED: tuple[tuple[str, str, str], ...] = (
    ("markdown-it", "dist/browser/markdown-it.esm.min.mjs", "markdown-it.mjs"),
    ("markdown-it", "LICENSE", "LICENSE.markdown-it.txt"),
    ("dompurify", "dist/purify.es.mjs", "purify.mjs"),
    ("dompurify", "LICENSE", "LICENSE.dompurify.txt"),
    ("@highlightjs/cdn-assets", "es/highlight.min.js", "highlight.mjs"),
    ("@highlightjs/cdn-assets", "styles/github.min.css", "highlight-light.css"),
    ("@highlightjs/cdn-assets", "styles/github-dark.min.css", "highlight-dark.css"),
    ("@highlightjs/cdn-assets", "LICENSE", "LICENSE.highlight.js.txt"),
)


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(scratch: Path) -> Path:
    """`npm ci` the locked packages into `scratch`; return its node_modules folder."""
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(CLIENT / name, scratch / name)
    subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=scratch,
        check=True,
    )
    return scratch / "node_modules"


def copy_files(modules: Path) -> list[dict[str, str]]:
    """Copy every VENDORED file into client/vendor/; the manifest's entries."""
    entries = []
    for package, source, name in VENDORED:
        meta = json.loads((modules / package / "package.json").read_text())
        target = VENDOR / name
        shutil.copyfile(modules / package / source, target)
        entries.append(
            {
                "file": name,
                "package": package,
                "version": meta["version"],
                "source": source,
                "sha256": sha256_of(target),
            }
        )
    return entries


def main() -> int:
    if shutil.which("npm") is None:
        print("make vendor needs npm (Node.js 18+)", file=sys.stderr)
        return 1
    VENDOR.mkdir(exist_ok=True)
    for stale in VENDOR.iterdir():
        stale.unlink()
    with tempfile.TemporaryDirectory(prefix="ssechat-vendor-") as scratch:
        entries = copy_files(install(Path(scratch)))
    MANIFEST.write_text(json.dumps({"files": entries}, indent=2) + "\n")
    for entry in entries:
        print(f"client/vendor/{entry['file']}: {entry['package']} {entry['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
