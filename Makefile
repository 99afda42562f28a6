# Outbound's developer entry points. `make test` is what CI runs; `make demo` shows a delivery.
SHELL := /bin/bash
GROUND := tests/ground
ENV := $(GROUND)/.state/env

.PHONY: build test unit-test ground-up ground-down ground-test lint fmt crds demo bench bench-controller clean-cache

build:
	cargo build --bins

# The operator/uploader OCI image without a Docker engine, into target/image/ (README: "The image").
.PHONY: image image-lock
image:
	cargo build --release --bin outbound
	scripts/image.sh

# Pins the Debian packages of the image at the archive's current versions (image/debian.lock).
image-lock:
	scripts/image.sh --update-lock

ground-up: build
	$(GROUND)/scripts/up.sh

ground-down:
	$(GROUND)/scripts/down.sh

# Every test: unit tests, the ground's own tests, then the Rust end-to-end tests on the ground.
# The ground is started (or reused) first and stopped at the end unless KEEP_GROUND=1.
test:
	scripts/test.sh

unit-test:
	cargo test --lib --bins

ground-test: ground-up
	source $(ENV) && cd $(GROUND) && go test -count=1 -v ./internal/... ./e2e/...

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	scripts/check-crds.sh
	$(GROUND)/scripts/tools.sh peers
	"$${OUTBOUND_CACHE:-$$HOME/.cache/outbound}/bin/helm" lint --strict charts/outbound
	cd $(GROUND) && gofmt -l . | (! grep .)

fmt:
	cargo fmt --all
	cd $(GROUND) && gofmt -w .

crds: build
	scripts/gen-crds.sh

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

# 1,000 deliveries at once against the operator on the ground: time to Jobs, RSS, API requests.
bench-controller:
	scripts/bench-controller.sh
