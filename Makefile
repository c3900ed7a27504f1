# voxq developer entry points. `make test` is what CI runs; `make demo` shows the engine.
SHELL := /bin/bash
.DEFAULT_GOAL := test

# A cold first build takes ~18 min on 2 cores (CTranslate2 ~4.5 min of it): keep the target dir outside the clone so
# every clone, CI run and session reuses it. Only the dev profile is used
# (it is optimised): --release would build CTranslate2 a second time.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/voxq-target
export CMAKE_PARALLEL ?= $(shell nproc)
MODEL_DIR ?= models/whisper-tiny.en
export VOXQ_MODEL_DIR ?= $(CURDIR)/$(MODEL_DIR)
BASE_MODEL_DIR ?= models/whisper-base
export VOXQ_BASE_MODEL_DIR ?= $(CURDIR)/$(BASE_MODEL_DIR)
WORKER := $(CARGO_TARGET_DIR)/debug/voxq-worker

.PHONY: deps model build lint test demo bench fixtures clean-cache

deps:
	scripts/install-deps.sh
	scripts/fetch-onednn.sh

model:
	scripts/fetch-model.sh $(MODEL_DIR)
	scripts/fetch-model.sh base $(BASE_MODEL_DIR)
	scripts/fetch-vad.sh

build: deps
	cargo build --workspace --all-targets

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Tests run against the real services: PostgreSQL (a fresh database per run), Redis and
# an S3-compatible server, checked and started if absent by scripts/services.sh.
# `cargo test` builds a package's binaries only for that package's own integration
# tests; the end-to-end tests in tests/ start voxq-api and voxq-worker, so build every
# target first (with the test targets' features, so nothing is compiled twice).
test: deps model lint
	cargo build --workspace --all-targets
	eval "$$(scripts/services.sh up)" && \
	trap 'scripts/services.sh down "$$VOXQ_TEST_DATABASE"' EXIT && \
	cargo test --workspace --all-targets

demo: deps model
	cargo build -p voxq-worker
	$(WORKER) transcribe --format table fixtures/voice fixtures/edge

# Reference transcripts and the speed/parity benchmark against faster-whisper.
bench: deps model
	cargo build -p voxq-worker
	bench/run.sh

fixtures:
	scripts/make-fixtures.sh

bench-load: deps
	bench/load.sh

bench-cost: deps
	bench/cost.sh
