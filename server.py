"""ssechat from a checkout: `python server.py` is the `ssechat` command (`sse.main`)."""

from __future__ import annotations

import sys
from pathlib import Path

from sse.main import main

if __name__ == "__main__":
    # Workers of --workers run this file again: `python -m sse.main` would not find the
    # package when the server is started from outside the checkout.
    sys.exit(main(command=(sys.executable, str(Path(__file__).resolve()))))
