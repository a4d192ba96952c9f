"""Memory and time of building the graph tables from many monthly edge files.

    .venv/bin/python bench/graph_tables.py [--users 2000000 --subreddits 40000 --edges 20000000 --months 4]

Writes synthetic `reddit_user_subreddit_edges` (and the `reddit_submissions` the NSFW filter reads)
into a temporary lake, runs zipp_assets.graph.tables.build_graph_tables, and prints its seconds and
the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipp_assets import lake  # noqa: E402
from zipp_assets.graph.tables import GraphConfig, build_graph_tables  # noqa: E402
from zipp_assets.reddit.schemas import EDGES_SCHEMA, QUARANTINE_SCHEMA, SUBMISSIONS_SCHEMA  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--subreddits", type=int, default=40_000)
    parser.add_argument("--edges", type=int, default=20_000_000, help="monthly edge rows in all")
    parser.add_argument("--months", type=int, default=4)
    parser.add_argument("--memory-limit", default="2GB")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="zipp-graph-bench-"))
    t0 = time.perf_counter()
    per_month = args.edges // args.months
    for m in range(args.months):
        month = f"2019-{m + 1:02d}"
        with lake.atomic_partition(root, "reddit_user_subreddit_edges", {"month": month}) as folder:
            with lake.RotatingParquetWriter(folder, EDGES_SCHEMA) as writer:
                for start in range(0, per_month, 2_000_000):
                    n = min(2_000_000, per_month - start)
                    users = rng.integers(0, args.users, n)
                    subs = rng.zipf(1.2, n) % args.subreddits
                    ts = pa.array(np.full(n, 1546300800_000000 + m * 2_600_000_000_000), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
                    writer.write(pa.table({
                        "user_key": pa.array([f"t2_{u:x}" for u in users]), "subreddit": pa.array([f"sub{s}" for s in subs]),
                        "comment_count": rng.integers(1, 20, n), "submission_count": rng.integers(0, 3, n),
                        "score_sum": rng.integers(-5, 100, n), "first_utc": ts, "last_utc": ts,
                    }))
        with lake.build(root) as together:  # an ingested month without submissions: rows and quarantine, one build
            lake.write_table(together.partition("reddit_submissions", {"month": month}), SUBMISSIONS_SCHEMA.empty_table())
            lake.write_table(together.partition("reddit_submissions_quarantine", {"month": month}),
                             QUARANTINE_SCHEMA.empty_table())
    print(f"wrote {args.edges:,} monthly edge rows in {time.perf_counter() - t0:.0f}s under {root}", flush=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    report = build_graph_tables(root, b"bench", GraphConfig(memory_limit=args.memory_limit))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"graph: {report.users:,} users, {report.subreddits:,} subreddits, {report.edges:,} edges in {seconds:.0f}s")
    print(f"peak resident memory: {peak / 2**20:.2f} GiB (before the build: {before / 2**20:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
