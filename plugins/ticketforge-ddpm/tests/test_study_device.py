"""experiments/study/device.sh: every call on the lent GPU brings back what the part has written so far.

The parts run on a machine given back 30 s after a call returns, so a poll must return when the part
ends and must pack the results (never the checkpoints) each time, finished or not.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "experiments" / "study" / "device.sh"

# A stand-in for a part: writes a result, a round record and a checkpoint, then waits for a file.
FAKE_PART = """
import os, sys, time, pathlib
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
(out / "results" / "part9").mkdir(parents=True, exist_ok=True)
(out / "results" / "part9" / "cell.json").write_text(os.environ["STUDY_COMMIT"] + " " + sys.argv[1])
rounds = out / "seed0" / "rounds" / "0000"
rounds.mkdir(parents=True, exist_ok=True)
(rounds / "record.json").write_text("{}")
(rounds / "model.safetensors").write_bytes(b"weights")
print("part started", flush=True)
while not (out / "go").exists():
    time.sleep(0.05)
(out / "results" / "part9.json").write_text("{}")
print("part finished", flush=True)
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


def device(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for f in out.iterdir():  # the tool empties $OUT before each call
        f.unlink()
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out), **env}, timeout=120)


def packed(tmp_path: Path) -> dict[str, bytes]:
    with tarfile.open(tmp_path / "out" / "results.tgz") as tar:
        return {Path(m.name).as_posix().removeprefix("./"): tar.extractfile(m).read()
                for m in tar.getmembers() if m.isfile()}


def test_each_poll_brings_back_the_results_so_far_and_returns_when_the_part_ends(tmp_path):
    (tmp_path / "fake.py").write_text(FAKE_PART)
    part = tmp_path / "part"
    first = device(tmp_path, "start", str(part), "abc123", "2", "fake.py", "study.toml")
    assert first.returncode == 0, first.stderr
    assert "still running" in first.stdout and "part started" in first.stdout
    files = packed(tmp_path)
    assert files["results/part9/cell.json"] == b"abc123 study.toml"  # the commit and the TOML reached it
    assert "seed0/rounds/0000/record.json" in files
    assert not any(name.endswith(".safetensors") for name in files)
    assert (tmp_path / "out" / "study.out").read_text().startswith("part started")

    (part / "go").touch()
    t0 = time.monotonic()
    last = device(tmp_path, "poll", str(part), "100")
    assert time.monotonic() - t0 < 60  # returned at the part's end, not after the 100 s asked for
    assert last.returncode == 0 and "ended (exit 0)" in last.stdout
    assert "results/part9.json" in packed(tmp_path)
    assert "part finished" in (tmp_path / "out" / "study.out").read_text()


def test_a_failed_part_fails_the_call_with_its_exit_status_and_its_log_comes_back(tmp_path):
    (tmp_path / "fake.py").write_text(FAKE_PART)
    part = tmp_path / "part"
    part.mkdir()
    (part / "go").touch()
    result = device(tmp_path, "start", str(part), "abc123", "100", "fake.py", "study.toml", FAKE_RC="3")
    assert result.returncode == 3 and "ended (exit 3)" in result.stdout
    assert "results/part9.json" in packed(tmp_path)


def test_misuse_is_a_one_line_error(tmp_path):
    never_started = device(tmp_path, "poll", str(tmp_path / "nothing"), "5")
    assert never_started.returncode == 2 and "run 'device.sh start" in never_started.stderr
    assert len(never_started.stderr.strip().splitlines()) == 1
    bad_seconds = device(tmp_path, "poll", str(tmp_path), "soon")
    assert bad_seconds.returncode == 2 and "whole number" in bad_seconds.stderr
    assert device(tmp_path, "start", str(tmp_path / "p")).returncode == 2
