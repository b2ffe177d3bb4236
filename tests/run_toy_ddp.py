"""One rank of a toy run under torch.distributed (what torchrun would start), for the DDP tests.

Usage: RANK=r WORLD_SIZE=n LOCAL_RANK=r MASTER_ADDR=127.0.0.1 MASTER_PORT=p \\
       python run_toy_ddp.py OUT REPORT_DIR [--stop-at ROUND:STEP] [--batch-size B]

Writes ``REPORT_DIR/rank<r>.json``: the digest of the masks this rank trained each round with, the
digest of its final weights, and the records its ``Engine.run`` returned. ``--stop-at`` makes every
rank exit (code 3) right after the checkpoint of that step, as a stand-in for an interruption.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import core_registry  # noqa: E402

import ticketforge.engine.loop as loop  # noqa: E402
from ticketforge import Engine, RunConfig  # noqa: E402
from ticketforge.pruning.state import plain_state_dict  # noqa: E402
from ticketforge.pruning.targets import mask_digest  # noqa: E402


def main(argv: list[str]) -> None:
    out, report = argv[0], Path(argv[1])
    rank = int(os.environ["RANK"])
    masks_seen: dict[int, str] = {}
    real_masks, real_ckpt, real_save = loop.next_masks, loop.checkpoint, loop.save_round

    def next_masks(run, k):
        masks = real_masks(run, k)
        masks_seen[k] = mask_digest(masks)
        return masks

    stop = tuple(map(int, argv[argv.index("--stop-at") + 1].split(":"))) if "--stop-at" in argv else None

    def checkpoint(run, job, t, step):
        real_ckpt(run, job, t, step)
        if (job.index, step) == stop:
            os._exit(3)

    captured = {}

    def save_round(run, job, t, metrics):
        captured["weights"] = hashlib.sha256(b"".join(
            x.numpy().tobytes() for _, x in sorted(plain_state_dict(run.net.network).items()))).hexdigest()
        return real_save(run, job, t, metrics)

    loop.next_masks, loop.checkpoint, loop.save_round = next_masks, checkpoint, save_round
    batch = int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv else 16
    config = RunConfig(model="toy", schedule="uniform", rounds=2, steps_per_round=20, device="cpu", out=out,
                       log_every=5, checkpoint_every=5, artifacts=False, batch_size=batch)
    engine = Engine(config, registry=core_registry())
    records = engine.run()
    report.mkdir(parents=True, exist_ok=True)
    (report / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": engine.dist.world_size, "masks": masks_seen,
        "final_weights": captured.get("weights"), "records": records}, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
