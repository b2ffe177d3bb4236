#!/usr/bin/env bash
# Train the reduced MNIST study: three schedules and two sanity baselines, in parallel on one GPU
# (each process is launch-bound, so they overlap well). Resumable: run it again to continue.
# Usage: bash experiments/mnist_tickets.sh [RUNS_DIR]
set -u
runs=${1:-runs/mnist}
mkdir -p "$runs"
go() {  # name, extra flags...
  local name=$1; shift
  ticketforge run --config experiments/mnist.toml --quiet --out "$runs/$name" "$@" > "$runs/$name.log" 2>&1
  echo "$name: exit $?"
}
go uniform --schedule uniform &
go incremental --schedule incremental &
go global --schedule global &
go random-prune --schedule incremental --baseline random-prune &
go random-reinit --schedule incremental --baseline random-reinit &
wait
