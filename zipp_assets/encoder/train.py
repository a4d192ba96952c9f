"""Sampled training of the persona encoder, layer-wise inference, and validation posting accuracy."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import dgl
import numpy as np
import torch
import torch.nn.functional as F
from dgl.dataloading import negative_sampler as dgl_negative

from zipp_assets.encoder.data import FORWARD, REVERSE, GraphData
from zipp_assets.encoder.losses import image_align, link_infonce
from zipp_assets.encoder.model import PersonaEncoder

log = logging.getLogger(__name__)
REVERSE_ETYPES = {FORWARD[1]: REVERSE[1], REVERSE[1]: FORWARD[1]}


@dataclass
class TrainConfig:
    hidden: int = 128
    heads: int = 4
    conv: str = "gatv2"  # gatv2 | sage
    use_edge_features: bool = True
    use_image_align: bool = True
    align_weight: float = 0.5  # lambda in L_link + lambda * L_align
    link_temperature: float = 0.05
    fanouts: tuple[int, ...] = (15, 10)
    batch_size: int = 512
    negatives: int = 8  # popularity-sampled negatives per edge, on top of in-batch ones
    popularity_power: float = 0.75
    epochs: int = 30
    patience: int = 4  # early stopping on validation posting accuracy...
    min_epochs: int = 10  # ...but never before this: link-only training can sit on a plateau at first
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    max_batches_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.conv not in ("gatv2", "sage"):
            raise ValueError(f"conv must be gatv2 or sage, got {self.conv!r}")
        if len(self.fanouts) != 2:
            raise ValueError("the encoder has 2 layers: give 2 fan-outs")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device!r} requested but CUDA is not available")


class PopularityNegativeSampler(dgl_negative._BaseNegativeSampler):
    """k negative subreddits per edge, drawn in proportion to training degree ** power."""

    def __init__(self, k: int, degree: torch.Tensor, power: float):
        self.k = k
        self.probability = degree.clamp(min=1.0) ** power

    def _generate(self, g, eids, canonical_etype):
        src, _ = g.find_edges(eids, etype=canonical_etype)
        src = src.repeat_interleave(self.k)
        dst = torch.multinomial(self.probability, len(src), replacement=True).to(src.device)
        return src, dst


@dataclass
class TrainResult:
    model: PersonaEncoder
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_posting_accuracy: float = 0.0
    seconds: float = 0.0
    seed_edges_per_second: float = 0.0


def build_model(data: GraphData, config: TrainConfig) -> PersonaEncoder:
    visual_dim = data.profiles.shape[1] if config.use_image_align and bool(data.has_profile.any()) else 0
    return PersonaEncoder(
        user_feature_dim=data.user_features.shape[1], num_subreddits=data.num_subreddits,
        edge_dim=data.edge_feature_dim, visual_dim=visual_dim, hidden=config.hidden, heads=config.heads,
        conv=config.conv, use_edge_features=config.use_edge_features,
    )


def edge_dataloader(graph, seed_eids: torch.Tensor, data: GraphData, config: TrainConfig, use_ddp: bool = False):
    sampler = dgl.dataloading.NeighborSampler(list(config.fanouts))
    edge_sampler = dgl.dataloading.as_edge_prediction_sampler(
        sampler,
        exclude="reverse_types",  # the target edge and its reverse never carry messages to themselves
        reverse_etypes=REVERSE_ETYPES,
        negative_sampler=PopularityNegativeSampler(config.negatives, data.subreddit_degree, config.popularity_power),
    )
    return dgl.dataloading.DataLoader(
        graph, {FORWARD: seed_eids}, edge_sampler, batch_size=config.batch_size, shuffle=True, drop_last=False,
        num_workers=config.num_workers, use_ddp=use_ddp, device=config.device,
    )


class TrainingObjective(torch.nn.Module):
    """L_link + lambda * L_align for one sampled batch. Everything the loss touches runs inside this
    forward, so DistributedDataParallel can wrap it and see every parameter's use."""

    def __init__(self, encoder: PersonaEncoder, data: GraphData, config: TrainConfig):
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.register_buffer("user_features", data.user_features, persistent=False)
        self.register_buffer("profiles", data.profiles, persistent=False)
        self.register_buffer("has_profile", data.has_profile, persistent=False)

    def forward(self, input_nodes, pos_graph, neg_graph, blocks):
        encoder, config = self.encoder, self.config
        h = encoder.input_features(self.user_features, input_nodes["user"], input_nodes["subreddit"])
        z, _ = encoder(blocks, h)
        users = F.normalize(z["user"], dim=-1)
        subreddits = F.normalize(z["subreddit"], dim=-1)
        pos_u, pos_s = pos_graph.edges(etype=FORWARD)
        _, neg_s = neg_graph.edges(etype=FORWARD)
        k = len(neg_s) // max(len(pos_s), 1)
        subreddit_ids = pos_graph.nodes["subreddit"].data[dgl.NID]
        link = link_infonce(
            users[pos_u], subreddits[pos_s], subreddits[neg_s].view(len(pos_s), k, -1),
            subreddit_ids[pos_s], subreddit_ids[neg_s].view(len(pos_s), k), config.link_temperature,
        )
        align = link * 0.0
        if encoder.image_projection is not None and config.use_image_align:
            batch_users = torch.unique(pos_u)
            global_ids = pos_graph.nodes["user"].data[dgl.NID][batch_users]
            with_profile = self.has_profile[global_ids]
            chosen = batch_users[with_profile]
            projected = encoder.project_image(z["user"][chosen])
            align = image_align(projected, self.profiles[global_ids[with_profile]], encoder.logit_scale)
        return link + config.align_weight * align, link, align


def optimization_step(step: torch.nn.Module, optimizer: torch.optim.Optimizer, batch) -> tuple[float, float, float]:
    """One update on one sampled batch (input nodes, positive graph, negative graph, blocks).

    Returns (loss, link loss, align loss). `step` is the TrainingObjective, or its DDP wrapper.
    """
    loss, link, align = step(*batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss), float(link), float(align)


@torch.no_grad()
def infer(model: PersonaEncoder, graph, data: GraphData, device: str = "cpu", batch_size: int = 4096):
    """Every node's representation, computed layer by layer over full neighbourhoods in chunks.

    Returns ({'user': [U, H], 'subreddit': [S, H]}, last-layer attention on the reverse edges
    (subreddit -> user) of `graph`, [E, heads], or None for SAGE).
    """
    model.eval()
    graph = graph.to(device)
    all_nodes = {nt: torch.arange(graph.num_nodes(nt), device=device) for nt in ("user", "subreddit")}
    h = model.input_features(data.user_features.to(device), all_nodes["user"], all_nodes["subreddit"])
    attention = None
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
    for depth, layer in enumerate(model.layers):
        last = depth == len(model.layers) - 1
        out = {nt: torch.zeros(graph.num_nodes(nt), model.hidden, device=device) for nt in all_nodes}
        if last and layer.conv == "gatv2":
            attention = torch.zeros(graph.num_edges(REVERSE), layer.to_user.heads, device=device)
        loader = dgl.dataloading.DataLoader(graph, all_nodes, sampler, batch_size=batch_size, shuffle=False, device=device)
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        for input_nodes, output_nodes, blocks in loader:
            block = blocks[0]
            result, block_attention = layer(block, {nt: h[nt][input_nodes.get(nt, empty)] for nt in all_nodes})
            for nt, ids in output_nodes.items():  # a batch may hold nodes of one type only
                out[nt][ids] = result[nt]
            if attention is not None and block_attention is not None:
                attention[block[REVERSE].edata[dgl.EID]] = block_attention
        h = out if last else {nt: F.elu(v) for nt, v in out.items()}
    return h, attention


def posting_accuracy(users: torch.Tensor, subreddits: torch.Tensor, pairs: torch.Tensor, member: dict[int, set[int]],
                     num_subreddits: int, seed: int = 0) -> float:
    """P(score of a held-out subreddit of the user > score of a random non-member subreddit), ties half."""
    if len(pairs) == 0:
        return float("nan")
    generator = np.random.default_rng(seed)
    u = F.normalize(users, dim=-1)
    s = F.normalize(subreddits, dim=-1)
    negatives = []
    for user in pairs[:, 0].tolist():
        while True:
            candidate = int(generator.integers(num_subreddits))
            if candidate not in member.get(user, ()):
                negatives.append(candidate)
                break
    negatives = torch.tensor(negatives)
    positive = (u[pairs[:, 0]] * s[pairs[:, 1]]).sum(-1)
    negative = (u[pairs[:, 0]] * s[negatives]).sum(-1)
    return float(((positive > negative).float() + 0.5 * (positive == negative).float()).mean())


def memberships(data: GraphData) -> dict[int, set[int]]:
    member: dict[int, set[int]] = {}
    for split in ("train", "val", "test"):
        for user, subreddit in data.edges[split].tolist():
            member.setdefault(user, set()).add(subreddit)
    return member


def train(data: GraphData, config: TrainConfig, progress: Callable[[str], None] | None = None,
          exclude_users: torch.Tensor | None = None, rank: int = 0, world_size: int = 1) -> TrainResult:
    """Train with neighbour sampling; keep the epoch with the best validation posting accuracy.

    With world_size > 1 this is one process of a torch.distributed group (see distributed.py): each
    process samples its share of the seed edges, gradients are averaged by DistributedDataParallel,
    and rank 0 validates and decides when to stop.
    """
    say = progress or log.info
    torch.manual_seed(config.seed)
    np.random.seed(config.seed + rank)
    dgl.seed(config.seed + rank)
    device = config.device
    graph = data.message_graph(exclude_users)
    model = build_model(data, config).to(device)
    objective = TrainingObjective(model, data, config).to(device)
    step = objective
    if world_size > 1:
        step = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
            find_unused_parameters=True,
        )
    optimizer = torch.optim.AdamW(objective.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    seeds = torch.arange(graph.num_edges(FORWARD), device=device)
    loader = edge_dataloader(graph.to(device) if device != "cpu" else graph, seeds, data, config, use_ddp=world_size > 1)
    member = memberships(data)
    val_pairs = data.edges["val"]
    if exclude_users is not None and len(exclude_users):
        val_pairs = val_pairs[~torch.isin(val_pairs[:, 0], exclude_users)]
    result = TrainResult(model=model, config=config)
    best_state, stale, started, seen, train_seconds = None, 0, time.perf_counter(), 0, 0.0
    for epoch in range(config.epochs):
        objective.train()  # (DGL's DataLoader reshuffles each process's share on every pass)
        epoch_start = time.perf_counter()
        totals = {"loss": 0.0, "link_loss": 0.0, "align_loss": 0.0}
        batches = 0
        for batch in loader:
            losses = optimization_step(step, optimizer, batch)
            for key, value in zip(totals, losses):
                totals[key] += value
            batches += 1
            seen += batch[1].num_edges(FORWARD)
            if config.max_batches_per_epoch and batches >= config.max_batches_per_epoch:
                break
        train_seconds += time.perf_counter() - epoch_start
        stop = torch.zeros(1)
        if rank == 0:
            z, _ = infer(model, graph, data, device)
            accuracy = posting_accuracy(z["user"].cpu(), z["subreddit"].cpu(), val_pairs, member, data.num_subreddits, seed=config.seed)
            row = {"epoch": epoch, **{k: v / max(batches, 1) for k, v in totals.items()},
                   "val_posting_accuracy": accuracy, "seconds": round(time.perf_counter() - epoch_start, 2)}
            result.history.append(row)
            say(f"epoch {epoch}: loss {row['loss']:.4f} (link {row['link_loss']:.4f}, align {row['align_loss']:.4f}), "
                f"val posting accuracy {accuracy:.4f}")
            if best_state is None or accuracy > result.best_val_posting_accuracy:
                result.best_val_posting_accuracy, result.best_epoch = accuracy, epoch
                best_state, stale = copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= config.patience and epoch + 1 >= config.min_epochs:
                    say(f"early stop: no better validation posting accuracy for {config.patience} epochs")
                    stop[0] = 1
        if world_size > 1:
            torch.distributed.broadcast(stop, src=0)
        if stop[0]:
            break
    if rank == 0:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    result.seed_edges_per_second = seen * world_size / train_seconds if train_seconds else 0.0
    return result


def config_dict(config: TrainConfig) -> dict:
    out = asdict(config)
    out["fanouts"] = list(config.fanouts)
    return out
