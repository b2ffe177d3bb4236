"""Training and sampling throughput of the engine's own step, baseline and optimised, in one process.

Every variant runs the engine's ``train_round`` (the code a real run uses) on random images held on
the device, from the same initial weights. Printed last: a table of steps/s, images/s, model FLOP
utilisation (FLOPs of one training step counted by ``torch.utils.flop_counter`` over the measured
bf16 matmul peak) and peak memory; ``--json`` writes the full numbers.

    python benchmarks/bench.py --preset cifar10 --json out.json        # on a GPU
    python benchmarks/bench.py --smoke                                   # CPU, seconds (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch._dynamo
from torch.utils.flop_counter import FlopCounterMode

from ticketforge.engine.data import BatchSource
from ticketforge.engine.ema import EMA
from ticketforge.engine.engine import compile_options, set_matmul_precision
from ticketforge.engine.sampling import sampling_network
from ticketforge.engine.train import autocast_for, make_optimizer, make_stepper, train_round
from ticketforge.pruning.state import load_plain_state_dict, plain_state_dict
from ticketforge.pruning.targets import PrunableNetwork
from ticketforge.registry import get_registry


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str  # fp32, tf32, bf16
    compile: bool = False
    sparsity: float = 0.0
    channels_last: bool = False
    capture: bool = False  # the whole step as one CUDA graph (engine/step_graph.py)
    cudnn_benchmark: bool = False  # cuDNN times its convolution algorithms once per shape
    nchw: bool = False  # compiled without the channels-last layout the engine asks inductor for
    tune: bool = False  # inductor's coordinate-descent tuning of its Triton kernels (longer compile)


# compile-*: torch.compile with its own CUDA graphs over the network (as mode reduce-overhead), the rest
# of the step eager; graph-*: the whole step captured as one graph, eager kernels; compile-graph-*:
# both (torch.compile's default mode inside our graph), what `ticketforge run --compile` does on one GPU.
VARIANTS = {v.name: v for v in [
    Variant("eager-fp32", "fp32"),
    Variant("eager-tf32", "tf32"),
    Variant("eager-bf16", "bf16"),
    Variant("eager-tf32-sparse90", "tf32", sparsity=0.9),
    Variant("compile-tf32", "tf32", compile=True),
    Variant("compile-bf16", "bf16", compile=True),
    Variant("compile-bf16-cl", "bf16", compile=True, channels_last=True),
    Variant("compile-bf16-sparse90", "bf16", compile=True, sparsity=0.9),
    Variant("graph-tf32", "tf32", capture=True),
    Variant("graph-bf16", "bf16", capture=True),
    Variant("compile-graph-tf32", "tf32", compile=True, capture=True),
    Variant("compile-graph-bf16", "bf16", compile=True, capture=True),
    Variant("compile-graph-bf16-cl", "bf16", compile=True, capture=True, channels_last=True),
    Variant("compile-graph-bf16-sparse90", "bf16", compile=True, capture=True, sparsity=0.9),
    Variant("compile-graph-bf16-cudnn", "bf16", compile=True, capture=True, cudnn_benchmark=True),
    Variant("compile-graph-bf16-cl-cudnn", "bf16", compile=True, capture=True, channels_last=True,
            cudnn_benchmark=True),
    Variant("compile-graph-bf16-nchw", "bf16", compile=True, capture=True, nchw=True),
    Variant("compile-bf16-nchw", "bf16", compile=True, nchw=True),
    Variant("compile-graph-bf16-tune", "bf16", compile=True, capture=True, tune=True),
]}


def compile_network(network: torch.nn.Module, variant: Variant, device: torch.device,
                    capture: bool) -> torch.nn.Module:
    """``network`` compiled as the engine does (or left eager). Dynamo's caches are reset first: it
    would otherwise reuse the previous variant's compiled code for the same class whatever the
    options (seen on torch 2.11: a variant compiled in 1 s)."""
    if not variant.compile:
        return network
    torch._dynamo.reset()
    kwargs = compile_options(device, capture, channels_last=not variant.nchw)
    if variant.tune:
        kwargs.setdefault("options", {})["coordinate_descent_tuning"] = True
    return torch.compile(network, **kwargs)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device) -> float | None:
    """Measured bf16 matmul rate (TFLOP/s) on random 8192^3 operands: the MFU denominator."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * 8192 ** 3 * reps / (time.perf_counter() - t0) / 1e12


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def forward_flops(spec: Any, network: torch.nn.Module, device: torch.device) -> int:
    """FLOPs of one image's forward pass (a sampling step costs this per image)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(*spec.example_inputs(1, device))
    return counter.get_total_flops()


def step_flops(spec: Any, network: torch.nn.Module, batch: torch.Tensor, precision: str, device: torch.device) -> int:
    """FLOPs of one forward+backward training step (2 per multiply-add), counted by torch."""
    gen = torch.Generator(device=device).manual_seed(0)
    with FlopCounterMode(display=False) as counter, autocast_for(precision, device):
        spec.loss(network, batch, gen).backward()
    network.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def random_masks(targets: list, sparsity: float, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(t.module.weight.shape, generator=gen) >= sparsity for t in targets]


@dataclass
class TrainingSetup:
    """One variant's network and step, ready for ``train_round``: what timing and profiling share."""
    network: torch.nn.Module
    forward: torch.nn.Module  # compiled, or the network itself
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    batches: BatchSource
    generator: torch.Generator
    capture: bool

    def run(self, spec: Any, variant: Variant, steps: int, warmup: int, on_log: Any = lambda *a: None) -> None:
        stepper = make_stepper(spec, self.network, self.optimizer, self.ema, self.generator, self.batches.device, 0,
                               lr=spec.defaults.lr, grad_clip=spec.defaults.grad_clip, precision=variant.precision,
                               capture=self.capture, forward_network=self.forward)
        train_round(stepper, self.batches, round_index=0, start_step=0, steps=steps, log_every=warmup, checkpoint_every=10 ** 9, on_log=on_log, on_checkpoint=lambda s: None)


def prepare_training(spec: Any, variant: Variant, init: dict, images: torch.Tensor, batch_size: int,
                     device: torch.device) -> TrainingSetup:
    """The same initial weights for every variant, its masks, layout, precision and compilation."""
    torch.manual_seed(0)
    net = PrunableNetwork.build(spec)
    net.network.to(device)
    network = net.load([m.to(device) for m in random_masks(net.targets, variant.sparsity)], init, source="init")
    if variant.channels_last:
        network = network.to(memory_format=torch.channels_last)
    set_matmul_precision(variant.precision)
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    capture = variant.capture and device.type == "cuda"
    return TrainingSetup(
        network=network, forward=compile_network(network, variant, device, capture),
        optimizer=make_optimizer(network, spec.defaults.lr, 0.0, device, capturable=capture),
        ema=EMA(network, spec.defaults.ema_decay) if spec.defaults.ema_decay else None,
        batches=BatchSource(images, batch_size, seed=0, device=device),
        generator=torch.Generator(device=device).manual_seed(0), capture=capture)


def bench_training(spec: Any, variant: Variant, init: dict, images: torch.Tensor, batch_size: int,
                   warmup: int, steps: int, device: torch.device) -> dict[str, Any]:
    bench = prepare_training(spec, variant, init, images, batch_size, device)
    marks: list[tuple[int, float, float]] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def on_log(done: int, metrics: dict[str, float]) -> None:
        sync(device)
        marks.append((done, time.perf_counter(), metrics["loss"]))

    t_start = time.perf_counter()
    bench.run(spec, variant, warmup + steps, warmup, on_log)  # logs after the warm-up, then at the end
    (s0, t0, _), (s1, t1, last_loss) = marks[0], marks[-1]
    rate = (s1 - s0) / (t1 - t0)
    return {"variant": variant.name, "steps_per_s": rate, "images_per_s": rate * batch_size,
            "warmup_s": t0 - t_start, "final_loss": last_loss, "losses": [m[2] for m in marks],
            "peak_memory_gib": peak_gib(device)}


@dataclass(frozen=True)
class SampleVariant:
    name: str
    precision: str
    compile: bool = False
    channels_last: bool = False
    cudnn_benchmark: bool = False


SAMPLE_VARIANTS = {v.name: v for v in [
    SampleVariant("sample-eager-fp32", "fp32"),
    SampleVariant("sample-eager-tf32", "tf32"),
    SampleVariant("sample-eager-bf16", "bf16"),
    SampleVariant("sample-compile-bf16-nchw", "bf16", compile=True),
    SampleVariant("sample-compile-bf16-cl", "bf16", compile=True, channels_last=True),
    SampleVariant("sample-compile-bf16-nchw-cudnn", "bf16", compile=True, cudnn_benchmark=True),
    SampleVariant("sample-compile-bf16-cl-cudnn", "bf16", compile=True, channels_last=True, cudnn_benchmark=True),
]}
DEFAULT_SAMPLING = "sample-eager-fp32,sample-eager-tf32,sample-eager-bf16,sample-compile-bf16-nchw,sample-compile-bf16-cl"


def bench_sampling(spec: Any, init: dict, n: int, steps: int, variant: SampleVariant,
                   device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    network = spec.build().to(device)
    load_plain_state_dict(network, init)
    network.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    # What eval and sample run (which pick channels_last themselves when compiling on a GPU).
    net, _ = sampling_network(network, variant.precision, variant.compile, device, variant.channels_last)
    gen = torch.Generator(device=device)
    with torch.no_grad():
        spec.sample(net, n, generator=gen.manual_seed(0), sampler="ddim", steps=min(steps, 5))  # warm-up / compile
        sync(device)
        t0 = time.perf_counter()
        spec.sample(net, n, generator=gen.manual_seed(1), sampler="ddim", steps=steps)
        sync(device)
    seconds = time.perf_counter() - t0
    return {"variant": variant.name, "images_per_s": n / seconds,
            "seconds": seconds, "n": n, "ddim_steps": steps, "peak_memory_gib": peak_gib(device)}


def profile_training(spec: Any, variant: Variant, init: dict, images: torch.Tensor, batch_size: int,
                     device: torch.device, steps: int = 10, rows: int = 30) -> str:
    """Top kernels of ``variant``'s step by GPU time. Runs without any CUDA graph (the profiler does
    not see inside a replayed graph), so launch gaps are not what this shows; kernel times are."""
    from torch.profiler import ProfilerActivity, profile

    # Set up as for the step graph (compiled without CUDA graphs of its own), then run eagerly.
    probe = replace(variant, capture=True)
    bench = prepare_training(spec, probe, init, images, batch_size, device)
    bench.capture = False
    bench.run(spec, probe, 5, 1)
    sync(device)
    on_gpu = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU]) as prof:
        bench.run(spec, probe, steps, 1)
        sync(device)
    return prof.key_averages().table(sort_by="self_device_time_total" if on_gpu else "self_cpu_time_total",
                                     row_limit=rows, max_name_column_width=90)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=30, help="steps before timing (compilation happens here)")
    parser.add_argument("--steps", type=int, default=150, help="timed steps")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sample-n", type=int, default=512)
    parser.add_argument("--sample-steps", type=int, default=100)
    parser.add_argument("--sampling", default=DEFAULT_SAMPLING, help="sampling variants ('' for none)")
    parser.add_argument("--profile", default="", help="training variants to profile (top kernels, no graphs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny preset, a few steps: checks the harness runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.batch_size, args.warmup, args.steps, args.device = "tiny", 4, 2, 2, "cpu"
        args.variants, args.sample_n, args.sample_steps = "eager-fp32,eager-tf32-sparse90", 2, 2
        args.sampling = "sample-eager-fp32"
    device = torch.device(args.device)
    if device.type == "cpu" and args.sampling == DEFAULT_SAMPLING:
        args.sampling = "sample-eager-fp32"
    spec = get_registry().create("models", "ddpm-unet", preset=args.preset)
    torch.manual_seed(0)
    init = plain_state_dict(spec.build())
    c, s = spec.config["in_channels"], spec.config.get("data_size") or spec.config["image_size"]
    images = torch.randint(0, 256, (max(4096, args.batch_size), c, s, s), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    peak = matmul_peak_tflops(device)
    probe = spec.build().to(device)
    flops = {p: step_flops(spec, probe, BatchSource(images, args.batch_size, 0, device).batch(0, 0), p, device)
             for p in ("fp32",)}["fp32"]
    image_flops = forward_flops(spec, probe, device)
    rows: list[dict[str, Any]] = []
    report = {"preset": args.preset, "batch_size": args.batch_size, "device": str(device),
              "card": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "train_step_flops": flops, "image_forward_flops": image_flops,
              "bf16_matmul_peak_tflops": peak,
              "warmup_steps": args.warmup, "timed_steps": args.steps, "rows": rows}

    def record(row: dict[str, Any], flops_per_unit: float) -> None:
        """Add MFU, print the row and rewrite the JSON (a run cut off by a time limit keeps its rows)."""
        row["tflops"] = flops_per_unit * (row.get("steps_per_s") or row["images_per_s"]) / 1e12
        row["mfu"] = row["tflops"] / peak if peak else None
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)

    for name in filter(None, args.variants.split(",")):
        record(bench_training(spec, VARIANTS[name], init, images, args.batch_size, args.warmup, args.steps, device),
               flops)
    for name in filter(None, args.sampling.split(",")):
        record(bench_sampling(spec, init, args.sample_n, args.sample_steps, SAMPLE_VARIANTS[name], device),
               image_flops * args.sample_steps)
    profile_steps = 2 if args.smoke else 10  # the profiler's own bookkeeping takes seconds per CPU step
    for name in filter(None, args.profile.split(",")):
        print(f"\n{name}: top kernels over {profile_steps} steps\n" + profile_training(
            spec, VARIANTS[name], init, images, args.batch_size, device, steps=profile_steps), flush=True)
    def rate(r: dict) -> float:
        return r.get("steps_per_s") or r["images_per_s"]

    def baseline(r: dict, precision: str) -> float:
        prefix = "sample-" if "steps_per_s" not in r else ""
        match = next((b for b in rows if b["variant"] == f"{prefix}eager-{precision}"), None)
        return rate(r) / rate(match) if match else float("nan")

    print(f"\n{args.preset} batch {args.batch_size} on {report['card']} (torch {torch.__version__}); "
          f"speed-ups vs eager TF32 and eager FP32 of the same kind; peak bf16 matmul {peak and round(peak)} TFLOP/s")
    print(f"{'variant':30s} {'steps/s':>8s} {'img/s':>9s} {'vs tf32':>8s} {'vs fp32':>8s} {'MFU':>6s} "
          f"{'peak GiB':>9s} {'loss':>8s}")
    for r in rows:
        print(f"{r['variant']:30s} {r.get('steps_per_s') or float('nan'):8.2f} {r['images_per_s']:9.1f} "
              f"{baseline(r, 'tf32'):8.2f} {baseline(r, 'fp32'):8.2f} {(r.get('mfu') or float('nan')):6.1%} "
              f"{(r.get('peak_memory_gib') or float('nan')):9.2f} {r.get('final_loss', float('nan')):8.4f}")
    return report


if __name__ == "__main__":
    main()
