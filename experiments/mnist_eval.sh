#!/usr/bin/env bash
# Score the rounds of the reduced MNIST study nearest to the given sparsities with the offline
# Frechet distance on a LeNet trained on MNIST (fd-lenet, with KID), 10k samples, DDIM 50 steps.
# Usage: [EVAL_FLAGS="--precision bf16 --compile"] bash experiments/mnist_eval.sh [RUNS_DIR] [SPARSITIES...]
set -u
runs=${1:-runs/mnist}; shift || true
targets=${*:-0.8 0.95}
# round 0 (dense) is the same computation in every run (same seed, init and data order): score it once
ticketforge eval "$runs/incremental" --round 0 --evaluator fd-lenet ${EVAL_FLAGS:-} --samples 10000 --sampler ddim --steps 50 \
  --evaluator-option batch_size=2000 || echo "eval failed: dense round"
for run in "$runs"/*/; do
  for k in $(python3 experiments/pick_rounds.py "$run" $targets); do
    ticketforge eval "$run" --round "$k" --evaluator fd-lenet ${EVAL_FLAGS:-} --samples 10000 --sampler ddim --steps 50 \
      --evaluator-option batch_size=2000 || echo "eval failed: $run round $k"
  done
done
