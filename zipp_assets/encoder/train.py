"""Sampled training of the persona encoder, layer-wise inference, and validation posting accuracy."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dgl
import numpy as np
import torch
import torch.nn.functional as F
from dgl.dataloading import negative_sampler as dgl_negative

from zipp_assets.devices import require_device
from zipp_assets.encoder.data import FORWARD, REVERSE, GraphData
from zipp_assets.encoder.losses import image_align, is_member, link_infonce
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
    # None: each edge draws its own. A number: a batch draws this many subreddits once and each edge's
    # negatives come from those draws, so a batch's blocks hold at most this many negative subreddits
    # (what keeps a batch's cost flat on a graph of 40K subreddits); each edge's negatives still
    # follow the popularity distribution, only edges of one batch now share them.
    negative_pool: int | None = None
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
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1, got {self.negatives}")
        if self.negative_pool is not None and self.negative_pool < 1:
            raise ValueError(f"negative_pool must be None or at least 1, got {self.negative_pool}")
        require_device(self.device, needs_dgl=True)  # sampling and message passing run in DGL on the device


class PopularityNegativeSampler(dgl_negative._BaseNegativeSampler):
    """k negative subreddits per edge, drawn in proportion to training degree ** power.

    With `pool`, a batch draws `pool` subreddits (with replacement, by the same distribution) and
    each edge takes its k uniformly from those draws: a uniform pick among i.i.d. draws is itself a
    draw from the distribution, so every edge's negatives are distributed as without a pool, but the
    batch's negatives number at most `pool` distinct subreddits."""

    def __init__(self, k: int, degree: torch.Tensor, power: float, seed: int = 0, pool: int | None = None):
        self.k, self.pool = k, pool
        self.probability = degree.clamp(min=1.0) ** power
        # Its own generator: the global one is also drawn from elsewhere, in whatever order threads run.
        self.generator = torch.Generator().manual_seed(seed)

    def _generate(self, g, eids, canonical_etype):
        src, _ = g.find_edges(eids, etype=canonical_etype)
        src = src.repeat_interleave(self.k)
        if self.pool is None:
            dst = torch.multinomial(self.probability, len(src), replacement=True, generator=self.generator)
        else:
            drawn = torch.multinomial(self.probability, self.pool, replacement=True, generator=self.generator)
            dst = drawn[torch.randint(self.pool, (len(src),), generator=self.generator)]
        return src, dst.to(src.device)


def popularity_negatives(data: GraphData, config: TrainConfig, seed: int = 0) -> PopularityNegativeSampler:
    return PopularityNegativeSampler(config.negatives, data.subreddit_degree, config.popularity_power, seed,
                                     pool=config.negative_pool)


@dataclass
class TrainResult:
    model: PersonaEncoder
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_posting_accuracy: float = 0.0
    seconds: float = 0.0
    seed_edges_per_second: float = 0.0
    resumed_from_epoch: int | None = None

    @property
    def image_align_active(self) -> bool:
        return self.model.image_projection is not None


class NoVisualProfilesError(ValueError):
    pass


def build_model(data: GraphData, config: TrainConfig) -> PersonaEncoder:
    if config.use_image_align and not bool(data.has_profile.any()):
        # Never train link prediction alone under the name "GAT + ImageAlign".
        raise NoVisualProfilesError(
            "ImageAlign was asked for (use_image_align=True) but no user has a visual profile: materialize "
            "image_embeddings and user_visual_profiles with the configured image encoder first, or set "
            "use_image_align=False to train link prediction only")
    visual_dim = data.profiles.shape[1] if config.use_image_align else 0
    return PersonaEncoder(
        user_feature_dim=data.user_features.shape[1], num_subreddits=data.num_subreddits,
        edge_dim=data.edge_feature_dim, visual_dim=visual_dim, hidden=config.hidden, heads=config.heads,
        conv=config.conv, use_edge_features=config.use_edge_features,
    )


def edge_dataloader(graph, seed_eids: torch.Tensor | None, data: GraphData, config: TrainConfig, use_ddp: bool = False,
                    negative_sampler: PopularityNegativeSampler | None = None):
    """Batches of `seed_eids` (None: every edge of the forward relation, held as no id tensor at all
    where the compact loader serves) with their sampled blocks and popularity negatives."""
    sampler = dgl.dataloading.NeighborSampler(list(config.fanouts))
    edge_sampler = dgl.dataloading.as_edge_prediction_sampler(
        sampler,
        exclude="reverse_types",  # the target edge and its reverse never carry messages to themselves
        reverse_etypes=REVERSE_ETYPES,
        negative_sampler=negative_sampler or popularity_negatives(data, config, config.seed),
    )
    if use_ddp or config.num_workers or str(graph.device) != config.device or (
            seed_eids is not None and seed_eids.device != graph.device):
        if seed_eids is None:
            seed_eids = torch.arange(graph.num_edges(FORWARD), device=config.device)
        return dgl.dataloading.DataLoader(
            graph, {FORWARD: seed_eids}, edge_sampler, batch_size=config.batch_size, shuffle=True, drop_last=False,
            num_workers=config.num_workers, use_ddp=use_ddp, device=config.device,
        )
    return SeedEdgeBatches(graph, seed_eids, edge_sampler, config.batch_size)


class SeedEdgeBatches:
    """DGL's `DataLoader(graph, {FORWARD: seed_eids}, edge_sampler, shuffle=True)` for one process
    sampling where the graph and seeds are: the same batches in the same order (numpy's global
    generator shuffles the seeds' positions, as DGL's does), holding one int32 permutation (4 bytes a
    seed edge) where DGL's holds its seeds as [E, 2] (type, id) pairs, an int64 permutation and a
    permuted copy of the pairs (40 bytes a seed edge: 6.4 GB at 160M training edges)."""

    def __init__(self, graph, seed_eids: torch.Tensor | None, edge_sampler, batch_size: int):
        """`seed_eids` None: every edge of the forward relation (the positions are the ids)."""
        self.graph, self.seed_eids, self.edge_sampler, self.batch_size = graph, seed_eids, edge_sampler, batch_size
        self.count = graph.num_edges(FORWARD) if seed_eids is None else len(seed_eids)

    def __len__(self) -> int:
        return (self.count + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = np.arange(self.count, dtype=np.int32 if self.count < 2**31 else np.int64)
        np.random.shuffle(order)  # the draws depend on the length only: DGL's int64 shuffle gives this order
        for start in range(0, self.count, self.batch_size):
            positions = torch.from_numpy(order[start:start + self.batch_size]).long().to(self.graph.device)
            ids = positions if self.seed_eids is None else self.seed_eids[positions]
            yield self.edge_sampler.sample(self.graph, {FORWARD: ids})


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
        self.register_buffer("memberships", data.training_memberships(), persistent=False)
        self.num_subreddits = data.num_subreddits

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
        user_ids = pos_graph.nodes["user"].data[dgl.NID]
        link = link_infonce(
            users[pos_u], subreddits[pos_s], subreddits[neg_s].view(len(pos_s), k, -1),
            subreddit_ids[pos_s], subreddit_ids[neg_s].view(len(pos_s), k), config.link_temperature,
            user_ids=user_ids[pos_u], memberships=self.memberships, num_subreddits=self.num_subreddits,
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


def layer_chunks(layer, graph, inputs: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], device: str,
                 batch_size: int):
    """One layer over full neighbourhoods, `batch_size` destination nodes at a time: yields
    (output_nodes, result, block, attention or None). `inputs(input_nodes)` gives the layer's input
    rows for the nodes a chunk reads, so the full input never has to be in memory."""
    all_nodes = {nt: torch.arange(graph.num_nodes(nt), device=device) for nt in ("user", "subreddit")}
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
    loader = dgl.dataloading.DataLoader(graph, all_nodes, sampler, batch_size=batch_size, shuffle=False, device=device)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    for input_nodes, output_nodes, blocks in loader:
        block = blocks[0]
        result, attention = layer(block, inputs({nt: input_nodes.get(nt, empty) for nt in all_nodes}))
        yield output_nodes, result, block, attention


def input_rows(model: PersonaEncoder, data: GraphData, device: str):
    """The first layer's inputs, computed per chunk from the users' activity features."""
    features = data.user_features.to(device)
    return lambda nodes: model.input_features(features, nodes["user"], nodes["subreddit"])


@torch.no_grad()
def infer(model: PersonaEncoder, graph, data: GraphData, device: str = "cpu", batch_size: int = 4096):
    """Every node's representation, computed layer by layer over full neighbourhoods in chunks.

    Returns ({'user': [U, H], 'subreddit': [S, H]}, last-layer attention on the reverse edges
    (subreddit -> user) of `graph`, [E, heads], or None for SAGE). Holds every embedding in
    memory; `inference.embed_users_to_lake` streams the last layer to the lake instead.
    """
    model.eval()
    graph = graph.to(device)
    inputs = input_rows(model, data, device)
    attention = None
    for depth, layer in enumerate(model.layers):
        last = depth == len(model.layers) - 1
        out = {nt: torch.zeros(graph.num_nodes(nt), model.hidden, device=device) for nt in ("user", "subreddit")}
        if last and layer.conv == "gatv2":
            attention = torch.zeros(graph.num_edges(REVERSE), layer.to_user.heads, device=device)
        for output_nodes, result, block, block_attention in layer_chunks(layer, graph, inputs, device, batch_size):
            for nt, ids in output_nodes.items():  # a batch may hold nodes of one type only
                out[nt][ids] = result[nt]
            if attention is not None and block_attention is not None:
                attention[block[REVERSE].edata[dgl.EID]] = block_attention
        h = out if last else {nt: F.elu(v) for nt, v in out.items()}
        inputs = (lambda h: lambda nodes: {nt: h[nt][ids] for nt, ids in nodes.items()})(h)
    return h, attention


def posting_accuracy(users: torch.Tensor, subreddits: torch.Tensor, pairs: torch.Tensor, member_keys: torch.Tensor,
                     num_subreddits: int, seed: int = 0, negatives: int = 20) -> float:
    """P(score of a held-out subreddit > score of a random non-member subreddit), ties half, with
    `negatives` non-members per pair: the validation signal for early stopping (the evaluation
    table uses the exact AUC over all non-members, evaluate.py). `member_keys` are the sorted
    keys user * S + subreddit of every known link."""
    if len(pairs) == 0:
        return float("nan")
    generator = torch.Generator().manual_seed(seed)
    u = F.normalize(users, dim=-1)
    s = F.normalize(subreddits, dim=-1)
    rows = pairs[:, 0].repeat_interleave(negatives)
    candidates = torch.randint(num_subreddits, (len(rows),), generator=generator)
    for _ in range(100):  # redraw the members; a handful of rounds suffices unless a user is in almost all
        taken = is_member(member_keys, rows, candidates, num_subreddits)
        if not bool(taken.any()):
            break
        candidates[taken] = torch.randint(num_subreddits, (int(taken.sum()),), generator=generator)
    valid = ~is_member(member_keys, rows, candidates, num_subreddits)
    positive = (u[pairs[:, 0]] * s[pairs[:, 1]]).sum(-1).repeat_interleave(negatives)
    negative = (u[rows] * s[candidates]).sum(-1)
    wins = (positive > negative).float() + 0.5 * (positive == negative).float()
    return float(wins[valid].mean()) if bool(valid.any()) else float("nan")


def known_link_keys(data: GraphData) -> torch.Tensor:
    """Sorted keys user * S + subreddit of the links of every split."""
    pairs = torch.cat([data.edges[split] for split in ("train", "val", "test")])
    return torch.sort(pairs[:, 0] * data.num_subreddits + pairs[:, 1]).values


class TrainingInterrupted(RuntimeError):
    pass


def _seed_epoch(config: TrainConfig, rank: int, epoch: int) -> None:
    # Each epoch is seeded on its own, so a run resumed at epoch k draws the same batches and
    # negatives as one that never stopped.
    seed = (config.seed + rank) * 1_000_003 + epoch + 1
    torch.manual_seed(config.seed * 1_000_003 + epoch + 1)  # the same on every rank: one model init
    np.random.seed(seed % 2**32)
    dgl.seed(seed)


def _resume_state(resume_dir: Path | None, fingerprint: str) -> dict | None:
    if resume_dir is None or not (Path(resume_dir) / "training_state.pt").is_file():
        return None
    state = torch.load(Path(resume_dir) / "training_state.pt", weights_only=True)
    return state if state.get("fingerprint") == fingerprint else None


def _save_state(resume_dir: Path, state: dict) -> None:
    resume_dir.mkdir(parents=True, exist_ok=True)
    tmp = resume_dir / ".training_state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, resume_dir / "training_state.pt")


def train(data: GraphData, config: TrainConfig, progress: Callable[[str], None] | None = None,
          exclude_users: torch.Tensor | None = None, rank: int = 0, world_size: int = 1,
          resume_dir: Path | None = None, fingerprint: str = "") -> TrainResult:
    """Train with neighbour sampling; keep the epoch with the best validation posting accuracy.

    With world_size > 1 this is one process of a torch.distributed group (see distributed.py): each
    process samples its share of the seed edges, gradients are averaged by DistributedDataParallel,
    and rank 0 validates and decides when to stop.

    With `resume_dir`, the state after every epoch (weights, optimizer, best weights, history) is
    kept there, and a run with the same `fingerprint` (config and data version) that was killed
    carries on from its last finished epoch.
    """
    say = progress or log.info
    device = config.device
    _seed_epoch(config, rank, -1)
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
    negatives = popularity_negatives(data, config)
    message_graph = graph.to(device) if device != "cpu" else graph
    member_keys = known_link_keys(data)
    val_pairs = data.edges["val"]
    if exclude_users is not None and len(exclude_users):
        val_pairs = val_pairs[~torch.isin(val_pairs[:, 0], exclude_users)]
    result = TrainResult(model=model, config=config)
    best_state, stale, started, seen, train_seconds, first_epoch = None, 0, time.perf_counter(), 0, 0.0, 0
    fingerprint = fingerprint or json.dumps(config_dict(config), sort_keys=True)
    resumed = _resume_state(resume_dir, fingerprint)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        best_state, stale, first_epoch = resumed["best_model"], int(resumed["stale"]), int(resumed["epoch"]) + 1
        result.history = json.loads(resumed["history"])
        result.best_epoch, result.best_val_posting_accuracy = int(resumed["best_epoch"]), float(resumed["best_val"])
        seen, train_seconds = int(resumed["seen"]), float(resumed["train_seconds"])
        result.resumed_from_epoch = first_epoch
        say(f"resuming after epoch {first_epoch - 1} from {resume_dir}")
    stop = torch.zeros(1, device=device)  # broadcast over NCCL on GPUs: it must live on the device
    if resumed is not None and bool(resumed["stopped"]):
        stop[0] = 1
    for epoch in range(first_epoch, config.epochs):
        if stop[0]:
            break
        _seed_epoch(config, rank, epoch)
        negatives.generator.manual_seed((config.seed + rank) * 1_000_003 + epoch + 1)
        # A new loader each epoch: DGL's reshuffles its previous order in place, which would make an
        # epoch's batches depend on every epoch before it (and a resumed run differ from an unbroken one).
        loader = edge_dataloader(message_graph, None, data, config, use_ddp=world_size > 1, negative_sampler=negatives)
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
        if rank == 0:
            z, _ = infer(model, graph, data, device)
            accuracy = posting_accuracy(z["user"].cpu(), z["subreddit"].cpu(), val_pairs, member_keys, data.num_subreddits,
                                        seed=config.seed)
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
        if rank == 0 and resume_dir is not None:
            _save_state(Path(resume_dir), {
                "fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "best_model": best_state, "stale": stale,
                "history": json.dumps(result.history), "best_epoch": result.best_epoch,
                "best_val": result.best_val_posting_accuracy, "seen": seen, "train_seconds": train_seconds,
                "stopped": bool(stop[0]),
            })
    if rank == 0:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    result.seed_edges_per_second = seen * world_size / train_seconds if train_seconds else 0.0
    return result


def config_dict(config: TrainConfig) -> dict:
    out = asdict(config)
    out["fanouts"] = list(config.fanouts)
    return out
