# kiln: every target installs what is missing first (scripts/setup.sh is a
# no-op in well under a second once libtorch and FashionMNIST are in place).
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
# The torch wheel that setup installed doubles as the PyTorch reference.
PY := PYTHONPATH=$(CURDIR)/.libtorch $(PYTHON) -W ignore
# `make train` is the tutorial with seed 0 (PyTorch reaches 82.0% with it).
SEED ?= 0
ARGS ?=
# MPI data parallelism (setup installs Open MPI); `make FEATURES= ...` builds without it.
FEATURES ?= kiln-cli/mpi,kiln-cli/nccl
FEATURE_FLAGS := $(if $(FEATURES),--features $(FEATURES),)
# The tutorial step's floor benchmark (scripts/bench/step_floor.py) runs this many threads.
BENCH_THREADS ?= 2

.PHONY: setup build test lint train bench golden conformance doc gpu-check clean-setup

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release -p kiln-cli $(FEATURE_FLAGS)

test: setup
	$(CARGO) test --workspace $(FEATURE_FLAGS)

# PyTorch's own test databases (optim_db, module_db's losses) replayed through
# kiln: prints the score per optimizer and per loss. `make test` runs them too.
conformance: setup
	$(CARGO) test -p kiln-optim --test conformance -- --nocapture
	$(CARGO) test -p kiln-losses --test conformance -- --nocapture

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets $(FEATURE_FLAGS) -- -D warnings
	# kiln-loop without its optional outputs (TensorBoard, plots, progress bar).
	$(CARGO) clippy -p kiln-loop --all-targets --no-default-features -- -D warnings

train: build
	target/release/kiln train --seed $(SEED) $(ARGS)

bench: build
	$(CARGO) build --release -p kiln-cli --benches $(FEATURE_FLAGS)
	$(PY) scripts/bench/train_epoch.py --kiln-bin target/release/kiln
	$(PY) scripts/bench/image_loader.py --kiln-bin target/release/kiln --threads $(BENCH_THREADS)
	$(PY) scripts/bench/step_floor.py --kiln-bin target/release/kiln --threads $(BENCH_THREADS) \
		--before scripts/bench/step_floor.before.json
	PYTHONPATH=$(CURDIR)/.libtorch PYTHON=$(PYTHON) bash crates/optim/benches/run.sh
	$(PY) scripts/bench/scaling.py --bin "$$(ls -t target/release/deps/scaling-* | grep -v '\.d$$' | head -n1)"
	$(PY) scripts/bench/loader.py --bin "$$(ls -t target/release/deps/loader-* | grep -v '\.d$$' | head -n1)"
	$(PY) scripts/bench/large_data.py --kiln-bin target/release/kiln
	$(PY) scripts/bench/nanogpt.py --kiln-bin target/release/kiln

golden: build
	$(PY) tests/golden/interop/make_interop.py
	$(PY) crates/losses/tests/golden/make_golden.py
	$(PY) crates/optim/tests/golden/make_golden.py
	$(PY) crates/optim/tests/golden/schedulers/make_golden.py
	$(PY) crates/optim/tests/conformance/make_optim_db.py
	$(PY) crates/losses/tests/conformance/make_module_db.py

# On a machine with a CUDA GPU: kiln vs PyTorch on that GPU (parity per
# precision, NCCL with one rank, GPU<->CPU resume, epoch times).
gpu-check: build
	$(PY) scripts/gpu_check.py --kiln-bin target/release/kiln $(ARGS)

doc: setup
	$(CARGO) doc --workspace --no-deps
