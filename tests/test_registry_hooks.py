"""A registration hook that returns something other than records is isolated like one that raises
(issue 22): reported as broken, naming the plugin and what it returned; every other plugin works."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, hookimpl
from ticketforge.builtins.scorers import MagnitudeScorer
from ticketforge.cli.main import cli


def _plugin(returned):
    class NotRecords:
        @hookimpl
        def ticketforge_scorers(self):
            return returned

    return NotRecords()


RECORD = ComponentRecord("snip", MagnitudeScorer, "a scorer")


@pytest.mark.parametrize("returned,what", [
    (["snip", "grasp"], "a list holding a str ('snip')"),
    (RECORD, "a ComponentRecord (ComponentRecord(name='snip'"),
    ({"snip": MagnitudeScorer}, "a dict ({'snip': <class"),
    ([RECORD, 3], "a list holding a int (3)"),
    ("snip", "a str ('snip')"),
])
def test_a_hook_returning_no_records_is_reported_and_skipped(monkeypatch, returned, what):
    monkeypatch.setattr(registry_module, "_registry", core_registry(_plugin(returned)))
    result = CliRunner().invoke(cli, ["list", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert "magnitude" in {s["name"] for s in doc["scorers"]}  # the others still work
    assert "snip" not in {s["name"] for s in doc["scorers"]}  # nothing of the bad hook is half-registered
    (broken,) = doc["broken"]
    assert broken["plugin"] == "NotRecords"
    assert broken["error"].startswith(f"ticketforge_scorers returned {what}")
    assert broken["error"].endswith("not a list of ComponentRecord")

    table = CliRunner().invoke(cli, ["list", "scorers"])
    assert table.exit_code == 0 and "broken plugin" in table.stdout and "NotRecords" in table.stdout
    run = CliRunner().invoke(cli, ["run", "--model", "nonexistent-model"])
    assert run.exit_code == 2 and "unknown model 'nonexistent-model'" in run.stderr  # registry commands work


def test_records_as_a_tuple_or_a_generator_are_fine():
    def gen():
        yield RECORD

    for returned in ((RECORD,), gen()):
        registry = core_registry(_plugin(returned))
        assert not registry.broken and "snip" in registry.records("scorers")
