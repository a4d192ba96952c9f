"""Edge-chunked inference gives what the DGL layer gives, whatever the chunk size, in bounded pieces."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from zipp_assets.encoder.chunked import destination_groups, user_and_subreddit_layers
from zipp_assets.encoder.data import REVERSE, build_heterograph
from zipp_assets.encoder.model import PersonaEncoder
from zipp_assets.encoder.train import infer


def _world(seed=0, users=60, subreddits=12, layers=2):
    """A heavy-tailed graph: subreddit 0 holds most edges, the last subreddit none, the last user none."""
    rng = np.random.default_rng(seed)
    pairs = set()
    for u in range(users - 1):
        for s in rng.choice(subreddits - 1, size=rng.integers(1, 5), replace=False,
                            p=np.r_[0.5, np.full(subreddits - 2, 0.5 / (subreddits - 2))]):
            pairs.add((u, int(s)))
    pairs = torch.tensor(sorted(pairs))
    pairs = pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))]  # edge ids unordered
    features = torch.randn(len(pairs), 3, generator=torch.Generator().manual_seed(seed))
    graph = build_heterograph(pairs, features, users, subreddits)
    torch.manual_seed(seed)
    model = PersonaEncoder(user_feature_dim=5, num_subreddits=subreddits, edge_dim=3, hidden=16, heads=4, layers=layers).eval()
    user_features = torch.randn(users, 5, generator=torch.Generator().manual_seed(seed + 1))
    return graph, model, user_features


def _chunked(graph, model, user_features, max_edges, store, final_subreddits=None):
    users, attention = {}, {}
    with torch.no_grad():
        for ids, out, att in user_and_subreddit_layers(
                model, graph, lambda ids: model.user_in(user_features[ids]), model.subreddit_in, store, max_edges,
                final_subreddits):
            users.update(zip(ids.tolist(), out))
            attention.update(zip(att["edge_id"].tolist(), zip(att["user"].tolist(), att["subreddit"].tolist(),
                                                              att["weight"].tolist())))
    return users, attention


@pytest.mark.parametrize("max_edges", [1, 3, 7, 1_000])  # 1 and 3: every big subreddit in slices (online softmax)
@pytest.mark.parametrize("store,layers", [("memory", 2), ("memory", 3), ("numpy", 3), ("memory", 1)])
def test_edge_chunked_layers_equal_the_dgl_layers(max_edges, store, layers):
    graph, model, user_features = _world(layers=layers)
    with torch.no_grad():
        reference, reference_attention = infer(model, graph, SimpleNamespace(user_features=user_features))
    stores = []

    def make_store(n, h):
        stores.append((n, h))
        return torch.zeros(n, h) if store == "memory" else np.zeros((n, h), np.float32)

    final_subreddits = torch.full((graph.num_nodes("subreddit"), model.hidden), torch.nan)
    users, attention = _chunked(graph, model, user_features, max_edges, make_store, final_subreddits)
    # the layer before the last computes its users a group at a time: only deeper models store users
    assert len(stores) == max(0, layers - 2)
    torch.testing.assert_close(final_subreddits, reference["subreddit"], rtol=1e-5, atol=1e-5)
    assert sorted(users) == list(range(graph.num_nodes("user")))
    got = torch.stack([users[u] for u in range(graph.num_nodes("user"))])
    torch.testing.assert_close(got, reference["user"], rtol=1e-5, atol=1e-5)
    subreddits, members = graph.edges(etype=REVERSE)
    assert sorted(attention) == list(range(graph.num_edges(REVERSE)))
    for edge, (user, subreddit, weight) in attention.items():
        assert (user, subreddit) == (int(members[edge]), int(subreddits[edge]))
        assert weight == pytest.approx(float(reference_attention[edge].mean()), abs=1e-5)


def test_the_answer_does_not_depend_on_the_chunk_size_on_another_graph():
    graph, model, user_features = _world(seed=5, users=90, subreddits=7)
    small, _ = _chunked(graph, model, user_features, 2, lambda n, h: torch.zeros(n, h))
    large, _ = _chunked(graph, model, user_features, 10_000, lambda n, h: torch.zeros(n, h))
    for u in small:
        torch.testing.assert_close(small[u], large[u], rtol=1e-5, atol=1e-5)


def test_destination_groups_bound_the_edges_and_cover_every_destination():
    indptr = np.cumsum([0, 3, 0, 0, 10, 1, 1, 1, 0])  # destination 3 alone holds more than the bound
    groups = destination_groups(indptr, 4)
    assert groups == [(0, 3), (3, 4), (4, 8)]
    for start, stop in groups:
        assert stop - start == 1 or indptr[stop] - indptr[start] <= 4
    assert destination_groups(np.zeros(1, np.int64), 4) == []  # no destinations
    with pytest.raises(ValueError, match="max_edges must be at least 1"):
        destination_groups(indptr, 0)


def test_a_sage_model_is_refused_rather_than_run_as_gatv2():
    graph, _, user_features = _world()
    sage = PersonaEncoder(user_feature_dim=5, num_subreddits=12, edge_dim=3, hidden=16, heads=4, conv="sage")
    with pytest.raises(ValueError, match="runs the gatv2 layer, not 'sage'"):
        next(user_and_subreddit_layers(sage, graph, lambda ids: sage.user_in(user_features[ids]), sage.subreddit_in,
                                       lambda n, h: torch.zeros(n, h)))
