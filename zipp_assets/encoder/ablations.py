"""The evaluation table: our encoder, its ablations and baselines on the same held-out links, each
metric with a bootstrap interval over users and each row with a paired difference against ours."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from zipp_assets import lake
from zipp_assets.encoder.data import GraphData
from zipp_assets.encoder.evaluate import (
    KnownLinks,
    attention_precision,
    community_nmi,
    embedding_scorer,
    link_scores,
    popularity_scorer,
    ridge_projection,
    tfidf_scorer,
    visual_retrieval,
)
from zipp_assets.encoder.inference import top_k_subreddits
from zipp_assets.encoder.model import PersonaEncoder
from zipp_assets.encoder.train import TrainConfig, infer, train
from zipp_assets.graph.tables import GRAPH_TABLES
from zipp_assets.stats import Interval, bootstrap_mean, paired_difference
from zipp_assets.truth import planted_users

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
    planted = planted_users(truth_dir, key)
    if planted is None:
        return None
    communities = {c["community"]: c["subreddits"] for c in pq.read_table(Path(truth_dir) / "communities.parquet").to_pylist()}
    graph = lake.open_tables(lake_dir, GRAPH_TABLES)
    users = graph["users"].read(columns=["user_index", "user_id"])
    subreddits = graph["subreddits"].read(columns=["subreddit_index", "subreddit"])
    subreddit_index = dict(zip(subreddits["subreddit"].to_pylist(), subreddits["subreddit_index"].to_pylist()))
    truth = PlantedTruth()
    for user_id, user in zip(users["user_id"].to_pylist(), users["user_index"].to_pylist()):
        record = planted.get(user_id)
        if record is None:
            continue
        truth.primary_community[user] = record["primary_community"]
        truth.community_subreddits[user] = {
            subreddit_index[s] for c in record["communities"] for s in communities[c] if s in subreddit_index
        }
    return truth


def _heldout_image_means(data: GraphData, embeddings: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    out = {}
    for user, keys in data.heldout_images.items():
        vectors = [embeddings[k] for k in keys if k in embeddings]
        if vectors:
            out[user] = np.mean(vectors, axis=0)
    return out


@dataclass
class EvaluationContext:
    """What every row is scored on, built once."""

    data: GraphData
    graph: object
    known: KnownLinks
    test: torch.Tensor
    heldout_means: dict[int, np.ndarray]
    truth: PlantedTruth | None
    train_subreddits: dict[int, list[int]]
    seed: int

    @staticmethod
    def build(data: GraphData, image_embeddings: dict[str, np.ndarray], truth: PlantedTruth | None, seed: int):
        train_subreddits: dict[int, list[int]] = {}
        if truth is not None:  # attention precision only: the users with planted truth
            for u, s in data.edges["train"].tolist():
                train_subreddits.setdefault(u, []).append(s)
        return EvaluationContext(data, data.message_graph(), KnownLinks(data), data.edges["test"],
                                 _heldout_image_means(data, image_embeddings), truth, train_subreddits, seed)


def _intervals_row(intervals: dict[str, Interval]) -> dict:
    row = {}
    for name, interval in intervals.items():
        row.update(interval.as_dict(name))
    return row


def score_links(ctx: EvaluationContext, scorer, pairs: torch.Tensor) -> tuple[dict, dict[str, dict[int, float]]]:
    scores = link_scores(scorer, ctx.data, pairs, ctx.known)
    per_user = {"posting_accuracy": scores.per_user("auc"), "recall_at_10": scores.per_user("recall_at_10"),
                "mrr": scores.per_user("reciprocal_rank")}
    row = {"edges": scores.edges, "users": len(per_user["posting_accuracy"]), **_intervals_row(scores.intervals(ctx.seed))}
    return row, per_user


def score_encoder(ctx: EvaluationContext, model: PersonaEncoder, device: str) -> tuple[dict, dict[str, dict[int, float]]]:
    """Links, visual retrieval and planted-truth agreement of one trained encoder."""
    z, attention = infer(model, ctx.graph, ctx.data, device)
    z = {k: v.cpu() for k, v in z.items()}
    row, per_user = score_links(ctx, embedding_scorer(z["user"], z["subreddit"]), ctx.test)
    if model.image_projection is not None:
        with torch.no_grad():
            projected = model.project_image(z["user"].to(device)).cpu()
    else:
        projected = ridge_projection(z["user"], ctx.data) if bool(ctx.data.has_profile.any()) else None
    if projected is not None:
        for name, hits in visual_retrieval(projected, ctx.heldout_means, seed=ctx.seed).items():
            per_user[name] = hits
            row.update(bootstrap_mean(np.array(list(hits.values())), seed=ctx.seed).as_dict(name))
        row["visual_users"] = len(per_user.get("visual_recall@1", {}))
    if ctx.truth is not None:
        row.update(community_nmi(z["user"], ctx.truth.primary_community, seed=ctx.seed).as_dict("community_nmi"))
        if attention is not None:
            top = {u: [s for s, _ in ranked] for u, ranked in top_k_subreddits(ctx.graph, attention.cpu(), 3).items()}
            hits, chance = attention_precision(top, ctx.truth.community_subreddits, ctx.train_subreddits, k=3)
            row.update(bootstrap_mean(np.array(list(hits.values())), seed=ctx.seed).as_dict("attention_precision@3"))
            row.update(bootstrap_mean(np.array(list(chance.values())), seed=ctx.seed).as_dict("chance_precision@3"))
            row.update(paired_difference(hits, chance, seed=ctx.seed).as_dict("attention_minus_chance@3"))
    return row, per_user


DIFFERENCE_METRICS = ("posting_accuracy", "recall_at_10", "mrr", "visual_recall@10")


def add_differences(row: dict, per_user: dict, ours: dict, seed: int) -> None:
    """Ours minus this row, paired over users, and what the interval says (ours ahead / tied / behind)."""
    for metric in DIFFERENCE_METRICS:
        if metric in per_user and metric in ours:
            diff = paired_difference(ours[metric], per_user[metric], seed=seed)
            row.update(diff.as_dict(f"ours_minus_this_{metric}"))
            row[f"ours_vs_this_{metric}"] = diff.verdict()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


class ResultCache:
    """Finished rows (and their per-user values) on disk, so a killed evaluation does not train a
    finished variant again; keyed by the evaluation's fingerprint (config and data version)."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None

    def path(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{_slug(name)}.json"

    def training_dir(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{_slug(name)}.training"

    def get(self, name: str):
        path = self.path(name)
        if path is None or not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return saved["row"], {m: {int(u): v for u, v in values.items()} for m, values in saved["per_user"].items()}

    def put(self, name: str, row: dict, per_user: dict) -> None:
        path = self.path(name)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"row": row, "per_user": per_user}))
        os.replace(tmp, path)


def evaluate_all(data: GraphData, base: TrainConfig, ours: PersonaEncoder, image_embeddings: dict[str, np.ndarray],
                 truth: PlantedTruth | None, inductive_fraction: float = 0.1,
                 progress: Callable[[str], None] | None = None, work_dir: Path | None = None) -> list[dict]:
    """The evaluation table. `ours` is the persona_encoder checkpoint's model (trained with `base`);
    every other variant is trained here with one change to `base`. With `work_dir`, finished rows
    and each variant's training progress are kept there, so a re-run after a kill resumes."""
    say = progress or (lambda _m: None)
    ctx = EvaluationContext.build(data, image_embeddings, truth, base.seed)
    cache = ResultCache(work_dir)
    results: dict[str, tuple[dict, dict]] = {}

    def cached(name: str, compute: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict]:
        hit = cache.get(name)
        if hit is not None:
            say(f"{name}: finished in an earlier run, reused")
            return hit
        row, per_user = compute()
        row = {"model": name, **row}
        cache.put(name, row, per_user)
        return row, per_user

    results[OURS] = cached(OURS, lambda: score_encoder(ctx, ours, base.device))
    results[OURS][0]["paper_posting_accuracy"] = PAPER_REFERENCE[OURS]
    for name, change in VARIANTS.items():
        if name == OURS:
            continue
        config = dataclasses.replace(base, **change)

        def run(config=config, name=name):
            say(f"training {name} ...")
            result = train(data, config, progress=say, resume_dir=cache.training_dir(name))
            row, per_user = score_encoder(ctx, result.model, config.device)
            return row | {"train_seconds": round(result.seconds, 1), "best_epoch": result.best_epoch}, per_user

        results[name] = cached(name, run)
        results[name][0]["paper_posting_accuracy"] = PAPER_REFERENCE.get(name, float("nan"))
    results["popularity"] = cached("popularity", lambda: score_links(ctx, popularity_scorer(data), ctx.test))
    results["TF-IDF over subreddits"] = cached("TF-IDF over subreddits",
                                               lambda: score_links(ctx, tfidf_scorer(data), ctx.test))
    # Inductive: users whose edges never took part in training get embeddings from their edges at
    # inference; TF-IDF is scored on the same users with their links left out of its similarity.
    generator = torch.Generator().manual_seed(base.seed + 1)
    users_with_test = torch.unique(ctx.test[:, 0])
    held_users = users_with_test[torch.randperm(len(users_with_test), generator=generator)[: max(1, int(len(users_with_test) * inductive_fraction))]]
    held_test = ctx.test[torch.isin(ctx.test[:, 0], held_users)]
    unseen = f"{OURS}, unseen users (inductive)"

    def run_inductive():
        say(f"training {OURS} without {len(held_users)} held-out users (inductive) ...")
        result = train(data, base, progress=say, exclude_users=held_users, resume_dir=cache.training_dir(unseen))
        z, _ = infer(result.model, ctx.graph, data, base.device)
        row, per_user = score_links(ctx, embedding_scorer(z["user"].cpu(), z["subreddit"].cpu()), held_test)
        return row | {"train_seconds": round(result.seconds, 1), "best_epoch": result.best_epoch}, per_user

    results[unseen] = cached(unseen, run_inductive)
    results["TF-IDF, unseen users"] = cached("TF-IDF, unseen users",
                                             lambda: score_links(ctx, tfidf_scorer(data, exclude_users=held_users), held_test))
    ours_per_user = results[OURS][1]
    rows = []
    for name, (row, per_user) in results.items():
        row = dict(row)
        if name != OURS:
            add_differences(row, per_user, ours_per_user, base.seed)
        rows.append(row)
    return rows
