#!/usr/bin/env bash
# Runs the help-desk console next to `make run` (same nats-server), on http://localhost:8080
# (CONSOLE_LISTEN sets another address).
# The first run creates data/console/users with one member, `admin` of tenant
# ${CONSOLE_TENANT:-acme}, and prints their generated password once (only its hash is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_PORT="${NATS_PORT:-4222}"
users=data/console/users
mkdir -p data/console
if [ ! -f "$users" ]; then
  password="$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
  hash="$(printf '%s\n' "$password" | target/release/lockout-console hash)"
  printf '# name tenant argon2-hash (lockout-console hash < password)\nadmin %s %s\n' \
    "${CONSOLE_TENANT:-acme}" "$hash" > "$users"
  echo "Created $users: sign in as admin with password $password"
fi
listen="${CONSOLE_LISTEN:-127.0.0.1:8080}"
echo "Open http://localhost:${listen##*:} (the name localhost: the session cookie is Secure)."
LOCKOUT_NATS_URL="nats://127.0.0.1:$NATS_PORT" LOCKOUT_CONSOLE_LISTEN="$listen" \
  exec target/release/lockout-console --users "$users" "$@"
