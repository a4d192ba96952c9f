"""An edge-aware GATv2 layer for the user-subreddit heterograph, and the 2-layer persona encoder.

DGL's GATv2Conv has no edge features, so the layer is written here with DGL's message functions
and `edge_softmax`: for an edge u -> v with features x_uv, head k scores
    e_uv = a_k . LeakyReLU(W_src h_u + W_dst h_v) + b_k . x_uv
normalises them over v's incoming edges, and sums alpha_uv * W_src h_u. The edge features enter as
a learned per-head bias of the score (how much this user's comments, posts, score and recency in
that subreddit should count) rather than inside the nonlinearity: putting them inside costs a
[edges x hidden] projection per layer (35% slower training on CPU, bench/README.md) for no gain
measured on the synthetic world. Users are inductive: their
input is a projection of activity features, never a learned per-user vector; subreddits, a fixed
vocabulary, have learned embeddings.
"""

from __future__ import annotations

import math

import dgl.function as fn
import torch
import torch.nn.functional as F
from dgl.nn import SAGEConv
from dgl.nn.functional import edge_softmax
from torch import nn

from zipp_assets.encoder.data import FORWARD, REVERSE


class EdgeGATv2Conv(nn.Module):
    def __init__(self, in_src: int, in_dst: int, head_dim: int, heads: int, edge_dim: int,
                 use_edge_features: bool = True, negative_slope: float = 0.2, attention_dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.fc_src = nn.Linear(in_src, heads * head_dim, bias=False)
        self.fc_dst = nn.Linear(in_dst, heads * head_dim, bias=False)
        self.edge_bias = nn.Linear(edge_dim, heads, bias=False) if use_edge_features else None
        self.attn = nn.Parameter(torch.empty(1, heads, head_dim))
        self.residual = nn.Linear(in_dst, heads * head_dim, bias=True)
        self.negative_slope = negative_slope
        self.attention_dropout = nn.Dropout(attention_dropout)
        nn.init.xavier_normal_(self.attn, gain=nn.init.calculate_gain("relu"))

    def forward(self, graph, h_src: torch.Tensor, h_dst: torch.Tensor, edge_features: torch.Tensor):
        """Returns (new destination features [N_dst, heads*head_dim], attention [E, heads])."""
        with graph.local_scope():
            source = self.fc_src(h_src).view(-1, self.heads, self.head_dim)
            graph.srcdata["el"] = source
            graph.dstdata["er"] = self.fc_dst(h_dst).view(-1, self.heads, self.head_dim)
            graph.apply_edges(fn.u_add_v("el", "er", "e"))
            e = graph.edata.pop("e")
            score = (F.leaky_relu(e, self.negative_slope) * self.attn).sum(dim=-1)
            if self.edge_bias is not None:
                score = score + self.edge_bias(edge_features)
            attention = edge_softmax(graph, score)
            graph.edata["a"] = self.attention_dropout(attention).unsqueeze(-1)
            graph.update_all(fn.u_mul_e("el", "a", "m"), fn.sum("m", "ft"))
            out = graph.dstdata["ft"].flatten(1) + self.residual(h_dst)
            return out, attention


class HeteroLayer(nn.Module):
    """One round of messages: users -> subreddits and subreddits -> users."""

    def __init__(self, dim: int, heads: int, edge_dim: int, conv: str = "gatv2", use_edge_features: bool = True,
                 attention_dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} must be divisible by heads {heads}")
        self.conv = conv
        if conv == "gatv2":
            self.to_subreddit = EdgeGATv2Conv(dim, dim, dim // heads, heads, edge_dim, use_edge_features, attention_dropout=attention_dropout)
            self.to_user = EdgeGATv2Conv(dim, dim, dim // heads, heads, edge_dim, use_edge_features, attention_dropout=attention_dropout)
        elif conv == "sage":
            self.to_subreddit = SAGEConv((dim, dim), dim, "mean")
            self.to_user = SAGEConv((dim, dim), dim, "mean")
        else:
            raise ValueError(f"unknown conv {conv!r}; expected gatv2 or sage")

    def forward(self, block, h: dict[str, torch.Tensor]):
        h_dst = {nt: h[nt][: block.num_dst_nodes(nt)] for nt in ("user", "subreddit")}
        forward, reverse = block[FORWARD], block[REVERSE]
        if self.conv == "gatv2":
            subreddits, _ = self.to_subreddit(forward, h["user"], h_dst["subreddit"], forward.edata["feat"])
            users, attention = self.to_user(reverse, h["subreddit"], h_dst["user"], reverse.edata["feat"])
        else:
            subreddits = self.to_subreddit(forward, (h["user"], h_dst["subreddit"]))
            users = self.to_user(reverse, (h["subreddit"], h_dst["user"]))
            attention = None
        return {"user": users, "subreddit": subreddits}, attention


class PersonaEncoder(nn.Module):
    def __init__(self, user_feature_dim: int, num_subreddits: int, edge_dim: int, visual_dim: int = 0,
                 hidden: int = 64, heads: int = 4, conv: str = "gatv2", use_edge_features: bool = True,
                 layers: int = 2, attention_dropout: float = 0.0):
        super().__init__()
        # Every constructor argument: a checkpoint's config.json rebuilds the model from it alone.
        self.config = {"user_feature_dim": user_feature_dim, "num_subreddits": num_subreddits, "edge_dim": edge_dim,
                       "visual_dim": visual_dim, "hidden": hidden, "heads": heads, "conv": conv,
                       "use_edge_features": use_edge_features, "layers": layers,
                       "attention_dropout": attention_dropout}
        self.hidden = hidden
        self.user_in = nn.Sequential(nn.Linear(user_feature_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden))
        self.subreddit_in = nn.Embedding(num_subreddits, hidden)
        nn.init.normal_(self.subreddit_in.weight, std=0.1)
        self.layers = nn.ModuleList(
            HeteroLayer(hidden, heads, edge_dim, conv, use_edge_features, attention_dropout) for _ in range(layers)
        )
        self.image_projection = (
            nn.Sequential(nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, visual_dim)) if visual_dim else None
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # ImageAlign's learnable temperature

    def input_features(self, user_features: torch.Tensor, user_ids: torch.Tensor, subreddit_ids: torch.Tensor):
        return {"user": self.user_in(user_features[user_ids]), "subreddit": self.subreddit_in(subreddit_ids)}

    def forward(self, blocks, h: dict[str, torch.Tensor]):
        """Representations of the last block's destination nodes, and the last layer's attention."""
        attention = None
        for depth, (layer, block) in enumerate(zip(self.layers, blocks)):
            h, attention = layer(block, h)
            if depth < len(self.layers) - 1:
                h = {nt: F.elu(v) for nt, v in h.items()}
        return h, attention

    def project_image(self, user_repr: torch.Tensor) -> torch.Tensor:
        if self.image_projection is None:
            raise RuntimeError("this encoder was built without an ImageAlign head (visual_dim=0)")
        return F.normalize(self.image_projection(user_repr), dim=-1)
