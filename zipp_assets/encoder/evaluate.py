"""Scoring encoders and baselines on the stored held-out links, plus planted-truth agreement.

Every model and baseline is scored on the same test edges from `graph_edges`, each against every
subreddit its user has no link with, so rows of the evaluation table compare like with like; as
OGB's evaluators do, scores are computed blockwise and no users x subreddits matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from zipp_assets.encoder.data import GraphData
from zipp_assets.stats import NAN_INTERVAL, Interval, bootstrap_mean, bootstrap_statistic

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]  # user indices [n] -> scores [n, S]


class KnownLinks:
    """Every known (user, subreddit) link of all splits, as CSR rows per user: the candidates a
    held-out link is ranked against are the subreddits outside these rows (OGB's filtered setting)."""

    def __init__(self, data: GraphData):
        # Sorted keys user * S + subreddit, sorted in place, then only their subreddit part kept (int32):
        # at 200M links that is 1.6 GB at the peak instead of pairs, keys, an argsort and a gather.
        splits = [data.edges[split] for split in ("train", "val", "test")]
        keys = torch.cat([pairs[:, 0] * data.num_subreddits + pairs[:, 1] for pairs in splits]).numpy()
        keys.sort()
        self.indices = torch.from_numpy((keys % data.num_subreddits).astype(np.int32))
        del keys
        counts = sum(torch.bincount(pairs[:, 0], minlength=data.num_users) for pairs in splits)
        self.indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        self.num_subreddits = data.num_subreddits

    def mask(self, users: torch.Tensor) -> torch.Tensor:
        """bool [len(users), S]: True where the user has a link (any split)."""
        starts, counts = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        total = int(counts.sum())
        rows = torch.repeat_interleave(torch.arange(len(users)), counts)
        offsets = torch.arange(total) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        mask = torch.zeros((len(users), self.num_subreddits), dtype=torch.bool)
        mask[rows, self.indices[torch.repeat_interleave(starts, counts) + offsets].long()] = True
        return mask


@dataclass
class LinkScores:
    """Per held-out link, scored against every subreddit the user has no link with.

    auc: the share of those non-members scored below the link, ties counting half (the paper's
    posting accuracy, exactly, not against one random negative). recall_at_10 and reciprocal_rank:
    their expected values when tied candidates are ordered at random (a tie counts half in
    expectation). A model is summarised per user (mean over the user's links), then over users.
    """

    users: np.ndarray
    auc: np.ndarray
    recall_at_10: np.ndarray
    reciprocal_rank: np.ndarray

    METRICS = ("auc", "recall_at_10", "reciprocal_rank")

    @property
    def edges(self) -> int:
        return len(self.users)

    def per_user(self, metric: str) -> dict[int, float]:
        values = getattr(self, metric)
        if len(values) == 0:
            return {}
        users, inverse = np.unique(self.users, return_inverse=True)
        means = np.bincount(inverse, weights=values) / np.bincount(inverse)
        return dict(zip(users.tolist(), means.tolist()))

    def intervals(self, seed: int = 0) -> dict[str, Interval]:
        names = {"auc": "posting_accuracy", "recall_at_10": "recall_at_10", "reciprocal_rank": "mrr"}
        return {names[m]: bootstrap_mean(np.array(list(self.per_user(m).values())), seed=seed) for m in self.METRICS}


def link_scores(score: ScoreFunction, data: GraphData, pairs: torch.Tensor, known: KnownLinks | None = None,
                chunk: int = 1024) -> LinkScores:
    """Score held-out `pairs` [E, 2] blockwise: `chunk` links at a time against all S subreddits,
    so memory is chunk x S whatever the number of users (no users x subreddits matrix)."""
    known = known or KnownLinks(data)
    out: dict[str, list[torch.Tensor]] = {"auc": [], "recall_at_10": [], "reciprocal_rank": []}
    for start in range(0, len(pairs), chunk):
        batch = pairs[start : start + chunk]
        users, positives = batch[:, 0], batch[:, 1]
        scores = score(users).float()
        positive = scores.gather(1, positives[:, None])
        candidate = ~known.mask(users)  # the positive itself is a known link, so never its own rival
        greater = ((scores > positive) & candidate).sum(1).double()
        equal = ((scores == positive) & candidate).sum(1).double()
        negatives = candidate.sum(1).double().clamp(min=1)
        out["auc"].append((negatives - greater - 0.5 * equal) / negatives)
        out["recall_at_10"].append(((10 - greater) / (equal + 1)).clamp(0, 1))
        # E[1 / rank] with the positive placed uniformly among its ties: (H(g+e+1) - H(g)) / (e+1).
        out["reciprocal_rank"].append((torch.digamma(greater + equal + 2) - torch.digamma(greater + 1)) / (equal + 1))
    empty = np.zeros(0)
    return LinkScores(
        users=pairs[:, 0].numpy().copy(),
        **{k: torch.cat(v).numpy() if v else empty for k, v in out.items()},
    )


def embedding_scorer(users: torch.Tensor, subreddits: torch.Tensor) -> ScoreFunction:
    u, s = F.normalize(users, dim=-1), F.normalize(subreddits, dim=-1)
    return lambda idx: u[idx] @ s.T


def popularity_scorer(data: GraphData) -> ScoreFunction:
    degree = data.subreddit_degree.float()
    return lambda idx: degree.expand(len(idx), -1)


def tfidf_scorer(data: GraphData, exclude_users: torch.Tensor | None = None, neighbours: int = 256,
                 dense_up_to: int = 10_000) -> ScoreFunction:
    """Item-based TF-IDF: subreddits as TF-IDF vectors over users (users active everywhere weigh
    less); a user scores a subreddit by its similarity to the subreddits the user is in.

    Sparse throughout. The subreddit x subreddit similarity is kept dense up to `dense_up_to`
    subreddits, above that as each subreddit's `neighbours` most similar (item-kNN's usual pruning).
    With `exclude_users`, their links do not shape the similarity (the inductive comparison), but
    they are still scored from their own training links, as any new user would be.
    """
    train = data.edges["train"].numpy()
    ones = np.ones(len(train), dtype=np.float32)
    user_rows = sp.csr_matrix((ones, (train[:, 0], train[:, 1])), shape=(data.num_users, data.num_subreddits))
    fit = train if exclude_users is None else train[~np.isin(train[:, 0], exclude_users.numpy())]
    matrix = sp.csr_matrix((np.ones(len(fit), np.float32), (fit[:, 0], fit[:, 1])),
                           shape=(data.num_users, data.num_subreddits))
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    idf = (np.log((1 + data.num_subreddits) / (1 + degree)) + 1).astype(np.float32)
    vectors = sp.csr_matrix(matrix.multiply(idf[:, None]).T)  # [S, U]
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
    vectors = sp.diags(1 / np.where(norms > 0, norms, 1)).dot(vectors).tocsr()
    if data.num_subreddits <= dense_up_to:
        similarity = torch.from_numpy(np.asarray((vectors @ vectors.T).todense(), dtype=np.float32))
        return lambda idx: torch.from_numpy(np.asarray(user_rows[idx.numpy()].todense(), dtype=np.float32)) @ similarity
    rows, cols, values = [], [], []
    for start in range(0, data.num_subreddits, 1024):
        block = np.asarray((vectors[start : start + 1024] @ vectors.T).todense(), dtype=np.float32)
        keep = min(neighbours, block.shape[1])
        top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
        rows.append(np.repeat(np.arange(start, start + len(block)), keep))
        cols.append(top.ravel())
        values.append(np.take_along_axis(block, top, axis=1).ravel())
    pruned = sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(data.num_subreddits, data.num_subreddits))
    return lambda idx: torch.from_numpy(np.asarray((user_rows[idx.numpy()] @ pruned).todense(), dtype=np.float32))


def visual_retrieval(projected_users: torch.Tensor, heldout_embeddings: dict[int, np.ndarray],
                     ks: tuple[int, ...] = (1, 10), max_users: int = 20_000, seed: int = 0,
                     chunk: int = 2048) -> dict[str, dict[int, float]]:
    """Each user's projected embedding queries the mean of every user's held-out images; a hit at k
    is its own held-out images ranking in the top k. Per user, over at most `max_users` users (a
    seeded sample: the gallery is every sampled user, so cost grows with its square)."""
    users = np.array(sorted(heldout_embeddings))
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    if len(users) < 2:
        return {f"visual_recall@{k}": {} for k in ks}
    gallery = F.normalize(torch.from_numpy(np.stack([heldout_embeddings[u] for u in users])).float(), dim=-1)
    queries = F.normalize(projected_users[torch.from_numpy(users)].float(), dim=-1)
    ranks = []
    for start in range(0, len(users), chunk):
        scores = queries[start : start + chunk] @ gallery.T
        own = scores[torch.arange(len(scores)), torch.arange(start, start + len(scores))][:, None]
        ranks.append(1 + (scores > own).sum(1))
    rank = torch.cat(ranks).numpy()
    return {f"visual_recall@{k}": dict(zip(users.tolist(), (rank <= k).astype(float).tolist())) for k in ks}


def ridge_projection(features: torch.Tensor, data: GraphData, alpha: float = 1.0) -> torch.Tensor:
    """For models without an ImageAlign head: a ridge map from user embeddings to visual profiles,
    fitted on users' training profiles, so they too can be scored on visual retrieval."""
    users = torch.nonzero(data.has_profile).squeeze(1)
    x, y = features[users].double(), data.profiles[users].double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    weights = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=torch.double), xc.T @ yc)
    return ((features.double() - x_mean) @ weights + y_mean).float()


def community_nmi(user_embeddings: torch.Tensor, labels: dict[int, int], seed: int = 0) -> Interval:
    """NMI between k-means clusters of user embeddings and planted primary communities; the interval
    resamples users with the clustering held fixed."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    users = sorted(labels)
    if len(users) < 10:
        return NAN_INTERVAL
    x = F.normalize(user_embeddings[torch.tensor(users)], dim=-1).numpy()
    y = np.array([labels[u] for u in users])
    clusters = KMeans(n_clusters=len(set(y)), n_init=4, random_state=seed).fit_predict(x)
    low, high = bootstrap_statistic(len(users), lambda i: normalized_mutual_info_score(y[i], clusters[i]), seed=seed)
    return Interval(float(normalized_mutual_info_score(y, clusters)), low, high, len(users))


def attention_precision(top_subreddits: dict[int, list[int]], community_subreddits: dict[int, set[int]],
                        train_subreddits: dict[int, list[int]], k: int = 3) -> tuple[dict[int, float], dict[int, float]]:
    """Per user: the share of its k most-attended subreddits that lie in its planted communities,
    and the share of all its training subreddits that do (what attention would score by chance)."""
    hits, chance = {}, {}
    for user, ranked in top_subreddits.items():
        planted = community_subreddits.get(user)
        mine = train_subreddits.get(user, [])
        if not planted or len(mine) <= k:
            continue
        hits[user] = float(np.mean([s in planted for s in ranked[:k]]))
        chance[user] = float(np.mean([s in planted for s in mine]))
    return hits, chance


def _with_interval(row: dict, metric: str) -> str:
    value = row.get(metric)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"


def evaluation_display_rows(rows: list[dict]) -> list[dict]:
    """The evaluation table as people read it: each metric with its interval, each row's verdict against ours."""
    shown = []
    for r in rows:
        verdict = r.get("ours_vs_this_posting_accuracy")
        shown.append({
            "model": r["model"],
            "posting accuracy": _with_interval(r, "posting_accuracy"),
            "ours minus this": _with_interval(r, "ours_minus_this_posting_accuracy") + (f" ({verdict})" if verdict else ""),
            "recall@10": _with_interval(r, "recall_at_10"),
            "MRR": _with_interval(r, "mrr"),
            "visual R@10": _with_interval(r, "visual_recall@10"),
            "community NMI": _with_interval(r, "community_nmi"),
            "attention prec.@3 (chance)": _with_interval(r, "attention_precision@3")
            + (f" ({r['chance_precision@3']:.3f})" if r.get("chance_precision@3") is not None else ""),
        })
    return shown
