#!/usr/bin/env bash
# CKA between tickets, module by module from upstream to downstream, in weight mode (debiased linear
# CKA over output channels) and activation mode (64 noisy inputs). Pairs: the seed-0 incremental
# ticket against the one of another data order (same init) and against the one of another init.
# Usage: bash experiments/mnist_cka.sh [RUNS_DIR] [ROUND] [OUT_DIR]
set -u
runs=${1:-runs/mnist}; round=${2:--1}; out=${3:-$runs/cka}
mkdir -p "$out"
for pair in data1 init1; do
  for mode in weights activations; do
    ticketforge compare "$runs/incremental" "$runs/incremental-$pair" --round "$round" --mode "$mode" \
      --device "${DEVICE:-cuda}" --json --plot "$out/cka-$pair-$mode.png" > "$out/cka-$pair-$mode.json" \
      || echo "compare failed: $pair $mode"
  done
done
