#!/bin/sh
# `make run`: the demo on a fresh machine. Prepares the database, starts the example
# upstream on 127.0.0.1:9001, mints a demo API key, then runs the gateway in the foreground.
set -eu
BIN=${BIN:-.venv/bin}
export GATEWAY_CONFIG="${GATEWAY_CONFIG:-config.yaml}"
UPSTREAM_PORT=${UPSTREAM_PORT:-9001}

"$BIN/gateway" migrate
mkdir -p .run
"$BIN/python" -m upstream_example --port "$UPSTREAM_PORT" > .run/upstream.log 2>&1 &
UPSTREAM_PID=$!
trap 'kill "$UPSTREAM_PID" 2>/dev/null || true' EXIT INT TERM

"$BIN/gateway" org list --json | grep -q '"name": "demo"' || "$BIN/gateway" org create demo > /dev/null
KEY=$("$BIN/gateway" key create --org demo --name "make run demo" \
      --scopes "contacts:read contacts:write" --expires-in 7d --json \
      | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["key"])')
PUBLIC_URL=$("$BIN/python" -c 'import os; from gateway.config import load_config, config_path; print(str(load_config(config_path()).public_url).rstrip("/"))')

cat <<MSG

  Demo API key (shown once; expires in 7 days, scopes contacts:read contacts:write):
    $KEY

  Try it:
    curl -s $PUBLIC_URL/functions/v1/api-contacts -H "X-API-Key: $KEY"
    curl -s -X POST $PUBLIC_URL/functions/v1/api-contacts -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{"name": "Ada"}'

  Metrics: http://127.0.0.1:9090/metrics    Stop: Ctrl-C

MSG
"$BIN/gateway" serve
