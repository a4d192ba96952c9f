"""Scoring encoders and baselines on the stored held-out links, plus planted-truth agreement.

Every model and baseline is scored on the same test edges from `graph_edges`, against the same
random non-member subreddits (seeded), so rows of the evaluation table compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zipp_assets.encoder.data import GraphData

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]  # user indices [n] -> scores [n, S]


@dataclass
class LinkMetrics:
    posting_accuracy: float
    recall_at_10: float
    mrr: float
    edges: int


def link_metrics(score: ScoreFunction, data: GraphData, pairs: torch.Tensor, seed: int = 0, chunk: int = 2048) -> LinkMetrics:
    """Posting accuracy (vs a random non-member), recall@10 and MRR among non-training subreddits."""
    if len(pairs) == 0:
        return LinkMetrics(float("nan"), float("nan"), float("nan"), 0)
    known = torch.zeros((data.num_users, data.num_subreddits), dtype=torch.bool)
    for split in ("train", "val", "test"):
        known[data.edges[split][:, 0], data.edges[split][:, 1]] = True
    generator = torch.Generator().manual_seed(seed)
    wins, ranks = [], []
    for start in range(0, len(pairs), chunk):
        batch = pairs[start : start + chunk]
        users, positives = batch[:, 0], batch[:, 1]
        scores = score(users).float()
        positive_scores = scores.gather(1, positives[:, None])
        # A random subreddit the user never interacted with, per edge.
        candidates = (~known[users]).float() + 1e-9
        negatives = torch.multinomial(candidates, 1, generator=generator)
        negative_scores = scores.gather(1, negatives)
        wins.append((positive_scores > negative_scores).float() + 0.5 * (positive_scores == negative_scores).float())
        # Rank among subreddits that are not already known links of the user (the positive itself stays).
        masked = scores.masked_fill(known[users], float("-inf"))
        masked.scatter_(1, positives[:, None], positive_scores)
        ranks.append(1 + (masked > positive_scores).sum(1))
    wins_t, ranks_t = torch.cat(wins).squeeze(1), torch.cat(ranks).float()
    return LinkMetrics(float(wins_t.mean()), float((ranks_t <= 10).float().mean()), float((1 / ranks_t).mean()), len(pairs))


def embedding_scorer(users: torch.Tensor, subreddits: torch.Tensor) -> ScoreFunction:
    u, s = F.normalize(users, dim=-1), F.normalize(subreddits, dim=-1)
    return lambda idx: u[idx] @ s.T


def popularity_scorer(data: GraphData) -> ScoreFunction:
    degree = data.subreddit_degree.float()
    return lambda idx: degree.expand(len(idx), -1)


def tfidf_scorer(data: GraphData) -> ScoreFunction:
    """Item-based TF-IDF: subreddits as TF-IDF vectors over users; a user scores a subreddit by its
    similarity to the subreddits the user is in."""
    train = data.edges["train"]
    matrix = torch.zeros((data.num_users, data.num_subreddits))
    matrix[train[:, 0], train[:, 1]] = 1.0
    idf = torch.log((1 + data.num_subreddits) / (1 + matrix.sum(1, keepdim=True))) + 1  # users active everywhere weigh less
    subreddit_vectors = F.normalize((matrix * idf).T, dim=-1)  # [S, U]
    similarity = subreddit_vectors @ subreddit_vectors.T  # [S, S]
    return lambda idx: matrix[idx] @ similarity


def visual_retrieval(projected_users: torch.Tensor, data: GraphData, heldout_embeddings: dict[int, np.ndarray],
                     ks: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Each user's projected embedding queries the mean of every user's held-out images; recall@k
    is how often its own held-out images rank in the top k."""
    users = sorted(heldout_embeddings)
    if len(users) < 2:
        return {f"visual_recall@{k}": float("nan") for k in ks}
    gallery = F.normalize(torch.from_numpy(np.stack([heldout_embeddings[u] for u in users])).float(), dim=-1)
    queries = F.normalize(projected_users[torch.tensor(users)], dim=-1)
    scores = queries @ gallery.T
    own = scores.diagonal()[:, None]
    ranks = 1 + (scores > own).sum(1)
    return {f"visual_recall@{k}": float((ranks <= k).float().mean()) for k in ks} | {"visual_users": len(users)}


def ridge_projection(features: torch.Tensor, data: GraphData, alpha: float = 1.0) -> torch.Tensor:
    """For models without an ImageAlign head: a ridge map from user embeddings to visual profiles,
    fitted on users' training profiles, so they too can be scored on visual retrieval."""
    users = torch.nonzero(data.has_profile).squeeze(1)
    x, y = features[users].double(), data.profiles[users].double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    weights = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=torch.double), xc.T @ yc)
    return ((features.double() - x_mean) @ weights + y_mean).float()


def community_nmi(user_embeddings: torch.Tensor, labels: dict[int, int], seed: int = 0) -> float:
    """NMI between k-means clusters of user embeddings and planted primary communities."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    users = sorted(labels)
    if len(users) < 10:
        return float("nan")
    x = F.normalize(user_embeddings[torch.tensor(users)], dim=-1).numpy()
    y = np.array([labels[u] for u in users])
    clusters = KMeans(n_clusters=len(set(y)), n_init=4, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(y, clusters))


def attention_precision(top_subreddits: dict[int, list[int]], community_subreddits: dict[int, set[int]],
                        train_subreddits: dict[int, list[int]], k: int = 3) -> dict[str, float]:
    """How often the k most-attended subreddits of a user lie in its planted communities, against the
    share of all its training subreddits that do (what attention would score by chance)."""
    hits, chance = [], []
    for user, ranked in top_subreddits.items():
        planted = community_subreddits.get(user)
        mine = train_subreddits.get(user, [])
        if not planted or len(mine) <= k:
            continue
        hits.append(np.mean([s in planted for s in ranked[:k]]))
        chance.append(np.mean([s in planted for s in mine]))
    return {f"attention_precision@{k}": float(np.mean(hits)) if hits else float("nan"),
            f"chance_precision@{k}": float(np.mean(chance)) if chance else float("nan"), "attention_users": len(hits)}
