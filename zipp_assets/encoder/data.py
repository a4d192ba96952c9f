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
    edge_features: dict[str, torch.Tensor]  # "train" -> float32 [E, F] (held-out links' are never loaded)
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
        keys = (pairs[:, 0] * self.num_subreddits).numpy()
        keys += pairs[:, 1].numpy()
        keys.sort()  # in place: torch.sort would add values and int64 indices beside the keys
        return torch.from_numpy(keys)

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
    # CSC now, while nothing else is held: the sampler would otherwise build it at its first batch,
    # beside the training state (DGL sorts a copy of the edges to build it).
    graph.create_formats_()
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


class _UserActivity:
    """Per-user sums behind `USER_FEATURES`, accumulated batch by batch over the training links' rows."""

    def __init__(self, num_users: int):
        self.num_users = num_users
        self.sums = {c: np.zeros(num_users) for c in ("comments_bin", "submissions_bin", "score_bin")}
        self.links = np.zeros(num_users)
        self.months = np.zeros(num_users)

    def add(self, users: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        if not len(users):
            return
        # counts over the batch's own span of user ids: a batch of a user-sorted table is a narrow one
        low, high = int(users.min()), int(users.max()) + 1
        local = users - low
        for name, total in self.sums.items():
            total[low:high] += np.bincount(local, weights=bin_floor(columns[name]), minlength=high - low)
        self.links[low:high] += np.bincount(local, minlength=high - low)
        # Distinct active months over training links only are not in graph_edges; the busiest training
        # link's month count is the nearest lower bound it holds.
        np.maximum.at(self.months, users, columns["active_months"].astype(np.float64))

    def features(self) -> np.ndarray:
        score = self.sums["score_bin"]
        return np.stack([np.log1p(self.sums["comments_bin"]), np.log1p(self.sums["submissions_bin"]),
                         np.log1p(self.links), self.months, np.sign(score) * np.log1p(np.abs(score))], axis=1)


def user_activity_features(users: np.ndarray, train_columns: dict[str, np.ndarray], num_users: int) -> np.ndarray:
    """[U, len(USER_FEATURES)] from training edges only (`users` and `train_columns` hold the training
    links' rows): a held-out link's comments, posts and score must not reach the model through its
    input features either. The lake holds each link's counts and score as power-of-two bins; a
    user's total sums each bin's smallest value."""
    activity = _UserActivity(num_users)
    activity.add(users, train_columns)
    return activity.features()


_SPLITS = ("train", "val", "test")
_EDGE_COLUMNS = ["user_index", "subreddit_index", *dict.fromkeys([*EDGE_FEATURES, *_USER_ACTIVITY_COLUMNS])]


def _batches(table: lake.TableSnapshot, columns: list[str], batch_rows: int):
    """The table's rows in order, `batch_rows` at a time, with no read-ahead: Arrow's defaults read up
    to 4 files and 16 batches ahead, which at 100M edges held 6 GB more than the arrays being filled."""
    return table.to_dataset().to_batches(columns=columns, batch_size=batch_rows, use_threads=False,
                                         batch_readahead=0, fragment_readahead=0)


def _split_codes(graph_edges: lake.TableSnapshot, batch_rows: int) -> np.ndarray:
    """Each edge's split as its position in `_SPLITS` (uint8), in the table's row order."""
    codes = []
    for batch in _batches(graph_edges, ["split"], batch_rows):
        split = batch.column(0)
        code = np.full(len(split), 255, np.uint8)
        for i, name in enumerate(_SPLITS):
            code[pc.fill_null(pc.equal(split, name), False).to_numpy(zero_copy_only=False)] = i  # null: none
        codes.append(code)
    codes = np.concatenate(codes) if codes else np.zeros(0, np.uint8)
    if (codes == 255).any():
        raise ValueError("graph_edges has rows whose split is not train, val or test")
    return codes


def load_graph_data(lake_dir: Path, image_encoder_name: str | None,
                    normalization: FeatureNormalization | None = None, batch_rows: int = 1 << 22) -> GraphData:
    """The graph tables as tensors, from one version of each, after checking that they (and the
    visual profiles) come from one graph build. `normalization` (from a checkpoint) standardises the
    inputs as at training time; without it, statistics are fitted on this graph's training edges.

    `graph_edges` is read in record batches of `batch_rows` straight into the arrays the model uses
    (at 200M edges the table is about 12 GB in Arrow; the arrays are 16 bytes an edge for the links
    and 20 a training edge for its features), so the peak is those arrays and one batch. Held-out links'
    features are not loaded: nothing may read them (they describe the links the model must predict)."""
    tables = lake.open_tables(lake_dir, GRAPH_TABLES)
    num_users = tables["users"].read(columns=["user_index"]).num_rows
    subreddits = tables["subreddits"].read(columns=["subreddit_index", "subreddit"]).sort_by("subreddit_index")
    subreddit_names = subreddits["subreddit"].to_pylist()
    num_subreddits = len(subreddit_names)
    graph_edges = tables["graph_edges"]
    codes = _split_codes(graph_edges, batch_rows)
    counts = np.bincount(codes, minlength=len(_SPLITS))
    # [2, E] per split, handed on as [E, 2] views: each column contiguous, so DGL builds the message
    # graph's COO of both relations on these very arrays instead of copying them (16 bytes an edge).
    pairs = {s: np.empty((2, int(n)), np.int64) for s, n in zip(_SPLITS, counts)}
    train_features = np.empty((int(counts[0]), len(EDGE_FEATURES)), np.float32)
    activity = _UserActivity(num_users)
    filled = dict.fromkeys(_SPLITS, 0)
    row = 0
    for batch in _batches(graph_edges, _EDGE_COLUMNS, batch_rows):
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in _EDGE_COLUMNS}
        code = codes[row:row + batch.num_rows]
        row += batch.num_rows
        for i, split in enumerate(_SPLITS):
            keep = code == i
            start, stop = filled[split], filled[split] + int(keep.sum())
            pairs[split][0, start:stop] = columns["user_index"][keep]
            pairs[split][1, start:stop] = columns["subreddit_index"][keep]
            filled[split] = stop
            if split == "train":
                for j, name in enumerate(EDGE_FEATURES):
                    train_features[start:stop, j] = columns[name][keep]
                activity.add(columns["user_index"][keep], {c: columns[c][keep] for c in _USER_ACTIVITY_COLUMNS})
        del batch, columns
    if row != len(codes):
        raise ValueError(f"graph_edges gave {row} rows on the second read and {len(codes)} on the first")
    user_matrix = activity.features()
    del activity
    if normalization is None:
        normalization = FeatureNormalization.fit_rows(user_matrix, train_features, slice(None))
    FeatureNormalization.apply_in_place(train_features, normalization.edge_mean, normalization.edge_std)
    subreddit_degree = np.bincount(pairs["train"][1], minlength=num_subreddits)
    edges = {s: torch.from_numpy(p).T for s, p in pairs.items()}
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
        edge_features={"train": torch.from_numpy(train_features)},
        profiles=profiles,
        has_profile=has_profile,
        heldout_images=heldout,
        subreddit_names=subreddit_names,
        normalization=normalization,
        table_versions={name: t.version for name, t in tables.items()},
        content_versions={name: t.content_version() for name, t in tables.items()},
        build_id=tables["users"].build_id(),
    )
