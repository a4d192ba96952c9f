"""bench/encoder_sweep.py runs end to end at tiny sizes: one knob value, one seed, a few steps (the
sweep's figures are for docs/results/encoder-sweep.md, not tests)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "encoder_sweep.py"


def test_encoder_sweep_runs_one_cell_and_the_variants_differ_only_in_imagealign(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_encoder_sweep", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, md = tmp_path / "sweep.json", tmp_path / "sweep.md"
    assert bench.main(["--users", "60", "--shares", "0.5", "--seeds", "3", "--epochs", "2",
                       "--max-batches-per-epoch", "2", "--hidden", "16", "--out", str(out), "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    assert result["sizes"] == {"users": 60, "months": ["2019-01"], "world_seed": 0, "shares": [0.5], "train_seeds": [3]}
    assert result["training"]["epochs"] == 2 and result["training"]["hidden"] == 16 and "finished" in result
    [cell] = result["cells"]
    assert cell["taste_aligned_share"] == 0.5 and cell["train_seed"] == 3 and cell["graph"]["test_edges"] > 0
    with_align, without = cell[bench.WITH], cell[bench.WITHOUT]
    # the two variants are scored on the same held-out links and users...
    assert with_align["edges"] == without["edges"] == cell["graph"]["test_edges"]
    assert with_align["users"] == without["users"]
    for row in (with_align, without, *cell["baselines"].values()):
        for metric in bench.LINK_METRICS:
            assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
    # ...and differ in their training objective: L_link + 0.5 L_align against L_link alone
    on, off = with_align["objective"], without["objective"]
    assert on["use_image_align"] and on["image_align_head"] and on["effective_align_weight"] == 0.5
    assert not off["use_image_align"] and not off["image_align_head"] and off["effective_align_weight"] == 0.0
    assert len(on["align_loss_per_epoch"]) == len(off["align_loss_per_epoch"]) == 2
    assert all(loss > 0 for loss in on["align_loss_per_epoch"])
    assert all(loss == 0 for loss in off["align_loss_per_epoch"])
    # the paired difference (with minus without) for each link metric, with its interval and verdict
    for metric in bench.LINK_METRICS:
        d = cell["difference"][metric]
        assert d["low"] <= d["estimate"] <= d["high"] and d["verdict"] in ("ahead", "tied", "behind")
        assert d["verdict"] == ("ahead" if d["low"] > 0 else "behind" if d["high"] < 0 else "tied")
        paired = with_align[metric] - without[metric]  # same users, so the paired mean is the difference of means
        assert math.isclose(d["estimate"], paired, abs_tol=1e-9)
    table = md.read_text()
    assert table.count("\n| 0.5 | 3 |") == len(bench.LINK_METRICS) and "popularity" in table
    assert "with minus without" in capsys.readouterr().out
