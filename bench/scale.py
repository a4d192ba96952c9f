"""Scale benchmark: time and peak resident memory of every stage of the graph and encoder pipeline.

    .venv/bin/python bench/scale.py --sizes 1M,10M            # what this 2-core, 24 GiB machine runs
    .venv/bin/python bench/scale.py --sizes 1M,10M,100M,full  # the whole ladder (hours)
    .venv/bin/python bench/scale.py --sizes 20K --steps 4 --warmup 2   # a smoke run (the test suite's)
    .venv/bin/python bench/scale.py --sizes 1M,10M,20M --compare-training  # training rates only, interleaved

A size is a number of edges (20K, 1M, 10M, 100M, 200M...) or `full` (22M users, 40K subreddits,
200M edges). Users are edges / 9; subreddits grow from about 5K at 1M edges to 40K at 200M
(5,000 x (edges / 1M) ** (log 8 / log 200)). For each size, from small to large:

  generate   monthly `reddit_user_subreddit_edges` (4 months) in a temporary lake, heavy-tailed:
             users' subreddit counts Lomax (Pareto II, shape 2), subreddit popularity Zipf
             (exponent 1.05), per-row comment counts Zipf; not a stage, not timed
  tables     zipp_assets.graph.tables.build_graph_tables (DuckDB, its default 2GB memory limit)
  graph      zipp_assets.encoder.data.load_graph_data + GraphData.message_graph (the DGL graph, its
             CSC built here rather than at the sampler's first batch)
  training   the project's edge_dataloader and optimization_step over TrainingObjective
             (hidden 128, 4 heads, fan-outs 15,10, batches of 512 seed edges, 8 negatives, no
             ImageAlign); `--steps` batches, seed edges/s over those after `--warmup`
  inference  zipp_assets.encoder.inference.embed_users_to_lake, the pipeline's path: every user's
             embedding and attention top-10 written to the lake, GATv2 in groups of at most
             `--max-edges` incoming edges, user states memory-mapped between layers (users/s)
  inference_in_memory  with --reference-inference: zipp_assets.encoder.train.infer (DGL's
             full-neighbour loader, 4,096 destinations a batch, everything in memory) +
             inference.top_k_attention, the reference the pipeline's path replaced
  evaluation evaluate.KnownLinks + link_scores on a fixed, seeded sample of `--eval-edges`
             held-out test edges against every subreddit, the sample's users read back from the lake
  evidence   zipp_assets.personas.evidence.build_evidence for every user of all 16 shards with the
             template backend's token counter: attention top-10 from the inference stage, comment
             snippets (generated first, not timed: one comment for about half of the first month's
             (user, subreddit) rows), packed under 2,048 tokens and written to the lake (users/s)

With `--resume --work-dir DIR`, each size keeps its folder under DIR and every worker its figures
there; the same command run again (after every process was killed, at any moment) skips what
finished and carries on at the stage it was in: the model and the subreddits' last states are saved
after training and inference, the graph (held in memory only) is rebuilt. A finished size keeps only
its figures.

Each size runs in four subprocesses (generate; tables; the encoder stages; evidence), as the pipeline runs
the graph tables and the encoder as separate assets, so nothing one leaves behind counts against
the next. Within a process each stage's peak RSS is the kernel's high-water mark (VmHWM) reset at
the stage's start (/proc/self/clear_refs), so it is that stage's own peak, not the process's so
far; `held` is the RSS at the stage's end once free memory is handed back to the kernel
(malloc_trim, Arrow's pool; `rss_after` in the JSON is before that). A size that fails (out of
memory, killed, timed out) is recorded with the stage it died in, and no bigger size is tried.
Results go to bench/out/scale.json (rewritten after every size) and a table per size is printed.

--compare-training measures only training seed edges/s, of every size in one process, in
interleaved rounds, each round's rate divided by the first size's in the same round: on a shared
machine, load that changes over minutes then affects every size alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DGLBACKEND", "pytorch")

GIB = 2**30
MONTHS = 4
STAGES = ("tables", "graph", "training", "inference", "inference_in_memory", "evaluation", "evidence")
COMMENT_MONTH = "2019-01"
COMMENT_SHARE = 0.5  # of that month's (user, subreddit) rows: one comment each


@dataclass(frozen=True)
class Size:
    name: str
    edges: int
    users: int
    subreddits: int


def subreddits_for(edges: int) -> int:
    return max(200, round(5_000 * (edges / 1e6) ** (math.log(8) / math.log(200))))


def parse_size(text: str) -> Size:
    text = text.strip()
    if text.lower() == "full":
        return Size("full", 200_000_000, 22_000_000, 40_000)
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    edges = int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)
    if edges < 1_000:
        raise argparse.ArgumentTypeError(f"size {text!r}: at least 1K edges")
    return Size(text, edges, max(100, edges // 9), subreddits_for(edges))


# ---------------------------------------------------------------- memory of this process


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    return _status_kib("VmHWM") * 1024 or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def release_free_memory() -> None:
    """Hand memory that is free but still mapped back to the kernel (glibc's heaps, Arrow's pool), so
    the RSS left after a stage is what it really holds and the next stage starts from that."""
    import ctypes
    import gc

    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Recorder:
    """Stage figures of one worker, written to `path` after every stage so a kill leaves them."""

    def __init__(self, path: Path, worker: str, resume: bool = False):
        self.path = path
        self.result = {"worker": worker, "stages": {}, "info": {}, "status": "running", "failed_stage": None}
        if resume and path.exists():  # a run cut off: keep the stages it finished (and their figures)
            previous = json.loads(path.read_text())
            self.result["stages"] = previous.get("stages", {})
            self.result["info"] = previous.get("info", {})
            self.result["info"]["resumed"] = self.result["info"].get("resumed", 0) + 1
        self.peak_resettable = reset_peak()
        self.flush()

    def done(self, name: str) -> bool:
        return name in self.result["stages"]

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=float))
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def stage(self, name: str):
        self.result["failed_stage"] = name
        self.flush()
        before = rss_bytes()
        reset_peak()
        record = {"rss_before": before}
        cpu = _cpu_seconds()
        started = time.perf_counter()
        yield record
        seconds = time.perf_counter() - started
        # RSS first, then the mark: a page touched between the two reads (Arrow's or torch's threads) would
        # otherwise leave a peak below the RSS after it; the peak is at least the RSS by definition.
        after = rss_bytes()
        record.update(seconds=seconds, peak_rss=max(peak_bytes(), after), rss_after=after,
                      peak_resettable=self.peak_resettable, cpu_seconds=_cpu_seconds() - cpu,
                      load_average_1min_at_end=os.getloadavg()[0])
        release_free_memory()
        record["rss_after_trim"] = rss_bytes()
        self.result["stages"][name] = record
        self.result["failed_stage"] = None
        self.flush()
        print(f"  {name:10s} {record['seconds']:9.1f}s  peak {record['peak_rss'] / GIB:6.2f} GiB  "
              f"held {record['rss_after_trim'] / GIB:6.2f} GiB ({record['rss_after'] / GIB:.2f} before trimming)", flush=True)


# ---------------------------------------------------------------- generation


def generate(lake_dir: Path, size: Size, recorder: Recorder, seed: int = 0, chunk_rows: int = 2_000_000) -> None:
    """Write MONTHS monthly edge partitions whose distinct (user, subreddit) pairs number about
    `size.edges`, chunk by chunk (memory stays at a few chunks whatever the size)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from zipp_assets import lake
    from zipp_assets.reddit.schemas import EDGES_SCHEMA, QUARANTINE_SCHEMA, SUBMISSIONS_SCHEMA

    rng = np.random.default_rng(seed)
    U, S = size.users, size.subreddits
    popularity = 1.0 / np.arange(1, S + 1) ** 1.05
    cdf = np.cumsum(popularity / popularity.sum())
    cdf[-1] = 1.0
    by_rank = rng.permutation(S)  # rank -> subreddit id, so names carry no popularity order
    names = pa.array([f"sub{s}" for s in range(S)], pa.string())
    cap = max(2, S // 4)
    shape = rng.pareto(2.0, U)  # Lomax, shape 2: a tail of very active users

    def degrees(scale: float) -> np.ndarray:
        return np.minimum(1 + np.floor(scale * shape), cap).astype(np.int64)

    def scale_for(rows: float) -> float:
        low, high = 0.0, 1e4
        for _ in range(50):
            mid = (low + high) / 2
            low, high = (mid, high) if degrees(mid).sum() < rows else (low, mid)
        return high

    def draw(users: np.ndarray, degree: np.ndarray) -> np.ndarray:
        """Distinct (user, subreddit) keys user * S + subreddit, sorted."""
        u = np.repeat(users, degree)
        s = by_rank[np.searchsorted(cdf, rng.random(len(u)))]
        return np.unique(u * S + s)

    # Repeated draws of one subreddit by one user merge into one pair: measure how many on a
    # pilot of users and draw that many more rows, so the distinct pairs come out near the target.
    pilot = np.arange(min(U, 200_000))
    distinct = 1.0
    for _ in range(3):  # more rows per user, more repeats: a few rounds settle it
        pilot_degree = degrees(scale_for(size.edges / distinct))[pilot]
        distinct = len(draw(pilot, pilot_degree)) / max(1, int(pilot_degree.sum()))
    degree = degrees(scale_for(size.edges / distinct))
    starts = np.r_[0, np.cumsum(degree)]
    base = 1546300800  # 2019-01-01, seconds
    month_seconds = 30 * 86400
    pairs = rows = 0
    with contextlib.ExitStack() as stack:
        writers = []
        for m in range(MONTHS):
            folder = stack.enter_context(lake.atomic_partition(lake_dir, "reddit_user_subreddit_edges", {"month": f"2019-{m + 1:02d}"}))
            writers.append(stack.enter_context(lake.RotatingParquetWriter(folder, EDGES_SCHEMA)))
        first = 0
        while first < U:
            last = int(np.searchsorted(starts, starts[first] + chunk_rows, side="right")) - 1
            last = min(U, max(last, first + 1))
            keys = draw(np.arange(first, last), degree[first:last])
            first = last
            # Each pair is active in 1 to MONTHS consecutive months (mean 1.45): one row per month.
            months_active = 1 + rng.binomial(MONTHS - 1, 0.15, len(keys))
            start_month = rng.integers(0, MONTHS, len(keys))
            pair = np.repeat(np.arange(len(keys)), months_active)
            offset = np.arange(len(pair)) - np.repeat(np.cumsum(months_active) - months_active, months_active)
            month = (start_month[pair] + offset) % MONTHS
            n = len(pair)
            comments = np.minimum(rng.zipf(2.0, n), 10_000)
            submissions = np.where(rng.random(n) < 0.15, np.minimum(rng.zipf(2.5, n), 1_000), 0)
            score = comments * rng.integers(-1, 12, n) + submissions * rng.integers(0, 50, n)
            first_s = base + month * month_seconds + rng.integers(0, month_seconds // 2, n)
            last_s = first_s + rng.integers(0, month_seconds // 2, n)
            user = keys[pair] // S
            user_key = pc.binary_join_element_wise("t2_", pc.cast(pa.array(user), pa.string()), "")
            subreddit = names.take(pa.array(keys[pair] % S))
            table = pa.table({
                "user_key": user_key, "subreddit": subreddit, "comment_count": comments,
                "submission_count": submissions, "score_sum": score,
                "first_utc": pa.array(first_s * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "last_utc": pa.array(last_s * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            })
            for m in range(MONTHS):
                writers[m].write(table.filter(pa.array(month == m)))
            pairs += len(keys)
            rows += n
    for m in range(MONTHS):  # an ingested month without submissions: its rows and quarantine, one build
        with lake.build(lake_dir) as together:
            partition = {"month": f"2019-{m + 1:02d}"}
            lake.write_table(together.partition("reddit_submissions", partition), SUBMISSIONS_SCHEMA.empty_table())
            lake.write_table(together.partition("reddit_submissions_quarantine", partition), QUARANTINE_SCHEMA.empty_table())
    recorder.result["info"].update(generated_pairs=int(pairs), generated_rows=int(rows),
                                   max_user_degree=int(degree.max()), users_with_one_subreddit=float((degree == 1).mean()))


def generate_comments(lake_dir: Path, seed: int = 1) -> int:
    """Comments for the evidence stage (not timed): one for about half of the first month's (user,
    subreddit) rows, by that user in that subreddit, streamed batch by batch. Bodies are sentences of
    ordinary English words (not any world's vocabulary: this measures packing, not content), some
    with a link or a username for the cleaner to remove. Nothing is written twice."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from zipp_assets import lake
    from zipp_assets.reddit.schemas import COMMENTS_SCHEMA, QUARANTINE_SCHEMA

    if lake.table_exists(lake_dir, "reddit_comments"):
        return -1
    rng = np.random.default_rng(seed)
    words = pa.array("the a this that my our it was is really very just so quite good great nice odd new old "
                     "time year week day thing way place photo picture light colour shot print post game "
                     "guide build set store trip walk night morning think know love like found made took "
                     "saw tried used wanted needed about with from after before over under again still "
                     "never always maybe honestly probably".split())
    extras = pa.array(["", "", "", "", " see https://example.com/x", " thanks u/someone", " (edit: typo)"])
    edges = lake.open_table(lake_dir, "reddit_user_subreddit_edges").to_dataset([{"month": COMMENT_MONTH}])
    written = 0
    with lake.build(lake_dir) as together:
        partition = {"month": COMMENT_MONTH}
        with lake.RotatingParquetWriter(together.partition("reddit_comments", partition), COMMENTS_SCHEMA) as out:
            for batch in edges.to_batches(columns=["user_key", "subreddit", "first_utc"], batch_size=1_000_000):
                keep = rng.random(batch.num_rows) < COMMENT_SHARE
                rows = pa.Table.from_batches([batch]).filter(pa.array(keep))
                n = rows.num_rows
                length = rng.integers(6, 40, n)
                parts = [pc.if_else(pa.array(length > j), words.take(pa.array(rng.integers(0, len(words), n))), "")
                         for j in range(40)]
                body = pc.utf8_trim_whitespace(pc.binary_join_element_wise(*parts, " "))
                body = pc.binary_join_element_wise(body, extras.take(pa.array(rng.integers(0, len(extras), n))), "")
                ids = pc.binary_join_element_wise("c", pc.cast(pa.array(np.arange(written, written + n)), pa.string()), "")
                out.write(pa.table({
                    "id": ids, "link_id": pa.nulls(n, pa.string()), "parent_id": pa.nulls(n, pa.string()),
                    "subreddit": rows["subreddit"], "subreddit_id": pa.nulls(n, pa.string()),
                    "author": pa.nulls(n, pa.string()), "author_fullname": pa.nulls(n, pa.string()),
                    "user_key": rows["user_key"], "created_utc": rows["first_utc"],
                    "score": pa.array(rng.zipf(2.0, n).clip(max=10_000), pa.int64()),
                    "edited": pa.array(np.zeros(n, bool)), "distinguished": pa.nulls(n, pa.string()), "body": body,
                }))
                written += n
        lake.write_table(together.partition("reddit_comments_quarantine", partition), QUARANTINE_SCHEMA.empty_table())
    return written


def evidence_worker(lake_dir: Path, recorder: Recorder) -> None:
    from zipp_assets.llm.tokens import token_counter
    from zipp_assets.personas.evidence import EvidenceConfig, build_evidence
    from zipp_assets.personas.shards import SHARD_KEYS

    info = recorder.result["info"]
    started = time.perf_counter()
    made = generate_comments(lake_dir)
    if made >= 0:
        info.update(comments_generated=made, comments_seconds=time.perf_counter() - started)
        recorder.flush()
    release_free_memory()
    counter = token_counter("template")
    with recorder.stage("evidence") as record:
        started = time.perf_counter()
        reports = build_evidence(lake_dir, b"bench-scale", SHARD_KEYS, EvidenceConfig(), counter,
                                 progress=lambda line: print(f"    {line}", flush=True))
        users = sum(r.users for r in reports)
        record.update(users=users, token_counter=counter.name, users_per_second=users / (time.perf_counter() - started),
                      mean_tokens=sum(sum(r.tokens) for r in reports) / max(1, users),
                      snippets_used=sum(r.snippets_used for r in reports),
                      snippets_available=sum(r.snippets_available for r in reports),
                      instruction_like_dropped=sum(r.instruction_like_dropped for r in reports))
        del reports
    print(f"  evidence: {record['users_per_second']:,.0f} users/s", flush=True)


# ---------------------------------------------------------------- stages


def tables_worker(lake_dir: Path, recorder: Recorder, memory_limit: str) -> None:
    from zipp_assets.graph.tables import GraphConfig, build_graph_tables

    with recorder.stage("tables"):
        report = build_graph_tables(lake_dir, b"bench-scale", GraphConfig(memory_limit=memory_limit))
    recorder.result["info"].update(users=report.users, subreddits=report.subreddits, edges=report.edges,
                                   split_counts=report.split_counts, users_dropped=report.users_dropped,
                                   duckdb_memory_limit=memory_limit, step_seconds=report.step_seconds)


def _graph_structure_bytes(graph) -> dict[str, int]:
    """Bytes of the DGL graph's adjacency formats now created (DGL has no nbytes: from sizes)."""
    from zipp_assets.encoder.data import FORWARD, REVERSE

    created = graph.formats()["created"]
    out = {}
    for etype in (FORWARD, REVERSE):
        e = graph.num_edges(etype)
        for fmt in created:
            if fmt == "coo":
                out[f"{etype[1]} coo"] = 16 * e
            else:  # csr: rows = sources; csc: rows = destinations; indices + edge ids + indptr
                nodes = graph.num_nodes(etype[0] if fmt == "csr" else etype[2])
                out[f"{etype[1]} {fmt}"] = 16 * e + 8 * (nodes + 1)
    return out


def _next_batch(run: dict):
    batch = next(run["iterator"], None)
    if batch is None:  # an epoch ended (small graphs): start the next
        run["iterator"] = iter(run["loader"])
        batch = next(run["iterator"])
    return batch


def compare_worker(lakes: list[str], names: list[str], recorder: Recorder, args) -> None:
    """Training seed edges/s of several sizes (and negative pools) in one process, in interleaved
    rounds; each round's rate is divided by the first size's in the same round (with the same pool,
    and with the first pool), so a busy machine slows every run alike and the median ratio between
    runs stays fair."""
    import dgl
    import torch

    from zipp_assets.encoder.data import FORWARD, load_graph_data
    from zipp_assets.encoder.train import TrainingObjective, build_model, edge_dataloader, optimization_step

    pools = args.negative_pools
    runs = {}
    for name, lake in zip(names, lakes):
        data = load_graph_data(Path(lake), image_encoder_name=None)
        graph = data.message_graph()
        for pool in pools:
            config = _train_config(args, pool)
            torch.manual_seed(0)
            dgl.seed(0)
            objective = TrainingObjective(build_model(data, config), data, config)
            optimizer = torch.optim.AdamW(objective.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
            loader = edge_dataloader(graph, None, data, config)
            run = {"objective": objective, "optimizer": optimizer, "loader": loader, "iterator": iter(loader)}
            for _ in range(args.warmup):
                optimization_step(objective, optimizer, _next_batch(run))
            runs[_run_name(name, pool, pools)] = run | {
                "size": name, "pool": pool, "edges": sum(len(t) for t in data.edges.values()), "rates": [],
                "block_edges": [], "input_nodes": [], "negative_subreddits": [], "cpu_per_seed": []}
        del data, graph
    for _ in range(args.rounds):
        for name, run in runs.items():
            seen = block_edges = input_nodes = negative_subreddits = 0
            cpu = _cpu_seconds()
            started = time.perf_counter()
            for _ in range(args.batches_per_round):
                batch = _next_batch(run)
                optimization_step(run["objective"], run["optimizer"], batch)
                seen += batch[1].num_edges(FORWARD)
                block_edges += sum(block.num_edges() for block in batch[3])
                input_nodes += sum(len(ids) for ids in batch[0].values())
                negative_subreddits += len(torch.unique(batch[2].edges(etype=FORWARD)[1]))
            run["rates"].append(seen / (time.perf_counter() - started))
            run["cpu_per_seed"].append((_cpu_seconds() - cpu) / seen)
            for key, total in (("block_edges", block_edges), ("input_nodes", input_nodes),
                               ("negative_subreddits", negative_subreddits)):
                run[key].append(total / args.batches_per_round)
            print(f"  {name:16s} {run['rates'][-1]:8,.0f} seed edges/s", flush=True)
    reference = runs[_run_name(names[0], pools[0], pools)]

    def median_ratio(run: dict, first: dict, key: str = "rates", inverse: bool = False) -> float:
        return statistics.median((f / r) if inverse else (r / f) for r, f in zip(run[key], first[key]))

    recorder.result["info"]["negative_pools"] = pools
    comparison = recorder.result["info"]["comparison"] = {}
    for name, run in runs.items():
        first = runs[_run_name(names[0], run["pool"], pools)]  # the smallest size, with the same pool
        comparison[name] = {
            "size": run["size"], "negative_pool": run["pool"], "graph_edges": run["edges"],
            "seed_edges_per_second": run["rates"], "best": max(run["rates"]),
            # each round's rate over the first size's in the same round (the same pool): load that
            # changes between rounds cancels; the median of these is the figure to read
            "median_ratio_to_first": median_ratio(run, first),
            # ... and over the first size's with the first pool (each edge its own negatives)
            "median_ratio_to_first_size_first_pool": median_ratio(run, reference),
            # CPU seconds (all threads) per seed edge: less sensitive to a busy machine than wall time
            "cpu_ms_per_seed_edge": [1e3 * c for c in run["cpu_per_seed"]],
            "median_cpu_ratio_first_to_this": median_ratio(run, first, "cpu_per_seed", inverse=True),
            "block_edges_per_batch": statistics.fmean(run["block_edges"]),
            "input_nodes_per_batch": statistics.fmean(run["input_nodes"]),
            "negative_subreddits_per_batch": statistics.fmean(run["negative_subreddits"])}


def _run_name(size: str, pool: int | None, pools: list) -> str:
    return size if len(pools) == 1 else f"{size} pool {pool or 'none'}"


def _train_config(args, pool: int | None = None):
    """The training stage's config: the pipeline's defaults at the benchmark's width and batch size."""
    from zipp_assets.encoder.train import TrainConfig

    return TrainConfig(hidden=args.hidden, heads=4, fanouts=(15, 10), batch_size=args.batch_size, negatives=8,
                       negative_pool=pool, use_image_align=False, device="cpu")


def nbytes(tensor) -> int:
    """Bytes of a tensor's elements."""
    return int(tensor.element_size() * tensor.nelement())


def encoder_worker(lake_dir: Path, recorder: Recorder, args) -> None:
    import torch

    from zipp_assets.encoder.data import FORWARD, load_graph_data
    from zipp_assets.encoder.train import build_model

    info = recorder.result["info"]
    info["torch_threads"] = torch.get_num_threads()
    with recorder.stage("graph") as record:
        started = time.perf_counter()
        data = load_graph_data(lake_dir, image_encoder_name=None)
        record["load_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        graph = data.message_graph()
        record["dgl_build_seconds"] = time.perf_counter() - started
    memory = {f"edges[{s}] int64 pairs": nbytes(t) for s, t in data.edges.items()}
    memory |= {f"edge_features[{s}] float32": nbytes(t) for s, t in data.edge_features.items()}  # train only
    memory |= {"user_features float32": nbytes(data.user_features), "subreddit_degree": nbytes(data.subreddit_degree)}
    memory |= {f"dgl {k} (computed)": v for k, v in _graph_structure_bytes(graph).items()}
    info.update(train_edges=graph.num_edges(FORWARD), test_edges=len(data.edges["test"]), memory_bytes=memory)
    recorder.flush()

    config = _train_config(args, args.negative_pools[0])
    # What a later stage needs from an earlier one is saved beside the lake, so a run cut off resumes
    # at the stage it was in (the graph, held only in memory, is rebuilt: a few minutes at full size).
    model_file, subreddits_file = lake_dir.parent / "model.pt", lake_dir.parent / "final_subreddits.pt"
    if recorder.done("training") and model_file.exists():
        torch.manual_seed(0)
        model = build_model(data, config)
        model.load_state_dict(torch.load(model_file))
        print("  training: done before (resumed)", flush=True)
    else:
        model = _training_stage(recorder, data, graph, config, memory, args)
        torch.save(model.state_dict(), model_file)
    _inference_stages(recorder, data, graph, model, memory, lake_dir, subreddits_file, args)
    del graph  # the evaluation is a stage of its own in the pipeline: it starts without the graph
    release_free_memory()
    if not recorder.done("evaluation"):
        _evaluation_stage(recorder, data, torch.load(subreddits_file), memory, lake_dir, args)


def _training_stage(recorder: Recorder, data, graph, config, memory: dict, args):
    import dgl
    import torch

    from zipp_assets.encoder.data import FORWARD
    from zipp_assets.encoder.train import TrainingObjective, build_model, edge_dataloader, optimization_step

    with recorder.stage("training") as record:
        stage_started = time.perf_counter()
        torch.manual_seed(0)
        dgl.seed(0)
        model = build_model(data, config)
        objective = TrainingObjective(model, data, config)
        optimizer = torch.optim.AdamW(objective.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        loader = edge_dataloader(graph, None, data, config)  # every training edge, as the pipeline's train()
        setup_done = time.perf_counter()
        record["setup_seconds"] = setup_done - stage_started
        batches = timed_seeds = 0
        timed_from = None
        sampling = stepping = block_edges = input_nodes = negative_subreddits = 0.0
        iterator = iter(loader)
        while batches < args.steps:
            if batches == args.warmup:
                timed_from, timed_seeds = time.perf_counter(), 0
                sampling = stepping = block_edges = input_nodes = negative_subreddits = 0.0
            started = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:  # fewer seed edges than steps x batch size: a new epoch
                iterator = iter(loader)
                continue
            sampled = time.perf_counter()
            optimization_step(objective, optimizer, batch)
            stepping += time.perf_counter() - sampled
            sampling += sampled - started
            timed_seeds += batch[1].num_edges(FORWARD)
            block_edges += sum(block.num_edges() for block in batch[3])
            input_nodes += sum(len(ids) for ids in batch[0].values())
            negative_subreddits += len(torch.unique(batch[2].edges(etype=FORWARD)[1]))
            batches += 1
        ended = time.perf_counter()
        timed = max(1, batches - args.warmup)
        record.update(batches=batches, warmup_batches=args.warmup, timed_seed_edges=timed_seeds,
                      warmup_seconds=(timed_from or ended) - setup_done,
                      seed_edges_per_second=timed_seeds / (ended - timed_from) if timed_from else float("nan"),
                      sampling_seconds_per_batch=sampling / timed, step_seconds_per_batch=stepping / timed,
                      block_edges_per_batch=block_edges / timed, input_nodes_per_batch=input_nodes / timed,
                      negative_subreddits_per_batch=negative_subreddits / timed, negative_pool=config.negative_pool)
        del iterator
        memory["training memberships (sorted int64 keys)"] = nbytes(objective.memberships)
        memory["training seed order (int32 permutation)"] = 4 * graph.num_edges(FORWARD)
        memory |= {f"dgl {k} (computed)": v for k, v in _graph_structure_bytes(graph).items()}
        memory["model parameters + AdamW state"] = 3 * sum(nbytes(p) for p in objective.parameters())
        del loader
    print(f"  training: {record['seed_edges_per_second']:,.0f} seed edges/s", flush=True)
    return model


def _inference_stages(recorder: Recorder, data, graph, model, memory: dict, lake_dir: Path, subreddits_file: Path, args):
    import torch

    from zipp_assets.encoder.chunked import DEFAULT_MAX_EDGES
    from zipp_assets.encoder.data import FORWARD
    from zipp_assets.encoder.inference import embed_users_to_lake, top_k_attention
    from zipp_assets.encoder.train import infer

    info = recorder.result["info"]

    # infer() takes 4,096 destination nodes a batch with their full neighbourhoods: the largest batch
    # of subreddits (by incoming edges) is what one GATv2 layer's per-edge tensors must hold at once there;
    # embed_users_to_lake holds at most --max-edges (or one subreddit's slice of them).
    in_degree = graph.in_degrees(etype=FORWARD)
    info["largest_inference_batch_edges"] = int(max(in_degree[i : i + 4096].sum() for i in range(0, len(in_degree), 4096)))
    info["largest_subreddit_train_edges"] = int(in_degree.max())
    max_edges = args.max_edges or DEFAULT_MAX_EDGES
    info["inference_max_edges"] = max_edges
    if recorder.done("inference") and subreddits_file.exists():
        final_subreddits = torch.load(subreddits_file)
        print("  inference: done before (resumed)", flush=True)
    else:
        final_subreddits = torch.zeros(data.num_subreddits, model.hidden)
        with recorder.stage("inference") as record, tempfile.TemporaryDirectory(dir=lake_dir.parent) as scratch:
            started = time.perf_counter()
            counts = embed_users_to_lake(model, graph, data, lake_dir, top_k=10, scratch_dir=Path(scratch),
                                         max_edges=max_edges, final_subreddits=final_subreddits)
            record["infer_seconds"] = time.perf_counter() - started
            record["users_per_second"] = data.num_users / record["infer_seconds"]
            record["top_k_rows"] = int(counts["attention_rows"])
            del counts
        torch.save(final_subreddits, subreddits_file)
        print(f"  inference: {record['users_per_second']:,.0f} users/s", flush=True)

    if args.reference_inference and not recorder.done("inference_in_memory"):
        with recorder.stage("inference_in_memory") as record:
            started = time.perf_counter()
            z, attention = infer(model, graph, data, "cpu")
            record["infer_seconds"] = time.perf_counter() - started
            record["users_per_second"] = data.num_users / record["infer_seconds"]
            started = time.perf_counter()
            top = top_k_attention(graph, attention, k=10)
            record["top_k_seconds"] = time.perf_counter() - started
            record["top_k_rows"] = int(len(top["user_index"]))
            memory["in-memory inference embeddings float32"] = nbytes(z["user"]) + nbytes(z["subreddit"])
            memory["in-memory inference attention float32 [E, heads]"] = nbytes(attention)
            record["max_abs_difference_from_streamed_subreddits"] = float((z["subreddit"] - final_subreddits).abs().max())
            del top, attention, z
        print(f"  inference in memory (reference): {record['users_per_second']:,.0f} users/s", flush=True)


def _evaluation_stage(recorder: Recorder, data, final_subreddits, memory: dict, lake_dir: Path, args):
    import numpy as np
    import pyarrow.compute as pc
    import torch
    import torch.nn.functional as F

    from zipp_assets import lake
    from zipp_assets.encoder.evaluate import KnownLinks, link_scores

    with recorder.stage("evaluation") as record:
        test = data.edges["test"]
        generator = torch.Generator().manual_seed(0)
        sample = test[torch.sort(torch.randperm(len(test), generator=generator)[: args.eval_edges]).values]
        started = time.perf_counter()
        known = KnownLinks(data)
        record["known_links_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        # only the sample's users, read back from the lake: all users' embeddings need not fit in memory
        wanted = torch.unique(sample[:, 0])
        rows = lake.open_table(lake_dir, "user_embeddings").to_dataset().to_table(
            columns=["user_index", "embedding"], filter=pc.field("user_index").isin(wanted.numpy()), use_threads=False)
        position = torch.full((data.num_users,), -1, dtype=torch.int64)
        position[torch.from_numpy(rows["user_index"].to_numpy().copy())] = torch.arange(rows.num_rows)
        users = F.normalize(torch.from_numpy(np.stack(rows["embedding"].to_numpy(zero_copy_only=False))), dim=-1)
        subreddits = F.normalize(final_subreddits, dim=-1)
        scores = link_scores(lambda idx: users[position[idx]] @ subreddits.T, data, sample, known)
        record["link_scores_seconds"] = time.perf_counter() - started
        record["edges"] = int(len(sample))
        record["edges_per_second"] = len(sample) / record["link_scores_seconds"]
        record["mean_auc_untrained_model"] = float(np.mean(scores.auc)) if len(scores.auc) else float("nan")
        memory["evaluation KnownLinks (indices + indptr)"] = nbytes(known.indices) + nbytes(known.indptr)


def worker_main(args) -> int:
    recorder = Recorder(Path(args.result), args.worker, resume=args.resume)
    lake_dir = Path(args.lake)
    size = parse_size(args.size) if args.worker != "compare" else None
    try:
        if args.worker == "compare":
            compare_worker(args.lake.split(","), args.size.split(","), recorder, args)
        elif args.worker == "generate":
            started = time.perf_counter()
            generate(lake_dir, size, recorder)
            recorder.result["info"]["seconds"] = time.perf_counter() - started
            recorder.result["info"]["peak_rss"] = peak_bytes()
        elif args.worker == "tables":
            tables_worker(lake_dir, recorder, args.memory_limit)
        elif args.worker == "evidence":
            evidence_worker(lake_dir, recorder)
        else:
            encoder_worker(lake_dir, recorder, args)
    except MemoryError:
        recorder.result["status"] = "MemoryError"
        recorder.flush()
        return 3
    except BaseException as error:  # noqa: BLE001 - recorded, then re-raised by the exit code
        recorder.result["status"] = f"error: {type(error).__name__}: {error}"
        recorder.result["traceback"] = traceback.format_exc()[-4000:]
        recorder.flush()
        raise
    recorder.result["status"] = "ok"
    # the high-water mark is reset at every stage: the process's peak is the largest stage peak
    recorder.result["process_peak_rss"] = max([peak_bytes(), *(s["peak_rss"] for s in recorder.result["stages"].values())])
    recorder.flush()
    return 0


# ---------------------------------------------------------------- orchestration


def run_worker(worker: str, size: Size, lake_dir: Path, work: Path, args, deadline: float) -> dict:
    result = work / f"{worker}.json"
    size_arg = size.name if worker == "compare" or size.name == "full" else str(size.edges)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--size", size_arg,
               "--lake", str(lake_dir), "--result", str(result), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--eval-edges", str(args.eval_edges), "--hidden", str(args.hidden), "--batch-size", str(args.batch_size),
               "--memory-limit", args.memory_limit]
    if args.max_edges is not None:
        command += ["--max-edges", str(args.max_edges)]
    command += ["--negative-pools", ",".join(str(p).lower() for p in args.negative_pools),
                "--rounds", str(args.rounds), "--batches-per-round", str(args.batches_per_round)]
    if args.reference_inference:
        command.append("--reference-inference")
    if args.resume:
        command.append("--resume")
    process = subprocess.Popen(command, start_new_session=True)
    try:
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        outcome = None if code == 0 else (
            f"killed by signal {-code}" + (" (SIGKILL: out of memory?)" if code == -signal.SIGKILL else "") if code < 0
            else f"exit code {code}")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        outcome = "timeout"
    report = json.loads(result.read_text()) if result.exists() else {"stages": {}, "info": {}, "status": "no result"}
    if outcome is not None:
        report["status"] = report["status"] if report.get("status") not in ("running", "ok") else outcome
        report["outcome"] = outcome
    return report


def run_size(size: Size, args) -> dict:
    if args.resume:  # one folder per size, kept: a run cut off carries on from what it wrote
        work = Path(args.work_dir) / f"zipp-scale-{size.name}"
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"zipp-scale-{size.name}-", dir=args.work_dir))
    lake_dir = work / "lake"
    record = {"size": asdict(size), "stages": {}, "info": {}, "status": "ok"}
    deadline = time.monotonic() + args.timeout_per_size
    print(f"\n== {size.name}: {size.edges:,} edges, {size.users:,} users, {size.subreddits:,} subreddits", flush=True)
    try:
        for worker in ("generate", "tables", "encoder", "evidence"):
            previous = work / f"{worker}.json"
            report = json.loads(previous.read_text()) if args.resume and previous.exists() else None
            if report is not None and report.get("status") == "ok":
                print(f"  {worker}: done before (resumed)", flush=True)
            else:
                if worker == "generate" and lake_dir.exists():  # generation cut off: its lake is partial
                    shutil.rmtree(lake_dir)
                report = run_worker(worker, size, lake_dir, work, args, deadline)
            record["stages"] |= report["stages"]
            record["info"][worker] = report["info"]
            if worker == "generate":
                print(f"  generated {report['info'].get('generated_pairs', 0):,} pairs in "
                      f"{report['info'].get('generated_rows', 0):,} monthly rows in {report['info'].get('seconds', 0):.0f}s",
                      flush=True)
            if report.get("status") != "ok":
                record["status"] = report.get("status", "failed")
                record["failed_stage"] = report.get("failed_stage") or worker
                record["traceback"] = report.get("traceback")
                break
            record["info"][worker]["process_peak_rss"] = report.get("process_peak_rss")
    finally:
        if not (args.keep or args.resume):
            shutil.rmtree(work, ignore_errors=True)
        elif args.resume and not args.keep and record["status"] == "ok":  # finished: its figures are all a rerun needs
            for name in ("lake", "model.pt", "final_subreddits.pt"):
                target = work / name
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    return record


def print_table(record: dict) -> None:
    size = record["size"]
    edges = record["info"].get("tables", {}).get("edges")
    print(f"\n{size['name']}: graph of {edges or 0:,} edges; status {record['status']}")
    print(f"  {'stage':11s} {'seconds':>9s} {'start GiB':>10s} {'peak RSS GiB':>13s} {'held GiB':>9s}  throughput")
    for name in STAGES:
        stage = record["stages"].get(name)
        if stage is None:
            print(f"  {name:11s} {'-':>9s}" + (f"  failed here: {record['status']}" if record.get("failed_stage") == name else ""))
            continue
        rate = ""
        if name == "training":
            rate = f"{stage['seed_edges_per_second']:,.0f} seed edges/s"
        elif name in ("inference", "inference_in_memory"):
            rate = f"{stage['users_per_second']:,.0f} users/s"
        elif name == "evaluation":
            rate = f"{stage['edges_per_second']:,.0f} held-out edges/s"
        elif name == "evidence":
            rate = f"{stage['users_per_second']:,.0f} users/s, {stage['mean_tokens']:,.0f} tokens a user"
        print(f"  {name:11s} {stage['seconds']:9.1f} {stage['rss_before'] / GIB:10.2f} {stage['peak_rss'] / GIB:13.2f} {stage['rss_after_trim'] / GIB:9.2f}  {rate}")


def summary(records: list[dict]) -> dict:
    done = [r for r in records if r["status"] == "ok"]
    out = {"largest_completed": done[-1]["size"]["name"] if done else None,
           "peak_rss_of_largest_completed": max((s["peak_rss"] for s in done[-1]["stages"].values()), default=0) if done else None}
    if len(done) >= 2:
        small, large = done[0], done[-1]
        out["training_rate_ratio_largest_vs_smallest"] = (
            large["stages"]["training"]["seed_edges_per_second"] / small["stages"]["training"]["seed_edges_per_second"])
    out["per_edge"] = {
        r["size"]["name"]: {
            name: {"microseconds_per_edge": 1e6 * r["stages"][name]["seconds"] / r["info"]["tables"]["edges"],
                   "peak_bytes_per_edge": r["stages"][name]["peak_rss"] / r["info"]["tables"]["edges"]}
            for name in STAGES if name in r["stages"]}
        for r in done if r["info"].get("tables", {}).get("edges")}
    return out


def compare_training(sizes: list[Size], args, report: dict) -> int:
    work = Path(tempfile.mkdtemp(prefix="zipp-scale-compare-", dir=args.work_dir))
    deadline = time.monotonic() + args.timeout_per_size * len(sizes)
    try:
        lakes = []
        for size in sizes:
            lake_dir = work / size.name / "lake"
            for worker in ("generate", "tables"):
                (work / size.name).mkdir(exist_ok=True)
                result = run_worker(worker, size, lake_dir, work / size.name, args, deadline)
                if result.get("status") != "ok":
                    print(f"{size.name}: {worker} failed ({result.get('status')})")
                    return 1
            lakes.append(str(lake_dir))
        print(f"\ntraining, interleaved: {args.rounds} rounds of {args.batches_per_round} batches after {args.warmup} warm-up batches")
        names = [s.name for s in sizes]
        result = run_worker("compare", Size(",".join(names), 0, 0, 0), Path(",".join(lakes)), work, args, deadline)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    comparison = result["info"].get("comparison", {})
    report["training_comparison"] = comparison
    if comparison:
        for name, row in comparison.items():
            print(f"  {name:16s} best {row['best']:8,.0f} seed edges/s; median of per-round ratios to {names[0]}: "
                  f"{row['median_ratio_to_first']:.2f} (CPU time: {row.get('median_cpu_ratio_first_to_this', float('nan')):.2f}; "
                  f"to {names[0]} with the first pool: {row['median_ratio_to_first_size_first_pool']:.2f}); "
                  f"{row['block_edges_per_batch']:,.0f} sampled block edges and "
                  f"{row['negative_subreddits_per_batch']:,.0f} negative subreddits a batch")
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"written: {args.out}")
    return 0 if result.get("status") == "ok" else 1


def _pools(text: str) -> list[int | None]:
    pools = [None if p.strip().lower() == "none" else int(p) for p in text.split(",")]
    if any(p is not None and p < 1 for p in pools):
        raise argparse.ArgumentTypeError("a negative pool is 'none' or at least 1")
    return pools


def _git_state() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "zipp_assets"], cwd=ROOT, capture_output=True, text=True).stdout
        return commit + (" with uncommitted changes under zipp_assets/" if dirty.strip() else "")
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M,10M,100M,full")
    parser.add_argument("--steps", type=int, default=50, help="training batches in all, warm-up included")
    parser.add_argument("--warmup", type=int, default=5, help="first batches not timed")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--eval-edges", type=int, default=20_000)
    parser.add_argument("--max-edges", type=int, default=None,
                        help="inference: incoming edges a GATv2 group holds at most (default: the pipeline's)")
    parser.add_argument("--reference-inference", action="store_true",
                        help="also run the in-memory inference the pipeline's path replaced (a stage of its own)")
    parser.add_argument("--memory-limit", default="2GB", help="DuckDB's, for the graph tables (GraphConfig's default)")
    parser.add_argument("--timeout-per-size", type=float, default=12 * 3600, help="seconds, all stages of one size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scale.json")
    parser.add_argument("--work-dir", default=None, help="where the temporary lakes go (default: the system's temp)")
    parser.add_argument("--keep", action="store_true", help="keep each size's lake")
    parser.add_argument("--resume", action="store_true",
                        help="with --work-dir: keep each size's folder there and, run again, carry on stage by stage "
                             "from what an earlier run (cut off at any moment) wrote")
    parser.add_argument("--compare-training", action="store_true",
                        help="instead of the stages: training seed edges/s of every size in one process, interleaved")
    parser.add_argument("--negative-pools", type=_pools, default=[None],
                        help="training: popularity draws a batch shares for its negatives (TrainConfig.negative_pool), "
                             "'none' for each edge its own (the default); with --compare-training a list, e.g. none,512, "
                             "each a run of its own at every size")
    parser.add_argument("--rounds", type=int, default=8, help="with --compare-training")
    parser.add_argument("--batches-per-round", type=int, default=4, help="with --compare-training")
    parser.add_argument("--worker", choices=("generate", "tables", "encoder", "evidence", "compare"), help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    if args.worker:
        return worker_main(args)
    if args.resume and not args.work_dir:
        parser.error("--resume needs --work-dir (where each size's folder is kept)")
    sizes = sorted((parse_size(s) for s in args.sizes.split(",")), key=lambda s: s.edges)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
                          "platform": platform.platform(), "torch_threads": torch.get_num_threads()},
              "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "size", "lake", "result", "out")},
              "code": _git_state(),
              "sizes": []}
    if args.compare_training:
        return compare_training(sizes, args, report)
    for size in sizes:
        record = run_size(size, args)
        report["sizes"].append(record)
        report["summary"] = summary(report["sizes"])
        args.out.write_text(json.dumps(report, indent=1, default=str))
        print_table(record)
        if record["status"] != "ok":
            print(f"\n{size.name} did not complete ({record['status']}, in {record.get('failed_stage')}); no bigger size is tried")
            break
    s = report["summary"]
    print(f"\nlargest size completed: {s['largest_completed']}")
    if "training_rate_ratio_largest_vs_smallest" in s:
        print(f"training seed edges/s, largest / smallest completed size: {s['training_rate_ratio_largest_vs_smallest']:.2f}")
    print(f"written: {args.out}")
    return 0 if all(r["status"] == "ok" for r in report["sizes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
