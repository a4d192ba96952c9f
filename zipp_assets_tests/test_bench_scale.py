import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"
STAGES = ("tables", "graph", "training", "inference", "evaluation")


@pytest.mark.slow
def test_scale_benchmark_times_every_stage_at_a_tiny_size(tmp_path):
    out = tmp_path / "scale.json"
    env = os.environ | {"DGLBACKEND": "pytorch"}
    run = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "20K", "--steps", "4", "--warmup", "2", "--eval-edges", "500",
         "--out", str(out), "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    [size] = report["sizes"]
    assert size["status"] == "ok" and size["size"]["edges"] == 20_000
    assert report["summary"]["largest_completed"] == "20K"
    for name in STAGES:
        stage = size["stages"][name]
        assert stage["seconds"] > 0 and stage["peak_rss"] > 0 and stage["rss_after"] > 0, (name, stage)
        assert stage["peak_rss"] >= stage["rss_after"] or not stage["peak_resettable"], (name, stage)
        assert name in run.stdout  # the printed table has a row per stage
    info = size["info"]
    # the generated lake became a graph near the named size, and held-out test edges were scored
    assert 0.8 * 20_000 < info["tables"]["edges"] <= 20_000
    assert size["stages"]["training"]["batches"] == 4 and size["stages"]["training"]["seed_edges_per_second"] > 0
    assert size["stages"]["inference"]["users_per_second"] > 0
    assert size["stages"]["evaluation"]["edges"] == 500
    assert all(v > 0 for v in info["encoder"]["memory_bytes"].values())
    assert math.isfinite(size["stages"]["evaluation"]["mean_auc_untrained_model"])
    assert not any(tmp_path.glob("zipp-scale-*"))  # the temporary lake is removed


def test_sizes_give_edges_users_and_subreddits():
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    scale = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = scale  # its dataclasses look their module up while being defined
    spec.loader.exec_module(scale)
    assert scale.parse_size("1M") == scale.Size("1M", 1_000_000, 111_111, 5_000)
    full = scale.parse_size("full")
    assert (full.users, full.subreddits, full.edges) == (22_000_000, 40_000, 200_000_000)
    assert scale.subreddits_for(200_000_000) == 40_000
    assert 10_000 < scale.parse_size("10M").subreddits < scale.parse_size("100M").subreddits < 40_000
