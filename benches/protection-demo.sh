#!/usr/bin/env bash
# docs/protection.md shows its output: run it after
# `cargo build --release -p lockoutd -p lockoutctl` and `make nats-server`.
# Drives a fresh local service (as `make run` starts it) through the source-aware features.
set -u
cd "$(dirname "$0")/.."
D=$(mktemp -d)
PORT=14333
.tools/nats/bin/nats-server -js -a 127.0.0.1 -p $PORT --store_dir $D/nats >/dev/null 2>&1 &
NP=$!
sleep 1
LOCKOUT_NATS_URL=nats://127.0.0.1:$PORT LOCKOUT_DATA_DIR=$D/lockout target/release/lockoutd >/dev/null 2>&1 &
LP=$!
export LOCKOUT_NATS_URL=nats://127.0.0.1:$PORT
C=target/release/lockoutctl
for i in $(seq 50); do $C status acme x >/dev/null 2>&1 && break; sleep 0.2; done
run() { echo "\$ lockoutctl $*"; $C "$@"; echo; }
echo "### familiar"
run policy set acme --actor sec@acme.com --familiar-days 30
$C attempt acme alice@acme.com --ok --ip 198.51.100.7 --wait >/dev/null
for ip in 203.0.113.1 203.0.113.2 203.0.113.3 203.0.113.4 203.0.113.5; do $C attempt acme alice@acme.com --fail --ip $ip --wait >/dev/null; done
run status acme alice@acme.com --ip 192.0.2.80
run status acme alice@acme.com --ip 198.51.100.7
run explain acme alice@acme.com
echo "### client"
run policy set globex --actor sec@globex.com --api-client-scope true
$C attempt globex bob@globex.com --ok --ip 198.51.100.20 --client "IT Glue" --account api --wait >/dev/null
$C attempt globex bob@globex.com --fail --ip 192.0.2.10 --client "IT Glue" --account api --count 5 --wait >/dev/null
run status globex bob@globex.com --ip 192.0.2.10 --client "IT Glue" --account api
run status globex bob@globex.com --ip 198.51.100.20 --account user
echo "### tail"
$C tail globex --all --count 1 2>&1
echo "### same_ip"
run policy set initech --actor sec@initech.com --reset-scope same_ip
$C attempt initech carol@initech.com --fail --ip 203.0.113.9 --count 2 --wait >/dev/null
$C attempt initech carol@initech.com --fail --ip 198.51.100.30 --wait >/dev/null
$C attempt initech carol@initech.com --ok --ip 198.51.100.30 --wait >/dev/null
run status initech carol@initech.com
run explain initech carol@initech.com
echo "### password reset"
run password-reset acme alice@acme.com
$C tail acme --all --count 2 2>&1
echo "### lock_event"
run unlock globex bob@globex.com --actor helpdesk@globex.com --lock-event 0190f5c2-6e4b-7000-8000-000000000002
echo "exit $?"
echo "### spraying"
run policy set umbrella --actor sec@umbrella.com --max-failures 3 --ip-max-failures 20 --ip-window-seconds 3600 --ip-block-seconds 3600
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 1
for i in $(seq -w 1 20); do $C attempt umbrella user$i@umbrella.com --fail --ip 203.0.113.66 --wait >/dev/null; done
# Three of the sprayed users were also locked by a second wave from the same /24.
for i in 01 02 03; do $C attempt umbrella user$i@umbrella.com --fail --ip 203.0.113.67 --count 2 --wait >/dev/null; done
$C attempt umbrella dave@umbrella.com --fail --ip 198.51.100.44 --count 3 --wait >/dev/null
for i in $(seq 50); do $C ip status umbrella 203.0.113.66 | grep -q BLOCKED && break; sleep 0.1; done
run ip status umbrella 203.0.113.66
run status umbrella user07@umbrella.com --ip 203.0.113.66
echo "\$ lockoutctl tail umbrella"; $C tail umbrella --all --count 5 2>&1 | grep -A1 "/ IP "
echo
run locked umbrella
run unlock-many umbrella --actor sec@umbrella.com --reason "spraying from 203.0.113.0/24" --cidr 203.0.113.0/24 --since $START --dry-run
run unlock-many umbrella --actor sec@umbrella.com --reason "spraying from 203.0.113.0/24" --cidr 203.0.113.0/24 --since $START
run locked umbrella
run ip unblock umbrella 203.0.113.66 --actor sec@umbrella.com --reason "attack over"
kill $LP; wait $LP 2>/dev/null; kill $NP; wait $NP 2>/dev/null; rm -rf $D
