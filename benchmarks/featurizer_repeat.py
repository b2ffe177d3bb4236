"""Is the fd-lenet featurizer the same network when it is trained again? (docs/performance.md)

Scores are comparable only under one featurizer sha256, and the featurizer is trained on first use in
each fresh cache (on a lent GPU: each session). This trains it ``--repeats`` times, each in a fresh
process and a fresh cache, half of them after the process turned on TF32 and cuDNN autotuning (as a
scoring process does), and prints one JSON line per training plus a summary.

    python benchmarks/featurizer_repeat.py --data-root .data/mnist --device cuda --repeats 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def train_once(data_root: str, device: str, tuned: bool) -> dict:
    import torch

    from ticketforge_ddpm.datasets import mnist
    from ticketforge_ddpm.evaluation.data import ImageSet
    from ticketforge_ddpm.evaluation.featurizer import FeaturizerConfig, load_or_train

    if tuned:  # what the scoring process has set by the time it trains the featurizer
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    data = ImageSet.from_dataset(mnist(data_root))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        feat = load_or_train("mnist", lambda: data, FeaturizerConfig("lenet"), device=device, cache_dir=cache)
    return {"sha256": feat.sha256, "test_accuracy": feat.test_accuracy, "tuned": tuned,
            "seconds": time.perf_counter() - start, "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=["plain", "tuned"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_once(args.data_root, args.device, args.one == "tuned")))
        return
    results = []
    for i in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--data-root", args.data_root, "--device", args.device,
                              "--one", "tuned" if i % 2 else "plain"], check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"same_sha256": len({r["sha256"] for r in results}) == 1, "trainings": len(results)}))


if __name__ == "__main__":
    main()
