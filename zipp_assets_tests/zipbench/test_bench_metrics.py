"""bench/metrics.py runs end to end at tiny sizes (the figures themselves are for bench/README.md, not tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "metrics.py"


def test_metrics_benchmark_runs_every_part_at_tiny_sizes(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_metrics", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "metrics.json"
    monkeypatch.setattr(sys, "argv", ["metrics.py", "--clip-sizes", "400,800", "--cmmd-sizes", "400,800",
                                      "--repeats", "1", "--max-full-gb", "0.003", "--out", str(out)])
    assert bench.main() == 0
    rows = json.loads(out.read_text())["rows"]
    clip = [r for r in rows if r["metric"] == "CLIPScore"]
    cmmd = [r for r in rows if r["metric"] == "CMMD"]
    # every reference agrees with the project where it ran; the full matrices are skipped above the limit
    assert {r["reference"] for r in clip} == {"loop over users", "full matrix"}
    assert all(r["max_abs_diff"] < 1e-3 for r in clip if "skipped" not in r)
    assert [("skipped" in r) for r in cmmd] == [False, True]  # 800^2 float64 is 5 MB, over 3 MB
    assert cmmd[0]["max_abs_diff"] < 1e-8 and cmmd[0]["value"] > 0
    assert "growth, project CMMD: 2x images" in capsys.readouterr().out
