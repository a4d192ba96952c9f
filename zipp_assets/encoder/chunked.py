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
                         attention: bool = False, span: tuple[int, int] | None = None,
                         ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
    """`conv` over every destination (or those in `span`, [start, stop)), a group at a time: yields
    (start, stop, output [stop-start, heads*head_dim], attention [edges of the group, heads] in CSC
    order, or None).

    `project_sources(ids)` gives W_src h for source ids ([m, heads, head_dim]; a caller that holds
    few sources projects them once), `destination_rows(ids)` gives the destinations' input rows, and
    `edge_features` the relation's edge features by edge id."""
    heads, head_dim = conv.heads, conv.head_dim
    device = conv.attn.device
    lo_node, hi_node = span if span is not None else (0, incoming.num_destinations)
    groups = [(a + lo_node, b + lo_node) for a, b in destination_groups(incoming.indptr[lo_node:hi_node + 1], max_edges)]
    for start, stop in groups:
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


class _SubredditsFromUserGroups:
    """A user -> subreddit GATv2 layer accumulated over groups of users (online softmax per
    subreddit: running maximum, normaliser and weighted sum), for the last layer, whose users'
    inputs exist only a group at a time. A group's users' outgoing edges are their incoming edges
    of the reverse relation: the two relations share edge ids and features."""

    def __init__(self, conv: EdgeGATv2Conv, subreddit_rows: torch.Tensor, edge_features: torch.Tensor):
        self.conv, self.edge_features = conv, edge_features
        heads, head_dim, device = conv.heads, conv.head_dim, subreddit_rows.device
        self.dest_proj = conv.fc_dst(subreddit_rows).view(-1, heads, head_dim)
        self.residual = conv.residual(subreddit_rows)
        count = len(subreddit_rows)
        self.peak = torch.full((count, heads), -torch.inf, device=device)
        self.total = torch.zeros(count, heads, device=device)
        self.summed = torch.zeros(count, heads, head_dim, device=device)

    def add(self, user_rows: torch.Tensor, local_users: torch.Tensor, subreddits: torch.Tensor, edge_ids: torch.Tensor) -> None:
        conv = self.conv
        source_proj = conv.fc_src(user_rows).view(-1, conv.heads, conv.head_dim)[local_users]
        score = _scores(conv, source_proj, self.dest_proj[subreddits], self.edge_features[edge_ids])
        index = subreddits.unsqueeze(-1).expand(-1, conv.heads)
        new_peak = self.peak.scatter_reduce(0, index, score, reduce="amax")
        # subreddits no edge has reached yet keep -inf on both sides: their rescale is 0, not nan
        rescale = torch.where(torch.isfinite(new_peak), torch.exp(self.peak - new_peak), torch.zeros_like(new_peak))
        weight = torch.exp(score - new_peak[subreddits])
        self.total = (self.total * rescale).index_add_(0, subreddits, weight)
        self.summed = (self.summed * rescale.unsqueeze(-1)).index_add_(0, subreddits, weight.unsqueeze(-1) * source_proj)
        self.peak = new_peak

    def result(self) -> torch.Tensor:
        """[S, heads*head_dim]; a subreddit without incoming edges gets its residual alone, as in DGL."""
        total = self.total.unsqueeze(-1)
        mean = torch.where(total > 0, self.summed / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(self.summed))
        return mean.flatten(1) + self.residual


def user_and_subreddit_layers(model, graph, user_inputs: Callable[[torch.Tensor], torch.Tensor],
                              subreddit_inputs: Callable[[torch.Tensor], torch.Tensor],
                              new_user_store: Callable[[int, int], np.ndarray | torch.Tensor],
                              max_edges: int = DEFAULT_MAX_EDGES, final_subreddits: torch.Tensor | None = None,
                              ) -> Iterator[tuple[np.ndarray, torch.Tensor, dict]]:
    """Every layer of a GATv2 `model` over the full graph; the last layer's users as they come.

    Subreddits' states stay in memory (40K x hidden at full size). Users' states of the layer before
    the last are never stored: the last layer computes them a group of users at a time from the
    layer's inputs (the same incoming edges in both layers), so a 2-layer model holds no [users,
    hidden] matrix at all. Deeper models put earlier layers' user states in `new_user_store(num_users,
    hidden)` (a memory-mapped array where users do not fit in memory).
    Yields (user ids, last-layer output [n, hidden], attention) per group of users, where attention
    holds the group's edges as arrays `user`, `subreddit` and `weight` (mean over heads, summing to 1
    per user). `final_subreddits` ([S, hidden]), where given, receives the last layer's subreddit
    states (only link scoring needs them), accumulated over the same groups of users."""
    device = next(model.parameters()).device
    features = {rel: graph.edges[rel].data["feat"].to(device) for rel in (FORWARD, REVERSE)}
    to_subreddits, to_users = (IncomingEdges.of(graph, rel).to(device) for rel in (FORWARD, REVERSE))
    num_users, num_subreddits = graph.num_nodes("user"), graph.num_nodes("subreddit")
    all_subreddits = torch.arange(num_subreddits, device=device)

    def project(conv, rows: torch.Tensor) -> torch.Tensor:
        return conv.fc_src(rows).view(-1, conv.heads, conv.head_dim)

    for layer in model.layers:
        if layer.conv != "gatv2":
            raise ValueError(f"edge-chunked inference runs the gatv2 layer, not {layer.conv!r}")
    for depth, layer in enumerate(model.layers[:-1]):
        new_subreddits = torch.zeros(num_subreddits, model.hidden, device=device)
        conv = layer.to_subreddit
        for start, stop, out, _ in gatv2_by_destination(
                conv, to_subreddits, lambda ids, conv=conv: project(conv, user_inputs(ids)),
                subreddit_inputs, features[FORWARD], max_edges):
            new_subreddits[start:stop] = F.elu(out)
        conv = layer.to_user
        projected = project(conv, subreddit_inputs(all_subreddits))  # the few subreddits, once per layer
        if depth < len(model.layers) - 2:
            new_users = new_user_store(num_users, model.hidden)
            for start, stop, out, _ in gatv2_by_destination(
                    conv, to_users, lambda ids, projected=projected: projected[ids], user_inputs, features[REVERSE], max_edges):
                new_users[start:stop] = F.elu(out).cpu().numpy() if isinstance(new_users, np.ndarray) else F.elu(out)
            user_inputs = _rows_of(new_users, device)
        else:  # the layer before the last: its users, a contiguous group at a time, when the last layer reads them
            user_inputs = _users_on_demand(conv, to_users, projected, user_inputs, features[REVERSE], max_edges)
        subreddit_inputs = _rows_of(new_subreddits, device)
    layer = model.layers[-1]
    subreddit_rows = subreddit_inputs(all_subreddits)
    accumulated = (_SubredditsFromUserGroups(layer.to_subreddit, subreddit_rows, features[FORWARD])
                   if final_subreddits is not None else None)
    conv = layer.to_user
    projected = project(conv, subreddit_rows)
    kept_rows: dict[str, torch.Tensor] = {}

    def destination_rows(ids: torch.Tensor) -> torch.Tensor:
        kept_rows["rows"] = user_inputs(ids)  # the group's inputs, reused for its edges to subreddits
        return kept_rows["rows"]

    for start, stop, out, alpha in gatv2_by_destination(
            conv, to_users, lambda ids: projected[ids], destination_rows, features[REVERSE], max_edges, attention=True):
        first, stop_edge = int(to_users.indptr[start]), int(to_users.indptr[stop])
        degree = np.diff(to_users.indptr[start:stop + 1])
        subreddits = to_users.sources[first:stop_edge]
        edge_ids = to_users.edge_ids[first:stop_edge]
        if accumulated is not None:
            local = torch.repeat_interleave(torch.arange(stop - start, device=device), torch.from_numpy(degree).to(device))
            accumulated.add(kept_rows["rows"], local, subreddits, edge_ids)
        yield np.arange(start, stop), out, {
            "user": np.repeat(np.arange(start, stop), degree),
            "subreddit": subreddits.cpu().numpy(),
            "edge_id": edge_ids.cpu().numpy(),
            "weight": alpha.mean(dim=1).cpu().numpy()}
    if accumulated is not None:
        final_subreddits[:] = accumulated.result()


def _users_on_demand(conv: EdgeGATv2Conv, to_users: IncomingEdges, projected: torch.Tensor,
                     user_inputs: Callable[[torch.Tensor], torch.Tensor], edge_features: torch.Tensor,
                     max_edges: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rows of a subreddit -> user layer's output (after ELU) for a contiguous range of user ids,
    computed when asked from the layer's inputs."""

    def rows(ids: torch.Tensor) -> torch.Tensor:
        start, stop = int(ids[0]), int(ids[-1]) + 1
        if stop - start != len(ids):
            raise ValueError("users are computed on demand for a contiguous range of ids only")
        parts = [F.elu(out) for _, _, out, _ in gatv2_by_destination(
            conv, to_users, lambda ids: projected[ids], user_inputs, edge_features, max_edges, span=(start, stop))]
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    return rows


def _rows_of(store, device) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(store, np.ndarray):
        return lambda ids: torch.from_numpy(np.ascontiguousarray(store[ids.cpu().numpy()])).to(device)
    return lambda ids: store[ids]
