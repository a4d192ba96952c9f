"""Embeddings and attention for every user, written to the lake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from zipp_assets import lake
from zipp_assets.encoder.data import REVERSE

EMBEDDINGS = "user_embeddings"
TOP_SUBREDDITS = "user_top_subreddits"


def attention_by_user(graph, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user, subreddit, weight) per message-passing edge; weights (mean over heads) sum to 1 per user."""
    subreddits, users = graph.edges(etype=REVERSE)
    return users, subreddits, attention.mean(dim=1)


def top_k_subreddits(graph, attention: torch.Tensor, k: int) -> dict[int, list[tuple[int, float]]]:
    users, subreddits, weights = attention_by_user(graph, attention)
    order = np.lexsort((-weights.numpy(), users.numpy()))  # by user, then by weight, highest first
    ranked: dict[int, list[tuple[int, float]]] = {}
    for u, s, w in zip(users.numpy()[order].tolist(), subreddits.numpy()[order].tolist(), weights.numpy()[order].tolist()):
        bucket = ranked.setdefault(u, [])
        if len(bucket) < k:
            bucket.append((s, w))
    return ranked


def write_user_outputs(lake_dir: Path, user_embeddings: torch.Tensor, projected: torch.Tensor | None,
                       top: dict[int, list[tuple[int, float]]]) -> dict[str, int]:
    users = lake.read_table(lake_dir, "users", columns=["user_index", "user_id"])
    subreddit_names = lake.read_table(lake_dir, "subreddits", columns=["subreddit"])["subreddit"].to_pylist()
    dim = user_embeddings.shape[1]
    columns = {
        "user_index": users["user_index"],
        "user_id": users["user_id"],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(user_embeddings.numpy().astype(np.float32).reshape(-1)), dim),
    }
    if projected is not None:
        columns["visual_embedding"] = pa.FixedSizeListArray.from_arrays(
            pa.array(projected.numpy().astype(np.float32).reshape(-1)), projected.shape[1]
        )
    with lake.atomic_partition(lake_dir, EMBEDDINGS) as folder:
        lake.write_table(folder, pa.table(columns))
    ids = users["user_id"].to_pylist()
    rows = {"user_index": [], "user_id": [], "rank": [], "subreddit_index": [], "subreddit": [], "weight": []}
    for user, ranked in sorted(top.items()):
        for rank, (subreddit, weight) in enumerate(ranked, start=1):
            rows["user_index"].append(user)
            rows["user_id"].append(ids[user])
            rows["rank"].append(rank)
            rows["subreddit_index"].append(subreddit)
            rows["subreddit"].append(subreddit_names[subreddit])
            rows["weight"].append(weight)
    schema = pa.schema([("user_index", pa.int64()), ("user_id", pa.string()), ("rank", pa.int32()),
                        ("subreddit_index", pa.int64()), ("subreddit", pa.string()), ("weight", pa.float32())])
    with lake.atomic_partition(lake_dir, TOP_SUBREDDITS) as folder:
        lake.write_table(folder, pa.table(rows, schema=schema), schema)
    return {"users": users.num_rows, "attention_rows": len(rows["user_index"])}
