import dataclasses

import dgl
import pytest
import torch

from zipp_assets.encoder.checkpoint import data_version, latest_checkpoint, load_checkpoint, save_checkpoint
from zipp_assets.encoder.data import FORWARD, REVERSE
from zipp_assets.encoder.evaluate import link_metrics, popularity_scorer, tfidf_scorer, visual_retrieval
from zipp_assets.encoder.inference import attention_by_user, top_k_subreddits
from zipp_assets.encoder.train import TrainConfig, config_dict, edge_dataloader, infer, train

FAST = TrainConfig(hidden=16, heads=2, fanouts=(5, 5), batch_size=256, epochs=3, patience=2, min_epochs=1, negatives=4)


def _pairs(graph, etype):
    a, b = graph.edges(etype=etype)
    return set(zip(a.tolist(), b.tolist()))


def test_held_out_edges_never_carry_messages(graph_data):
    graph = graph_data.message_graph()
    forward = _pairs(graph, FORWARD)
    reverse = {(u, s) for s, u in _pairs(graph, REVERSE)}
    held = {tuple(p) for split in ("val", "test") for p in graph_data.edges[split].tolist()}
    assert held and not (held & forward) and not (held & reverse)
    assert forward == {tuple(p) for p in graph_data.edges["train"].tolist()}
    # Within a batch, the seed edges themselves (and their reverses) are cut from the sampled blocks.
    loader = edge_dataloader(graph, torch.arange(graph.num_edges(FORWARD)), graph_data, dataclasses.replace(FAST, fanouts=(50, 50)))
    for _, pos_graph, _, blocks in loader:
        users = pos_graph.nodes["user"].data[dgl.NID]
        subreddits = pos_graph.nodes["subreddit"].data[dgl.NID]
        u, s = pos_graph.edges(etype=FORWARD)
        seeds = set(zip(users[u].tolist(), subreddits[s].tolist()))
        for block in blocks:
            src_u = block.srcnodes["user"].data[dgl.NID]
            dst_s = block.dstnodes["subreddit"].data[dgl.NID]
            fu, fs = block.edges(etype=FORWARD)
            assert not seeds & set(zip(src_u[fu].tolist(), dst_s[fs].tolist()))
            src_s = block.srcnodes["subreddit"].data[dgl.NID]
            dst_u = block.dstnodes["user"].data[dgl.NID]
            rs, ru = block.edges(etype=REVERSE)
            assert not seeds & set(zip(dst_u[ru].tolist(), src_s[rs].tolist()))
        break


def test_training_learns_and_unseen_users_get_embeddings_from_their_edges(graph_data):
    test_users = torch.unique(graph_data.edges["test"][:, 0])
    unseen = test_users[: max(3, len(test_users) // 10)]
    result = train(graph_data, dataclasses.replace(FAST, hidden=32, batch_size=64, epochs=15, patience=5), exclude_users=unseen)
    assert len(result.history) >= 2 and result.best_epoch >= 0
    assert result.history[-1]["link_loss"] < result.history[0]["link_loss"] + 1e-3
    graph = graph_data.message_graph()
    z, attention = infer(result.model, graph, graph_data)
    assert torch.isfinite(z["user"]).all() and z["user"][unseen].norm(dim=1).min() > 0
    # The embedding comes from the edges: change an unseen user's edges and its embedding moves.
    user = int(unseen[0])
    pairs = graph_data.edges["train"].clone()
    mine = pairs[:, 0] == user
    pairs[mine, 1] = (pairs[mine, 1] + 7) % graph_data.num_subreddits
    other = dataclasses.replace(graph_data, edges={**graph_data.edges, "train": pairs})
    z2, _ = infer(result.model, other.message_graph(), other)
    assert not torch.allclose(z["user"][user], z2["user"][user])
    # Attention over each user's subreddits sums to 1.
    users, _, weights = attention_by_user(graph, attention)
    sums = torch.zeros(graph_data.num_users).index_add_(0, users, weights)
    has_edges = torch.bincount(users, minlength=graph_data.num_users) > 0
    assert torch.allclose(sums[has_edges], torch.ones(int(has_edges.sum())), atol=1e-5)
    top = top_k_subreddits(graph, attention, 3)
    assert all(len(v) <= 3 and all(a[1] >= b[1] for a, b in zip(v, v[1:])) for v in top.values())
    # Our encoder beats popularity on the held-out links even after a short training.
    from zipp_assets.encoder.evaluate import embedding_scorer

    ours = link_metrics(embedding_scorer(z["user"], z["subreddit"]), graph_data, graph_data.edges["test"])
    popular = link_metrics(popularity_scorer(graph_data), graph_data, graph_data.edges["test"])
    assert ours.posting_accuracy > popular.posting_accuracy


def test_training_is_reproducible(graph_data):
    config = dataclasses.replace(FAST, epochs=1)
    a = train(graph_data, config)
    b = train(graph_data, config)
    # Same seed, same batches and negatives; only the order of parallel float sums may differ.
    assert a.history[0]["loss"] == pytest.approx(b.history[0]["loss"], rel=1e-3)
    assert a.history[0]["val_posting_accuracy"] == pytest.approx(b.history[0]["val_posting_accuracy"], abs=0.02)


def test_metrics_on_oracle_and_baselines(graph_data):
    test = graph_data.edges["test"]
    truth = torch.zeros(graph_data.num_users, graph_data.num_subreddits)
    truth[test[:, 0], test[:, 1]] = 10.0
    oracle = link_metrics(lambda idx: truth[idx], graph_data, test)
    assert oracle.posting_accuracy == 1.0 and oracle.mrr == pytest.approx(1.0, abs=0.05) and oracle.recall_at_10 == 1.0
    tfidf = link_metrics(tfidf_scorer(graph_data), graph_data, test)
    popular = link_metrics(popularity_scorer(graph_data), graph_data, test)
    assert 0.5 < popular.posting_accuracy < tfidf.posting_accuracy <= 1.0
    identity = {u: graph_data.profiles[u].numpy() for u in range(graph_data.num_users) if graph_data.has_profile[u]}
    perfect = visual_retrieval(graph_data.profiles, graph_data, identity)
    assert perfect["visual_recall@1"] == 1.0
    assert link_metrics(lambda idx: truth[idx], graph_data, test[:0]).edges == 0


def test_checkpoint_roundtrip(graph_data, encoder_lake, tmp_path):
    result = train(graph_data, dataclasses.replace(FAST, epochs=1))
    folder = save_checkpoint(tmp_path, result.model, config_dict(FAST) | {"image_encoder": "x"}, {"m": 1},
                             data_version(encoder_lake, "x"), graph_data.subreddit_names)
    assert latest_checkpoint(tmp_path) == folder
    model, config = load_checkpoint(folder, graph_data)
    for (name, a), b in zip(result.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert {"model.safetensors", "config.json", "metrics.json", "data_version.json"} <= {p.name for p in folder.iterdir()}
    with pytest.raises(FileNotFoundError, match="persona_encoder"):
        latest_checkpoint(tmp_path / "empty")
    # Months later the graph has a new subreddit that sorts first: every index shifts by one.
    names = ["000newsub", *graph_data.subreddit_names]
    grown = dataclasses.replace(graph_data, num_subreddits=len(names), subreddit_names=names,
                                subreddit_degree=torch.cat([torch.zeros(1), graph_data.subreddit_degree]),
                                edges={k: v + torch.tensor([0, 1]) for k, v in graph_data.edges.items()})
    moved, _ = load_checkpoint(folder, grown)
    old = result.model.subreddit_in.weight
    assert torch.equal(moved.subreddit_in.weight[1:], old)
    assert torch.allclose(moved.subreddit_in.weight[0], old.mean(0))


@pytest.mark.slow
def test_two_process_data_parallel_training(graph_data):
    from zipp_assets.encoder.distributed import train_distributed

    result = train_distributed(graph_data, dataclasses.replace(FAST, epochs=2), world_size=2)
    assert len(result.history) == 2 and result.best_val_posting_accuracy > 0.5
    z, _ = infer(result.model, graph_data.message_graph(), graph_data)
    assert torch.isfinite(z["user"]).all()


def test_chunked_inference_matches_one_chunk(graph_data):
    result = train(graph_data, dataclasses.replace(FAST, epochs=1))
    graph = graph_data.message_graph()
    whole, attention_whole = infer(result.model, graph, graph_data, batch_size=100_000)
    chunked, attention_chunked = infer(result.model, graph, graph_data, batch_size=37)
    for nt in ("user", "subreddit"):
        assert torch.allclose(whole[nt], chunked[nt], atol=1e-5)
    assert torch.allclose(attention_whole, attention_chunked, atol=1e-6)
