"""A run's identity: what names its folder, what the config check compares, what may change in place."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

import pytest
import torch

from ticketforge import Engine, RatioSchedule, RunConfig
from ticketforge.config import config_differences
from ticketforge.engine.engine import _component_name
from ticketforge.errors import ConfigError
from ticketforge.store import RunStore


class PerGroup(RatioSchedule):
    """One fraction per group, from a list setting (the issue's case)."""

    def __init__(self, fractions: list[float]):
        self.fractions = fractions

    def ratios(self, num_groups):
        return list(self.fractions)


def _digests(records):
    return [r["mask_sha256"] for r in records]


def test_differently_configured_list_settings_get_their_own_run_and_masks(toy_config, registry, tmp_path):
    config = dataclasses.replace(toy_config, out=None, runs_root=str(tmp_path / "runs"), rounds=1)
    a = Engine(config, schedule=PerGroup([0.5, 0.0, 0.0]), registry=registry)
    b = Engine(config, schedule=PerGroup([0.0, 0.0, 0.5]), registry=registry)
    assert a.run_dir != b.run_dir
    first, second = a.run(), b.run()
    assert [g["sparsity"] > 0.4 for g in first[1]["groups"]] == [True, False, False]
    assert [g["sparsity"] > 0.4 for g in second[1]["groups"]] == [False, False, True]  # not a's masks
    same = Engine(config, schedule=PerGroup([0.5, 0.0, 0.0]), registry=registry)
    assert same.run_dir == a.run_dir and _digests(same.run()) == _digests(first)


class Kind(enum.Enum):
    SOFT = 1
    HARD = 2


@dataclasses.dataclass
class Inner:
    levels: tuple = (1, 2)
    kind: Kind = Kind.SOFT


class Holder:
    def __init__(self, **settings):
        self.__dict__.update(settings)
        self._cache = object()  # private: internal state, not a setting


@pytest.mark.parametrize("a,b", [
    ({"x": [1, 2]}, {"x": [1, 3]}),
    ({"x": (0.1, 0.2)}, {"x": (0.1, 0.25)}),
    ({"x": {"inp": 0.1, "out": 0.2}}, {"x": {"inp": 0.1, "out": 0.3}}),
    ({"x": Inner()}, {"x": Inner(levels=(1, 3))}),
    ({"x": Inner()}, {"x": Inner(kind=Kind.HARD)}),
    ({"x": Kind.SOFT}, {"x": Kind.HARD}),
    ({"x": Holder(y=[1])}, {"x": Holder(y=[2])}),
    ({"x": torch.tensor([1.0, 2.0])}, {"x": torch.tensor([1.0, 2.5])}),
    ({"x": 1}, {"x": 1, "y": None}),
])
def test_every_setting_of_an_object_reaches_its_name(a, b):
    assert _component_name(Holder(**a)) != _component_name(Holder(**b))
    assert _component_name(Holder(**a)) == _component_name(Holder(**a))  # and the name is stable


def test_settings_method_names_the_object_and_unnameable_settings_are_refused(toy_config, registry):
    class Explicit(PerGroup):
        def __init__(self, fractions, hook):
            super().__init__(fractions)
            self.hook = hook  # not a setting: settings() says what is

        def settings(self):
            return {"fractions": self.fractions}

    assert _component_name(Explicit([0.1], print)) == _component_name(Explicit([0.1], len))
    assert _component_name(Explicit([0.1], print)) != _component_name(Explicit([0.2], print))

    class Opaque(PerGroup):
        def __init__(self, fractions, fn):
            super().__init__(fractions)
            self.fn = fn

    for setting in (lambda x: x, torch.nn.Linear(2, 2)):
        with pytest.raises(ConfigError) as info:
            Engine(toy_config, schedule=Opaque([0.2] * 3, setting), registry=registry)
        message = str(info.value)
        assert "\n" not in message and "Opaque.fn" in message and "give Opaque a settings() method" in message
    assert not Path(toy_config.out).exists()


def test_a_finished_run_extended_ends_with_the_masks_of_an_uninterrupted_run(toy_config, registry, tmp_path):
    # the case: a 10-round run extended to 20 against a 20-round run (4 steps a round keeps it quick)
    short = dataclasses.replace(toy_config, steps_per_round=4, log_every=2, checkpoint_every=2)
    whole = Engine(dataclasses.replace(short, rounds=20, out=str(tmp_path / "whole")), registry=registry).run()
    out = str(tmp_path / "grown")
    first = Engine(dataclasses.replace(short, rounds=10, out=out), registry=registry).run()
    seconds = [r["metrics"]["seconds"] for r in first]
    grown = Engine(dataclasses.replace(short, rounds=20, out=out), registry=registry).run()
    assert [r["round"] for r in grown] == list(range(21))
    assert [r["metrics"]["seconds"] for r in grown[:11]] == seconds  # rounds 0-10 kept, not trained again
    assert _digests(grown) == _digests(whole)
    assert grown[-1]["mask_sha256"] == whole[-1]["mask_sha256"]
    assert RunStore(out).read_config()["rounds"] == 20  # the record says how far the run went
    shorter = Engine(dataclasses.replace(short, rounds=1, out=out), registry=registry).run()
    assert _digests(shorter) == _digests(whole)  # asking for less trains nothing and loses nothing


def test_target_sparsity_is_extent_too(toy_config, registry, tmp_path):
    out = str(tmp_path / "run")
    first = Engine(dataclasses.replace(toy_config, rounds=10, target_sparsity=0.3, out=out), registry=registry).run()
    more = Engine(dataclasses.replace(toy_config, rounds=10, target_sparsity=0.45, out=out), registry=registry).run()
    assert len(first) == 3 and len(more) == 4 and _digests(more)[:3] == _digests(first)


def test_extent_and_runtime_fields_and_data_root_spelling_keep_the_identity():
    base = RunConfig(model="toy", data_root="data", rounds=3)
    for same in (dict(rounds=20), dict(target_sparsity=0.9), dict(data_root="./data"), dict(data_root="data/"),
                 dict(data_root="data//"), dict(device="cpu", out="x", log_every=7, ticket_run="t", world_size=2)):
        other = dataclasses.replace(base, **same)
        assert other.digest() == base.digest(), same
        assert config_differences(dataclasses.asdict(base), dataclasses.asdict(other)) == [], same
    for changed in (dict(data_root="data2"), dict(p=30.0), dict(seed=1), dict(init_seed=0)):
        other = dataclasses.replace(base, **changed)
        assert other.digest() != base.digest(), changed
        assert len(config_differences(dataclasses.asdict(base), dataclasses.asdict(other))) == 1, changed


def test_a_field_added_with_its_default_renames_no_run():
    @dataclasses.dataclass(frozen=True)
    class Later(RunConfig):
        shiny_new_setting: int = 0

    old = RunConfig(model="toy", seed=3, lr=0.01)
    assert Later(model="toy", seed=3, lr=0.01).digest() == old.digest()
    assert Later(model="toy", seed=3, lr=0.01, shiny_new_setting=1).digest() != old.digest()
    stored = dataclasses.asdict(old)
    del stored["init_seed"]  # a config.json written before a field existed equals one that has its default
    assert config_differences(stored, dataclasses.asdict(old)) == []
    assert config_differences(stored, dataclasses.asdict(dataclasses.replace(old, init_seed=4))) == \
        ["init_seed: None -> 4"]

