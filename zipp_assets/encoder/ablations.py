"""The evaluation table: our encoder, its ablations and baselines on the same held-out links."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from zipp_assets import lake
from zipp_assets.encoder.data import GraphData
from zipp_assets.encoder.evaluate import (
    attention_precision,
    community_nmi,
    embedding_scorer,
    link_metrics,
    popularity_scorer,
    ridge_projection,
    tfidf_scorer,
    visual_retrieval,
)
from zipp_assets.encoder.inference import top_k_subreddits
from zipp_assets.encoder.train import TrainConfig, infer, train
from zipp_assets.graph.pseudonyms import pseudonymize

OURS = "GAT + ImageAlign (ours)"
VARIANTS: dict[str, dict] = {
    OURS: {},
    "GAT without ImageAlign": {"use_image_align": False},
    "GAT without edge features": {"use_edge_features": False},
    "GraphSAGE + ImageAlign": {"conv": "sage"},
    "GraphSAGE": {"conv": "sage", "use_image_align": False},
}
PAPER_REFERENCE = {"GAT + ImageAlign (ours)": 0.73, "GAT without ImageAlign": 0.62}  # real Reddit, paper


@dataclass
class PlantedTruth:
    """Synthetic-world truth mapped onto graph indices (evaluation only)."""

    primary_community: dict[int, int] = field(default_factory=dict)
    community_subreddits: dict[int, set[int]] = field(default_factory=dict)  # user -> subreddits of its communities


def load_planted_truth(truth_dir: Path, lake_dir: Path, key: bytes) -> PlantedTruth | None:
    if not (Path(truth_dir) / "users.parquet").is_file():
        return None
    truth = pq.read_table(Path(truth_dir) / "users.parquet").to_pylist()
    communities = {c["community"]: c["subreddits"] for c in pq.read_table(Path(truth_dir) / "communities.parquet").to_pylist()}
    users = lake.read_table(lake_dir, "users", columns=["user_index", "user_id"])
    index_of = dict(zip(users["user_id"].to_pylist(), users["user_index"].to_pylist()))
    subreddit_index = {name: i for i, name in enumerate(lake.read_table(lake_dir, "subreddits")["subreddit"].to_pylist())}
    planted = PlantedTruth()
    # Older months key users by name, newer by author_fullname: either pseudonym may be in the graph.
    for keys in ([t["author_fullname"] for t in truth], [t["author"] for t in truth]):
        for record, pseudonym in zip(truth, pseudonymize(keys, key)):
            user = index_of.get(pseudonym)
            if user is None:
                continue
            planted.primary_community[user] = record["primary_community"]
            planted.community_subreddits[user] = {
                subreddit_index[s] for c in record["communities"] for s in communities[c] if s in subreddit_index
            }
    return planted


def _heldout_image_means(data: GraphData, embeddings: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    out = {}
    for user, keys in data.heldout_images.items():
        vectors = [embeddings[k] for k in keys if k in embeddings]
        if vectors:
            out[user] = np.mean(vectors, axis=0)
    return out


def evaluate_all(data: GraphData, base: TrainConfig, image_embeddings: dict[str, np.ndarray], truth: PlantedTruth | None,
                 inductive_fraction: float = 0.1, progress: Callable[[str], None] | None = None) -> list[dict]:
    say = progress or (lambda _m: None)
    test = data.edges["test"]
    heldout_means = _heldout_image_means(data, image_embeddings)
    train_subreddits: dict[int, list[int]] = {}
    for u, s in data.edges["train"].tolist():
        train_subreddits.setdefault(u, []).append(s)
    graph = data.message_graph()
    rows = []
    for name, change in VARIANTS.items():
        config = dataclasses.replace(base, **change)
        say(f"training {name} ...")
        result = train(data, config, progress=say)
        z, attention = infer(result.model, graph, data, config.device)
        z = {k: v.cpu() for k, v in z.items()}
        metrics = link_metrics(embedding_scorer(z["user"], z["subreddit"]), data, test, seed=base.seed)
        if result.model.image_projection is not None:
            with torch.no_grad():
                projected = result.model.project_image(z["user"].to(config.device)).cpu()
        else:
            projected = ridge_projection(z["user"], data) if bool(data.has_profile.any()) else None
        row = {"model": name, **dataclasses.asdict(metrics),
               **(visual_retrieval(projected, data, heldout_means) if projected is not None else {}),
               "train_seconds": round(result.seconds, 1), "best_epoch": result.best_epoch,
               "paper_posting_accuracy": PAPER_REFERENCE.get(name, float("nan"))}
        if truth is not None:
            row["community_nmi"] = community_nmi(z["user"], truth.primary_community, seed=base.seed)
            if attention is not None:
                top = {u: [s for s, _ in ranked] for u, ranked in top_k_subreddits(graph, attention.cpu(), 3).items()}
                row.update(attention_precision(top, truth.community_subreddits, train_subreddits, k=3))
        rows.append(row)
    for name, scorer in (("popularity", popularity_scorer(data)), ("TF-IDF over subreddits", tfidf_scorer(data))):
        rows.append({"model": name, **dataclasses.asdict(link_metrics(scorer, data, test, seed=base.seed))})
    # Inductive: users whose edges never took part in training get embeddings from their edges at inference.
    generator = torch.Generator().manual_seed(base.seed + 1)
    users_with_test = torch.unique(test[:, 0])
    held_users = users_with_test[torch.randperm(len(users_with_test), generator=generator)[: max(1, int(len(users_with_test) * inductive_fraction))]]
    say(f"training {OURS} without {len(held_users)} held-out users (inductive) ...")
    result = train(data, base, progress=say, exclude_users=held_users)
    z, _ = infer(result.model, graph, data, base.device)
    held_test = test[torch.isin(test[:, 0], held_users)]
    inductive = link_metrics(embedding_scorer(z["user"].cpu(), z["subreddit"].cpu()), data, held_test, seed=base.seed)
    rows.append({"model": f"{OURS}, unseen users (inductive)", **dataclasses.asdict(inductive),
                 "train_seconds": round(result.seconds, 1), "best_epoch": result.best_epoch})
    return rows
