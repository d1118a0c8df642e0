#!/bin/sh
# `make run`: the demo on a fresh machine. Prepares the database, starts the example
# upstream on 127.0.0.1:9001 and the gateway, gives the demo organization its one demo
# API key (a new secret for the same key on every run: no pile of keys), and prints the
# tour once the gateway answers. Ctrl-C stops both.
set -eu
BIN=${BIN:-.venv/bin}
export GATEWAY_CONFIG="${GATEWAY_CONFIG:-config.yaml}"
UPSTREAM_PORT=${UPSTREAM_PORT:-9001}
DEMO_KEY_NAME="make run demo"

"$BIN/gateway" migrate > /dev/null
mkdir -p .run
"$BIN/python" -m upstream_example --port "$UPSTREAM_PORT" > .run/upstream.log 2>&1 &
UPSTREAM_PID=$!
GATEWAY_PID=""
stop() { kill $GATEWAY_PID "$UPSTREAM_PID" 2>/dev/null || true; }
trap stop EXIT INT TERM

"$BIN/gateway" org list --json | grep -q '"name": "demo"' || "$BIN/gateway" org create demo > /dev/null
DEMO_KEY_ID=$("$BIN/gateway" key list --org demo --json | "$BIN/python" -c '
import json, sys
keys = json.load(sys.stdin)["data"]
live = [k["id"] for k in keys if k["name"] == sys.argv[1] and not k["revoked_at"]]
print(live[0] if live else "")' "$DEMO_KEY_NAME")
if [ -n "$DEMO_KEY_ID" ]; then
  ISSUED=$("$BIN/gateway" key rotate "$DEMO_KEY_ID" --json)
else
  ISSUED=$("$BIN/gateway" key create --org demo --name "$DEMO_KEY_NAME" \
           --scopes "contacts:read contacts:write" --json)
fi
KEY=$(printf '%s' "$ISSUED" | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["key"])')
eval "$("$BIN/python" -c '
from gateway.config import config_path, load_config
s = load_config(config_path())
url = str(s.public_url).rstrip("/")
print(f"PUBLIC_URL={url} ADMIN=http://{s.admin.host}:{s.admin.port}")')"

"$BIN/gateway" serve &
GATEWAY_PID=$!
tries=0
until "$BIN/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "$ADMIN/readyz" 2>/dev/null; do
  tries=$((tries + 1))
  if [ "$tries" -gt 150 ] || ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
    echo "make run: the gateway did not start (see above)" >&2
    exit 1
  fi
  sleep 0.2
done

cat <<MSG

  The gateway answers on $PUBLIC_URL (admin: $ADMIN). Ctrl-C stops it.

  The demo key (a new secret on every make run; scopes contacts:read contacts:write):
    $KEY

  Try it:
    curl -s $PUBLIC_URL/echo -H "X-API-Key: $KEY"
        # what the upstream received: X-Org-Id, X-Scopes, X-Auth-Method, ... added by the gateway
    curl -s $PUBLIC_URL/functions/v1/api-contacts -H "X-API-Key: $KEY"
    curl -s -X POST $PUBLIC_URL/functions/v1/api-contacts -H "X-API-Key: $KEY" \\
         -H 'Content-Type: application/json' -d '{"name": "Ada"}'
    curl -s $PUBLIC_URL/functions/v1/api-contacts        # no key: 401, and what to send

  The CLI, from another terminal in this folder:
    export PATH="\$PWD/$BIN:\$PATH"
    gateway --help

  Metrics: $ADMIN/metrics    Dashboard: $PUBLIC_URL/dashboard

MSG
wait "$GATEWAY_PID"
