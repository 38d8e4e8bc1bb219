#!/usr/bin/env bash
# Runs a local JetStream nats-server and lockoutd with data under ./data; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_PORT="${NATS_PORT:-4222}"
NATS_BIN="${NATS_SERVER_BIN:-.tools/nats/bin/nats-server}"
mkdir -p data/nats data/lockout

"$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" --store_dir data/nats &
nats_pid=$!
trap 'kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (: < "/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done
echo "nats-server (JetStream) listening on nats://127.0.0.1:$NATS_PORT, data in data/nats"
echo "For a first look only: no authentication, no TLS, and JetStream syncs its files every"
echo "2 minutes. Production runs deploy/nats/lockout.conf (docs/security.md, docs/guarantees.md)."
echo "lockoutd storing in data/lockout; Ctrl-C stops both"
LOCKOUT_NATS_URL="nats://127.0.0.1:$NATS_PORT" LOCKOUT_DATA_DIR=data/lockout \
  target/release/lockoutd "$@" &
lockoutd_pid=$!
trap 'kill -TERM "$lockoutd_pid" 2>/dev/null; wait "$lockoutd_pid" 2>/dev/null || true; kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null || true' EXIT
trap 'exit 0' INT TERM
wait "$lockoutd_pid"
