# Palisade: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The control-plane binaries (kube-apiserver, etcd, helm). KUBEBUILDER_ASSETS, when set, wins.
ASSETS = $(shell tests/tools/build-assets.sh | tail -n 1)

.PHONY: help
help:
	@echo "make demo         a real 2-node cluster, Palisade installed with Helm, policies applied live (DEMO_ARGS=--hold keeps it up)"
	@echo "make demo-check   the demo without pauses, failing unless every matrix is the expected one"
	@echo "make test         check formatting and clippy, build what the tests need, run every test"
	@echo "make lint         cargo fmt --check and clippy -D warnings (part of make test)"
	@echo "make cluster      start a real cluster (kubelets, containerd, kube-proxy; nodes as namespaces) and print its kubeconfig"
	@echo "make cluster-down remove it: pods, processes, shims, mounts, cgroups, namespaces"
	@echo "make images       build the pause, probe and palisade images into target/images (no Docker)"
	@echo "make test-assets  build (or reuse) the Kubernetes binaries, etcd and helm from Go modules"
	@echo "make crds         regenerate the CRD manifests under charts/palisade/crds"
	@echo "make bench        print the benchmark figures"
	@echo "make conformance  the upstream suites, unmodified, on a real cluster: Kubernetes e2e NetworkPolicy and network-policy-api"
	@echo "make conformance-subset  the fixed, named subset of both that CI runs"

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
# The real-cluster tests need the cluster binaries and the images (target/images) built first.
test: deps lint
	@assets=$$(tests/tools/build-assets.sh cluster | tail -n 1) && \
	  tests/cluster/images.sh >/dev/null && \
	  KUBEBUILDER_ASSETS=$$assets cargo test --workspace --locked -- --test-threads=2

.PHONY: crds
crds:
	cargo run --quiet -p palisade-crds --bin crdgen -- charts/palisade/crds

# Benchmarks print figures (never assert times). The dataplane and end-to-end benches spawn the
# probe and palisade binaries, built here in the release profile next to the bench executables.
.PHONY: bench
bench: deps
	@assets=$$(tests/tools/build-assets.sh | tail -n 1) && \
	  peers=$$(tests/tools/build-peers.sh | tail -n 1) && \
	  cargo build --release --locked -p palisade-testkit -p palisade-cli --bins && \
	  cargo bench --locked -p palisade-engine && \
	  cargo bench --locked -p palisade-webhook && \
	  cargo bench --locked -p palisade-agent && \
	  cargo bench --locked -p palisade-dataplane-tests && \
	  KUBEBUILDER_ASSETS=$$assets PALISADE_PEERS_DIR=$$peers cargo bench --locked -p palisade-e2e

# Both upstream suites, unmodified, on a real cluster with Palisade installed by Helm: JUnit reports and a
# one-screen summary in target/conformance. CI runs the named subset (tests/cluster/conformance.sh lists it).
.PHONY: conformance
conformance: deps
	@tests/cluster/conformance.sh

.PHONY: conformance-subset
conformance-subset: deps
	@tests/cluster/conformance.sh --subset

.PHONY: images
images: deps
	@tests/cluster/images.sh

# CLUSTER_ARGS: environment for tests/cluster/cluster.sh, e.g. PALISADE_CLUSTER_NODES=3 PALISADE_IP_FAMILY=ipv4.
.PHONY: cluster
cluster: deps
	@images=$$(tests/cluster/images.sh | tail -n 1) && PALISADE_IMAGES="$$images" $(CLUSTER_ARGS) tests/cluster/cluster.sh up

.PHONY: cluster-down
cluster-down:
	@$(CLUSTER_ARGS) tests/cluster/cluster.sh down

.PHONY: demo
demo: deps ## a real cluster, helm install, the shop scenario with real connections between real pods
	@tests/cluster/demo.sh $(DEMO_ARGS)

.PHONY: demo-check
demo-check: deps
	@tests/cluster/demo.sh --check

# The same scenario on namespace-built nodes around local processes (no kubelet), as before the
# real cluster existed; quicker to iterate on the engine with.
.PHONY: demo-local
demo-local: deps
	@assets=$$(tests/tools/build-assets.sh | tail -n 1) && \
	  cargo build --quiet -p palisade-cli -p palisade-testkit -p palisade-e2e --bins && \
	  KUBEBUILDER_ASSETS=$$assets target/debug/palisade-demo $(DEMO_ARGS)
