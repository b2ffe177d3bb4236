"""How the share of recognisable digits grows with training: one dense training, scored on the way.

Trains a ``ddpm-unet`` preset (with ``--model-option`` overrides) as a dense round trains it
(Adam, linear warm-up, gradient clipping at 1, the engine's EMA with its warm-up, the engine's
seeded batches) and, after each image count of ``--kimg``, draws ``--samples`` samples from the EMA
weights (DDIM ``--sample-steps`` steps, ``--eta``, fixed seed 7) and prints the share that the
fd-lenet LeNet gives a class with probability >= 0.9 (``quickstart_digits.confident_fraction``),
with the images and seconds of training so far. One JSON line per point.

    python benchmarks/digits_curve.py --preset quickstart --kimg 4,8,11.2,16,24,32,48 --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from quickstart_digits import confident_fraction, fd_lenet  # benchmarks/ is the script's folder


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from ticketforge.cli.options import parse_key_values
    from ticketforge.engine.data import BatchSource, materialize
    from ticketforge.engine.ema import EMA
    from ticketforge.engine.train import warmup_lr
    from ticketforge_ddpm import DDPMSpec
    from ticketforge_ddpm.datasets import mnist_sample
    from ticketforge_ddpm.evaluation.data import to_uint8

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--kimg", default="4,8,16,32", help="thousands of training images at which to score")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the points to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = DDPMSpec.from_preset(args.preset, **parse_key_values(tuple(args.model_option), "--model-option"))
    d = spec.defaults
    batch, lr = args.batch_size or d.batch_size, args.lr or d.lr
    classifier, identity = fd_lenet(mnist_sample(), args.cache_dir)
    torch.manual_seed(args.seed)
    net = spec.build().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    ema = EMA(net, d.ema_decay) if d.ema_decay else None
    batches = BatchSource(materialize(mnist_sample()), batch, args.seed, device)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    points = sorted({max(1, round(float(k) * 1000 / batch)) for k in args.kimg.split(",")})
    params, out, trained = list(net.parameters()), [], 0.0
    for step in range(points[-1]):
        t0 = time.perf_counter()
        net.train()
        for group in optimizer.param_groups:
            group["lr"] = warmup_lr(lr, d.warmup_steps, step)
        loss = spec.loss(net, batches.batch(0, step), gen)
        loss.backward()
        if d.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, d.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        trained += time.perf_counter() - t0
        if step + 1 in points:
            with (ema.swapped() if ema is not None else torch.no_grad()), torch.no_grad():
                x = spec.sample(net, args.samples, generator=torch.Generator(device=device).manual_seed(7),
                                steps=args.sample_steps, eta=args.eta)
            point = {"preset": args.preset, "model_options": args.model_option, "batch_size": batch, "lr": lr,
                     "steps": step + 1, "kimg": (step + 1) * batch / 1000, "train_seconds": round(trained, 1),
                     "loss": float(loss.detach()), "samples": args.samples, "sampler": f"ddim{args.sample_steps}",
                     "eta": args.eta, "fraction": confident_fraction(classifier, to_uint8(x).cpu()),
                     "classifier_sha256": identity["sha256"], "device": str(device), "threads": args.threads}
            out.append(point)
            print(json.dumps(point), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
