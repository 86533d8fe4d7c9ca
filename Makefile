# Palisade: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The control-plane binaries (kube-apiserver, etcd, helm). KUBEBUILDER_ASSETS, when set, wins.
ASSETS = $(shell tests/tools/build-assets.sh | tail -n 1)

.PHONY: help
help:
	@echo "make demo         run Palisade on a local control plane with namespace-built nodes (DEMO_ARGS=--hold keeps it up)"
	@echo "make test         check formatting and clippy, build what the tests need, run every test"
	@echo "make lint         cargo fmt --check and clippy -D warnings (part of make test)"
	@echo "make test-assets  build (or reuse) kube-apiserver, etcd and helm from Go modules"
	@echo "make crds         regenerate the CRD manifests under charts/palisade/crds"
	@echo "make bench        print the benchmark figures"

.PHONY: test-assets
test-assets:
	@tests/tools/build-assets.sh

.PHONY: deps
deps: ## system packages and toolchain components (apt, rustup); quick when all is there
	@.ci/install

.PHONY: lint
lint: deps ## style and lints hold in CI: formatting, then clippy on every target with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

.PHONY: test
test: deps lint
	@assets=$$(tests/tools/build-assets.sh | tail -n 1) && \
	  KUBEBUILDER_ASSETS=$$assets cargo test --workspace --locked -- --test-threads=2

.PHONY: crds
crds:
	cargo run --quiet -p palisade-crds --bin crdgen -- charts/palisade/crds

# Benchmarks print figures (never assert times). The dataplane and end-to-end benches spawn the
# probe and palisade binaries, built here in the release profile next to the bench executables.
.PHONY: bench
bench:
	@assets=$$(tests/tools/build-assets.sh | tail -n 1) && \
	  cargo build --release --locked -p palisade-testkit -p palisade-cli --bins && \
	  cargo bench --locked -p palisade-engine && \
	  cargo bench --locked -p palisade-webhook && \
	  cargo bench --locked -p palisade-agent && \
	  cargo bench --locked -p palisade-dataplane-tests && \
	  KUBEBUILDER_ASSETS=$$assets cargo bench --locked -p palisade-e2e

.PHONY: demo
demo: deps ## a real control plane, namespace-built nodes, operator and agents; policies applied live
	@assets=$$(tests/tools/build-assets.sh | tail -n 1) && \
	  cargo build --quiet -p palisade-cli -p palisade-testkit -p palisade-e2e --bins && \
	  KUBEBUILDER_ASSETS=$$assets target/debug/palisade-demo $(DEMO_ARGS)
