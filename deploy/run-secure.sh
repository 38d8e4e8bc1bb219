#!/usr/bin/env bash
# `make run-secure`: the deploy configuration (deploy/nats/lockout.conf: one user per role,
# mutual TLS, every write synced) on this machine, with lockoutd. The first run generates a CA,
# a server certificate, one client certificate and one password per role into data/secure/pki
# (kept for later runs; delete the folder for new ones); streams in data/secure/nats, lockoutd's
# store in data/secure/lockout. Prints how each role connects. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_PORT="${NATS_PORT:-4222}"
NATS_BIN="${NATS_SERVER_BIN:-.tools/nats/bin/nats-server}"
DIR=data/secure
PKI="$DIR/pki"
# The users of deploy/nats/lockout.conf (the per-tenant ones for its example tenant, acme).
ROLES="lockoutd gateway_acme notifier_acme idp_acme admin_acme_alice admin_acme_bob auditor console_acme"
mkdir -p "$PKI" "$DIR/nats" "$DIR/lockout"
chmod 700 "$PKI"

# A key and a certificate signed by the CA: issue NAME EXTENSIONS.
issue() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$PKI/$1-key.pem" -out "$PKI/$1.csr" 2>/dev/null
  printf '%s\n' "$2" > "$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca-key.pem" -CAcreateserial \
    -days 365 -extfile "$PKI/$1.ext" -out "$PKI/$1.pem" 2>/dev/null
  rm -f "$PKI/$1.csr" "$PKI/$1.ext"
}

if [ ! -f "$PKI/ca.pem" ]; then
  echo "generating a CA and a server certificate into $PKI …"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=lockout local CA" -addext "basicConstraints=critical,CA:TRUE" \
    -keyout "$PKI/ca-key.pem" -out "$PKI/ca.pem" 2>/dev/null
  issue server "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
fi
# A certificate and a password for every user that has none yet (users added to the
# configuration since the last run get theirs).
touch "$PKI/passwords.env"
chmod 600 "$PKI/passwords.env"
for role in $ROLES; do
  [ -f "$PKI/$role.pem" ] || issue "$role" "extendedKeyUsage=clientAuth"
  var="$(echo "$role" | tr a-z A-Z)_PASSWORD"
  grep -q "^$var=" "$PKI/passwords.env" || echo "$var=$(openssl rand -hex 24)" >> "$PKI/passwords.env"
done
set -a
# shellcheck disable=SC1091
. "$PKI/passwords.env"
set +a

LOCKOUT_TLS_CERT="$PKI/server.pem" LOCKOUT_TLS_KEY="$PKI/server-key.pem" LOCKOUT_TLS_CA="$PKI/ca.pem" \
  NODE_STORE_DIR="$DIR/nats" "$NATS_BIN" -c deploy/nats/lockout.conf -a 127.0.0.1 -p "$NATS_PORT" &
nats_pid=$!
trap 'kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (: < "/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done

url="tls://127.0.0.1:$NATS_PORT"
echo
echo "nats-server with deploy/nats/lockout.conf on $url: a user per role, mutual TLS,"
echo "JetStream in $DIR/nats syncing every write. Each role connects with its password (in"
echo "$PKI/passwords.env), the CA, its own client certificate and its own inbox prefix:"
for role in $ROLES; do
  var="$(echo "$role" | tr a-z A-Z)_PASSWORD"
  echo "  $role: LOCKOUT_NATS_PASSWORD=\$$var, --nats-url $url --nats-user $role" \
    "--tls-ca $PKI/ca.pem --tls-cert $PKI/$role.pem --tls-key $PKI/$role-key.pem --inbox-prefix _INBOX_$role"
done
echo "Notifiers, auditors and the console reach the streams under the JetStream API prefix JS.lockout.API"
echo "(lockoutctl --js-api-prefix JS.lockout.API; nats CLI --js-api-prefix)."

echo "e.g.: . $PKI/passwords.env; LOCKOUT_NATS_PASSWORD=\$ADMIN_ACME_ALICE_PASSWORD target/release/lockoutctl \\"
echo "  --nats-url $url --nats-user admin_acme_alice --tls-ca $PKI/ca.pem --tls-cert $PKI/admin_acme_alice.pem \\"
echo "  --tls-key $PKI/admin_acme_alice-key.pem --inbox-prefix _INBOX_admin_acme_alice status acme alice"
echo "lockoutd storing in $DIR/lockout; Ctrl-C stops both"
env -u LOCKOUT_TLS_CERT -u LOCKOUT_TLS_KEY -u LOCKOUT_TLS_CA LOCKOUT_NATS_PASSWORD="$LOCKOUTD_PASSWORD" \
  target/release/lockoutd --nats-url "$url" --nats-user lockoutd \
  --tls-ca "$PKI/ca.pem" --tls-cert "$PKI/lockoutd.pem" --tls-key "$PKI/lockoutd-key.pem" \
  --inbox-prefix _INBOX_lockoutd --require-caller --data-dir "$DIR/lockout" "$@" &
lockoutd_pid=$!
trap 'kill -TERM "$lockoutd_pid" 2>/dev/null; wait "$lockoutd_pid" 2>/dev/null || true; kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null || true' EXIT
trap 'exit 0' INT TERM
wait "$lockoutd_pid"
