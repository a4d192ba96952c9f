"""Metrics benchmark: ZIPBench's CLIPScore and CMMD against naive references on the same input, same run.

    .venv/bin/python bench/metrics.py                  # default sizes, under a minute on 2 cores
    .venv/bin/python bench/metrics.py --full           # adds CMMD at ZIPBench's full 40,000 (~40 s more)
    .venv/bin/python bench/metrics.py --clip-sizes "" --cmmd-sizes 40000,80000   # any sizes

At each size N (generated images), embeddings are generated as ZIPBench has them at full size:
N * 1,500 / 40,000 users (1,500 users at 40,000), 5 reference images per user, d = 768, L2-normalised
float32; each user's images and references scatter around a user direction.
(a) CLIPScore x100 image-image: the project's `clip_score_image_image` (blockwise over users) against
    (i) the full matrix: every generated image against every reference in one matrix, masked to the
    same user, where it fits under --max-full-gb, and (ii) a Python loop over users (one small matrix
    product each), at every size.
(b) CMMD, the paper's (biased) estimator, of the generated images against all references: the
    project's `cmmd` (float64, 2,048-row blocks) against the paper's formula on full float64 kernel
    matrices (the official code's arithmetic, in numpy), where those fit under --max-full-gb.
Each side's result is compared with the other's (largest absolute difference); each side's wall and
CPU seconds (all threads) and peak memory above what the process held before it (GB, the kernel's
high-water mark, reset per run) are taken. Prints a table with the ratios reference / project and how
the project's CPU time grows from one size to the next; --out writes JSON.
Default sizes: CLIPScore 5,000 to 160,000 generated images (40,000 is ZIPBench's size), CMMD 2,500 to
20,000; CMMD's cost grows with the square of the images, so 40,000 is behind --full.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale import peak_bytes, reset_peak, rss_bytes  # noqa: E402
from zipp_assets.zipbench.metrics import clip_score_image_image, cmmd  # noqa: E402

DIM = 768
USERS_PER_IMAGE = 1_500 / 40_000
REFERENCES_PER_USER = 5


def embeddings(n_generated: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = max(1, round(n_generated * USERS_PER_IMAGE))
    centres = rng.standard_normal((users, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def around(owner: np.ndarray) -> np.ndarray:
        x = 0.6 * centres[owner] + 0.8 * rng.standard_normal((len(owner), DIM), dtype=np.float32) / np.sqrt(DIM)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gen_user = rng.integers(0, users, n_generated)
    ref_user = np.repeat(np.arange(users), REFERENCES_PER_USER)
    return {"gen": around(gen_user), "gen_user": gen_user, "ref": around(ref_user), "ref_user": ref_user}


def clip_full_matrix(gen, gen_user, ref, ref_user) -> np.ndarray:
    similarity = np.maximum(gen @ ref.T, 0.0)
    same_user = gen_user[:, None] == ref_user[None, :]
    with np.errstate(invalid="ignore"):
        return 100.0 * (similarity * same_user).sum(axis=1, dtype=np.float64) / same_user.sum(axis=1)


def clip_user_loop(gen, gen_user, ref, ref_user) -> np.ndarray:
    scores = np.full(len(gen), np.nan)
    for user in np.unique(gen_user):
        rows, refs = np.flatnonzero(gen_user == user), ref[ref_user == user]
        if len(refs):
            scores[rows] = 100.0 * np.maximum(gen[rows] @ refs.T, 0.0).mean(axis=1)
    return scores


def cmmd_full_matrices(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """The official implementation's arithmetic (google-research/cmmd `mmd`) on full float64 matrices."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    gamma = 1.0 / (2.0 * sigma**2)
    x_sq, y_sq = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    k_xx = np.mean(np.exp(-gamma * (-2.0 * (x @ x.T) + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2.0 * (x @ y.T) + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2.0 * (y @ y.T) + y_sq[:, None] + y_sq[None, :])))
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))


def timed(function, repeats: int):
    """(best wall seconds, result, peak memory above the start in GB, CPU seconds of that best run) over up
    to `repeats` runs; a run over a second is not repeated (the default run stays short). CPU seconds add
    up every thread; on a shared machine they move less with other people's load than wall seconds do."""
    best, result, extra, cpu = float("inf"), None, 0.0, float("nan")
    for _ in range(repeats):
        result = None  # the previous run's result is not part of this run's peak
        reset_peak()
        before = rss_bytes()
        started, cpu_started = time.perf_counter(), time.process_time()
        result = function()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        if seconds < best:
            best, cpu = seconds, cpu_seconds
        extra = max(extra, (peak_bytes() - before) / 1e9)
        if best > 1.0:
            break
    return best, result, extra, cpu


def max_difference(a, b) -> float:
    a, b = np.atleast_1d(np.asarray(a, dtype=np.float64)), np.atleast_1d(np.asarray(b, dtype=np.float64))
    assert np.array_equal(np.isnan(a), np.isnan(b)), "the two sides disagree on which scores are missing"
    return float(np.nanmax(np.abs(a - b)))


def bench_clip(n: int, max_full_gb: float, repeats: int) -> list[dict]:
    data = embeddings(n)
    gen, gen_user, ref, ref_user = data["gen"], data["gen_user"], data["ref"], data["ref_user"]
    rows = []
    project_s, project, project_gb, project_cpu = timed(
        lambda: clip_score_image_image(gen, gen_user, ref, ref_user).scores, repeats)
    references = {"loop over users": lambda: clip_user_loop(gen, gen_user, ref, ref_user)}
    full_gb = len(gen) * len(ref) * 4 / 1e9
    if full_gb <= max_full_gb:
        references["full matrix"] = lambda: clip_full_matrix(gen, gen_user, ref, ref_user)
    else:
        rows.append({"metric": "CLIPScore", "n": n, "refs": len(ref), "project_s": project_s,
                     "project_cpu_s": project_cpu, "project_gb": project_gb, "reference": "full matrix",
                     "skipped": f"one {len(gen):,} x {len(ref):,} float32 matrix is {full_gb:.1f} GB"})
    for name, function in references.items():
        seconds, value, reference_gb, cpu = timed(function, repeats)
        rows.append({"metric": "CLIPScore", "n": n, "refs": len(ref), "project_s": project_s,
                     "project_cpu_s": project_cpu, "project_gb": project_gb, "reference": name,
                     "reference_s": seconds, "reference_cpu_s": cpu, "reference_gb": reference_gb,
                     "ratio": seconds / project_s, "cpu_ratio": cpu / project_cpu,
                     "max_abs_diff": max_difference(project, value)})
    return rows


def bench_cmmd(n: int, max_full_gb: float, repeats: int) -> list[dict]:
    data = embeddings(n)
    gen, ref = data["gen"], data["ref"]
    project_s, project, project_gb, project_cpu = timed(lambda: cmmd(ref, gen).value, repeats)
    kernel_gb = max(len(gen), len(ref)) ** 2 * 8 / 1e9
    row = {"metric": "CMMD", "n": n, "refs": len(ref), "project_s": project_s, "project_cpu_s": project_cpu,
           "project_gb": project_gb, "reference": "full matrices", "value": project}
    if kernel_gb <= max_full_gb:
        seconds, value, reference_gb, cpu = timed(lambda: cmmd_full_matrices(ref, gen), repeats)
        row.update(reference_s=seconds, reference_cpu_s=cpu, reference_gb=reference_gb, ratio=seconds / project_s,
                   cpu_ratio=cpu / project_cpu, max_abs_diff=abs(project - value))
    else:
        row["skipped"] = f"one {len(gen):,} x {len(gen):,} float64 kernel matrix is {kernel_gb:.1f} GB"
    return [row]


def print_table(rows: list[dict]) -> None:
    print(f"{'metric':9} {'generated':>9} {'refs':>6} | {'project s':>9} {'cpu s':>7} {'GB':>5} | {'reference':>15} "
          f"{'ref s':>7} {'cpu s':>7} {'GB':>5} | {'ratio':>6} {'cpu':>6} {'max |diff|':>10}")
    for r in rows:
        head = (f"{r['metric']:9} {r['n']:>9,} {r['refs']:>6,} | {r['project_s']:>9.3f} {r['project_cpu_s']:>7.3f} "
                f"{r['project_gb']:>5.2f} | {r['reference']:>15}")
        if "skipped" in r:
            print(f"{head} skipped: {r['skipped']}")
        else:
            print(f"{head} {r['reference_s']:>7.3f} {r['reference_cpu_s']:>7.3f} {r['reference_gb']:>5.2f} | "
                  f"{r['ratio']:>5.1f}x {r['cpu_ratio']:>5.1f}x {r['max_abs_diff']:>10.1e}")


def print_growth(rows: list[dict]) -> None:
    """The project's cost per size against the previous size (CPU seconds, steadier than wall here)."""
    for metric in ("CLIPScore", "CMMD"):
        sizes = sorted({(r["n"], r["project_cpu_s"]) for r in rows if r["metric"] == metric})
        steps = [f"{b[0] / a[0]:.0f}x images -> {b[1] / a[1]:.1f}x CPU time" for a, b in zip(sizes, sizes[1:])]
        if steps:
            print(f"growth, project {metric}: " + "; ".join(steps))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-sizes", default="5000,10000,20000,40000,160000",
                        help="generated images per CLIPScore size, comma-separated (empty: none)")
    parser.add_argument("--cmmd-sizes", default="2500,5000,10000,20000",
                        help="generated images per CMMD size, comma-separated (empty: none)")
    parser.add_argument("--full", action="store_true", help="also CMMD at ZIPBench's 40,000 generated images")
    parser.add_argument("--max-full-gb", type=float, default=1.0, help="largest full matrix a reference may build")
    parser.add_argument("--repeats", type=int, default=3, help="best of up to this many runs (one if over 1 s)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.full and "40000" not in args.cmmd_sizes.split(","):
        args.cmmd_sizes = ",".join(filter(None, [args.cmmd_sizes, "40000"]))
    print(f"load average before: {os.getloadavg()[0]:.2f} over {os.cpu_count()} CPUs; d = {DIM}, "
          f"{REFERENCES_PER_USER} references per user, {USERS_PER_IMAGE * 40_000:,.0f} users per 40,000 images")
    rows = []
    for bench, sizes in ((bench_clip, args.clip_sizes), (bench_cmmd, args.cmmd_sizes)):
        for n in (int(size) for size in sizes.split(",") if size.strip()):
            size_rows = bench(n, args.max_full_gb, args.repeats)
            print_table(size_rows)
            rows += size_rows
    print("\nall sizes:")
    print_table(rows)
    print_growth(rows)
    figures = {"rows": rows, "dim": DIM, "load_average_after": os.getloadavg()[0]}
    print(f"load average after: {figures['load_average_after']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
