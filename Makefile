# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Also rebuilt when the compiled hot path's source changes (setup.py).
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py gateway/http/heads.py
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test,dev]'
	@touch $@

install: $(VENV)/.installed

## make run: prepare the SQLite database, start upstream_example and the gateway, print a demo key.
run: $(VENV)/.installed
	@BIN=$(BIN) sh scripts/run-demo.sh

## make test: install the test extras (and Debian's chromium and nginx when missing), run the whole suite
## twice: on the compiled hot path, then on its source as plain Python (GATEWAY_PURE_PYTHON=1).
## PostgreSQL and Redis at their local default addresses are used when they answer.
test: $(VENV)/.installed-test
	@sh scripts/test-prereqs.sh
	$(BIN)/python -m pytest
	GATEWAY_PURE_PYTHON=1 $(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gateway upstream_example tests bench
	$(BIN)/ruff format --check gateway upstream_example tests bench
	$(BIN)/mypy gateway upstream_example

clean:
	rm -rf $(VENV) gateway.db gateway.db-wal gateway.db-shm .run

## make bench: the gateway beside nginx auth_request (installs wrk and nginx; about 8 minutes).
bench: $(VENV)/.installed
	@command -v wrk >/dev/null && { command -v nginx >/dev/null || test -x /usr/sbin/nginx; } || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null; }
	$(BIN)/python bench/run.py
