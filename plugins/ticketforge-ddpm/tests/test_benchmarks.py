"""The benchmark harness runs end to end (CPU smoke mode); GPU numbers live in docs/performance.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def test_bench_smoke_mode_produces_a_row_per_variant(tmp_path, capsys):
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("bench", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    report = bench.main(["--smoke", "--json", str(tmp_path / "out.json"), "--profile", "eager-fp32"])
    names = [r["variant"] for r in report["rows"]]
    assert names == ["eager-fp32", "eager-tf32-sparse90", "sample-eager-fp32"]
    assert all(r["images_per_s"] > 0 for r in report["rows"])
    assert report["train_step_flops"] > 0 and (tmp_path / "out.json").exists()
    assert "aten::convolution" in capsys.readouterr().out  # the profile's table of ops
