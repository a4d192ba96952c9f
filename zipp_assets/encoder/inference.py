"""Embeddings and attention for every user, written to the lake.

`embed_users_to_lake` is the path that scales: the last layer's output goes to the lake chunk by
chunk, and the layer before it computes its users a group at a time as the last layer reads them
(deeper models keep earlier layers' user states in a memory-mapped scratch file), so memory does
not grow with the number of users beyond the graph itself. GATv2 layers run in groups of
at most `max_edges` incoming edges (`chunked`), so neither does it grow with a subreddit's size.
Embeddings and attention are committed under a build id of their own (a kill between their two
commits leaves them disagreeing, and readers refuse the pair), each commit recording the graph build
whose user indexes they use (`lake.check_built_from` refuses a pair encoded from another build).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dgl
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from zipp_assets import lake
from zipp_assets.encoder.chunked import DEFAULT_MAX_EDGES, user_and_subreddit_layers
from zipp_assets.encoder.data import REVERSE, GraphData
from zipp_assets.encoder.model import PersonaEncoder
from zipp_assets.encoder.train import input_rows, layer_chunks

EMBEDDINGS = "user_embeddings"
TOP_SUBREDDITS = "user_top_subreddits"
TOP_SCHEMA = pa.schema([("user_index", pa.int64()), ("user_id", pa.string()), ("rank", pa.int32()),
                        ("subreddit_index", pa.int64()), ("subreddit", pa.string()), ("weight", pa.float32())])


def _embeddings_schema(dim: int, visual_dim: int | None) -> pa.Schema:
    fields = [("user_index", pa.int64()), ("user_id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))]
    if visual_dim:
        fields.append(("visual_embedding", pa.list_(pa.float32(), visual_dim)))
    return pa.schema(fields)


def _vectors(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).reshape(-1)), matrix.shape[1])


def _column_by_index(lake_dir: Path, data: GraphData, dataset: str, index: str, column: str) -> pa.Array:
    """`column` of the graph table version `data` was loaded from, in index order (row i is index i)."""
    table = lake.open_table(lake_dir, dataset, data.table_versions.get(dataset)).read(columns=[index, column])
    return table.sort_by(index)[column].combine_chunks()


def _top_rows(top: dict[str, np.ndarray], ids: pa.Array, names: pa.Array) -> pa.Table:
    # users are indexed 0..U-1 in user_index order (and subreddits likewise), so an index is a row position
    return pa.table({
        "user_index": pa.array(top["user_index"], pa.int64()),
        "user_id": ids.take(pa.array(top["user_index"])),
        "rank": pa.array(top["rank"], pa.int32()),
        "subreddit_index": pa.array(top["subreddit_index"], pa.int64()),
        "subreddit": names.take(pa.array(top["subreddit_index"])),
        "weight": pa.array(top["weight"], pa.float32()),
    }, schema=TOP_SCHEMA)


def _user_store(scratch_dir: Path | None, name: str):
    """Where a layer's user states go: a memory-mapped file in `scratch_dir`, else memory."""
    if scratch_dir is None:
        return lambda rows, hidden: np.zeros((rows, hidden), np.float32)
    return lambda rows, hidden: np.lib.format.open_memmap(Path(scratch_dir) / name, mode="w+", dtype=np.float32,
                                                          shape=(rows, hidden))


def last_layer_users(model: PersonaEncoder, graph, data: GraphData, device: str, batch_size: int,
                     max_edges: int, scratch_dir: Path | None, final_subreddits: torch.Tensor | None = None,
                     ) -> Iterator[tuple[np.ndarray, torch.Tensor, dict | None]]:
    """(user indexes, last-layer output, their attention as arrays user/subreddit/weight or None), group by
    group. GATv2 runs edge-chunked (`chunked`, memory bounded by `max_edges`); SAGE, which has no attention
    and sums no per-edge tensors of the hidden size, by DGL's full-neighbour loader in `batch_size` nodes."""
    features = data.user_features.to(device)
    if all(layer.conv == "gatv2" for layer in model.layers):
        depth = iter(range(len(model.layers)))
        yield from user_and_subreddit_layers(
            model, graph, lambda ids: model.user_in(features[ids]), model.subreddit_in,
            lambda rows, hidden: _user_store(scratch_dir, f"layer{next(depth)}_users.npy")(rows, hidden), max_edges,
            final_subreddits)
        return
    num_users, num_subreddits, hidden = graph.num_nodes("user"), graph.num_nodes("subreddit"), model.hidden
    inputs = input_rows(model, data, device)
    for depth, layer in enumerate(model.layers[:-1]):
        users_h = _user_store(scratch_dir, f"layer{depth}_users.npy")(num_users, hidden)
        subreddits_h = torch.zeros(num_subreddits, hidden, device=device)
        for output_nodes, result, _, _ in layer_chunks(layer, graph, inputs, device, batch_size):
            if len(output_nodes.get("user", ())):
                users_h[output_nodes["user"].cpu().numpy()] = F.elu(result["user"]).cpu().numpy()
            if len(output_nodes.get("subreddit", ())):
                subreddits_h[output_nodes["subreddit"]] = F.elu(result["subreddit"])
        inputs = (lambda users_h, subreddits_h: lambda nodes: {
            "user": torch.from_numpy(np.ascontiguousarray(users_h[nodes["user"].cpu().numpy()])).to(device),
            "subreddit": subreddits_h[nodes["subreddit"]],
        })(users_h, subreddits_h)
    for output_nodes, result, block, attention in layer_chunks(model.layers[-1], graph, inputs, device, batch_size):
        users = output_nodes.get("user")
        if final_subreddits is not None and len(output_nodes.get("subreddit", ())):
            final_subreddits[output_nodes["subreddit"]] = result["subreddit"]
        if users is None or len(users) == 0:
            continue
        edges = None
        if attention is not None:
            src, dst = block[REVERSE].edges()
            edges = {"user": block.dstnodes["user"].data[dgl.NID][dst].cpu().numpy(),
                     "subreddit": block.srcnodes["subreddit"].data[dgl.NID][src].cpu().numpy(),
                     "weight": attention.mean(dim=1).cpu().numpy()}
        yield users.cpu().numpy(), result["user"], edges


@torch.no_grad()
def embed_users_to_lake(model: PersonaEncoder, graph, data: GraphData, lake_dir: Path, device: str = "cpu",
                        batch_size: int = 4096, top_k: int = 10, scratch_dir: Path | None = None,
                        max_edges: int = DEFAULT_MAX_EDGES, final_subreddits: torch.Tensor | None = None) -> dict:
    """Every user's embedding (and ImageAlign projection) and its top-k attended subreddits, written
    to `user_embeddings` and `user_top_subreddits` as the last layer produces them. Returns counts
    and the top-1 attention weights (for a histogram). GATv2 layers hold at most `max_edges` incoming
    edges' temporaries at once; `final_subreddits` ([S, hidden]), where given, receives the last layer's
    subreddit states (to score links against without a second pass)."""
    model.eval()
    graph = graph.to(device)
    ids = _column_by_index(lake_dir, data, "users", "user_index", "user_id")
    names = _column_by_index(lake_dir, data, "subreddits", "subreddit_index", "subreddit")
    visual_dim = model.config["visual_dim"] if model.image_projection is not None else None
    schema = _embeddings_schema(model.hidden, visual_dim)
    top_weights, users_written = [], 0
    # A new build id shared by the pair only (not the graph's: a re-encoding killed between the two commits
    # must leave them disagreeing), recording the graph build the users are indexed by, so a reader can
    # refuse attention rows whose user indexes belong to another build of the graph (lake.check_built_from).
    with lake.build(lake_dir, built_from=data.build_id) as together:
        with lake.RotatingParquetWriter(together.partition(EMBEDDINGS), schema) as embeddings, \
                lake.RotatingParquetWriter(together.partition(TOP_SUBREDDITS), TOP_SCHEMA) as tops:
            for index, z, attention in last_layer_users(model, graph, data, device, batch_size, max_edges, scratch_dir,
                                                        final_subreddits):
                columns = {"user_index": pa.array(index, pa.int64()), "user_id": ids.take(pa.array(index)),
                           "embedding": _vectors(z.cpu().numpy())}
                if visual_dim:
                    columns["visual_embedding"] = _vectors(model.project_image(z).cpu().numpy())
                embeddings.write(pa.table(columns, schema=schema))
                users_written += len(index)
                if attention is not None:
                    top = rank_within_users(attention["user"], attention["subreddit"], attention["weight"], top_k)
                    tops.write(_top_rows(top, ids, names))
                    top_weights.append(top["weight"][top["rank"] == 1])
    return {"users": users_written, "attention_rows": tops.rows_written, "versions": together.versions,
            "build": lake.format_build(together.build_id), "graph_build": lake.format_build(data.build_id),
            "top_weights": np.concatenate(top_weights) if top_weights else np.zeros(0, np.float32)}


def attention_by_user(graph, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user, subreddit, weight) per message-passing edge; weights (mean over heads) sum to 1 per user."""
    subreddits, users = graph.edges(etype=REVERSE)
    return users, subreddits, attention.mean(dim=1)


def top_k_attention(graph, attention: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """Each user's k most-attended subreddits (rank 1 = highest), vectorised: one sort over all edges."""
    return rank_within_users(*(t.numpy() for t in attention_by_user(graph, attention)), k)


def rank_within_users(users: np.ndarray, subreddits: np.ndarray, weights: np.ndarray, k: int) -> dict[str, np.ndarray]:
    order = np.lexsort((-weights, users))  # by user, then by weight, highest first
    users, subreddits, weights = users[order], subreddits[order], weights[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(users)) + 1] if len(users) else np.zeros(0, np.int64)
    first = np.repeat(group_start, np.diff(np.r_[group_start, len(users)]))
    rank = np.arange(len(users)) - first + 1
    keep = rank <= k
    return {"user_index": users[keep], "subreddit_index": subreddits[keep], "weight": weights[keep],
            "rank": rank[keep]}


def top_k_subreddits(graph, attention: torch.Tensor, k: int) -> dict[int, list[tuple[int, float]]]:
    """The same as a dict user -> [(subreddit, weight), ...] (for evaluation on small graphs)."""
    top = top_k_attention(graph, attention, k)
    ranked: dict[int, list[tuple[int, float]]] = {}
    for u, s, w in zip(top["user_index"].tolist(), top["subreddit_index"].tolist(), top["weight"].tolist()):
        ranked.setdefault(u, []).append((s, w))
    return ranked
