# kubepbx — every check and every way to run the PBX goes through this file.
#   make up      install what is needed, build, run `kubepbx up -f examples/`
#   make web     build the web phone and admin UI into web/dist (npm ci + esbuild)
#   make test    install test tools, lint, build, run every test (what CI runs)
#   make chart-test  render, lint and validate the Helm chart in every mode (part of make test)
#   make bench   registration (one process, and replicas sharing etcd), call setup and media
#                relay benchmarks (docs/benchmarks.md)
#   make lint    rustfmt, clippy and rustdoc (warnings are errors) only
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Build output lives outside the checkout so clean clones reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kubepbx/target
CARGO ?= cargo
# Python with the chart test tools (scripts/install-deps.sh test creates it).
CHART_PYTHON ?= $(HOME)/.cache/kubepbx/chart-venv/bin/python
UP_ARGS ?=

.PHONY: up test chart-test lint build bench web deps-run deps-test deps-bench

deps-run:
	@scripts/install-deps.sh run

deps-test:
	@scripts/install-deps.sh test

deps-bench:
	@scripts/install-deps.sh bench

build: deps-run
	$(CARGO) build --locked --workspace --bins

# npm ci only when the lock file changed since the last install.
web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

web: deps-run web/node_modules/.package-lock.json
	cd web && npm run build

up: deps-run web
	$(CARGO) build --locked --release -p kubepbx
	$(CARGO_TARGET_DIR)/release/kubepbx up -f examples/ --web-dir web/dist $(UP_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --workspace --no-deps

test: deps-test lint web
	cd web && npm test
	$(CARGO) build --locked --workspace --bins
	KUBEPBX_BIN=$(CARGO_TARGET_DIR)/debug/kubepbx $(CHART_PYTHON) tests/chart/test_chart.py
	$(CARGO) test --locked --workspace --no-fail-fast

# The chart tests (Helm SDK, Kubernetes schemas) only: what `make test` runs for charts/.
chart-test: deps-test
	$(CARGO) build --locked -p kubepbx
	KUBEPBX_BIN=$(CARGO_TARGET_DIR)/debug/kubepbx $(CHART_PYTHON) tests/chart/test_chart.py

bench: deps-bench
	$(CARGO) build --locked --release -p kubepbx
	$(CARGO) build --locked --release -p kubepbx-media --example relay_bench
	KUBEPBX_BIN=$(CARGO_TARGET_DIR)/release/kubepbx tests/bench/register.sh
	KUBEPBX_BIN=$(CARGO_TARGET_DIR)/release/kubepbx tests/bench/cluster.sh
	KUBEPBX_BIN=$(CARGO_TARGET_DIR)/release/kubepbx tests/bench/calls.sh
	RELAY_BENCH_BIN=$(CARGO_TARGET_DIR)/release/examples/relay_bench tests/bench/relay.sh
