#!/usr/bin/env bash
# The rates a CIFAR-10 study plans with, measured on one GPU with the product's own commands:
#   1. two cifar10 trainings side by side under CUDA MPS (where the machine has it), compilation included;
#   2. `ticketforge eval` of one of them with fd-resnet: the featurizer's training and a 10k-sample
#      DDIM-50 score in one process;
#   3. the same eval again, the featurizer now cached: the score alone.
# Each step's seconds go to OUT/rates.txt; the trainings' records (steps/s) stay under OUT/run1, OUT/run2.
# Usage (repo root, data as experiments/cifar10.toml expects it): bash benchmarks/cifar10_rates.sh OUT [STEPS]
set -u
out=$1; steps=${2:-600}
mkdir -p "$out"
export TICKETFORGE_CACHE=${TICKETFORGE_CACHE:-$out/cache}
say() { echo "[$(date +%T)] $*" | tee -a "$out/rates.txt"; }
if command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=$out/mps-pipe CUDA_MPS_LOG_DIRECTORY=$out/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY" && nvidia-cuda-mps-control -d && say "MPS on"
fi
t0=$SECONDS
for i in 1 2; do
  python3 -m ticketforge run --config experiments/cifar10.toml --rounds 0 --steps-per-round "$steps" --quiet \
    --out "$out/run$i" > "$out/run$i.log" 2>&1 &
done
wait
say "two trainings of $steps steps side by side: $((SECONDS - t0)) s in all"
for i in 1 2; do
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('run$i', {k: r['metrics'].get(k) for k in ('steps', 'seconds', 'steps_per_s', 'cuda_graph')})" \
    "$out/run$i/rounds/0000/record.json" 2>&1 | tee -a "$out/rates.txt"
done
for pass in "featurizer trained, then a score" "the score alone (featurizer cached)"; do
  t0=$SECONDS
  python3 -m ticketforge eval "$out/run1" --round 0 --evaluator fd-resnet --samples 10000 --sampler ddim \
    --steps 50 --compile --precision bf16 > "$out/eval.log" 2>&1
  say "eval, $pass: $((SECONDS - t0)) s (exit $?)"
done
tail -n 5 "$out/eval.log" >> "$out/rates.txt"
