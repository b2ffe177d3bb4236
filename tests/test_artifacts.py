"""What the engine hands a model's round_artifacts: a caption naming the round and its sparsity, when it takes one."""

from __future__ import annotations

from pathlib import Path

from toy_plugin import ToySpec

from ticketforge import Engine, RunConfig
from ticketforge.engine.artifacts import artifact_caption


class Old:
    def round_artifacts(self, network, directory, generator):  # written before captions were passed
        return []


class New:
    def round_artifacts(self, network, directory, generator, *, caption=None):
        return []


class Open:
    def round_artifacts(self, network, directory, generator, **options):
        return []


def test_a_caption_goes_only_to_a_method_that_takes_it():
    assert artifact_caption(Old(), 2, 0.36) == {}
    assert artifact_caption(New(), 2, 0.36) == {"caption": "round 2, 36.0% sparse"}
    assert artifact_caption(Open(), 0, 0.0) == {"caption": "round 0, 0.0% sparse"}
    assert artifact_caption(New(), 0, 0.488, {"branch": {"name": "random-tau-0123"}}) == \
        {"caption": "branch random-tau-0123, 48.8% sparse"}


class Drawing(ToySpec):
    """The toy model with pictures: writes each caption it is given into the round's folder."""

    def round_artifacts(self, network, directory, generator, *, caption=None):
        path = Path(directory) / "caption.txt"
        path.write_text(str(caption))
        return [path]


def test_each_round_draws_under_its_own_caption(tmp_path, registry):
    config = RunConfig(model="toy", schedule="uniform", p=50.0, rounds=2, steps_per_round=4, device="cpu",
                       out=str(tmp_path / "run"), log_every=2, threads=1)
    records = Engine(config, model=Drawing(), registry=registry).run()
    captions = [(tmp_path / "run" / "rounds" / f"{k:04d}" / "caption.txt").read_text() for k in range(3)]
    assert captions == [f"round {r['round']}, {100 * r['sparsity']:.1f}% sparse" for r in records]
    assert captions[0] == "round 0, 0.0% sparse" and captions[2] == "round 2, 75.0% sparse"
