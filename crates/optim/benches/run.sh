#!/usr/bin/env bash
# Benchmarks one optimizer step, kiln vs torch.optim, on the CPU.
# Usage (from the repository root): PYTHONPATH=.libtorch crates/optim/benches/run.sh
# Environment: PYTHON (python3), ROUNDS (5), KILN_BENCH_THREADS (1),
# KILN_BENCH_STEPS (20), KILN_BENCH_TENSORS (100), KILN_BENCH_NUMEL (100000).
# Alternates kiln and torch processes ROUNDS times and reports medians, the
# ratios kiln-fast/torch-default, kiln-fast/torch-fused, kiln-fast/floor and
# kiln-default/torch-default,
# where the floor is the step's bytes moved divided by the copy bandwidth. kiln
# runs with its CPU allocator, as `kiln train` does (KILN_CPU_ALLOCATOR=libtorch:
# libtorch's own, for comparison).
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON="${PYTHON:-python3}"
ROUNDS="${ROUNDS:-5}"
export PYTHONPATH="${PYTHONPATH:-.libtorch}"
cargo build --release -p kiln-optim --bench optim_step --quiet
BIN=$(ls -t target/release/deps/optim_step-* | grep -v '\.d$' | head -n 1)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  "$BIN" >>"$OUT"
  "$PYTHON" crates/optim/benches/optim_step.py >>"$OUT"
done
"$PYTHON" crates/optim/benches/report.py <"$OUT"
