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
import torch

from zipp_assets import lake
from zipp_assets.graph.tables import EDGE_FEATURES
from zipp_assets.graph.visual import PROFILES, encoder_slug

FORWARD, REVERSE = ("user", "posts_in", "subreddit"), ("subreddit", "has_member", "user")
USER_FEATURES = ["log_comments", "log_submissions", "log_subreddits", "active_months", "signed_log_score"]


@dataclass
class GraphData:
    num_users: int
    num_subreddits: int
    user_features: torch.Tensor  # float32 [U, F]: activity, never an identity
    subreddit_degree: torch.Tensor  # training-edge count per subreddit
    edges: dict[str, torch.Tensor]  # split -> int64 [E, 2] (user, subreddit)
    edge_features: dict[str, torch.Tensor]  # split -> float32 [E, F]
    profiles: torch.Tensor  # float32 [U, D] visual profiles (zero rows where none)
    has_profile: torch.Tensor  # bool [U]
    heldout_images: dict[int, list[str]]
    subreddit_names: list[str] = dataclasses.field(default_factory=list)  # in index order

    @property
    def edge_feature_dim(self) -> int:
        return self.edge_features["train"].shape[1]

    def message_graph(self, exclude_users: torch.Tensor | None = None) -> dgl.DGLHeteroGraph:
        """Training edges in both directions, optionally without some users' edges (inductive tests)."""
        pairs, features = self.edges["train"], self.edge_features["train"]
        if exclude_users is not None and len(exclude_users):
            keep = ~torch.isin(pairs[:, 0], exclude_users)
            pairs, features = pairs[keep], features[keep]
        return build_heterograph(pairs, features, self.num_users, self.num_subreddits)


def build_heterograph(pairs: torch.Tensor, features: torch.Tensor, num_users: int, num_subreddits: int) -> dgl.DGLHeteroGraph:
    users, subreddits = pairs[:, 0], pairs[:, 1]
    graph = dgl.heterograph(
        {FORWARD: (users, subreddits), REVERSE: (subreddits, users)},
        num_nodes_dict={"user": num_users, "subreddit": num_subreddits},
    )
    graph.edges[FORWARD].data["feat"] = features
    graph.edges[REVERSE].data["feat"] = features
    return graph


def _standardize(matrix: np.ndarray) -> np.ndarray:
    mean, std = matrix.mean(axis=0), matrix.std(axis=0)
    return ((matrix - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def load_graph_data(lake_dir: Path, image_encoder_name: str | None) -> GraphData:
    users = lake.read_table(lake_dir, "users").to_pydict()
    num_users = len(users["user_index"])
    subreddit_names = lake.read_table(lake_dir, "subreddits", columns=["subreddit"])["subreddit"].to_pylist()
    num_subreddits = len(subreddit_names)
    edges_table = lake.read_table(lake_dir, "graph_edges")
    split = np.asarray(edges_table["split"].to_pylist())
    pairs = np.stack([edges_table["user_index"].to_numpy(), edges_table["subreddit_index"].to_numpy()], axis=1)
    features = _standardize(np.stack([edges_table[c].to_numpy() for c in EDGE_FEATURES], axis=1).astype(np.float32))
    edges = {s: torch.from_numpy(pairs[split == s].astype(np.int64)) for s in ("train", "val", "test")}
    edge_features = {s: torch.from_numpy(features[split == s]) for s in ("train", "val", "test")}
    train_degree = np.bincount(pairs[split == "train"][:, 0], minlength=num_users)
    score = np.asarray(users["score_sum"], dtype=np.float64)
    user_matrix = np.stack(
        [
            np.log1p(np.asarray(users["comment_count"], dtype=np.float64)),
            np.log1p(np.asarray(users["submission_count"], dtype=np.float64)),
            np.log1p(train_degree),
            np.asarray(users["active_months"], dtype=np.float64),
            np.sign(score) * np.log1p(np.abs(score)),
        ],
        axis=1,
    )
    subreddit_degree = np.bincount(pairs[split == "train"][:, 1], minlength=num_subreddits)
    profiles = torch.zeros((num_users, 1))
    has_profile = torch.zeros(num_users, dtype=torch.bool)
    heldout: dict[int, list[str]] = {}
    if image_encoder_name is not None:
        folder = lake.partition_dir(lake_dir, PROFILES, {"encoder": encoder_slug(image_encoder_name)})
        if folder.is_dir():
            table = lake.read_table(lake_dir, PROFILES, [{"encoder": encoder_slug(image_encoder_name)}])
            index = torch.tensor(table["user_index"].to_numpy())
            matrix = np.stack(table["profile"].to_numpy(zero_copy_only=False)).astype(np.float32)
            profiles = torch.zeros((num_users, matrix.shape[1]))
            profiles[index] = torch.from_numpy(matrix)
            has_profile[index] = True
            heldout = {int(u): keys for u, keys in zip(index.tolist(), table["heldout_url_keys"].to_pylist()) if keys}
    return GraphData(
        num_users=num_users,
        num_subreddits=num_subreddits,
        user_features=torch.from_numpy(_standardize(user_matrix)),
        subreddit_degree=torch.from_numpy(subreddit_degree.astype(np.float32)),
        edges=edges,
        edge_features=edge_features,
        profiles=profiles,
        has_profile=has_profile,
        heldout_images=heldout,
        subreddit_names=subreddit_names,
    )
