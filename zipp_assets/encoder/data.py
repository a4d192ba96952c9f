"""The lake's graph tables as tensors and a DGL heterograph.

Nodes: users and subreddits. Relations: ('user', 'posts_in', 'subreddit') and its reverse
('subreddit', 'has_member', 'user'), both carrying the edge features. Only training-split edges
carry messages, so held-out links never leak into message passing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import dgl
import numpy as np
import pyarrow.compute as pc
import torch

from zipp_assets import lake
from zipp_assets.graph.tables import EDGE_FEATURES, GRAPH_TABLES, bin_floor
from zipp_assets.graph.visual import PROFILES, encoder_slug

FORWARD, REVERSE = ("user", "posts_in", "subreddit"), ("subreddit", "has_member", "user")
USER_FEATURES = ["log_comments", "log_submissions", "log_subreddits", "active_months", "signed_log_score"]


@dataclass
class GraphData:
    num_users: int
    num_subreddits: int
    user_features: torch.Tensor  # float32 [U, F]: activity, never an identity
    subreddit_degree: torch.Tensor  # training-edge count per subreddit
    edges: dict[str, torch.Tensor]  # split -> int64 [E, 2] (user, subreddit), column-major where loaded
    edge_features: dict[str, torch.Tensor]  # split -> float32 [E, F]
    profiles: torch.Tensor  # float32 [U, D] visual profiles (zero rows where none)
    has_profile: torch.Tensor  # bool [U]
    heldout_images: dict[int, list[str]]
    subreddit_names: list[str] = dataclasses.field(default_factory=list)  # in index order
    normalization: FeatureNormalization | None = None
    # What was read: each table's Delta version and content version (a checkpoint's data version),
    # and the graph's build id (users, subreddits, graph_edges and the profiles share it).
    table_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    content_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    build_id: int | None = None

    @property
    def edge_feature_dim(self) -> int:
        return self.edge_features["train"].shape[1]

    def training_memberships(self) -> torch.Tensor:
        """Sorted keys user * S + subreddit of the training links: membership tests by binary search,
        without a dense users x subreddits matrix."""
        pairs = self.edges["train"]
        return torch.sort(pairs[:, 0] * self.num_subreddits + pairs[:, 1]).values

    def message_graph(self, exclude_users: torch.Tensor | None = None) -> dgl.DGLHeteroGraph:
        """Training edges in both directions, optionally without some users' edges (inductive tests)."""
        pairs, features = self.edges["train"], self.edge_features["train"]
        if exclude_users is not None and len(exclude_users):
            keep = ~torch.isin(pairs[:, 0], exclude_users)
            pairs, features = pairs[keep], features[keep]
        return build_heterograph(pairs, features, self.num_users, self.num_subreddits)


def build_heterograph(pairs: torch.Tensor, features: torch.Tensor, num_users: int, num_subreddits: int) -> dgl.DGLHeteroGraph:
    """Two sparse formats only: COO, which the edge-prediction sampler reads seed edges' ends from,
    and CSC, which neighbour sampling and edge-chunked inference read incoming edges from; a CSR
    copy would add 16 bytes an edge per relation. The ids stay int64: with int32 ids DGL 2.1's CPU
    sampling and training corrupted the heap (a segfault or abort within an epoch on the tests'
    graph), which would have halved the graph's memory."""
    users, subreddits = pairs[:, 0], pairs[:, 1]
    graph = dgl.heterograph(
        {FORWARD: (users, subreddits), REVERSE: (subreddits, users)},
        num_nodes_dict={"user": num_users, "subreddit": num_subreddits},
    ).formats(["coo", "csc"])
    graph.edges[FORWARD].data["feat"] = features
    graph.edges[REVERSE].data["feat"] = features
    return graph


@dataclass
class FeatureNormalization:
    """Means and standard deviations the encoder's inputs were standardised with. Saved with a
    checkpoint, so users embedded later go through the same transform as at training time."""

    user_mean: list[float]
    user_std: list[float]
    edge_mean: list[float]
    edge_std: list[float]

    @staticmethod
    def fit(user_matrix: np.ndarray, edge_matrix: np.ndarray) -> FeatureNormalization:
        def stats(matrix: np.ndarray) -> tuple[list[float], list[float]]:
            mean = matrix.mean(axis=0) if len(matrix) else np.zeros(matrix.shape[1])
            std = matrix.std(axis=0) if len(matrix) else np.ones(matrix.shape[1])
            return mean.tolist(), np.where(std > 0, std, 1.0).tolist()

        return FeatureNormalization(*stats(user_matrix), *stats(edge_matrix))

    @staticmethod
    def fit_rows(user_matrix: np.ndarray, edge_matrix: np.ndarray, edge_rows: np.ndarray) -> FeatureNormalization:
        """`fit(user_matrix, edge_matrix[edge_rows])` without the copy of every edge row: the edge
        statistics are taken a column at a time (float64 sums over float32 columns)."""
        users = FeatureNormalization.fit(user_matrix, np.zeros((0, edge_matrix.shape[1])))
        mean, std = [], []
        for j in range(edge_matrix.shape[1]):
            column = edge_matrix[edge_rows, j]
            mean.append(float(column.mean(dtype=np.float64)) if len(column) else 0.0)
            spread = float(column.std(dtype=np.float64)) if len(column) else 1.0
            std.append(spread if spread > 0 else 1.0)
        return FeatureNormalization(users.user_mean, users.user_std, mean, std)

    @staticmethod
    def apply_in_place(matrix: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
        """`apply` for a float32 matrix, column by column, without a float64 copy."""
        if matrix.shape[1] != len(mean):
            raise ValueError(f"{matrix.shape[1]} features but normalisation statistics for {len(mean)}")
        for j, (m, s) in enumerate(zip(mean, std)):
            matrix[:, j] -= np.float32(m)
            matrix[:, j] /= np.float32(s)
        return matrix

    @staticmethod
    def apply(matrix: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
        if matrix.shape[1] != len(mean):
            raise ValueError(f"{matrix.shape[1]} features but normalisation statistics for {len(mean)}")
        return ((matrix - np.asarray(mean)) / np.asarray(std)).astype(np.float32)


_USER_ACTIVITY_COLUMNS = ("comments_bin", "submissions_bin", "score_bin", "active_months")


def user_activity_features(users: np.ndarray, train_columns: dict[str, np.ndarray], num_users: int) -> np.ndarray:
    """[U, len(USER_FEATURES)] from training edges only (`users` and `train_columns` hold the training
    links' rows): a held-out link's comments, posts and score must not reach the model through its
    input features either. The lake holds each link's counts and score as power-of-two bins; a
    user's total sums each bin's smallest value."""

    def per_user(column: str) -> np.ndarray:
        return np.bincount(users, weights=bin_floor(train_columns[column]), minlength=num_users)

    score = per_user("score_bin")
    # Distinct active months over training links only are not in graph_edges; the busiest training
    # link's month count is the nearest lower bound it holds.
    months = np.zeros(num_users)
    np.maximum.at(months, users, train_columns["active_months"].astype(np.float64))
    return np.stack(
        [
            np.log1p(per_user("comments_bin")),
            np.log1p(per_user("submissions_bin")),
            np.log1p(np.bincount(users, minlength=num_users)),
            months,
            np.sign(score) * np.log1p(np.abs(score)),
        ],
        axis=1,
    )


def load_graph_data(lake_dir: Path, image_encoder_name: str | None,
                    normalization: FeatureNormalization | None = None) -> GraphData:
    """The graph tables as tensors, from one version of each, after checking that they (and the
    visual profiles) come from one graph build. `normalization` (from a checkpoint) standardises the
    inputs as at training time; without it, statistics are fitted on this graph's training edges."""
    tables = lake.open_tables(lake_dir, GRAPH_TABLES)
    num_users = tables["users"].read(columns=["user_index"]).num_rows
    subreddits = tables["subreddits"].read(columns=["subreddit_index", "subreddit"]).sort_by("subreddit_index")
    subreddit_names = subreddits["subreddit"].to_pylist()
    num_subreddits = len(subreddit_names)
    # One column at a time (at 200M edges the whole table is about 12 GB in Arrow), each split's rows
    # copied out of it at once; the edge features go straight into float32 per split.
    graph_edges = tables["graph_edges"]
    split = graph_edges.read(columns=["split"])["split"]
    masks = {s: pc.equal(split, s).to_numpy(zero_copy_only=False) for s in ("train", "val", "test")}
    del split
    train = masks["train"]

    def column(name: str) -> np.ndarray:
        return graph_edges.read(columns=[name])[name].to_numpy()

    user_index, subreddit_index = column("user_index"), column("subreddit_index")
    # [E, 2] views of [2, E] arrays: each column contiguous, so DGL builds the message graph's COO
    # of both relations on these very arrays instead of copying them (16 bytes an edge).
    edges = {s: torch.from_numpy(np.stack([user_index[m], subreddit_index[m]]).astype(np.int64, copy=False)).T
             for s, m in masks.items()}
    user_matrix = user_activity_features(user_index[train], {c: column(c)[train] for c in _USER_ACTIVITY_COLUMNS},
                                         num_users)
    del user_index
    features = {s: np.empty((int(m.sum()), len(EDGE_FEATURES)), np.float32) for s, m in masks.items()}
    for j, name in enumerate(EDGE_FEATURES):
        values = column(name)
        for s, m in masks.items():
            features[s][:, j] = values[m]
        del values
    if normalization is None:
        normalization = FeatureNormalization.fit_rows(user_matrix, features["train"], slice(None))
    for matrix in features.values():
        FeatureNormalization.apply_in_place(matrix, normalization.edge_mean, normalization.edge_std)
    edge_features = {s: torch.from_numpy(matrix) for s, matrix in features.items()}
    subreddit_degree = np.bincount(subreddit_index[train], minlength=num_subreddits)
    del subreddit_index
    profiles = torch.zeros((num_users, 1))
    has_profile = torch.zeros(num_users, dtype=torch.bool)
    heldout: dict[int, list[str]] = {}
    partition = {"encoder": encoder_slug(image_encoder_name)} if image_encoder_name is not None else None
    visual = lake.open_table(lake_dir, PROFILES) if partition is not None and lake.table_exists(lake_dir, PROFILES) else None
    if visual is not None and visual.has_partition(partition):  # else: no profiles (ImageAlign off)
        tables[PROFILES] = visual
        lake.check_built_from(tables[PROFILES], partition, tables["users"])
        table = tables[PROFILES].read([partition])
        index = torch.tensor(table["user_index"].to_numpy())
        matrix = np.stack(table["profile"].to_numpy(zero_copy_only=False)).astype(np.float32)
        profiles = torch.zeros((num_users, matrix.shape[1]))
        profiles[index] = torch.from_numpy(matrix)
        has_profile[index] = torch.from_numpy(table["n_train_images"].to_numpy() > 0)
        heldout = {int(u): keys for u, keys in zip(index.tolist(), table["heldout_url_keys"].to_pylist()) if keys}
    return GraphData(
        num_users=num_users,
        num_subreddits=num_subreddits,
        user_features=torch.from_numpy(FeatureNormalization.apply(user_matrix, normalization.user_mean, normalization.user_std)),
        subreddit_degree=torch.from_numpy(subreddit_degree.astype(np.float32)),
        edges=edges,
        edge_features=edge_features,
        profiles=profiles,
        has_profile=has_profile,
        heldout_images=heldout,
        subreddit_names=subreddit_names,
        normalization=normalization,
        table_versions={name: t.version for name, t in tables.items()},
        content_versions={name: t.content_version() for name, t in tables.items()},
        build_id=tables["users"].build_id(),
    )
