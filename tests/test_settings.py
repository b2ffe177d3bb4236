"""Every setting is one declaration: its flag, TOML key, Engine override, help and hash are derived from it;
every component's declared options reach it from the command line and TOML, checked and hashed."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
import pytest
from click.testing import CliRunner
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, Engine, Option, RunConfig, TrainingDefaults, hookimpl
from ticketforge.builtins.scorers import MagnitudeScorer
from ticketforge.cli.main import cli
from ticketforge.cli.settings_options import given_settings, setting_options
from ticketforge.config import PRESET_FIELDS, ResolvedConfig, setting, settings
from ticketforge.errors import ConfigError, PluginError
from ticketforge.store import RunStore


@dataclasses.dataclass(frozen=True)
class Later(RunConfig):
    """RunConfig as a later version has it: three settings added, each by its one declaration."""

    shiny: int = setting(0, "A shiny new setting.")
    shiny_budget: int = setting(help="A setting the presets may set.", preset=7)
    shiny_extent: int = setting(1, "How far something goes.", kind="extent")
    shiny_mode: str = setting("a", "One of a or b.", choices=("a", "b"))


def _command(cls: type[RunConfig]) -> click.Command:
    @click.command("run")
    def run(**values: Any) -> None:
        click.echo(json.dumps(given_settings(values, cls())))
    return click.command("run")(setting_options(run.callback, cls))  # type: ignore[arg-type]


def test_a_new_setting_is_one_declaration(toy_config, registry):
    runner = CliRunner()
    command = _command(Later)
    shown = runner.invoke(command, ["--help"], terminal_width=200).output  # what docs/cli.md is rendered from
    assert "--shiny INTEGER" in shown and "A shiny new setting. [default: 0]" in shown
    assert "A setting the presets may set. [default: the preset's]" in shown
    assert "--shiny-mode [a|b]" in shown
    given = runner.invoke(command, ["--shiny", "3", "--shiny-mode", "b"])
    assert json.loads(given.output) == {"shiny": 3, "shiny_mode": "b"}  # only what was given
    assert runner.invoke(command, ["--shiny", "x"]).exit_code == 2

    assert Later.from_dict({"shiny": 3, "shiny-budget": 2}).shiny_budget == 2  # a TOML key, either spelling
    with pytest.raises(ConfigError, match=r"^config: shiny must be an integer, not \"3\" \(a string\)$"):
        Later.from_dict({"shiny": "3"})
    with pytest.raises(ConfigError, match="shiny_mode must be one of a, b, not 'c'"):
        Later(shiny_mode="c").check()

    # The hash: a setting at its default names no run, so adding it renamed none; an extent never does.
    old = dataclasses.replace(toy_config, out=None)
    later = Later(**{f.name: getattr(old, f.name) for f in dataclasses.fields(RunConfig)})
    assert later.digest() == old.digest()
    assert dataclasses.replace(later, shiny_extent=9).digest() == old.digest()
    assert dataclasses.replace(later, shiny=1).digest() != old.digest()

    # Engine(**overrides), and the preset's value (the toy model's defaults do not name it: the declared one).
    engine = Engine(later, shiny=5, registry=registry)
    assert isinstance(engine.config, ResolvedConfig) and isinstance(engine.config, Later)
    assert (engine.config.shiny, engine.config.shiny_budget) == (5, 7)
    assert engine.run_dir.name.endswith(engine.config.digest()) and engine.config.digest() != old.digest()
    # A preset setting added later names the run only where it differs from its declared value.
    before = Engine(old, registry=registry).config.digest()
    assert Engine(later, registry=registry).config.digest() == before
    assert Engine(later, shiny_budget=8, registry=registry).config.digest() != before


def test_the_presets_may_set_what_is_declared_preset_and_resolve_fills_all_of_it():
    assert tuple(f.name for f in dataclasses.fields(TrainingDefaults)) == PRESET_FIELDS
    assert {n for n, s in settings().items() if s.from_preset} == set(PRESET_FIELDS) >= {"lr", "batch_size"}
    assert TrainingDefaults().dataset is None  # the core names no plugin's dataset
    resolved = RunConfig(model="toy", lr=0.5).resolve(TrainingDefaults(batch_size=3, dataset="toy-data"))
    assert isinstance(resolved, ResolvedConfig)
    assert (resolved.lr, resolved.batch_size, resolved.rounds, resolved.dataset) == (0.5, 3, 25, "toy-data")
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="names no dataset: give one with --dataset"):
        RunConfig(model="toy").resolve(TrainingDefaults())
    with pytest.raises(ConfigError, match="model was not resolved"):
        RunConfig().resolve(TrainingDefaults(dataset="toy-data"))


def test_the_model_is_the_only_installed_one_and_ddpm_unet_keeps_its_unnamed_hash(toy_config, registry):
    engine = Engine(dataclasses.replace(toy_config, model=None), registry=registry)
    assert engine.config.model == "toy"
    assert RunConfig(model="ddpm-unet").digest() == RunConfig().digest()  # the old default's folders keep names
    with pytest.raises(PluginError, match=r"2 models are installed \(toy, toy-two\): name the model"):
        core_registry(_TwoModels()).only("models")


class _TwoModels:
    @hookimpl
    def ticketforge_models(self) -> list[ComponentRecord]:
        import toy_plugin
        return [ComponentRecord("toy-two", toy_plugin.ToySpec, "a second model")]


class Scaled(MagnitudeScorer):
    """|w| times a factor: the same order, so the same masks; what matters here is the option's path."""

    seen: list[dict[str, Any]] = []

    def __init__(self, scale: float = 1.0, tag: str = "x"):
        Scaled.seen.append({"scale": scale, "tag": tag})


class _Options:
    """A scorer and a dataset with declared options."""

    seen_data: list[dict[str, Any]] = []

    @hookimpl
    def ticketforge_scorers(self) -> list[ComponentRecord]:
        return [ComponentRecord("scaled", Scaled, "magnitude, scaled", (
            Option("scale", float, 1.0, "factor"), Option("tag", str, "x", "a label")))]

    @hookimpl
    def ticketforge_datasets(self) -> list[ComponentRecord]:
        import toy_plugin

        def data(root: str | None = None, download: bool = False, train: bool = True, flip: bool = False) -> Any:
            _Options.seen_data.append({"flip": flip})
            return toy_plugin.toy_data()
        return [ComponentRecord("toy-options", data, "the toy data, with an option", (
            Option("root", str, None, "unused"), Option("download", bool, False, "unused"),
            Option("train", bool, True, "unused"), Option("flip", bool, False, "a flag")))]


@pytest.fixture
def options_registry(monkeypatch):
    registry = core_registry(_Options())
    monkeypatch.setattr(registry_module, "_registry", registry)
    Scaled.seen.clear()
    _Options.seen_data.clear()
    return registry


def _run(tmp_path, *extra: str, config: str | None = None):
    args = ["run", "--model", "toy", "--schedule", "uniform", "--rounds", "1", "--steps-per-round", "4",
            "--device", "cpu", "--runs-root", str(tmp_path / "runs"), "--quiet", "--no-artifacts", *extra]
    return CliRunner().invoke(cli, args + (["--config", config] if config else []))


def _folder(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1].removeprefix("Run folder: ")


def test_component_options_reach_their_component_and_name_the_run(tmp_path, options_registry):
    plain = _folder(_run(tmp_path, "--scorer", "scaled"))
    default = _folder(_run(tmp_path, "--scorer", "scaled", "--scorer-option", "scale=1"))
    assert default == plain  # a declared default names no run
    scaled = _folder(_run(tmp_path, "--scorer", "scaled", "--scorer-option", "scale=2", "--scorer-option", "tag=7"))
    assert scaled != plain and Scaled.seen[-1] == {"scale": 2.0, "tag": "7"}  # 7: the text a str option takes
    assert RunStore(scaled).read_config()["scorer_options"] == {"scale": 2.0, "tag": "7"}
    toml = tmp_path / "run.toml"
    toml.write_text('scorer = "scaled"\n[scorer-options]\nscale = 2.0\ntag = "7"\n')
    assert _folder(_run(tmp_path, config=str(toml))) == scaled  # the TOML table is the same run

    data = _folder(_run(tmp_path, "--dataset", "toy-options", "--dataset-option", "flip=true"))
    assert _Options.seen_data[-1] == {"flip": True}
    assert data != _folder(_run(tmp_path, "--dataset", "toy-options"))


def test_p_and_q_are_the_schedule_options_and_keep_their_hash(tmp_path, options_registry):
    by_flag = _folder(_run(tmp_path, "--prune-percent", "30"))
    assert _folder(_run(tmp_path, "--schedule-option", "p=30")) == by_flag
    toml = tmp_path / "run.toml"
    toml.write_text("[schedule-options]\np = 30\n")
    assert _folder(_run(tmp_path, config=str(toml))) == by_flag
    assert RunConfig(schedule_options={"p": 30}).identity() == {"p": 30.0} == RunConfig(p=30.0).identity()


@pytest.mark.parametrize("args,needle", [
    (["--scorer-option", "scale=2"], "scorer 'magnitude' has no option 'scale' (it has none;"),
    (["--scorer", "scaled", "--scorer-option", "scael=2"], "scorer 'scaled' has no option 'scael' (options: scale, tag;"),
    (["--scorer", "scaled", "--scorer-option", "scale=big"], "option 'scale' must be a number, not \"big\" (a string)"),
    (["--schedule-option", "r=1"], "schedule 'uniform' has no option 'r' (options: p, within;"),
    (["--schedule-option", "p=x"], "schedule option 'p' must be a number"),
    (["--schedule-option", "within=layer"], "within='layer': use within=group"),
    (["--dataset", "toy-options", "--dataset-option", "root=/x"], "--dataset-option root, download and train"),
    (["--dataset-option", "nokey"], "expected KEY=VALUE"),
])
def test_a_bad_component_option_is_one_line(tmp_path, options_registry, args, needle):
    result = _run(tmp_path, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_list_options_shows_every_declared_option(options_registry):
    doc = json.loads(CliRunner().invoke(cli, ["list", "--options", "--json"]).output)
    scaled = next(r for r in doc["scorers"] if r["name"] == "scaled")
    assert scaled["options"] == [{"name": "scale", "type": "float", "default": 1.0, "help": "factor"},
                                 {"name": "tag", "type": "str", "default": "x", "help": "a label"}]
    assert {o["name"] for o in next(r for r in doc["schedules"] if r["name"] == "incremental")["options"]} == {"p", "q", "within"}
    assert "options" not in json.loads(CliRunner().invoke(cli, ["list", "--json"]).output)["scorers"][0]
    table = CliRunner().invoke(cli, ["list", "scorers", "--options"], terminal_width=200).output
    assert "scaled" in table and "a label" in table  # the options column


def test_the_suggested_ticket_command_parses_back_to_the_ticket_config():
    """random-prune's advice spells a run with the settings' own flags: parsed by `ticketforge run`,
    it is the ticket's config (lists, bools, component options and aliased flags included)."""
    from ticketforge.cli.run_cmd import command as run_command
    from ticketforge.engine.ticket_run import ticket_command, ticket_config

    asked = RunConfig(model="toy", baseline="random-prune", schedule="incremental", p=30.0, q=2.0, compile=True,
                      artifacts=False, keep_rewind_points=[0.0, 0.2], schedule_options={"extra": 1}, lr=1e-3,
                      seed=4, precision="bf16", steps_per_round=7)
    words = ticket_command(asked, 3, None).split()
    assert words[:2] == ["ticketforge", "run"]
    ctx = run_command.make_context("run", words[2:])
    parsed = RunConfig().merged(given_settings(ctx.params, RunConfig()))
    assert parsed == dataclasses.replace(ticket_config(asked), rounds=3, artifacts=True)  # a runtime flag: not given


def test_within_tensor_reaches_the_schedule_and_the_run_hash(tmp_path, options_registry):
    """``--schedule-option within=tensor`` builds the schedule that ranks each tensor alone, and names
    another run folder than the default, which the hash leaves out."""
    config = RunConfig(model="toy", schedule="incremental", schedule_options={"within": "tensor"}, device="cpu")
    assert Engine(config, registry=options_registry).schedule.within == "tensor"
    assert Engine(RunConfig(model="toy", device="cpu"), registry=options_registry).schedule.within == "group"
    assert config.identity() == {"model": "toy", "schedule_options": {"within": "tensor"}}
    assert _folder(_run(tmp_path, "--schedule-option", "within=tensor")) != _folder(_run(tmp_path))
