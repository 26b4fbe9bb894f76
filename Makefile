# ssechat: `make run` starts the server, `make test` sets up everything and runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Two stamps: what running needs (requirements.txt), and everything (requirements-dev.txt).
RUN_STAMP := $(VENV)/.installed-run
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
# Root installs directly; anyone else through sudo.
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# Debian packages the tests drive for real: the browser, Redis and PostgreSQL
# (whose programs live in /usr/lib/postgresql/<version>/bin, off the PATH).
SYSTEM_COMMANDS := chromium redis-server
SYSTEM_PACKAGES := chromium redis-server postgresql

.PHONY: install system-deps run test lint format clean

$(RUN_STAMP): requirements.txt requirements-lock.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ssechat needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt -c requirements-lock.txt
	@touch $@

$(STAMP): $(RUN_STAMP) requirements-dev.txt
	$(PIP) -r requirements-dev.txt -c requirements-lock.txt
	@touch $@

install: $(STAMP)  ## create .venv/ and install the pinned Python requirements, test tools too

system-deps:  ## install the Debian packages the tests need, when missing
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(SYSTEM_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	fi

run: $(RUN_STAMP)  ## start the server on the embedded defaults (http://127.0.0.1:3000)
	$(PY) server.py

test: $(STAMP) system-deps lint  ## every test: wire, hub, real sockets, the browser
	$(PY) -m pytest

lint: $(STAMP)  ## ruff and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Benchmark (issue 4): bench/README.md explains the scenarios and the table.
BENCH_ARGS ?=
BENCH_CC   ?= gcc
LOADGEN    := bench/build/loadgen
NODE_PEER  := bench/peers/node-express

$(LOADGEN): bench/loadgen.c
	@mkdir -p $(@D)
	$(BENCH_CC) -O2 -Wall -Wextra -std=gnu11 -o $@ $< -lm -lz

.PHONY: bench
bench: $(STAMP) $(LOADGEN)  ## fan-out benchmark, ours vs the seed's Node/Express server (BENCH_ARGS="--runs 1 --quick")
	@if [ ! -d $(NODE_PEER)/node_modules ]; then \
	  if command -v npm >/dev/null 2>&1; then cd $(NODE_PEER) && npm ci --no-audit --no-fund; \
	  else echo "npm is missing: the node peer needs Node.js 18+ (or pass BENCH_ARGS=\"--servers ours\")"; fi; \
	fi
	$(PY) bench/run.py $(BENCH_ARGS)

# Soak (bench/soak.py): every kind of traffic at once for SOAK_MINUTES against a fresh server;
# fails on a lost message, an unfinished reply or a slow reader left running. README "Soak".
SOAK_MINUTES ?= 10
SOAK_ARGS    ?=

.PHONY: soak
soak: $(STAMP)  ## soak test: SOAK_MINUTES=10 of streams, churn, posts, replies and a slow reader
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# The page's browser libraries (Markdown, sanitizer, highlighting), pinned by
# client/package-lock.json and committed under client/vendor/, so `make run` needs no npm.
.PHONY: vendor
vendor:  ## re-copy client/vendor/ from the locked npm packages (needs npm); README "Vendored libraries"
	$(PYTHON) tools/vendor_client.py

# docs/screenshots/chat-*.png, shown in the README: the Chat view with a Markdown reply.
.PHONY: screenshots
screenshots: $(STAMP)  ## redraw docs/screenshots/ against a fresh server (needs Chromium)
	$(PY) tools/screenshots.py
