"""Encoder benchmark: the project's training step against a plain DGL reference loop, same run.

    .venv/bin/python bench/encoder.py [--users 100000 --subreddits 2000 --edges-per-user 11]

One generated community-structured user-subreddit graph (>= 1M edges); every side uses the same
hidden size (64), heads (4), fan-outs (15, 10), batch size and number of negatives (8).
(a) project: the project's training step (zipp_assets.encoder.train: its edge data loader with
    popularity negatives and `optimization_step` over TrainingObjective, the function train()
    runs per batch: edge-aware GATv2 encoder, InfoNCE link loss + ImageAlign);
(b) plain loop: the loop of DGL's documented link-prediction-with-neighbour-sampling example
    (NeighborSampler + as_edge_prediction_sampler, reverse edges excluded), written out by hand
    around the same encoder and loss: the ratio a/b is the pipeline's overhead (target >= 0.9);
(c) stock reference: the same documented loop with DGL's own model, HeteroGraphConv over
    dgl.nn.GATv2Conv (no edge features), dot-product scores and binary cross-entropy, uniform
    negatives: the ratio a/c adds what the model and objective themselves cost.
It prints seed edges per second, the ratios, then inference users per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dgl  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from zipp_assets.encoder.data import FORWARD, REVERSE, GraphData  # noqa: E402
from zipp_assets.encoder.train import (  # noqa: E402
    REVERSE_ETYPES,
    PopularityNegativeSampler,
    TrainConfig,
    TrainingObjective,
    build_model,
    edge_dataloader,
    infer,
    optimization_step,
)


def synthetic_graph(users: int, subreddits: int, edges_per_user: int, communities: int = 50, seed: int = 0) -> GraphData:
    rng = np.random.default_rng(seed)
    community_of_sub = rng.integers(communities, size=subreddits)
    subs_by_community = [np.flatnonzero(community_of_sub == c) for c in range(communities)]
    user_community = rng.integers(communities, size=users)
    degree = np.clip(rng.poisson(edges_per_user, size=users), 2, None)
    pairs = []
    for u in range(users):
        own = subs_by_community[user_community[u]]
        k = degree[u]
        inside = rng.choice(own, size=min(len(own), int(k * 0.8)), replace=False) if len(own) else np.array([], int)
        outside = rng.integers(subreddits, size=k - len(inside))
        for s in np.unique(np.concatenate([inside, outside])):
            pairs.append((u, s))
    pairs = torch.tensor(pairs, dtype=torch.int64)
    split = torch.from_numpy(rng.random(len(pairs)))
    train_mask = split >= 0.05
    features = torch.randn(len(pairs), 5)
    visual_dim = 32
    centers = F.normalize(torch.randn(communities, visual_dim), dim=-1)
    profiles = F.normalize(centers[torch.from_numpy(user_community)] + 0.3 * torch.randn(users, visual_dim), dim=-1)
    return GraphData(
        num_users=users, num_subreddits=subreddits, user_features=torch.randn(users, 5),
        subreddit_degree=torch.bincount(pairs[train_mask][:, 1], minlength=subreddits).float(),
        edges={"train": pairs[train_mask], "val": pairs[~train_mask][:2000], "test": pairs[~train_mask][2000:4000]},
        edge_features={"train": features[train_mask], "val": features[~train_mask][:2000], "test": features[~train_mask][2000:4000]},
        profiles=profiles, has_profile=torch.rand(users) < 0.6, heldout_images={},
    )


class ReferenceModel(torch.nn.Module):
    """DGL's documented stochastic link-prediction model, with GATv2Conv per relation."""

    def __init__(self, num_users: int, num_subreddits: int, user_dim: int, hidden: int, heads: int):
        super().__init__()
        self.user_in = torch.nn.Linear(user_dim, hidden)
        self.subreddit_in = torch.nn.Embedding(num_subreddits, hidden)
        self.layers = torch.nn.ModuleList(
            dgl.nn.HeteroGraphConv({
                FORWARD[1]: dgl.nn.GATv2Conv(hidden, hidden // heads, heads, allow_zero_in_degree=True),
                REVERSE[1]: dgl.nn.GATv2Conv(hidden, hidden // heads, heads, allow_zero_in_degree=True),
            }, aggregate="sum")
            for _ in range(2)
        )

    def forward(self, blocks, user_features, input_nodes):
        h = {"user": self.user_in(user_features[input_nodes["user"]]), "subreddit": self.subreddit_in(input_nodes["subreddit"])}
        for i, layer in enumerate(self.layers):
            h = {k: v.flatten(1) for k, v in layer(blocks[i], h).items()}
            if i == 0:
                h = {k: F.elu(v) for k, v in h.items()}
        return h


def time_loop(loader, step, batches: int, warmup: int = 3) -> float:
    """Seed edges per second over `batches` batches after `warmup`."""
    seen, started, count = 0, None, 0
    for batch in loader:
        if count == warmup:
            started, seen = time.perf_counter(), 0
        step(*batch)
        seen += batch[1].num_edges(FORWARD)
        count += 1
        if count >= warmup + batches:
            break
    return seen / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--subreddits", type=int, default=2_000)
    parser.add_argument("--edges-per-user", type=int, default=11)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = synthetic_graph(args.users, args.subreddits, args.edges_per_user)
    total_edges = sum(len(v) for v in data.edges.values())
    print(f"graph: {args.users:,} users, {args.subreddits:,} subreddits, {total_edges:,} edges "
          f"({time.perf_counter() - t0:.1f}s to generate); device {args.device}", flush=True)
    config = TrainConfig(hidden=64, heads=4, fanouts=(15, 10), batch_size=args.batch_size, negatives=8, device=args.device)
    graph = data.message_graph()
    seeds = torch.arange(graph.num_edges(FORWARD))
    device_graph = graph.to(args.device)
    device_seeds = seeds.to(args.device)

    model = build_model(data, config).to(args.device)
    objective = TrainingObjective(model, data, config).to(args.device)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=config.learning_rate)

    def project_step(*batch):  # the training loop's own step function, as train() calls it
        optimization_step(objective, optimizer, batch)

    reference = ReferenceModel(data.num_users, data.num_subreddits, data.user_features.shape[1], 64, 4).to(args.device)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=config.learning_rate)
    user_features = data.user_features.to(args.device)

    def reference_step(input_nodes, pos_graph, neg_graph, blocks):
        h = reference(blocks, user_features, input_nodes)
        with pos_graph.local_scope(), neg_graph.local_scope():
            pos_graph.ndata["h"] = h
            neg_graph.ndata["h"] = h
            pos_graph.apply_edges(dgl.function.u_dot_v("h", "h", "score"), etype=FORWARD)
            neg_graph.apply_edges(dgl.function.u_dot_v("h", "h", "score"), etype=FORWARD)
            pos, neg = pos_graph.edges[FORWARD].data["score"], neg_graph.edges[FORWARD].data["score"]
        scores = torch.cat([pos, neg]).squeeze(-1)
        labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(scores.device)
        loss = F.binary_cross_entropy_with_logits(scores, labels)
        reference_optimizer.zero_grad()
        loss.backward()
        reference_optimizer.step()

    def documented_loader(negative_sampler):
        return dgl.dataloading.DataLoader(
            device_graph, {FORWARD: device_seeds},
            dgl.dataloading.as_edge_prediction_sampler(
                dgl.dataloading.NeighborSampler(list(config.fanouts)), exclude="reverse_types",
                reverse_etypes=REVERSE_ETYPES, negative_sampler=negative_sampler),
            batch_size=config.batch_size, shuffle=True, device=args.device,
        )

    plain_model = build_model(data, config).to(args.device)
    plain_objective = TrainingObjective(plain_model, data, config).to(args.device)
    plain_optimizer = torch.optim.AdamW(plain_objective.parameters(), lr=config.learning_rate)

    def plain_step(input_nodes, pos_graph, neg_graph, blocks):  # written out as in DGL's example
        loss, _, _ = plain_objective(input_nodes, pos_graph, neg_graph, blocks)
        plain_optimizer.zero_grad()
        loss.backward()
        plain_optimizer.step()

    popularity = PopularityNegativeSampler(config.negatives, data.subreddit_degree, config.popularity_power)
    runs = {
        "project": (edge_dataloader(device_graph, device_seeds, data, config), project_step),
        "plain loop, same model": (documented_loader(popularity), plain_step),
        "stock DGL GATv2 reference": (documented_loader(dgl.dataloading.negative_sampler.Uniform(config.negatives)), reference_step),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(2):  # interleaved, so machine noise hits every side alike
        for name, (loader, step) in runs.items():
            rates[name].append(time_loop(loader, step, args.batches))
    best = {name: max(values) for name, values in rates.items()}
    for name, rate in best.items():
        print(f"training  {name:28s} {rate:10,.0f} seed edges/s")
    print(f"ratio project / plain loop (pipeline overhead, target >= 0.9): {best['project'] / best['plain loop, same model']:.2f}x")
    print(f"ratio project / stock DGL GATv2 reference: {best['project'] / best['stock DGL GATv2 reference']:.2f}x")
    started = time.perf_counter()
    infer(model, graph, data, args.device)
    seconds = time.perf_counter() - started
    print(f"inference {data.num_users / seconds:12,.0f} users/s ({data.num_users:,} users, all layers, {seconds:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
