"""bench/llm.py runs end to end at tiny sizes (the figures themselves are for bench/README.md, not tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "llm.py"


def test_llm_benchmark_runs_every_part_at_tiny_sizes(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_llm", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # in this process: transformers is imported once for the whole folder
    out = tmp_path / "llm.json"
    for name in ("ZIPP_VLLM_PYTHON", "ZIPP_SMOLLM2_DIR"):  # (d) starts a real vLLM: not at tiny sizes
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["llm.py", "--requests", "8", "--concurrency", "4", "--latency", "0.01",
                                      "--prompts", "4", "--max-tokens", "4", "--users", "200", "--budget", "512",
                                      "--out", str(out)])
    assert bench.main() == 0
    figures = json.loads(out.read_text())
    assert figures["client"]["requests"] == 8 and figures["client"]["concurrent_rps"] > 0
    assert figures["transformers"]["prompts"] == 4 and figures["transformers"]["batched_pps"] > 0
    assert figures["packing"]["all"]["users"] == 200 and figures["packing"]["all"]["users_per_s"] > 0
    assert figures["packing"]["all"]["mean_tokens"] <= 512
    printed = capsys.readouterr().out
    assert "(a) client: concurrent / one at a time" in printed and "(b) transformers: batched" in printed
    assert "(d) real vLLM: skipped" in printed and "real_vllm" not in figures
