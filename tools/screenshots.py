"""`make screenshots`: the Chat view with a Markdown reply, desktop and phone, as PNGs.

Starts `python server.py` (echo model, a database in a scratch folder) on a free
loopback port, drives Debian's Chromium through Playwright, sends MESSAGE (the
echo model says it back, so the reply's Markdown is fixed) and saves the view at
1280x800 and 390x844 into docs/screenshots/. Light colour scheme, no animation
(the caret is hidden once the reply is done), so reruns draw the same pictures.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT_S = 20
LISTENING = re.compile(r"listening on (http://\S+)")
SIZES = {"chat-desktop.png": (1280, 800), "chat-phone.png": (390, 844)}
MESSAGE = """Compare the two stores, please.

## SQLite or PostgreSQL?

| Store | Good for | Setup |
|---|---|---:|
| **SQLite** | one machine | none |
| **PostgreSQL** | many nodes | a server |

- Both keep *every* conversation
- Pick one with `--db`

```python
async def reply(history):
    for word in words(history):
        yield word
```

More in the [README](https://example.com/README)."""


def start_server(scratch: Path) -> tuple[subprocess.Popen[str], str]:
    """`python server.py` on a free port; the process and its URL once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--port", "0", "--db", str(scratch / "chat.sqlite3"),
         "--session-secret-file", str(scratch / "secret"), "--echo-delay", "0.005"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        match = LISTENING.search(line)
        if match:
            # Keep reading its log, so a full pipe never blocks the server.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match.group(1)
    proc.kill()
    raise SystemExit("server.py exited before listening")


def shoot(browser: Browser, url: str, name: str, size: tuple[int, int]) -> None:
    """One screenshot of the Chat view after the echo of MESSAGE is complete."""
    width, height = size
    context = browser.new_context(
        viewport={"width": width, "height": height},
        is_mobile=width < 600,
        has_touch=width < 600,
        color_scheme="light",
        reduced_motion="reduce",
    )
    context.set_default_timeout(START_TIMEOUT_S * 1000)
    page = context.new_page()
    page.goto(f"{url}/")
    page.locator('[data-view-target="chat"]').click()
    page.locator("#chat-input").fill(MESSAGE)
    page.locator("#chat-input").press("Enter")
    page.locator('#transcript li[data-role="assistant"][data-status="complete"]').wait_for()
    page.locator("#chat-input").blur()
    page.evaluate("() => { const t = document.getElementById('transcript');"
                  " t.scrollTop = t.scrollHeight; }")  # fmt: skip
    page.screenshot(path=str(OUT / name))
    context.close()
    print(f"docs/screenshots/{name}: {width}x{height}")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssechat-shots-") as scratch:
        proc, url = start_server(Path(scratch))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                for name, size in SIZES.items():
                    shoot(browser, url, name, size)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
