"""Full-graph inference for the edge-aware GATv2 in bounded memory: chunks of incoming edges.

Training samples neighbourhoods; inference needs every user's full neighbourhood. Cutting the
work by destination nodes (DGL's full-neighbour loader, 4,096 nodes a chunk) bounds nothing on a
Reddit graph: one chunk of subreddits can hold most of the graph's edges, and the layer builds a
[edges, heads, head_dim] tensor for them (13.8 GiB at 20M edges, bench/README.md). Here a layer
runs over a CSC view of the message graph (each destination's incoming edges contiguous) in groups
of destinations holding at most `max_edges` edges, so peak memory follows `max_edges`, not the
graph. A destination with more incoming edges than that on its own (a large subreddit) is taken in
slices of its edges with an online softmax (running maximum, normaliser and weighted sum, merged
slice by slice), which gives the same result as the softmax over all of them at once.

The arithmetic is `model.EdgeGATv2Conv.forward`'s, without DGL's message passing; a test holds the
two to the same numbers on random graphs. Dropout is not applied: this is inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zipp_assets.encoder.data import FORWARD, REVERSE
from zipp_assets.encoder.model import EdgeGATv2Conv

DEFAULT_MAX_EDGES = 1 << 18  # ~0.5 GiB of per-edge temporaries at hidden 128; enough to keep 2 cores busy


@dataclass(frozen=True)
class IncomingEdges:
    """One relation of the message graph by destination: destination d's incoming edges are
    positions indptr[d]:indptr[d+1] of `sources` and `edge_ids` (ids into the relation's edges)."""

    indptr: np.ndarray  # int64 [N_dst + 1]
    sources: torch.Tensor  # int64 [E]
    edge_ids: torch.Tensor  # int64 [E]

    @staticmethod
    def of(graph, etype) -> IncomingEdges:
        indptr, sources, edge_ids = graph.adj_tensors("csc", etype=etype)
        return IncomingEdges(indptr.numpy().astype(np.int64), sources.long(), edge_ids.long())

    def to(self, device) -> IncomingEdges:
        return IncomingEdges(self.indptr, self.sources.to(device), self.edge_ids.to(device))

    @property
    def num_destinations(self) -> int:
        return len(self.indptr) - 1


def destination_groups(indptr: np.ndarray, max_edges: int) -> list[tuple[int, int]]:
    """Consecutive destination ranges [start, stop) whose incoming edges number at most `max_edges`;
    a destination with more than that forms a range of its own. Every destination is in one range."""
    if max_edges < 1:
        raise ValueError(f"max_edges must be at least 1, got {max_edges}")
    groups, start, n = [], 0, len(indptr) - 1
    while start < n:
        # the furthest stop with indptr[stop] - indptr[start] <= max_edges, at least one destination
        stop = int(np.searchsorted(indptr, indptr[start] + max_edges, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        groups.append((start, stop))
        start = stop
    return groups


def _scores(conv: EdgeGATv2Conv, source_proj: torch.Tensor, dest_proj: torch.Tensor,
            edge_features: torch.Tensor) -> torch.Tensor:
    """Per-edge, per-head attention logits, as `EdgeGATv2Conv.forward` computes them. [m, heads]"""
    score = (F.leaky_relu(source_proj + dest_proj, conv.negative_slope) * conv.attn).sum(dim=-1)
    if conv.edge_bias is not None:
        score = score + conv.edge_bias(edge_features)
    return score


def gatv2_by_destination(conv: EdgeGATv2Conv, incoming: IncomingEdges,
                         project_sources: Callable[[torch.Tensor], torch.Tensor],
                         destination_rows: Callable[[torch.Tensor], torch.Tensor],
                         edge_features: torch.Tensor, max_edges: int = DEFAULT_MAX_EDGES,
                         attention: bool = False) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
    """`conv` over every destination, a group at a time: yields (start, stop, output [stop-start,
    heads*head_dim], attention [edges of the group, heads] in CSC order, or None).

    `project_sources(ids)` gives W_src h for source ids ([m, heads, head_dim]; a caller that holds
    few sources projects them once), `destination_rows(ids)` gives the destinations' input rows, and
    `edge_features` the relation's edge features by edge id."""
    heads, head_dim = conv.heads, conv.head_dim
    device = conv.attn.device
    for start, stop in destination_groups(incoming.indptr, max_edges):
        first, last = int(incoming.indptr[start]), int(incoming.indptr[stop])
        h_dst = destination_rows(torch.arange(start, stop, device=device))
        dest_proj = conv.fc_dst(h_dst).view(-1, heads, head_dim)
        residual = conv.residual(h_dst)
        n = stop - start
        if last - first <= max_edges:
            degree = torch.from_numpy(np.diff(incoming.indptr[start:stop + 1])).to(device)
            local = torch.repeat_interleave(torch.arange(n, device=device), degree)
            source_proj = project_sources(incoming.sources[first:last])
            score = _scores(conv, source_proj, dest_proj[local], edge_features[incoming.edge_ids[first:last]])
            peak = torch.full((n, heads), -torch.inf, device=device).scatter_reduce_(
                0, local.unsqueeze(-1).expand(-1, heads), score, reduce="amax")
            weight = torch.exp(score - peak[local])
            total = torch.zeros(n, heads, device=device).index_add_(0, local, weight)
            alpha = weight / total[local]
            summed = torch.zeros(n, heads, head_dim, device=device).index_add_(0, local, alpha.unsqueeze(-1) * source_proj)
            yield start, stop, summed.flatten(1) + residual, alpha if attention else None
            continue
        # one destination with more than max_edges incoming edges: slices of them, online softmax
        peak = torch.full((heads,), -torch.inf, device=device)
        total = torch.zeros(heads, device=device)
        summed = torch.zeros(heads, head_dim, device=device)
        kept = [] if attention else None
        for lo in range(first, last, max_edges):
            hi = min(lo + max_edges, last)
            source_proj = project_sources(incoming.sources[lo:hi])
            score = _scores(conv, source_proj, dest_proj, edge_features[incoming.edge_ids[lo:hi]])
            new_peak = torch.maximum(peak, score.max(dim=0).values)
            rescale = torch.exp(peak - new_peak)  # 0 on the first slice (peak was -inf)
            weight = torch.exp(score - new_peak)
            total = total * rescale + weight.sum(dim=0)
            summed = summed * rescale.unsqueeze(-1) + (weight.unsqueeze(-1) * source_proj).sum(dim=0)
            peak = new_peak
            if kept is not None:
                kept.append(score)
        out = (summed / total.unsqueeze(-1)).reshape(1, heads * head_dim) + residual
        alpha = torch.exp(torch.cat(kept) - peak) / total if kept is not None else None
        yield start, stop, out, alpha


def user_and_subreddit_layers(model, graph, user_inputs: Callable[[torch.Tensor], torch.Tensor],
                              subreddit_inputs: Callable[[torch.Tensor], torch.Tensor],
                              new_user_store: Callable[[int, int], np.ndarray | torch.Tensor],
                              max_edges: int = DEFAULT_MAX_EDGES, final_subreddits: torch.Tensor | None = None,
                              ) -> Iterator[tuple[np.ndarray, torch.Tensor, dict]]:
    """Every layer of a GATv2 `model` over the full graph; the last layer's users as they come.

    Between layers, users' hidden states go to `new_user_store(num_users, hidden)` (a memory-mapped
    array where users do not fit in memory); subreddits' stay in memory (40K x hidden at full size).
    Yields (user ids, last-layer output [n, hidden], attention) per group of users, where attention
    holds the group's edges as arrays `user`, `subreddit` and `weight` (mean over heads, summing to 1
    per user). `final_subreddits` ([S, hidden]), where given, receives the last layer's subreddit
    states, which only link scoring needs."""
    device = next(model.parameters()).device
    features = {rel: graph.edges[rel].data["feat"].to(device) for rel in (FORWARD, REVERSE)}
    to_subreddits, to_users = (IncomingEdges.of(graph, rel).to(device) for rel in (FORWARD, REVERSE))
    num_users, num_subreddits = graph.num_nodes("user"), graph.num_nodes("subreddit")
    for depth, layer in enumerate(model.layers):
        if layer.conv != "gatv2":
            raise ValueError(f"edge-chunked inference runs the gatv2 layer, not {layer.conv!r}")
        last = depth == len(model.layers) - 1
        # users -> subreddits (after the last layer only where asked: only users are written)
        new_subreddits = final_subreddits if last else torch.zeros(num_subreddits, model.hidden, device=device)
        if new_subreddits is not None:
            conv = layer.to_subreddit
            for start, stop, out, _ in gatv2_by_destination(
                    conv, to_subreddits, lambda ids, conv=conv: conv.fc_src(user_inputs(ids)).view(-1, conv.heads, conv.head_dim),
                    subreddit_inputs, features[FORWARD], max_edges):
                new_subreddits[start:stop] = out if last else F.elu(out)
        # subreddits -> users: the few subreddits are projected once per layer
        conv = layer.to_user
        projected = conv.fc_src(subreddit_inputs(torch.arange(num_subreddits, device=device))).view(-1, conv.heads, conv.head_dim)
        new_users = None if last else new_user_store(num_users, model.hidden)
        for start, stop, out, alpha in gatv2_by_destination(
                conv, to_users, lambda ids: projected[ids], user_inputs, features[REVERSE], max_edges, attention=last):
            if not last:
                new_users[start:stop] = F.elu(out).cpu().numpy() if isinstance(new_users, np.ndarray) else F.elu(out)
                continue
            first, stop_edge = int(to_users.indptr[start]), int(to_users.indptr[stop])
            degree = np.diff(to_users.indptr[start:stop + 1])
            yield np.arange(start, stop), out, {
                "user": np.repeat(np.arange(start, stop), degree),
                "subreddit": to_users.sources[first:stop_edge].cpu().numpy(),
                "edge_id": to_users.edge_ids[first:stop_edge].cpu().numpy(),
                "weight": alpha.mean(dim=1).cpu().numpy()}
        if not last:
            user_inputs = _rows_of(new_users, device)
            subreddit_inputs = _rows_of(new_subreddits, device)


def _rows_of(store, device) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(store, np.ndarray):
        return lambda ids: torch.from_numpy(np.ascontiguousarray(store[ids.cpu().numpy()])).to(device)
    return lambda ids: store[ids]
