#!/usr/bin/env bash
# Two more incremental tickets for the CKA question (docs/results.md): one with the same initial
# weights as runs/mnist/incremental but another data order and noise (--seed 1 --init-seed 0), one
# with another init too (--seed 1). Same config as mnist_tickets.sh; resumable: run it again to continue.
# Usage: bash experiments/mnist_seeds.sh [RUNS_DIR]
set -u
runs=${1:-runs/mnist}
mkdir -p "$runs"
go() {  # name, extra flags...
  local name=$1; shift
  ticketforge run --config experiments/mnist.toml --schedule incremental --quiet --out "$runs/$name" "$@" \
    > "$runs/$name.log" 2>&1
  echo "$name: exit $?"
}
go incremental-data1 --seed 1 --init-seed 0 &
go incremental-init1 --seed 1 &
wait
