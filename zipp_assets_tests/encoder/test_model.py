import dataclasses

import pytest
import torch

from zipp_assets.encoder.data import FORWARD, REVERSE, build_heterograph
from zipp_assets.encoder.losses import image_align, link_infonce
from zipp_assets.encoder.model import EdgeGATv2Conv, PersonaEncoder


def _graph():
    pairs = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 1], [2, 2]])
    features = torch.randn(len(pairs), 3, generator=torch.Generator().manual_seed(0))
    return build_heterograph(pairs, features, num_users=3, num_subreddits=3), features


def test_attention_is_a_distribution_over_each_users_subreddits():
    graph, features = _graph()
    conv = EdgeGATv2Conv(8, 8, head_dim=4, heads=2, edge_dim=3)
    rel = graph[REVERSE]
    out, attention = conv(rel, torch.randn(3, 8), torch.randn(3, 8), features)
    assert out.shape == (3, 8) and attention.shape == (5, 2)
    _, users = graph.edges(etype=REVERSE)
    sums = torch.zeros(3, 2).index_add_(0, users, attention)
    assert torch.allclose(sums, torch.ones(3, 2), atol=1e-6)


def test_edge_features_change_attention_only_when_used():
    graph, features = _graph()
    h = torch.randn(3, 8)
    for use, changes in ((True, True), (False, False)):
        torch.manual_seed(1)
        conv = EdgeGATv2Conv(8, 8, head_dim=4, heads=2, edge_dim=3, use_edge_features=use)
        _, a1 = conv(graph[REVERSE], h, h, features)
        _, a2 = conv(graph[REVERSE], h, h, features * 5)
        assert (not torch.allclose(a1, a2)) is changes


def test_encoder_is_inductive_users_with_the_same_activity_and_edges_are_the_same():
    """No per-user parameters: two users with equal activity features and equal edges (users 1 and
    2 below) must get equal embeddings, whatever their index; a learned per-user vector would split them."""
    from zipp_assets.encoder.data import GraphData
    from zipp_assets.encoder.train import infer

    pairs = torch.tensor([[0, 0], [0, 1], [1, 2], [2, 2], [3, 1]])
    features = torch.ones(len(pairs), 3)
    empty = torch.zeros((0, 2), dtype=torch.long)
    user_features = torch.tensor([[0.0, 1.0], [2.0, 0.5], [2.0, 0.5], [1.0, 1.0]])
    data = GraphData(num_users=4, num_subreddits=3, user_features=user_features, subreddit_degree=torch.ones(3),
                     edges={"train": pairs, "val": empty, "test": empty},
                     edge_features={"train": features, "val": torch.zeros(0, 3), "test": torch.zeros(0, 3)},
                     profiles=torch.zeros(4, 1), has_profile=torch.zeros(4, dtype=torch.bool), heldout_images={})
    torch.manual_seed(0)
    model = PersonaEncoder(user_feature_dim=2, num_subreddits=3, edge_dim=3, hidden=8, heads=2)
    z, _ = infer(model, data.message_graph(), data)
    assert torch.allclose(z["user"][1], z["user"][2], atol=1e-6)
    assert not torch.allclose(z["user"][0], z["user"][3], atol=1e-3)
    with pytest.raises(ValueError):
        PersonaEncoder(user_feature_dim=5, num_subreddits=10, edge_dim=3, hidden=10, heads=4)


def test_link_infonce_masks_the_users_own_subreddits():
    """Sampled or in-batch candidates the user is already in are not negatives; the loss with
    memberships equals the loss computed by hand over true non-members only."""
    from zipp_assets.encoder.losses import is_member

    torch.manual_seed(0)
    num_subreddits = 10
    user = torch.nn.functional.normalize(torch.randn(3, 6), dim=-1)
    table = torch.nn.functional.normalize(torch.randn(num_subreddits, 6), dim=-1)
    user_ids = torch.tensor([7, 7, 8])  # rows 0 and 1 are two positives of the same user
    positive_ids = torch.tensor([1, 2, 3])
    negative_ids = torch.tensor([[4, 5], [3, 6], [1, 9]])  # user 7 is also in 5; user 8 is also in 1
    links = torch.tensor([[7, 1], [7, 2], [7, 5], [8, 3], [8, 1]])
    keys = torch.sort(links[:, 0] * num_subreddits + links[:, 1]).values
    assert is_member(keys, torch.tensor([7, 7, 8]), torch.tensor([5, 4, 1]), num_subreddits).tolist() == [True, False, True]
    loss = link_infonce(user, table[positive_ids], table[negative_ids], positive_ids, negative_ids, 0.1,
                        user_ids=user_ids, memberships=keys, num_subreddits=num_subreddits)
    member = {(int(u), int(s)) for u, s in links}
    per_row = []
    for i in range(3):
        candidates = [int(s) for s in negative_ids[i]] + [int(s) for s in positive_ids]
        negatives = [s for s in candidates if (int(user_ids[i]), s) not in member and s != int(positive_ids[i])]
        logits = torch.stack([user[i] @ table[positive_ids[i]], *[user[i] @ table[s] for s in negatives]]) / 0.1
        per_row.append(torch.logsumexp(logits, 0) - logits[0])
    assert torch.allclose(loss, torch.stack(per_row).mean(), atol=1e-5)
    unmasked = link_infonce(user, table[positive_ids], table[negative_ids], positive_ids, negative_ids, 0.1)
    assert not torch.allclose(loss, unmasked)


def test_link_infonce_masks_false_negatives_and_image_align_is_symmetric():
    torch.manual_seed(0)
    user = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)
    positive = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)
    ids = torch.tensor([1, 1, 2, 3])
    negatives = positive[[1, 0, 3, 2]].unsqueeze(1)
    # Rows 0 and 1 share subreddit 1: each other's positive (and that sampled negative) is not a negative.
    loss = link_infonce(user, positive, negatives, ids, ids[[1, 0, 3, 2]][:, None], temperature=0.1)
    manual_row0 = torch.logsumexp(torch.stack([user[0] @ positive[0], user[0] @ positive[2], user[0] @ positive[3]]) / 0.1, 0) - user[0] @ positive[0] / 0.1
    per_row = []
    for i in range(4):
        others = [j for j in range(4) if ids[j] != ids[i]]
        sampled = [] if ids[[1, 0, 3, 2]][i] == ids[i] else [negatives[i, 0]]
        logits = torch.stack([user[i] @ positive[i], *[user[i] @ n for n in sampled], *[user[i] @ positive[j] for j in others]]) / 0.1
        per_row.append(torch.logsumexp(logits, 0) - logits[0])
    assert torch.allclose(loss, torch.stack(per_row).mean(), atol=1e-5)
    assert torch.allclose(per_row[0], manual_row0, atol=1e-5)
    a = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    b = torch.randn(5, 4)
    scale = torch.tensor(2.0)
    assert torch.allclose(image_align(a, b, scale), image_align(torch.nn.functional.normalize(b, dim=-1), a, scale), atol=1e-5)
    assert image_align(a[:1], b[:1], scale) == 0


def test_train_config_validation():
    from zipp_assets.encoder.train import TrainConfig

    with pytest.raises(ValueError):
        TrainConfig(conv="gcn")
    with pytest.raises(ValueError):
        TrainConfig(fanouts=(5,))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            TrainConfig(device="cuda")
    assert dataclasses.replace(TrainConfig(), hidden=32).hidden == 32
    assert FORWARD[0] == "user" and REVERSE[0] == "subreddit"
