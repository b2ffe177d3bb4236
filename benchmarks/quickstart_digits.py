"""Does a run's dense round draw digits? The share of its samples a digit classifier is sure of.

The samples are round 0's ``samples.png``: drawn again from the round's EMA weights with the run's
artifact seed, sampler settings and count (``spec.artifact_samples``), which on the device the run
used gives the very images of the PNG (``--seed`` draws others). The classifier is the LeNet that
``ticketforge eval --evaluator fd-lenet`` trains on the run's dataset (its code, default settings and
cache). A sample counts as a digit when the LeNet gives one class a probability of at least
``--threshold``; the same share over the dataset's held-out images (``train=False``) is printed
beside it, as the most that samples as clean as real digits would get.

    python benchmarks/quickstart_digits.py RUN_DIR            # the fraction for a finished run
    python benchmarks/quickstart_digits.py --default-run DIR  # time README's command in DIR, then measure

``--default-run`` runs ``ticketforge run --model ddpm-unet --schedule incremental`` (README's default
command, no other flag) in a fresh folder ``DIR`` and reports its wall-clock time, the machine's load
average before and after, and the fraction. It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ticketforge.errors import TicketforgeError

DEFAULT_COMMAND = ["run", "--model", "ddpm-unet", "--schedule", "incremental"]
THRESHOLD = 0.9
TARGET = 0.8  # the bar: 80% of the 64 samples


@torch.no_grad()
def confident_fraction(classifier: nn.Module, images: Tensor, threshold: float = THRESHOLD) -> float:
    """The share of ``images`` (uint8 or [0, 1] floats, ``[n, C, H, W]``) that ``classifier`` puts in
    one class with probability >= ``threshold``. The classifier takes the fd-lenet input ([-1, 1])."""
    from ticketforge_ddpm.evaluation.classifiers import normalize

    if images.shape[0] == 0:
        raise ValueError("no images to classify")
    classifier.eval()
    probabilities = torch.softmax(classifier(normalize(images)).float(), dim=1)
    return float((probabilities.max(dim=1).values >= threshold).float().mean())


def fd_lenet(dataset: Any, cache_dir: str | None = None, **config: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The fd-lenet evaluator's classifier for ``dataset`` (trained once, then read from its cache) and
    what identifies it. ``config``: :class:`FeaturizerConfig` fields (the evaluator's defaults if none)."""
    from ticketforge_ddpm.evaluation.data import ImageSet
    from ticketforge_ddpm.evaluation.featurizer import FeaturizerConfig, load_or_train

    data = ImageSet.from_dataset(dataset)
    featurizer = load_or_train(data.key, lambda: data, FeaturizerConfig("lenet", **config), cache_dir=cache_dir)
    return featurizer.model, {"sha256": featurizer.sha256, "test_accuracy": featurizer.test_accuracy,
                              "dataset_key": data.key}


def round_samples(run: str | Path, round: int = 0, *, seed: int | None = None, n: int | None = None,
                  device: str = "cpu") -> Tensor:
    """Round ``round``'s ``samples.png`` images (uint8): its EMA weights sampled as the engine drew them
    (the run's artifact seed unless ``seed``)."""
    from ticketforge.api import load_round
    from ticketforge.engine.artifacts import artifacts_seed
    from ticketforge_ddpm.evaluation.data import to_uint8

    loaded = load_round(run, round, ema=True, device=device)
    generator = torch.Generator(device=device).manual_seed(
        artifacts_seed(loaded.config.get("seed", 0)) if seed is None else seed)
    with torch.no_grad():
        return to_uint8(loaded.spec.artifact_samples(loaded.network, generator, n=n))


def measure(run: str | Path, *, round: int = 0, seed: int | None = None, n: int | None = None,
            threshold: float = THRESHOLD, device: str = "cpu", cache_dir: str | None = None,
            classifier_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fraction for ``run``'s round, with the classifier's identity and its held-out ceiling."""
    from ticketforge.registry import get_registry
    from ticketforge.store import RunStore
    from ticketforge_ddpm.evaluation.data import ImageSet

    config = RunStore(run).read_config()
    registry = get_registry()

    def dataset(train: bool) -> Any:
        return registry.create("datasets", config["dataset"], root=config.get("data_root"),
                               download=bool(config.get("download")), train=train)

    classifier, identity = fd_lenet(dataset(True), cache_dir, **(classifier_config or {}))
    samples = round_samples(run, round, seed=seed, n=n, device=device)
    out = {"run": str(run), "round": round, "samples": int(samples.shape[0]), "threshold": threshold,
           "fraction": confident_fraction(classifier, samples, threshold), "target": TARGET,
           "seed": "the run's artifact seed" if seed is None else seed, "classifier": {"arch": "lenet", **identity}}
    try:
        held_out = ImageSet.from_dataset(dataset(False)).images
    except (TicketforgeError, OSError, TypeError, ValueError) as exc:  # no test split: the ceiling is only context
        out["held_out_fraction"] = None
        out["held_out_note"] = f"no held-out images ({exc})"
    else:
        out["held_out_fraction"] = confident_fraction(classifier, held_out, threshold)
        out["held_out_images"] = int(held_out.shape[0])
    return out


def time_default_run(folder: Path) -> dict[str, Any]:
    """Run README's default command in ``folder`` (made fresh) and time it; returns the run folder too."""
    folder.mkdir(parents=True, exist_ok=False)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ticketforge", *DEFAULT_COMMAND, "--quiet"], cwd=folder,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the default command failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    run_dir = folder / done.stdout.strip().splitlines()[-1].removeprefix("Run folder: ")
    return {"command": "ticketforge " + " ".join(DEFAULT_COMMAND), "seconds": round(seconds, 1),
            "load_before": load_before, "load_after": os.getloadavg(), "run_dir": str(run_dir)}


def _machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    return {"commit": commit, "torch": torch.__version__, "cpu": cpu, "cores": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("run", nargs="?", help="a finished run's folder")
    where.add_argument("--default-run", metavar="DIR", help="run README's default command in the new folder DIR first")
    ap.add_argument("--round", type=int, default=0)
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (default: the one samples.png was drawn with)")
    ap.add_argument("--n", type=int, default=None, help="samples (default: as many as samples.png holds)")
    ap.add_argument("--threshold", type=float, default=THRESHOLD)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", default=None, help="the classifier's cache (default: ticketforge's cache)")
    ap.add_argument("--classifier-max-steps", type=int, default=None,
                    help="train the LeNet this many steps instead of the evaluator's epochs (for tests only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the measurement's own work; the default run picks its threads itself
    report: dict[str, Any] = {"machine": _machine()}
    run = args.run
    if args.default_run:
        report["default_run"] = time_default_run(Path(args.default_run))
        run = report["default_run"]["run_dir"]
    try:
        report.update(measure(run, round=args.round, seed=args.seed, n=args.n, threshold=args.threshold,
                              device=args.device, cache_dir=args.cache_dir,
                              classifier_config={"max_steps": args.classifier_max_steps}))
    except TicketforgeError as exc:  # no run there, an unfinished round: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps(report, indent=1, default=str))
    ceiling = report["held_out_fraction"]
    print(f"digits: {report['fraction']:.3f} of {report['samples']} samples at p >= {args.threshold:g} "
          f"(target {TARGET:g}; held-out real images: {'n/a' if ceiling is None else f'{ceiling:.3f}'})",
          file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
