import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"
STAGES = ("tables", "graph", "training", "inference", "evaluation", "evidence")


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
    # every graph user's evidence was packed, with snippets of the generated comments, under the budget
    evidence = size["stages"]["evidence"]
    assert evidence["users"] == info["tables"]["users"] and 0 < evidence["mean_tokens"] <= 2048
    assert 0 < evidence["snippets_used"] <= evidence["snippets_available"]
    assert info["evidence"]["comments_generated"] > 0
    assert all(v > 0 for v in info["encoder"]["memory_bytes"].values())
    assert math.isfinite(size["stages"]["evaluation"]["mean_auc_untrained_model"])
    assert not any(tmp_path.glob("zipp-scale-*"))  # the temporary lake is removed


@pytest.mark.slow
def test_the_training_comparison_runs_every_size_with_each_negative_pool(tmp_path):
    out = tmp_path / "compare.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "20K,40K", "--compare-training", "--negative-pools", "none,6",
         "--rounds", "2", "--batches-per-round", "1", "--warmup", "1", "--out", str(out), "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180, env=os.environ | {"DGLBACKEND": "pytorch"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    comparison = json.loads(out.read_text())["training_comparison"]
    assert set(comparison) == {"20K pool none", "20K pool 6", "40K pool none", "40K pool 6"}
    for name, row in comparison.items():
        assert len(row["seed_edges_per_second"]) == 2 and row["best"] > 0, name
    # a pool of 6 draws reaches at most 6 negative subreddits a batch; each edge's own draws reach many more
    assert all(comparison[f"{size} pool 6"]["negative_subreddits_per_batch"] <= 6 for size in ("20K", "40K"))
    assert all(comparison[f"{size} pool none"]["negative_subreddits_per_batch"] > 50 for size in ("20K", "40K"))
    assert comparison["20K pool 6"]["median_ratio_to_first"] == 1.0  # each pool against its own smallest size
    assert comparison["40K pool 6"]["median_ratio_to_first_size_first_pool"] > 0
    refused = subprocess.run([sys.executable, str(BENCH), "--compare-training", "--negative-pools", "none,0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "a negative pool is 'none' or at least 1" in refused.stderr


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


@pytest.mark.slow
def test_a_run_cut_off_resumes_at_the_stage_it_was_in(tmp_path):
    out = tmp_path / "scale.json"
    env = os.environ | {"DGLBACKEND": "pytorch"}
    command = [sys.executable, str(BENCH), "--sizes", "20K", "--steps", "3", "--warmup", "1", "--eval-edges", "200",
               "--out", str(out), "--work-dir", str(tmp_path), "--resume"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    work = tmp_path / "zipp-scale-20K"
    assert not (work / "lake").exists()  # a finished size keeps its figures only
    # Again, as if every process had been killed during inference: the encoder's figures stop at training.
    first = subprocess.run(command[:-1] + ["--keep", "--resume"], capture_output=True, text=True, timeout=120, env=env)
    assert "encoder: done before" in first.stdout
    for name in ("generate", "tables", "encoder"):
        (work / f"{name}.json").unlink()
    first = subprocess.run(command[:-1] + ["--keep", "--resume"], capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (work / "lake").is_dir() and (work / "model.pt").exists()  # --keep: kept
    encoder = json.loads((work / "encoder.json").read_text())
    training = encoder["stages"]["training"]
    for name in ("inference", "evaluation"):
        del encoder["stages"][name]
    encoder.update(status="running", failed_stage="inference")
    (work / "encoder.json").write_text(json.dumps(encoder))
    (work / "final_subreddits.pt").unlink()
    tables_before = (work / "tables.json").read_text()
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "generate: done before" in second.stdout and "tables: done before" in second.stdout
    assert "training: done before (resumed)" in second.stdout
    assert (work / "tables.json").read_text() == tables_before
    [size] = json.loads(out.read_text())["sizes"]
    assert size["status"] == "ok"
    assert size["stages"]["training"] == training  # not trained again: the first run's figures
    assert size["stages"]["inference"]["users_per_second"] > 0 and size["stages"]["evaluation"]["edges"] == 200
    assert size["info"]["encoder"]["resumed"] == 1
