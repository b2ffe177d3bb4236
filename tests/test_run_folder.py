"""Nothing lost: where a run may start, what --fresh may delete, and which temp files cleanup removes.

Every refusal is checked for its exit code, one line on stderr, the words that say what to do, and
an unchanged folder tree (every file's bytes, before and after).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import ticketforge.registry as registry_module
from ticketforge.cli.main import cli
from ticketforge.store import RunStore
from ticketforge.store.atomic import TEMP_SUFFIX, atomic_write_bytes

RUNNER = Path(__file__).parent / "run_toy.py"


@pytest.fixture
def runner(registry, monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", registry)
    return CliRunner()


def _run(runner, out: Path, *extra: str):
    """The CLI form of tests/run_toy.py's run (same identity: runtime flags aside)."""
    return runner.invoke(cli, ["run", "--model", "toy", "--schedule", "uniform", "--rounds", "2", "--steps-per-round",
                               "20", "--device", "cpu", "--out", str(out), "--quiet", "--no-artifacts",
                               "--log-every", "5", "--checkpoint-every", "5", *extra])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def _assert_refused(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


def _user_folder(root: Path) -> Path:
    """A folder of someone's work, with temp-like names that a careless cleanup would take."""
    root.mkdir()
    (root / "thesis.tex").write_text("\\chapter{Results}\n")
    (root / "data").mkdir()
    (root / "data" / "measurements.csv").write_text("a,b\n1,2\n")
    (root / ".thesis.tex.tmp").write_text("editor backup")
    (root / "data" / ".measurements.csv.abcd1234.tmp").write_text("another program's temp file")
    return root


def test_fresh_refuses_a_folder_that_is_not_a_run(runner, tmp_path):
    folder = _user_folder(tmp_path / "work")
    before = snapshot(tmp_path)
    _assert_refused(_run(runner, folder, "--fresh"), 2, "--fresh deletes only a ticketforge run",
                    "nothing was deleted", "another --out")
    assert snapshot(tmp_path) == before


def test_out_at_a_non_empty_folder_that_is_not_a_run_is_refused(runner, tmp_path):
    folder = _user_folder(tmp_path / "work")
    before = snapshot(tmp_path)
    _assert_refused(_run(runner, folder), 2, "is not empty and holds no ticketforge run", "give another --out")
    assert snapshot(tmp_path) == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    before = snapshot(tmp_path)
    _assert_refused(_run(runner, a_file), 2, "is a file", "--out")
    assert snapshot(tmp_path) == before


def test_a_run_starts_in_a_new_or_empty_folder_and_resumes_in_its_own(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "new", tmp_path / "empty"):
        assert _run(runner, folder).exit_code == 0
        assert RunStore(folder).finished_rounds() == [0, 1, 2]
        assert _run(runner, folder).exit_code == 0  # its own folder: resumed


def test_fresh_deletes_the_runs_files_and_nothing_else(runner, tmp_path):
    run = tmp_path / "run"
    assert _run(runner, run).exit_code == 0
    (run / "notes.txt").write_text("kept beside the run")
    (run / "mine").mkdir()
    (run / "mine" / f".x.abcdefgh{TEMP_SUFFIX}").write_text("not in a folder the store writes")
    (tmp_path / "outside.txt").write_text("outside")
    first_log = (run / "train_log.jsonl").read_text()

    def not_the_runs(tree: dict) -> dict:
        return {k: v for k, v in tree.items() if not k.startswith("run/") or k.startswith(("run/notes", "run/mine"))}

    before = not_the_runs(snapshot(tmp_path))
    result = _run(runner, run, "--fresh", "--p", "30")  # another config: --fresh is the way to it
    assert result.exit_code == 0, result.output
    assert not_the_runs(snapshot(tmp_path)) == before
    assert json.loads((run / "config.json").read_text())["p"] == 30.0
    assert (run / "train_log.jsonl").read_text().count("\n") == first_log.count("\n")  # a new log, not appended
    assert RunStore(run).finished_rounds() == [0, 1, 2]


def test_cleanup_removes_only_the_stores_own_temp_files(runner, tmp_path):
    run = tmp_path / "run"
    assert _run(runner, run, "--rounds", "1").exit_code == 0
    ours = [run / f".manifest.json.k3j5x_90{TEMP_SUFFIX}", run / "rounds/0001" / f".weights.safetensors.a1b2c3d4{TEMP_SUFFIX}"]
    theirs = [run / ".notes.tmp", run / ".notes.abcdefgh.tmp", run / "rounds/0001/.plot.png.tmp",
              run / "mine" / f".x.abcdefgh{TEMP_SUFFIX}", run / f"x.abcdefgh{TEMP_SUFFIX}"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("left behind")
    assert _run(runner, run).exit_code == 0  # resumes, cleaning up first
    assert not any(p.exists() for p in ours)
    assert all(p.read_text() == "left behind" for p in theirs)


def test_store_writes_its_temp_files_under_the_exact_pattern(tmp_path, monkeypatch):
    import ticketforge.store.atomic as atomic
    seen = []
    real = atomic.os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: (seen.append(Path(src).name), real(src, dst)))
    atomic_write_bytes(tmp_path / "masks.safetensors", b"x")
    assert len(seen) == 1 and atomic.is_temp_file(seen[0]) and seen[0].startswith(".masks.safetensors.")
    assert not atomic.is_temp_file(".masks.safetensors.tmp") and not atomic.is_temp_file("masks.safetensors")


def test_fresh_while_another_process_holds_the_run_is_refused_and_deletes_nothing(runner, tmp_path):
    run, control = tmp_path / "run", tmp_path / "control"
    control.mkdir()
    holder = subprocess.Popen([sys.executable, str(RUNNER), str(run), "--rounds", "4", "--pause-at", "3:10",
                               str(control)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (control / "ready").exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder never reached round 3"
            time.sleep(0.05)
        assert RunStore(run).finished_rounds() == [0, 1, 2]  # three finished rounds at stake
        before = snapshot(tmp_path)
        for second in ([], ["--p", "30"]):  # the same config, and another one
            result = _run(runner, run, "--fresh", "--rounds", "4", *second)
            _assert_refused(result, 1, f"is in use by pid {holder.pid}", "wait for it to finish")
            assert snapshot(tmp_path) == before, second
    finally:
        (control / "go").write_text("")
        out, err = holder.communicate(timeout=240)
    assert holder.returncode == 0, err
    assert RunStore(run).finished_rounds() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("flags,middle", [
    ({}, "toy-uniform"),
    ({"scorer": "random"}, "toy-uniform-random"),
    ({"baseline": "random-reinit"}, "toy-uniform-random-reinit"),
    ({"scorer": "random", "baseline": "random-reinit"}, "toy-uniform-random-random-reinit"),
])
def test_a_default_run_folder_shows_a_scorer_and_baseline_that_are_not_the_default(tmp_path, flags, middle):
    from ticketforge import RunConfig
    from ticketforge.engine.run_folder import default_run_dir
    config = RunConfig(model="toy", schedule="uniform", runs_root=str(tmp_path), **flags)
    assert default_run_dir(config) == tmp_path / f"{middle}-{config.digest()}"  # the hash itself unchanged


def test_a_run_folder_of_the_earlier_naming_rule_is_found_by_its_hash_and_resumed(registry, toy_config, tmp_path):
    import dataclasses

    from ticketforge import Engine
    runs = tmp_path / "runs"
    config = dataclasses.replace(toy_config, out=None, runs_root=str(runs), rounds=1, baseline="random-reinit")
    first = Engine(config, registry=registry)
    first.run()
    digest = first.config.digest()
    assert first.run_dir.name == f"toy-uniform-random-reinit-{digest}"
    earlier = first.run_dir.with_name(f"toy-uniform-{digest}")  # the earlier rule: <model>-<schedule>-<hash>
    first.run_dir.rename(earlier)
    (runs / "toy-uniform-0123456789ab").mkdir()  # another run's folder: not taken for this one
    again = Engine(dataclasses.replace(config, rounds=2), registry=registry)
    assert again.run_dir == earlier
    again.run()
    assert RunStore(earlier).finished_rounds() == [0, 1, 2]
    assert sorted(p.name for p in runs.iterdir()) == ["toy-uniform-0123456789ab", earlier.name]  # no new folder
