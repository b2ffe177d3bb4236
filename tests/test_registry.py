"""Plugin discovery: entry points, broken plugins, duplicates, unknown names."""

from __future__ import annotations

import importlib.metadata

import pytest
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, hookimpl
from ticketforge.builtins.scorers import MagnitudeScorer
from ticketforge.errors import PluginError
from ticketforge.registry import build_registry


def _fake_entry_points(*extra):
    """The core's installed entry point and ``extra``: other installed plugins cannot change these tests."""
    core = [ep for ep in importlib.metadata.entry_points(group="ticketforge") if ep.dist and ep.dist.name == "ticketforge"]
    return lambda: core + list(extra)


def test_builtins_register_through_the_entry_point_group():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="ticketforge")}
    assert eps["builtins"] == "ticketforge.builtins.plugin"
    reg = build_registry(entry_points=["ticketforge"])
    assert {"magnitude", "random"} <= set(reg.records("scorers"))
    assert {"uniform", "incremental", "global"} <= set(reg.records("schedules"))
    assert "cka" in reg.records("similarities")
    assert reg.records("scorers")["magnitude"].plugin == "ticketforge"


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(monkeypatch):
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_module_for_ticketforge", group="ticketforge")
    monkeypatch.setattr(registry_module, "_entry_points", _fake_entry_points(broken))
    reg = build_registry()
    assert [b.name for b in reg.broken] == ["broken"]
    assert "No module named" in reg.broken[0].error
    assert "magnitude" in reg.records("scorers")


class _Raises:
    @hookimpl
    def ticketforge_scorers(self):
        raise RuntimeError("boom")


def test_a_plugin_whose_hook_raises_is_reported_and_skipped():
    reg = build_registry(entry_points=["ticketforge"], plugins=[_Raises()])
    assert any("boom" in b.error for b in reg.broken)
    assert "magnitude" in reg.records("scorers")


class _Dup:
    @hookimpl
    def ticketforge_scorers(self):
        return [ComponentRecord("magnitude", MagnitudeScorer, "a second magnitude")]


def test_a_duplicate_name_fails_only_where_it_is_used_naming_both_distributions():
    reg = build_registry(entry_points=["ticketforge"], plugins=[_Dup()])  # the registry itself still builds
    assert [r.plugin for r in reg.conflicts("scorers")["magnitude"]] == ["ticketforge", "_Dup"]
    assert "magnitude" not in reg.records("scorers") and "random" in reg.records("scorers")
    with pytest.raises(PluginError, match=r"^scorer 'magnitude' is registered by both 'ticketforge' and '_Dup': "
                                          r"uninstall one of them$"):
        reg.create("scorers", "magnitude")
    assert reg.create("scorers", "random") is not None  # every other name works
    assert reg.conflicts("schedules") == {}


def test_list_shows_both_registrations_of_a_duplicate_name_and_a_run_using_it_fails_in_one_line(
        monkeypatch, tmp_path):
    import json

    from click.testing import CliRunner

    from ticketforge.cli.main import cli
    monkeypatch.setattr(registry_module, "_registry", core_registry(_Dup()))
    runner = CliRunner()
    listed = runner.invoke(cli, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.output)
    assert sorted(s["plugin"] for s in doc["scorers"] if s["name"] == "magnitude") == ["_Dup", "ticketforge"]
    assert [(c["kind"], c["name"], c["plugins"]) for c in doc["conflicts"]] == [
        ("scorers", "magnitude", ["ticketforge", "_Dup"])]
    text = runner.invoke(cli, ["list", "scorers"])
    assert text.exit_code == 0 and "(conflict)" in text.output
    assert "'magnitude' is registered by both 'ticketforge' and '_Dup'" in " ".join(text.output.split())
    run = ["run", "--model", "toy", "--schedule", "uniform", "--rounds", "1", "--steps-per-round", "4",
           "--device", "cpu", "--quiet", "--no-artifacts"]
    used = runner.invoke(cli, [*run, "--out", str(tmp_path / "a")])  # the default scorer is magnitude
    assert used.exit_code == 2 and "Traceback" not in used.output
    assert used.stderr.splitlines() == ["Error: scorer 'magnitude' is registered by both 'ticketforge' and '_Dup': "
                                        "uninstall one of them"]
    assert not (tmp_path / "a").exists()  # refused before a run folder is made
    other = runner.invoke(cli, [*run, "--scorer", "random", "--out", str(tmp_path / "b")])
    assert other.exit_code == 0, other.output


def test_unknown_name_lists_known_names_with_a_did_you_mean():
    reg = build_registry(entry_points=["ticketforge"])
    with pytest.raises(PluginError, match=r"unknown schedule 'incremantal' .*Did you mean 'incremental'\?"):
        reg.get("schedules", "incremantal")
    with pytest.raises(PluginError, match=r"known: (.*, )?global, incremental, uniform"):
        reg.get("schedules", "zzz")


def test_unknown_option_is_refused():
    with pytest.raises(PluginError, match="has no option 'r'"):
        build_registry(entry_points=["ticketforge"]).create("schedules", "uniform", r=3)


def test_record_names_must_be_kebab_case():
    with pytest.raises(ValueError):
        ComponentRecord("Bad_Name", object, "x")


# -- the suite's own registry: a plugin installed beside ticketforge cannot break the core tests --------
class _Clashing:
    """A third-party plugin as pip would install one: it registers names the core tests use, and has a bug."""

    @hookimpl
    def ticketforge_models(self):
        return [ComponentRecord("toy", object, "somebody else's toy")]

    @hookimpl
    def ticketforge_scorers(self):
        return [ComponentRecord("magnitude", MagnitudeScorer, "a second magnitude")]

    @hookimpl
    def ticketforge_schedules(self):
        raise RuntimeError("a third-party bug")


CLASHING = _Clashing()


def test_an_installed_plugin_that_clashes_or_breaks_leaves_the_suites_registry_as_it_was(registry, monkeypatch,
                                                                                          tmp_path):
    import json

    import toy_plugin
    from click.testing import CliRunner

    from ticketforge.cli.main import cli
    from ticketforge.records import KINDS

    assert registry_module.get_registry() is registry  # what the CLI and Engine() use inside a test
    EntryPoint = importlib.metadata.EntryPoint
    monkeypatch.setattr(registry_module, "_entry_points", _fake_entry_points(
        EntryPoint(name="clashing", value=f"{__name__}:CLASHING", group="ticketforge"),
        EntryPoint(name="broken", value="no_such_module_for_ticketforge", group="ticketforge")))
    # the simulation bites: every installed plugin, plus the toy (the way the suite used to build its registry)
    everything = build_registry(plugins=[toy_plugin])
    assert {b.name for b in everything.broken} == {"broken", "clashing"}
    assert set(everything.conflicts("models")) == {"toy"} and set(everything.conflicts("scorers")) == {"magnitude"}
    with pytest.raises(PluginError, match="'toy' is registered by both"):
        everything.create("models", "toy")
    # the suite's registry, built as every core test's is, sees neither plugin
    ours = core_registry()
    assert ours.broken == [] and all(ours.conflicts(kind) == {} for kind in KINDS)
    assert ours.get("models", "toy").plugin == "toy_plugin" and ours.get("scorers", "magnitude").plugin == "ticketforge"
    monkeypatch.setattr(registry_module, "_registry", ours)
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["list", "--json"]).output)
    assert listed["conflicts"] == listed["broken"] == [] and {s["plugin"] for s in listed["scorers"]} == {"ticketforge"}
    done = runner.invoke(cli, ["run", "--model", "toy", "--schedule", "uniform", "--rounds", "1", "--steps-per-round",
                               "4", "--device", "cpu", "--quiet", "--no-artifacts", "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
