import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def _bench_module():
    """bench/gpu.py imported as a module (bench/ is scripts, not a package)."""
    if "bench_gpu" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_gpu"] = module  # its dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules["bench_gpu"]


@pytest.mark.slow
def test_gpu_benchmark_runs_every_part_at_tiny_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "DGLBACKEND": "pytorch"}  # random weights only: nothing may be fetched
    run = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--sizes", "tiny", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["sizes"] == "tiny" and report["machine"]["device"] == "cpu" and report["skipped"] == []
    rows = {(r["benchmark"], r["setting"]): r for r in report["results"]}
    by_benchmark = {name: [r for (b, _), r in rows.items() if b == name]
                    for name in ("image embedding", "diffusion", "encoder training")}
    assert len(by_benchmark["image embedding"]) == 4  # batch 1 and 64, with and without preprocessing
    assert len(by_benchmark["diffusion"]) == 2
    assert len(by_benchmark["encoder training"]) == 1
    for row in report["results"]:
        assert math.isfinite(row["value"]) and row["value"] > 0, row
        assert row["setting"] in run.stdout  # the printed table shows every figure
    assert {r["unit"] for r in by_benchmark["encoder training"]} == {"seed edges/s"}


def test_encoder_part_is_skipped_with_the_reason_where_dgl_cannot_use_the_gpu(monkeypatch):
    from zipp_assets import devices

    bench = _bench_module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(devices, "dgl_has_cuda", lambda: False)
    report = bench.Report(machine={}, sizes="tiny")
    bench.encoder_training(report, "cuda", bench.TINY)
    assert report.results == []
    [skipped] = report.skipped
    assert skipped["benchmark"] == "encoder training"
    assert "CPU-only build" in skipped["reason"] and "`make setup-gpu`" in skipped["reason"]


def test_gpu_benchmark_refuses_a_gpu_it_does_not_have(monkeypatch):
    bench = _bench_module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(bench.DeviceUnavailable, match="sees no GPU"):
        bench.main(["--device", "cuda"])
