#!/usr/bin/env bash
# CIFAR-10: uniform p=20 and incremental p=20, q=1, each to at least three sparsities (round 0 is the
# dense model, the same in both runs). One run per GPU when two are free (CUDA_VISIBLE_DEVICES),
# one after the other otherwise. Resumable: run it again to continue.
# Usage: bash experiments/cifar10_tickets.sh [RUNS_DIR] [ROUNDS]
set -u
runs=${1:-runs/cifar10}; rounds=${2:-10}   # uniform: 1 - 0.8^10 = 89%; incremental goes further per round
mkdir -p "$runs"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
go() {  # gpu, name, extra flags...
  local gpu=$1 name=$2; shift 2
  CUDA_VISIBLE_DEVICES=$gpu ticketforge run --config experiments/cifar10.toml --rounds "$rounds" --quiet \
    --out "$runs/$name" "$@" > "$runs/$name.log" 2>&1
  echo "$name: exit $?"
}
if [ "$gpus" -ge 2 ]; then
  go 0 uniform --schedule uniform & go 1 incremental --schedule incremental & wait
else
  go 0 uniform --schedule uniform; go 0 incremental --schedule incremental
fi
