"""Every refusal is one line on stderr that says what is wrong and what to do, with exit code 2 for
a bad request and 1 for a failure, no traceback, and no file changed outside the run (issue 22).

Permission cases drop to an unprivileged user id while the command runs when the tests run as root
(root ignores file modes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, Engine, RunConfig, hookimpl
from ticketforge.cli.main import cli
from ticketforge.errors import ConfigError, PluginError
from ticketforge.store import RunLock, RunStore, sha256_file

RUN_CLI = Path(__file__).parent / "run_toy_cli.py"
TOY = ["--model", "toy", "--schedule", "uniform", "--rounds", "1", "--steps-per-round", "10", "--device", "cpu",
       "--quiet", "--no-artifacts"]


LAZY_IMPORTS = ("click._textwrap", "torch.utils.serialization", "matplotlib.pyplot", "PIL.PngImagePlugin",
                "torch._weights_only_unpickler", "matplotlib.backends.backend_agg")


# -- helpers --------------------------------------------------------------------------------------
def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (except under ``skip``) with its size and mtime."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not (skip is not None and (p == skip or skip in p.parents)):
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def assert_one_line(result, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one line on stderr holding every needle, no traceback, no click abort."""
    err = result.stderr
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "Aborted!" not in result.output, result.output
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@contextlib.contextmanager
def unprivileged():
    """File modes apply while inside (root drops its effective uid to nobody's and back)."""
    if os.geteuid() != 0:
        yield
        return
    import importlib
    for name in LAZY_IMPORTS:  # nobody may not read root's site-packages: load what is imported late
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """HOME, the cache and the working folder inside tmp_path, so that every file a command writes is seen."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("TICKETFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def open_folder():
    """A folder an unprivileged user can reach (pytest's tmp folders are root's, mode 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="tf-errors-"))
    folder.chmod(0o777)
    yield folder
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o777)
    import shutil
    shutil.rmtree(folder, ignore_errors=True)


def read_only_folder(parent: Path, name: str = "locked") -> Path:
    """A folder that exists and that the unprivileged user cannot write into."""
    folder = parent / name
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def forbid(monkeypatch, module, name: str, what: str) -> None:
    """Make ``module.name`` fail the test if called: the refusal must come before that work."""
    def called(*args, **kwargs):
        raise AssertionError(what)
    monkeypatch.setattr(module, name, called)


class _Evaluations:
    """A toy evaluator that counts how often it ran."""

    calls = 0

    def evaluate(self, spec, network, **kwargs):
        _Evaluations.calls += 1
        return {"toy_score": 1.0}


class _EvalPlugin:
    @hookimpl
    def ticketforge_evaluators(self):
        return [ComponentRecord("toy-eval", _Evaluations, "counts its calls")]


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", core_registry(_EvalPlugin()))
    return CliRunner()


@pytest.fixture
def finished_run(runner, open_folder):
    """A finished one-round toy run."""
    out = open_folder / "run"
    result = runner.invoke(cli, ["run", *TOY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


# -- bad configuration: refused before any work, nothing written ------------------------------------
BAD_RUNS = [
    # (TOML text or None, extra flags, exit code, needles)
    ("rounds = true\n", [], 2, ["rounds must be an integer, not true (a boolean)"]),
    ('lr = "1e-3"\n', [], 2, ['lr must be a number, not "1e-3" (a string)']),
    ("steps-per-round = 2.5\n", [], 2, ["steps-per-round must be an integer, not 2.5 (a number)"]),
    ("model_options = 3\n", [], 2, ["model-options must be a table", "not 3 (an integer)"]),
    ('artifacts = "no"\n', [], 2, ['artifacts must be true or false, not "no"']),
    (None, ["--lr", "-1"], 2, ["lr must be a positive number", "not -1.0"]),
    (None, ["--lr", "nan"], 2, ["lr must be a positive number", "not nan"]),
    (None, ["--seed", str(2 ** 64)], 2, ["seed must fit in 64 bits", str(2 ** 64 - 1)]),
    (None, ["--init-seed", str(-2 ** 63 - 1)], 2, ["init-seed must fit in 64 bits"]),
    (None, ["--model-option", "width=abc"], 2, ["model 'toy'", "option 'width' must be an integer", '"abc"']),
    (None, ["--model-option", "width=true"], 2, ["option 'width' must be an integer, not true (a boolean)"]),
]


@pytest.mark.parametrize("toml,flags,code,needles", BAD_RUNS)
def test_bad_config_is_one_line_before_any_work(runner, home, toml, flags, code, needles):
    args = ["run", *TOY, "--out", str(home / "run"), *flags]
    if toml is not None:
        (home / "c.toml").write_text(toml)
        args += ["--config", str(home / "c.toml")]
        needles = [f"{home / 'c.toml'}: ", *needles]
    before = snapshot(home)
    assert_one_line(runner.invoke(cli, args), code, *needles)
    assert snapshot(home) == before  # no run folder, no cache, nothing


def test_engine_and_dict_overrides_are_type_checked(registry, tmp_path):
    with pytest.raises(ConfigError, match=r"rounds must be an integer, not true"):
        RunConfig.from_dict({"rounds": True})
    with pytest.raises(ConfigError, match=r"batch-size must be an integer, not \"8\""):
        Engine(RunConfig(model="toy", out=str(tmp_path / "r")), registry=registry, batch_size="8")
    with pytest.raises(ConfigError, match=r"p must be a number, not true"):
        Engine(RunConfig(model="toy", p=True, out=str(tmp_path / "r")), registry=registry)
    with pytest.raises(PluginError, match=r"option 'width' must be an integer, not 2.5"):
        registry.create("models", "toy", width=2.5)
    registry.create("models", "toy", preset=123)  # --option key=123 parses as JSON; a string option takes the text
    assert not (tmp_path / "r").exists()
    RunConfig.from_dict({"rounds": 3, "p": 20, "lr": 1e-3, "model_options": {"width": 4}}).check()  # int is a float


# -- paths that cannot be written -------------------------------------------------------------------
def test_file_in_the_way_of_the_run_folder(runner, home):
    (home / "thesis.txt").write_text("do not touch")
    before = snapshot(home)
    # the run folder itself is a file: the run store's own refusal
    assert_one_line(runner.invoke(cli, ["run", *TOY, "--out", str(home / "thesis.txt")]), 2,
                    f"{home / 'thesis.txt'} is a file, not a run folder", "give a folder with --out")
    # a file where a folder above it should be: the OS error, named
    assert_one_line(runner.invoke(cli, ["run", *TOY, "--out", str(home / "thesis.txt" / "run")]), 2,
                    f"a file is in the way at {home / 'thesis.txt'}", "choose another --out")
    assert snapshot(home) == before


def test_read_only_out_and_default_runs_folder(runner, open_folder, monkeypatch):
    locked = read_only_folder(open_folder)
    monkeypatch.chdir(locked)  # the default --out is runs/<name> under here
    with unprivileged():
        result = runner.invoke(cli, ["run", *TOY, "--out", str(locked / "run")])
        default = runner.invoke(cli, ["run", *TOY])
    assert_one_line(result, 2, f"permission denied for {locked / 'run'}", "with --out")
    assert_one_line(default, 2, "permission denied for runs", "with --out")
    assert list(locked.iterdir()) == []


def test_disk_full_mid_run_keeps_finished_rounds_and_resumes(runner, tmp_path, monkeypatch):
    """ENOSPC while round 1's weights are written: one line naming the file, round 0 kept, no temp
    file left, and the same command then finishes the run with the masks of an uninterrupted one."""
    import ticketforge.store.atomic as atomic

    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        target = os.readlink(f"/proc/self/fd/{fd}")
        return FullFile(f) if "0001" in target and ".weights.safetensors." in target else f

    out, ref = tmp_path / "run", tmp_path / "ref"
    assert runner.invoke(cli, ["run", *TOY, "--out", str(ref)]).exit_code == 0
    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "fdopen", fdopen)
        full = runner.invoke(cli, ["run", *TOY, "--out", str(out)])
    assert_one_line(full, 1, f"no space left on the disk of {out / 'rounds/0001/weights.safetensors'}",
                    "the same command resumes")
    store = RunStore(out)
    assert store.finished_rounds() == [0] and not list(out.rglob("*.tmp"))
    assert runner.invoke(cli, ["run", *TOY, "--out", str(out)]).exit_code == 0
    assert [RunStore(out).round_record(k)["mask_sha256"] for k in (0, 1)] == \
        [RunStore(ref).round_record(k)["mask_sha256"] for k in (0, 1)]


@pytest.mark.parametrize("case", ["n0", "steps0", "seed", "folder", "read-only", "device-file"])
def test_sample_refusals_come_before_the_sampling(runner, finished_run, open_folder, monkeypatch, case):
    import ticketforge.cli.sample_cmd as sample_cmd

    forbid(monkeypatch, sample_cmd, "load_round", "the round was loaded before the request was checked")
    locked = read_only_folder(open_folder)
    args, code, needles = {
        "n0": (["--n", "0"], 2, ["--n must be at least 1"]),
        "steps0": (["--steps", "0"], 2, ["--steps must be at least 1"]),
        "seed": (["--seed", str(2 ** 64)], 2, ["--seed must fit in 64 bits"]),
        "folder": (["--out", str(open_folder)], 2, ["Invalid value for '--out'", f"{open_folder}' is a directory"]),
        "read-only": (["--out", str(locked / "grid.png")], 2, [f"permission denied for {locked / 'grid.png'}"]),
        "device-file": (["--out", "/dev/null"], 2, ["/dev/null is not a regular file"]),
    }[case]
    before = snapshot(open_folder, skip=finished_run)
    argv = ["sample", str(finished_run), "--out", str(open_folder / "grid.png"), *args]
    with unprivileged():
        result = runner.invoke(cli, argv)
    assert_one_line(result, code, *needles)
    assert snapshot(open_folder, skip=finished_run) == before


def test_sample_writes_its_grid(runner, finished_run, open_folder):
    result = runner.invoke(cli, ["sample", str(finished_run), "--n", "4", "--out", str(open_folder / "g" / "grid.png")])
    assert result.exit_code == 0, result.output
    assert (open_folder / "g" / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_unwritable_plot_is_refused_before_the_comparison(runner, finished_run, open_folder, monkeypatch):
    import ticketforge.cli.compare_cmd as compare_cmd

    forbid(monkeypatch, compare_cmd, "compare_rounds", "compared before checking --plot")
    locked = read_only_folder(open_folder)
    with unprivileged():
        result = runner.invoke(cli, ["compare", str(finished_run), str(finished_run), "--plot",
                                     str(locked / "cka.png")])
    assert_one_line(result, 2, f"permission denied for {locked / 'cka.png'}", "--plot")


def test_unwritable_cache_under_home_is_a_warning_not_the_end(runner, open_folder, monkeypatch):
    """The data cache is optional: a HOME that cannot be written costs the cache, not the run."""
    home = open_folder / "home"
    home.mkdir()
    home.chmod(0o555)
    data = open_folder / "data"
    data.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TICKETFORGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    (open_folder / "run").mkdir()
    (open_folder / "run").chmod(0o777)
    with unprivileged():
        result = runner.invoke(cli, ["run", *TOY, "--out", str(open_folder / "run"), "--data-root", str(data)])
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert warnings and all(ln.startswith("warning: cannot write the ") for ln in warnings), result.stderr
    assert "going on without it" in warnings[0] and str(home) in warnings[0]
    assert RunStore(open_folder / "run").finished_rounds() == [0, 1]
    assert list(home.iterdir()) == []


# -- eval on a run that another process holds -------------------------------------------------------
def test_eval_checks_the_lock_before_evaluating(runner, finished_run):
    _Evaluations.calls = 0
    record = finished_run / "rounds/0001/record.json"
    before = record.read_bytes()
    with RunLock(finished_run):
        result = runner.invoke(cli, ["eval", str(finished_run), "--evaluator", "toy-eval", "--samples", "2",
                                     "--device", "cpu"])
    assert result.exit_code == 1 and "in use by pid" in result.stderr and "wait for it" in result.stderr
    assert _Evaluations.calls == 0, "the evaluation ran although the run was held"
    assert record.read_bytes() == before
    result = runner.invoke(cli, ["eval", str(finished_run), "--evaluator", "toy-eval", "--samples", "2",
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert _Evaluations.calls == 1
    assert json.loads(record.read_text())["metrics"]["toy-eval"]["toy_score"] == 1.0


# -- interruptions ----------------------------------------------------------------------------------
def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp_path / "home"), "TICKETFORGE_CACHE": str(tmp_path / "cache"),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}


def _assert_interrupted(proc: subprocess.CompletedProcess, signum: int) -> None:
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: interrupted:") and "give the same command again to resume" in lines[0]


def _assert_intact(run: Path) -> None:
    """Nothing half-written: no temp file, and every file the manifest lists has its checksum."""
    assert not list(run.rglob("*.tmp"))
    for rel, digest in json.loads((run / "manifest.json").read_text())["files"].items():
        assert sha256_file(run / rel) == digest, rel


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_loading_is_one_line(tmp_path, signum):
    """Ctrl-C or SIGTERM in the first seconds, while torch is being imported (by the command's module)."""
    proc = subprocess.Popen([sys.executable, "-m", "ticketforge", "flops", "--model", "ddpm-unet"], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if "libtorch" in maps.read_text():
            break
        time.sleep(0.01)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    _assert_interrupted(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), signum)


@pytest.mark.parametrize("point,signum,finished", [
    # (a signal at a step of round 1: test_a_signal_mid_round_checkpoints_that_step_..., both signals)
    (["--signal-at-step", "0:3", "SIGTERM"], signal.SIGTERM, []),
    # round 0's masks are written as it finishes: the signal waits for the round to be saved
    (["--signal-in-write", "masks.safetensors", "SIGINT"], signal.SIGINT, [0]),
    (["--signal-in-write", "init.safetensors", "SIGINT"], signal.SIGINT, []),  # before training: at once
])
def test_interrupt_during_training_is_one_line_and_resumable(runner, tmp_path, point, signum, finished):
    run = tmp_path / "run"
    args = ["run", *TOY, "--log-every", "1", "--checkpoint-every", "5", "--out", str(run)]
    proc = subprocess.run([sys.executable, str(RUN_CLI), *point, "--", *args], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    _assert_interrupted(proc, signum)
    _assert_intact(run)
    assert RunStore(run).finished_rounds() == finished
    resumed = runner.invoke(cli, args)  # the same command, in this process
    assert resumed.exit_code == 0, resumed.output
    assert RunStore(run).finished_rounds() == [0, 1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_round_checkpoints_that_step_and_the_command_it_gives_resumes_from_it(runner, tmp_path, signum):
    """No periodic checkpoint falls before step 7: the one resumed from is written on the way out."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    toy = [a for a in TOY if a != "--quiet"]
    args = ["run", *toy, "--log-every", "1", "--checkpoint-every", "100", "--progress", "none", "--out", str(run)]
    proc = subprocess.run([sys.executable, str(RUN_CLI), "--signal-at-step", "1:7", signal.Signals(signum).name,
                           "--", *args, "--fresh"], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    _assert_interrupted(proc, signum)
    _assert_intact(run)
    assert RunStore(run).finished_rounds() == [0]
    assert f"round 1 was checkpointed at step 7 of 10 in {run}" in proc.stderr
    command = proc.stderr.split("give the same command again to resume: ")[1].strip()
    assert shlex.split(command) == ["ticketforge", *args]  # --fresh, which would discard it, left out
    assert RunStore(run).read_checkpoint("checkpoint.pt")["step"] == 7
    resumed = runner.invoke(cli, [*shlex.split(command)[1:], "--progress", "log"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming round 1 from step 7 (of 10)" in resumed.stderr
    assert runner.invoke(cli, ["run", *TOY, "--log-every", "1", "--out", str(ref)]).exit_code == 0
    digests = [json.loads((r / "manifest.json").read_text())["files"]["rounds/0001/weights.safetensors"]
               for r in (run, ref)]
    assert digests[0] == digests[1]  # bit for bit the uninterrupted round


def test_interrupt_during_sampling_is_one_line_and_writes_nothing(tmp_path):
    import run_toy_cli


    run = tmp_path / "run"
    reg = core_registry(run_toy_cli.Plugin())
    Engine(RunConfig(model="toy-slow", schedule="uniform", rounds=0, steps_per_round=2, device="cpu", out=str(run),
                     artifacts=False), registry=reg).run()
    proc = subprocess.run([sys.executable, str(RUN_CLI), "--signal-in-sample", "SIGINT", "--", "sample", str(run),
                           "--device", "cpu", "--out", str(tmp_path / "grid.png")],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    _assert_interrupted(proc, signal.SIGINT)
    assert not (tmp_path / "grid.png").exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("exc,code,needles", [
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), 2, ["/mnt/ro/run is on a read-only file system",
                                                                        "writable folder with --out"]),
    (OSError(errno.ENOSPC, "No space left on device", "/big/run/x"), 1, ["no space left on the disk of /big/run/x",
                                                                          "free some space"]),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), 2, ["/tmp is a folder where a file is wanted"]),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), 2, ["permission denied for /root/x"]),
    (FileNotFoundError(errno.ENOENT, "No such file", "/x"), None, []),
    (PermissionError(errno.EACCES, "Permission denied", "/cache/extracted/x"), 2,
     ["cannot write the cache at /cache/extracted/x", "set TICKETFORGE_CACHE to a writable folder"]),
])
def test_os_errors_map_to_lines_that_name_the_path(exc, code, needles, monkeypatch):
    from ticketforge.cli.failures import os_error_line
    monkeypatch.setenv("TICKETFORGE_CACHE", "/cache")
    found = os_error_line(exc)
    if code is None:
        assert found is None  # left to the generic line (strerror and path)
        return
    line, got = found
    assert got == code and all(n in line for n in needles), line


def test_unwritable_report_folder_is_refused_before_the_summaries(runner, finished_run, open_folder, monkeypatch):
    pytest.importorskip("matplotlib")
    import ticketforge.report as report

    forbid(monkeypatch, report, "summarize_run", "summarized before checking --out")
    locked = read_only_folder(open_folder, "report")
    with unprivileged():
        result = runner.invoke(cli, ["report", str(finished_run), "--out", str(locked)])
    assert_one_line(result, 2, f"permission denied for {locked}", "--out")
