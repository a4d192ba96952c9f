import json

import numpy as np
import pytest
import torch

from zipp_assets.encoder.ablations import OURS, evaluate_all
from zipp_assets.encoder.data import GraphData
from zipp_assets.encoder.evaluate import KnownLinks, link_scores, tfidf_scorer, visual_retrieval
from zipp_assets.encoder.train import TrainConfig, train
from zipp_assets.stats import bootstrap_mean, paired_difference

FAST = TrainConfig(hidden=16, heads=2, fanouts=(5, 5), batch_size=256, epochs=1, patience=1, min_epochs=1, negatives=4,
                   max_batches_per_epoch=3)


def _toy(num_users=3, num_subreddits=6, train=((0, 0), (1, 1), (2, 2)), test=((0, 1), (0, 2))):
    """A hand-sized graph: user 0 knows subreddits 0 (train), 1 and 2 (test); 3 of 6 are non-members."""
    empty = torch.zeros((0, 2), dtype=torch.long)
    edges = {"train": torch.tensor(train), "val": empty, "test": torch.tensor(test) if test else empty}
    return GraphData(num_users=num_users, num_subreddits=num_subreddits, user_features=torch.zeros(num_users, 5),
                     subreddit_degree=torch.bincount(edges["train"][:, 1], minlength=num_subreddits).float(),
                     edges=edges, edge_features={k: torch.zeros(len(v), 5) for k, v in edges.items()},
                     profiles=torch.zeros(num_users, 1), has_profile=torch.zeros(num_users, dtype=torch.bool),
                     heldout_images={})


def test_posting_accuracy_is_the_exact_auc_over_all_non_members_with_ties_half():
    data = _toy()
    scores = torch.tensor([[9.0, 5.0, 1.0, 6.0, 5.0, 0.0]] * 3)
    result = link_scores(lambda idx: scores[idx], data, data.edges["test"])
    # Non-members of user 0: subreddits 3, 4, 5 (scores 6, 5, 0); the known links 0, 1, 2 never compete.
    # Link (0,1) scores 5: beats 0, ties 5, loses to 6 -> (1 + 0.5) / 3.  Link (0,2) scores 1: beats 0 -> 1/3.
    assert result.auc.tolist() == pytest.approx([1.5 / 3, 1 / 3])
    # Expected rank under random tie order: (0,1) has 1 greater and 1 tie -> rank 2 or 3 -> E[1/rank] = (1/2 + 1/3) / 2.
    assert result.reciprocal_rank.tolist() == pytest.approx([(1 / 2 + 1 / 3) / 2, 1 / 3])
    assert result.recall_at_10.tolist() == [1.0, 1.0]
    assert result.per_user("auc") == pytest.approx({0: (1.5 / 3 + 1 / 3) / 2})


def test_recall_at_10_counts_a_tie_at_the_cut_by_its_chance():
    data = _toy(num_users=1, num_subreddits=30, train=((0, 0),), test=((0, 1),))
    scores = torch.zeros(1, 30)
    scores[0, 2:11] = 5.0  # 9 non-members above the link
    scores[0, 11:13] = 1.0  # 2 tied with it
    scores[0, 1] = 1.0
    result = link_scores(lambda idx: scores[idx], data, data.edges["test"])
    # Rank 10, 11 or 12 with equal chance: recall@10 = 1/3.
    assert result.recall_at_10[0] == pytest.approx(1 / 3)
    constant = link_scores(lambda idx: torch.zeros(len(idx), 30), data, data.edges["test"])
    assert constant.auc[0] == pytest.approx(0.5)  # every candidate tied: a coin flip, not a win


def test_blockwise_scoring_matches_one_block(graph_data):
    scorer = tfidf_scorer(graph_data)
    whole = link_scores(scorer, graph_data, graph_data.edges["test"], chunk=100_000)
    blocks = link_scores(scorer, graph_data, graph_data.edges["test"], chunk=7)
    assert np.allclose(whole.auc, blocks.auc) and np.allclose(whole.reciprocal_rank, blocks.reciprocal_rank)
    known = KnownLinks(graph_data).mask(torch.arange(graph_data.num_users))
    dense = torch.zeros(graph_data.num_users, graph_data.num_subreddits, dtype=torch.bool)
    for split in ("train", "val", "test"):
        dense[graph_data.edges[split][:, 0], graph_data.edges[split][:, 1]] = True
    assert torch.equal(known, dense)


def test_tfidf_sparse_and_pruned_paths_equal_the_dense_formula(graph_data):
    train = graph_data.edges["train"]
    matrix = torch.zeros(graph_data.num_users, graph_data.num_subreddits)
    matrix[train[:, 0], train[:, 1]] = 1.0
    idf = torch.log((1 + graph_data.num_subreddits) / (1 + matrix.sum(1, keepdim=True))) + 1
    vectors = torch.nn.functional.normalize((matrix * idf).T, dim=-1)
    expected = matrix @ (vectors @ vectors.T)
    users = torch.arange(graph_data.num_users)
    assert torch.allclose(tfidf_scorer(graph_data)(users), expected, atol=1e-4)
    pruned = tfidf_scorer(graph_data, dense_up_to=0, neighbours=graph_data.num_subreddits)
    assert torch.allclose(pruned(users), expected, atol=1e-4)
    # Excluding users from the fit changes the similarity but still scores them from their own links.
    held = torch.arange(0, graph_data.num_users, 3)
    inductive = tfidf_scorer(graph_data, exclude_users=held)(held)
    assert inductive.shape == (len(held), graph_data.num_subreddits) and not torch.allclose(inductive, expected[held])


def test_visual_retrieval_per_user_hits():
    heldout = {0: np.array([1.0, 0.0]), 1: np.array([0.0, 1.0]), 2: np.array([0.7, 0.7])}
    projected = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.6, 0.8]])
    hits = visual_retrieval(projected, heldout, ks=(1, 2, 3))
    # User 1's query is closer to users 0's and 2's images than to its own: rank 3.
    assert hits["visual_recall@1"] == {0: 1.0, 1: 0.0, 2: 1.0}
    assert hits["visual_recall@2"] == {0: 1.0, 1: 0.0, 2: 1.0}
    assert hits["visual_recall@3"] == {0: 1.0, 1: 1.0, 2: 1.0}


def test_bootstrap_intervals_cover_the_mean_and_decide_ties():
    rng = np.random.default_rng(0)
    values = rng.normal(0.7, 0.1, size=400)
    interval = bootstrap_mean(values)
    assert interval.low < values.mean() < interval.high
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(400), rel=0.2)
    a = {u: float(v) for u, v in enumerate(values)}
    better = {u: v + 0.02 for u, v in a.items()}
    noisy = {u: v + float(rng.normal(0, 0.2)) for u, v in a.items()}
    assert paired_difference(better, a).verdict() == "ahead"
    assert paired_difference(a, better).verdict() == "behind"
    assert paired_difference(noisy, a).verdict() == "tied"
    assert np.isnan(bootstrap_mean(np.array([])).estimate)


def test_evaluation_rows_carry_intervals_and_resume_without_retraining(graph_data, tmp_path, monkeypatch):
    ours = train(graph_data, FAST).model
    rows = evaluate_all(graph_data, FAST, ours, {}, None, work_dir=tmp_path)
    by_name = {r["model"]: r for r in rows}
    assert {OURS, "GAT without ImageAlign", "popularity", "TF-IDF over subreddits", "TF-IDF, unseen users",
            f"{OURS}, unseen users (inductive)"} <= set(by_name)
    for row in rows:
        assert row["posting_accuracy_low"] <= row["posting_accuracy"] <= row["posting_accuracy_high"]
    popularity = by_name["popularity"]
    assert popularity["ours_vs_this_posting_accuracy"] in ("ahead", "tied", "behind")
    # Both are scored on the same users, so the paired difference is the difference of the means.
    difference = by_name[OURS]["posting_accuracy"] - popularity["posting_accuracy"]
    assert popularity["ours_minus_this_posting_accuracy"] == pytest.approx(difference, abs=1e-9)
    assert popularity["ours_minus_this_posting_accuracy_low"] <= difference <= popularity["ours_minus_this_posting_accuracy_high"]
    assert "ours_vs_this_posting_accuracy" not in by_name[OURS]
    # A second run after a "kill" finds every finished row and trains nothing.
    import zipp_assets.encoder.ablations as ablations

    monkeypatch.setattr(ablations, "train", lambda *a, **k: pytest.fail("a finished variant was trained again"))
    again = evaluate_all(graph_data, FAST, ours, {}, None, work_dir=tmp_path)
    assert [r["posting_accuracy"] for r in again] == [r["posting_accuracy"] for r in rows]
    saved = json.loads((tmp_path / "popularity.json").read_text())
    assert saved["row"]["model"] == "popularity" and saved["per_user"]["posting_accuracy"]
