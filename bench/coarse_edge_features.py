"""Does publishing edge features coarse (docs/privacy.md) cost the encoder accuracy?

    .venv/bin/python bench/coarse_edge_features.py [--users 1000 --epochs 12 --work /tmp/coarse_bench]

One generated world, one graph build, one split. The same encoder (GAT, no ImageAlign: the edge
features are what changes) is trained with the same config and seed three times: on the exact
features the graph published before (counts, score, float years: privacy/exact_reference.py), on
the coarse ones it publishes now (power-of-two bins, whole months), and without edge features. Each
is scored on the same held-out test links; "coarse minus exact" is a paired bootstrap over users.
Prints a markdown table and writes JSON beside the world.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from zipp_assets import lake  # noqa: E402
from zipp_assets.encoder.ablations import EvaluationContext, score_links  # noqa: E402
from zipp_assets.encoder.data import FeatureNormalization, load_graph_data  # noqa: E402
from zipp_assets.encoder.evaluate import embedding_scorer  # noqa: E402
from zipp_assets.encoder.train import TrainConfig, infer, train  # noqa: E402
from zipp_assets.graph.tables import build_graph_tables  # noqa: E402
from zipp_assets.privacy.exact_reference import exact_graph_edges  # noqa: E402
from zipp_assets.reddit.derived import build_image_posts, build_user_subreddit_edges  # noqa: E402
from zipp_assets.reddit.ingest import ingest_month  # noqa: E402
from zipp_assets.simworld.world import WorldConfig, generate_world  # noqa: E402
from zipp_assets.stats import paired_difference  # noqa: E402

KEY = b"coarse-edge-features-bench"
METRICS = ("posting_accuracy", "recall_at_10", "mrr")


def build_world(work: Path, users: int, months: tuple[str, ...], seed: int) -> Path:
    lake_dir = work / "lake"
    if lake.table_exists(lake_dir, "graph_edges"):
        return lake_dir
    generate_world(WorldConfig(users=users, months=months, seed=seed, write_images=False, prompt_history_share=0.0),
                   work / "raw", work / "truth")
    for month in months:
        for kind in ("comments", "submissions"):
            ingest_month(lake_dir, work / "raw" / "reddit", kind, month)
        build_image_posts(lake_dir, month)
        build_user_subreddit_edges(lake_dir, month)
    build_graph_tables(lake_dir, KEY)
    return lake_dir


def with_exact_features(data, lake_dir: Path):
    """The same graph data with the old exact edge and user features (same pairs, same order)."""
    users = lake.read_table(lake_dir, "users")
    subreddits = lake.read_table(lake_dir, "subreddits")
    exact = exact_graph_edges(lake_dir, KEY, users, subreddits)
    index = {(u, s): i for i, (u, s) in enumerate(zip(exact["user_index"].to_pylist(), exact["subreddit_index"].to_pylist()))}
    columns = {c: exact[c].to_numpy().astype(np.float64) for c in exact.column_names}
    edge_matrix = np.stack([np.log1p(columns["comment_count"]), np.log1p(columns["submission_count"]),
                            np.sign(columns["score_sum"]) * np.log1p(np.abs(columns["score_sum"])),
                            columns["recency_years"], columns["span_years"]], axis=1)
    rows = {split: np.array([index[(u, s)] for u, s in pairs.tolist()], dtype=np.int64) for split, pairs in data.edges.items()}
    train_rows = rows["train"]
    users_of = columns["user_index"].astype(np.int64)[train_rows]

    def per_user(column: str) -> np.ndarray:
        return np.bincount(users_of, weights=columns[column][train_rows], minlength=data.num_users)

    months = np.zeros(data.num_users)
    np.maximum.at(months, users_of, columns["active_months"][train_rows])
    score = per_user("score_sum")
    user_matrix = np.stack([np.log1p(per_user("comment_count")), np.log1p(per_user("submission_count")),
                            np.log1p(np.bincount(users_of, minlength=data.num_users)), months,
                            np.sign(score) * np.log1p(np.abs(score))], axis=1)
    norm = FeatureNormalization.fit(user_matrix, edge_matrix[train_rows])
    edge_features = {split: torch.from_numpy(FeatureNormalization.apply(edge_matrix[r], norm.edge_mean, norm.edge_std))
                     for split, r in rows.items()}
    return dataclasses.replace(
        data, edge_features=edge_features, normalization=norm,
        user_features=torch.from_numpy(FeatureNormalization.apply(user_matrix, norm.user_mean, norm.user_std)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--months", default="2019-01,2019-02,2019-03")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/coarse_edge_features"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lake_dir = build_world(args.work, args.users, tuple(args.months.split(",")), args.seed)
    coarse = load_graph_data(lake_dir, None)
    variants = {"exact (before)": (with_exact_features(coarse, lake_dir), True), "coarse (now)": (coarse, True),
                "no edge features": (coarse, False)}
    config = TrainConfig(hidden=32, heads=2, fanouts=(10, 5), batch_size=256, epochs=args.epochs, min_epochs=args.epochs // 2,
                         use_image_align=False, seed=args.seed)
    results = {}
    for name, (data, use_edges) in variants.items():
        started = time.perf_counter()
        model = train(data, dataclasses.replace(config, use_edge_features=use_edges)).model
        ctx = EvaluationContext.build(data, {}, None, args.seed)
        z, _ = infer(model, ctx.graph, data, "cpu")
        row, per_user = score_links(ctx, embedding_scorer(z["user"], z["subreddit"]), ctx.test)
        results[name] = (row, per_user)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    exact_per_user = results["exact (before)"][1]
    table = []
    for name, (row, per_user) in results.items():
        out = {"features": name, "test links": row["edges"], "users": row["users"]}
        for metric in METRICS:
            out[metric] = f"{row[metric]:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"
            if name != "exact (before)":
                diff = paired_difference(per_user[metric], exact_per_user[metric], seed=args.seed)
                out[f"{metric}: this minus exact"] = f"{diff.estimate:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
        table.append(out)
    header = list(table[-1])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for out in table:
        print("| " + " | ".join(str(out.get(h, "-")) for h in header) + " |")
    (args.work / "coarse_edge_features.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                                     "table": table}, indent=1))


if __name__ == "__main__":
    main()
