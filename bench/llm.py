"""LLM benchmark: batched and concurrent paths against one request at a time, same run.

    .venv/bin/python bench/llm.py [--requests 64 --concurrency 32 --latency 0.2 --prompts 16]

(a) client: the project's `OpenAICompatibleLLM` (the vllm/openai backends) against the fake
    vLLM-shaped server of the tests on loopback, which serves many requests at once with a fixed
    latency each: `--requests` calls one at a time (concurrency 1) against the same calls with
    `--concurrency` in flight; target >= 5x requests/s.
(b) transformers: the project's `TransformersLLM` on a tiny random Llama (hidden 128, 2 layers,
    saved as safetensors, loaded from a local folder): `--prompts` prompts one at a time
    (batch size 1) against one batch, same prompts, greedy, `--max-tokens` new tokens; target >= 3x.
(c) evidence packing: the personas stage's `pack` (render, count tokens, fit the budget, hash) over
    `--users` generated users of a heavy-tailed graph (attention over 1-40 subreddits, 0-30 comment
    snippets each, visual words), with the approximate token counter, in users/s; the same at a
    tenth of the users, to show the cost grows linearly. Users are generated as they are packed, so
    memory stays flat at any count.
(d) real vLLM (with `--vllm-python` and `--smollm2-dir`, as `make test-vllm` builds them): the
    project's `vllm` client against a real vLLM server (CPU build) serving SmolLM2-135M-Instruct,
    started the way a pipeline step starts it (`managed_vllm_server`), at concurrency 1, 16 and 64,
    beside raw concurrent HTTP requests (httpx, a thread per request in flight) with the very same
    request bodies to the same server as the reference: output tokens/s and requests/s of each;
    target: the client reaches >= 0.9x of raw at every concurrency. Persona verbalization requests
    (JSON schema, greedy) from generated evidence, so both sides generate the same tokens.
Each side is timed after a warm-up call. Prints one line per figure and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipp_assets.llm.base import generate_with_stats  # noqa: E402
from zipp_assets.llm.openai_compat import OpenAICompatibleLLM  # noqa: E402
from zipp_assets.llm.types import LLMRequest  # noqa: E402
from zipp_assets_tests.llm.fake_openai_server import Behaviour, FakeOpenAIServer  # noqa: E402
from zipp_assets_tests.llm.tiny_llama import SENTENCES, save_tiny_llama  # noqa: E402


def bench_client(n: int, concurrency: int, latency_s: float) -> dict:
    server = FakeOpenAIServer(behaviour=Behaviour(latency_s=latency_s)).start()
    try:
        requests = [LLMRequest.chat(f"r{i}", f"describe persona {i}", max_tokens=64) for i in range(n)]
        out = {}
        for label, workers in (("one at a time", 1), (f"concurrency {concurrency}", concurrency)):
            llm = OpenAICompatibleLLM(server.base_url, server.model, backend="vllm", concurrency=workers, retries=0)
            llm.generate(requests[:2])  # warm-up
            results, stats = generate_with_stats(llm, requests)
            assert stats.ok == n, stats
            out[label] = stats.requests_per_s
            print(f"(a) client, {label:>16}: {n} requests in {stats.seconds:6.2f} s = "
                  f"{stats.requests_per_s:7.1f} req/s "
                  f"(peak in flight at the server {server.record.peak_in_flight})")
            server.record.peak_in_flight = 0
        ratio = out[f"concurrency {concurrency}"] / out["one at a time"]
        print(f"(a) client: concurrent / one at a time = {ratio:.1f}x (target >= 5x)")
        return {"one_at_a_time_rps": out["one at a time"], "concurrent_rps": out[f"concurrency {concurrency}"],
                "ratio": ratio, "requests": n, "concurrency": concurrency, "latency_s": latency_s}
    finally:
        server.stop()


def bench_transformers(n: int, max_tokens: int) -> dict:
    import torch

    from zipp_assets.llm.transformers_backend import TransformersLLM

    with tempfile.TemporaryDirectory() as folder:
        model_dir = save_tiny_llama(Path(folder) / "tiny-llama", hidden=128, heads=2, context=256)
        prompts = [LLMRequest.chat(f"p{i}", SENTENCES[i % 5] + f" (user {i})", max_tokens=max_tokens) for i in range(n)]
        out = {}
        for label, batch_size in (("one at a time", 1), (f"batch of {n}", n)):
            llm = TransformersLLM(model_dir, device="cpu", dtype="float32", batch_size=batch_size)
            llm.generate(prompts[:batch_size])  # warm-up
            results, stats = generate_with_stats(llm, prompts)
            assert stats.ok == n, stats
            out[label] = stats
            print(f"(b) transformers, {label:>13}: {n} prompts in {stats.seconds:6.2f} s = {stats.requests_per_s:6.2f} "
                  f"prompts/s, {stats.completion_tokens_per_s:7.1f} new tokens/s ({stats.completion_tokens} tokens)")
        single, batched = out["one at a time"], out[f"batch of {n}"]
        ratio = batched.requests_per_s / single.requests_per_s
        print(f"(b) transformers: batched / one at a time = {ratio:.1f}x prompts/s (target >= 3x); "
              f"torch threads {torch.get_num_threads()}")
        return {"one_at_a_time_pps": single.requests_per_s, "batched_pps": batched.requests_per_s, "ratio": ratio,
                "prompts": n, "max_tokens": max_tokens, "single_tokens": single.completion_tokens,
                "batched_tokens": batched.completion_tokens}


def generated_users(n: int, seed: int = 0):
    """UserEvidence of a generated heavy-tailed graph (Zipf-like subreddit popularity, log-normal
    activity), drawn from pools of names and snippets so that a million users fit in flat memory."""
    import numpy as np

    from zipp_assets.personas.evidence import UserEvidence

    rng = np.random.default_rng(seed)
    names = [f"sub{i}" for i in range(40_000)]
    popularity = 1 / np.arange(1, len(names) + 1) ** 1.1
    popularity /= popularity.sum()
    words = "film grain reef tank hiking trail neon night soft pastel light muted tones my first build".split()
    snippets = [" ".join(rng.choice(words, size=int(rng.integers(8, 60)))) for _ in range(5000)]
    visual = ["teal hues", "muted, desaturated colour", "bright, high-key images", "smooth, broad shapes"]
    pool = rng.choice(len(names), size=1_000_000, p=popularity)  # drawn once: choice with p is O(S) per call
    for user in range(n):
        degree = int(min(40, max(1, rng.lognormal(1.2, 1.0))))
        subs = pool[rng.integers(0, len(pool), size=degree)]
        weights = rng.dirichlet(np.ones(degree))
        top = sorted(zip([names[s] for s in subs], weights.tolist()), key=lambda x: -x[1])[:10]
        k = int(min(30, rng.poisson(min(30, degree * 3))))
        quoted = [(top[i % len(top)][0], snippets[j]) for i, j in enumerate(rng.integers(0, len(snippets), size=k))]
        yield UserEvidence(user, f"u_{user:020x}", f"{k * 3} comments and {k // 4} posts over 3 active month(s)",
                           top, visual, quoted)


def bench_packing(users: int, budget: int) -> dict:
    import time

    from zipp_assets.llm.tokens import ApproximateTokenCounter
    from zipp_assets.personas.evidence import pack

    counter = ApproximateTokenCounter()
    out, per_user = {}, {}
    for label, n in (("a tenth", max(1, users // 10)), ("all", users)):
        seconds, tokens = 0.0, 0
        for evidence in generated_users(n):
            started = time.perf_counter()  # packing only, not the generator
            tokens += pack(evidence, counter, budget).tokens
            seconds += time.perf_counter() - started
        per_user[label] = seconds / n
        out[label] = {"users": n, "seconds": round(seconds, 3), "users_per_s": round(n / seconds, 1),
                      "mean_tokens": round(tokens / n, 1)}
        print(f"(c) evidence packing, {n:>9,} users: {seconds:7.1f} s = {n / seconds:8,.0f} users/s "
              f"(mean {tokens / n:.0f} tokens of {budget:,}; packing time only)")
    # from the unrounded times: at tiny sizes a rounded one is 0
    out["per_user_cost_ratio_all_vs_tenth"] = round(per_user["all"] / per_user["a tenth"], 2)
    print(f"(c) cost per user, all / a tenth: {out['per_user_cost_ratio_all_vs_tenth']}x (1.0 = linear)")
    return out


def bench_real_vllm(vllm_python: str, model_dir: str, levels: tuple[int, ...], per_level: dict[int, int],
                    max_tokens: int) -> dict:
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from zipp_assets.llm.vllm_server import VLLMServerConfig, managed_vllm_server
    from zipp_assets.llm.tokens import ApproximateTokenCounter
    from zipp_assets.personas.evidence import pack
    from zipp_assets.personas.prompt import verbalization_request

    # Packed as the pipeline packs it (well inside the 2,048-token context with the prompt and the answer).
    evidence = [pack(e, ApproximateTokenCounter(), 600).text
                for e in generated_users(max(per_level.values()) + 8, seed=1)]
    requests = [verbalization_request(f"u{i}", text, max_tokens=max_tokens) for i, text in enumerate(evidence)]
    config = VLLMServerConfig(model=model_dir, python=vllm_python, max_model_len=2048, dtype="bfloat16",
                              env={"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                                   "HF_HUB_OFFLINE": "1"}, startup_timeout_s=1200.0,
                              # both sides send the same prompts: a prefix cache would favour whichever goes second
                              extra_args=("--no-enable-prefix-caching",))
    out: dict = {"model": Path(model_dir).name, "max_tokens": max_tokens, "levels": {}}
    started = time.monotonic()
    with managed_vllm_server(config) as server:
        out["startup_s"] = round(time.monotonic() - started, 1)
        print(f"(d) vLLM serving {Path(model_dir).name} ready after {out['startup_s']:.0f} s")
        url = server.base_url + "/v1/chat/completions"

        def raw(batch, concurrency: int) -> tuple[float, int, int]:
            """The reference: the same bodies posted directly, `concurrency` in flight."""
            client_for_bodies = OpenAICompatibleLLM(server.base_url, server.model, backend="vllm")
            bodies = [client_for_bodies.body(r) for r in batch]
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            with httpx.Client(timeout=600.0, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
                begin = time.perf_counter()
                answers = list(pool.map(lambda body: client.post(url, json=body).json(), bodies))
                seconds = time.perf_counter() - begin
            failed = [a for a in answers if "usage" not in a]
            if failed:
                raise RuntimeError(f"{len(failed)} raw requests failed, the first: {str(failed[0])[:300]}")
            return seconds, sum(a["usage"]["completion_tokens"] for a in answers), len(answers)

        def ours(batch, concurrency: int) -> tuple[float, int, int]:
            llm = OpenAICompatibleLLM(server.base_url, server.model, backend="vllm", concurrency=concurrency,
                                      timeout_s=600.0, retries=0)
            begin = time.perf_counter()
            results = llm.generate(batch)
            seconds = time.perf_counter() - begin
            return seconds, sum(r.completion_tokens for r in results), sum(r.ok for r in results)

        raw(requests[:2], 2)  # warm-up: the first requests compile the grammar and fill caches
        ours(requests[:2], 2)
        for level in levels:
            batch = requests[: per_level[level]]
            row = {}
            for name, run in (("raw httpx", raw), ("vllm client", ours)):
                seconds, tokens, ok = run(batch, level)
                row[name] = {"requests": len(batch), "ok": ok, "seconds": round(seconds, 2),
                             "output_tokens": tokens, "output_tokens_per_s": round(tokens / seconds, 1),
                             "requests_per_s": round(len(batch) / seconds, 2)}
                print(f"(d) {name:>11}, concurrency {level:>2}: {len(batch):>3} requests in {seconds:6.1f} s = "
                      f"{tokens / seconds:6.1f} output tokens/s, {len(batch) / seconds:5.2f} requests/s"
                      f"{f' ({ok} schema-valid)' if name == 'vllm client' else ''}")
            row["client_vs_raw_tokens_per_s"] = round(row["vllm client"]["output_tokens_per_s"]
                                                      / row["raw httpx"]["output_tokens_per_s"], 3)
            print(f"(d) concurrency {level}: client / raw = {row['client_vs_raw_tokens_per_s']:.2f}x output tokens/s "
                  "(target >= 0.9x)")
            out["levels"][level] = row
    base = out["levels"][levels[0]]["vllm client"]["output_tokens_per_s"]
    for level in levels[1:]:
        speedup = out["levels"][level]["vllm client"]["output_tokens_per_s"] / base
        print(f"(d) client at concurrency {level} / concurrency {levels[0]} = {speedup:.1f}x output tokens/s")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--users", type=int, default=1_000_000, help="users for (c) evidence packing")
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--vllm-python", default=os.environ.get("ZIPP_VLLM_PYTHON"),
                        help="(d): the interpreter of a vLLM environment (make test-vllm builds .vllm-venv)")
    parser.add_argument("--smollm2-dir", default=os.environ.get("ZIPP_SMOLLM2_DIR"),
                        help="(d): SmolLM2 converted by `make models`")
    parser.add_argument("--only-vllm", action="store_true", help="run (d) alone")
    parser.add_argument("--vllm-max-tokens", type=int, default=160)
    args = parser.parse_args()
    # Other work on the machine shifts both sides of a ratio unevenly: say how busy it was.
    print(f"load average before: {os.getloadavg()[0]:.2f} over {os.cpu_count()} CPUs")
    figures = {} if args.only_vllm else {
        "client": bench_client(args.requests, args.concurrency, args.latency),
        "transformers": bench_transformers(args.prompts, args.max_tokens),
        "packing": bench_packing(args.users, args.budget)}
    if args.vllm_python and args.smollm2_dir:
        figures["real_vllm"] = bench_real_vllm(args.vllm_python, args.smollm2_dir, (1, 16, 64),
                                               {1: 4, 16: 32, 64: 64}, args.vllm_max_tokens)
    else:
        print("(d) real vLLM: skipped (needs --vllm-python and --smollm2-dir: make test-vllm, make models)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figures["load_average_after"] = os.getloadavg()[0]
        args.out.write_text(json.dumps(figures, indent=2))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
