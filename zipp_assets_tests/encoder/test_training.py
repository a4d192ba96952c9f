import dataclasses

import dgl
import pytest
import torch

from zipp_assets.encoder.data import FORWARD, REVERSE
from zipp_assets.encoder.evaluate import link_scores, popularity_scorer
from zipp_assets.encoder.inference import attention_by_user, top_k_attention, top_k_subreddits
from zipp_assets.encoder.train import (
    NoVisualProfilesError,
    TrainConfig,
    TrainingInterrupted,
    edge_dataloader,
    infer,
    known_link_keys,
    posting_accuracy,
    train,
)

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
    # Top-k by attention: the vectorised ranking equals a per-user sort done by hand.
    top = top_k_subreddits(graph, attention, 3)
    users, subreddits, weights = attention_by_user(graph, attention)
    for user in list(top)[:20]:
        mine = sorted(zip(weights[users == user].tolist(), subreddits[users == user].tolist()), reverse=True)[:3]
        assert [s for s, _ in top[user]] == [s for _, s in mine]
    flat = top_k_attention(graph, attention, 3)
    assert flat["rank"].max() == 3 and len(flat["rank"]) == sum(len(v) for v in top.values())
    # Our encoder beats popularity on the held-out links even after a short training.
    from zipp_assets.encoder.evaluate import embedding_scorer

    ours = link_scores(embedding_scorer(z["user"], z["subreddit"]), graph_data, graph_data.edges["test"])
    popular = link_scores(popularity_scorer(graph_data), graph_data, graph_data.edges["test"])
    assert ours.auc.mean() > popular.auc.mean()


@pytest.fixture
def one_thread():
    """DGL samples neighbours in parallel threads, each with its own random stream, so a run is
    repeatable to the bit only on one thread; elsewhere only up to the threads' scheduling."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_is_reproducible(graph_data, one_thread):
    config = dataclasses.replace(FAST, epochs=2, min_epochs=1, max_batches_per_epoch=4)
    a = train(graph_data, config)
    b = train(graph_data, config)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["val_posting_accuracy"] for h in a.history] == [h["val_posting_accuracy"] for h in b.history]
    other = train(graph_data, dataclasses.replace(config, seed=1))
    assert other.history[0]["loss"] != a.history[0]["loss"]


def test_validation_negatives_are_never_links_of_the_user(graph_data):
    """A random negative that happens to be one of the user's own subreddits is a false negative."""
    keys = known_link_keys(graph_data)
    pairs = graph_data.edges["val"]
    # Score every known link 1 and everything else 0: with only true non-members as negatives the
    # held-out link always wins.
    member = torch.zeros(graph_data.num_users, graph_data.num_subreddits)
    for split in ("train", "val", "test"):
        member[graph_data.edges[split][:, 0], graph_data.edges[split][:, 1]] = 1.0
    users = torch.cat([member, torch.ones(graph_data.num_users, 1)], dim=1)
    subreddits = torch.cat([torch.eye(graph_data.num_subreddits), torch.zeros(graph_data.num_subreddits, 1)], dim=1)
    assert posting_accuracy(users, subreddits, pairs, keys, graph_data.num_subreddits, negatives=50) == 1.0


def test_image_align_without_profiles_fails_loudly(graph_data):
    bare = dataclasses.replace(graph_data, has_profile=torch.zeros(graph_data.num_users, dtype=torch.bool))
    with pytest.raises(NoVisualProfilesError, match="use_image_align=False"):
        train(bare, dataclasses.replace(FAST, epochs=1))
    link_only = train(bare, dataclasses.replace(FAST, epochs=1, use_image_align=False))
    assert not link_only.image_align_active
    assert train(graph_data, dataclasses.replace(FAST, epochs=1, max_batches_per_epoch=2)).image_align_active


def test_a_killed_training_run_resumes_from_its_last_epoch(graph_data, tmp_path, one_thread):
    config = dataclasses.replace(FAST, epochs=4, patience=10, min_epochs=1, max_batches_per_epoch=4)
    whole = train(graph_data, config)
    said = []

    def die_after_epoch_1(message: str) -> None:
        said.append(message)
        if message.startswith("epoch 1:"):
            raise TrainingInterrupted("killed")

    with pytest.raises(TrainingInterrupted):
        train(graph_data, config, progress=die_after_epoch_1, resume_dir=tmp_path, fingerprint="run")
    resumed = train(graph_data, config, resume_dir=tmp_path, fingerprint="run")
    assert resumed.resumed_from_epoch == 1  # epoch 1 never finished: its state was not saved
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    # Epoch 0 is the killed run's, not trained again; the rest continue from its weights, optimizer
    # and sampler state, so the resumed run is the uninterrupted one.
    assert said[0].startswith(f"epoch 0: loss {resumed.history[0]['loss']:.4f}")
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in whole.history], rel=1e-6)
    assert resumed.best_epoch == whole.best_epoch
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    # Another configuration never picks up this run's state.
    other = train(graph_data, dataclasses.replace(config, epochs=1), resume_dir=tmp_path, fingerprint="other run")
    assert other.resumed_from_epoch is None


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpu_nccl_training(graph_data):  # runs only on a GPU machine
    from zipp_assets.encoder.distributed import train_distributed

    result = train_distributed(graph_data, dataclasses.replace(FAST, epochs=2, device="cuda"), world_size=2)
    assert len(result.history) == 2 and result.best_val_posting_accuracy > 0.5


@pytest.mark.slow
def test_two_process_data_parallel_training(graph_data):
    from zipp_assets.encoder.distributed import train_distributed

    result = train_distributed(graph_data, dataclasses.replace(FAST, epochs=2), world_size=2)
    assert len(result.history) == 2 and result.history[1]["link_loss"] < result.history[0]["link_loss"]
    assert 0 < result.best_val_posting_accuracy <= 1
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


@pytest.mark.parametrize(("scratch", "max_edges", "conv"),
                         [(False, 1 << 18, "gatv2"), (True, 50, "gatv2"), (True, 1 << 18, "sage")])
def test_streaming_inference_writes_what_in_memory_inference_computes(graph_data, encoder_lake, tmp_path, scratch,
                                                                     max_edges, conv):
    """The scalable path (last layer streamed to the lake, SAGE's hidden states memory-mapped between
    layers, GATv2's computed per group of users, GATv2 in groups of at most `max_edges` incoming edges: 50 cuts large subreddits into
    slices) gives the same embeddings, projections and attention top-k as `infer`."""
    import shutil

    from zipp_assets import lake
    from zipp_assets.encoder.inference import embed_users_to_lake

    lake_dir = tmp_path / "lake"
    shutil.copytree(encoder_lake, lake_dir)
    model = train(graph_data, dataclasses.replace(FAST, epochs=1, max_batches_per_epoch=2, conv=conv)).model
    graph = graph_data.message_graph()
    z, attention = infer(model, graph, graph_data)
    scratch_dir = tmp_path / "scratch" if scratch else None
    if scratch_dir:
        scratch_dir.mkdir()
    counts = embed_users_to_lake(model, graph, graph_data, lake_dir, batch_size=37, top_k=3, scratch_dir=scratch_dir,
                                 max_edges=max_edges)
    assert counts["users"] == graph_data.num_users
    if scratch_dir:
        # SAGE's hidden states go through the file; a 2-layer GATv2 computes them a group at a time
        assert bool(list(scratch_dir.glob("layer0_users.npy"))) == (conv == "sage")
    rows = sorted(lake.read_table(lake_dir, "user_embeddings").to_pylist(), key=lambda r: r["user_index"])
    assert [r["user_index"] for r in rows] == list(range(graph_data.num_users))
    streamed = torch.tensor([r["embedding"] for r in rows])
    assert torch.allclose(streamed, z["user"], atol=1e-5)
    projected = model.project_image(z["user"])
    assert torch.allclose(torch.tensor([r["visual_embedding"] for r in rows]), projected, atol=1e-5)
    top = lake.read_table(lake_dir, "user_top_subreddits").to_pylist()
    if attention is None:  # SAGE has no attention to rank by
        assert top == [] and counts["attention_rows"] == 0
        return
    expected = top_k_subreddits(graph, attention, 3)
    got: dict[int, list[int]] = {}
    for r in sorted(top, key=lambda r: (r["user_index"], r["rank"])):
        got.setdefault(r["user_index"], []).append(r["subreddit_index"])
    assert got == {u: [s for s, _ in ranked] for u, ranked in expected.items()}
    assert counts["attention_rows"] == len(top)


def test_training_masks_the_users_own_subreddits_in_every_batch(graph_data, monkeypatch):
    """The objective hands the loss each row's global user and the training links, so a sampled or
    in-batch subreddit the user is already in is never contrasted against it."""
    import zipp_assets.encoder.train as training
    from zipp_assets.encoder.losses import is_member

    seen = []
    real = training.link_infonce

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "link_infonce", spy)
    train(graph_data, dataclasses.replace(FAST, epochs=1, max_batches_per_epoch=2))
    assert seen and all(k.get("memberships") is not None and k.get("user_ids") is not None for k in seen)
    keys = seen[0]["memberships"]
    pairs = graph_data.edges["train"]
    assert torch.equal(keys, torch.sort(pairs[:, 0] * graph_data.num_subreddits + pairs[:, 1]).values)
    assert bool(is_member(keys, pairs[:5, 0], pairs[:5, 1], graph_data.num_subreddits).all())


@pytest.mark.parametrize("every", [None, 2])
def test_seed_edge_batches_are_dgls_dataloader_batches(graph_data, every):
    """The compact loader gives DGL's DataLoader's batches: the same seed edges in the same order and
    the same negatives. (The neighbours sampled for them are not compared: DGL's CPU sampler draws
    them from per-thread generators, so two passes of DGL's own loader differ there too.)"""
    import numpy as np

    from zipp_assets.encoder.train import SeedEdgeBatches

    graph = graph_data.message_graph()
    all_edges = torch.arange(graph.num_edges(FORWARD))
    # None: every edge, with no id tensor; every other edge: positions and ids differ
    seeds = all_edges if every is None else all_edges[::every]
    ours = edge_dataloader(graph, None if every is None else seeds, graph_data, dataclasses.replace(FAST, batch_size=100))
    assert isinstance(ours, SeedEdgeBatches) and len(ours) == -(-len(seeds) // 100)
    reference = dgl.dataloading.DataLoader(graph, {FORWARD: seeds}, ours.edge_sampler, batch_size=100, shuffle=True)

    def batches(loader):
        np.random.seed(3)
        ours.edge_sampler.negative_sampler.generator.manual_seed(5)
        return [(pos.edges[FORWARD].data[dgl.EID],
                 torch.stack([neg.nodes["user"].data[dgl.NID][neg.edges(etype=FORWARD)[0]],
                              neg.nodes["subreddit"].data[dgl.NID][neg.edges(etype=FORWARD)[1]]]))
                for _, pos, neg, _ in loader]

    expected, got = batches(reference), batches(ours)
    assert len(got) == len(expected) == len(ours)
    for (seed_ids, negatives), (seed_ids2, negatives2) in zip(expected, got):
        assert torch.equal(seed_ids, seed_ids2) and torch.equal(negatives, negatives2)
    order = torch.cat([seed_ids for seed_ids, _ in got])
    assert torch.equal(torch.sort(order).values, seeds) and not torch.equal(order, seeds)  # each seed once, shuffled
    again = torch.cat([pos.edges[FORWARD].data[dgl.EID] for _, pos, _, _ in ours])
    assert not torch.equal(order, again)  # the next pass draws a new order


def test_ddp_and_workers_keep_dgls_dataloader(graph_data):
    graph = graph_data.message_graph()
    seeds = torch.arange(graph.num_edges(FORWARD))
    loader = edge_dataloader(graph, seeds, graph_data, dataclasses.replace(FAST, num_workers=1))
    assert isinstance(loader, dgl.dataloading.DataLoader)


def test_a_negative_pool_bounds_a_batchs_negative_subreddits_and_keeps_each_edges_distribution():
    """With a pool, one batch's negatives come from `pool` shared draws (so at most that many distinct
    subreddits reach its blocks), and over many batches each edge's negatives still follow degree **
    power, as without a pool."""
    from zipp_assets.encoder.train import PopularityNegativeSampler

    degree = torch.tensor([1.0, 2, 4, 8, 16, 32, 64, 128, 3, 5, 7, 9, 11, 13, 50, 100])
    graph = dgl.heterograph({FORWARD: (torch.arange(200) % 40, torch.arange(200) % len(degree))},
                            num_nodes_dict={"user": 40, "subreddit": len(degree)})
    eids = torch.arange(200)
    expected = degree ** 0.75 / (degree ** 0.75).sum()
    counts = {}
    for pool in (None, 6):
        sampler = PopularityNegativeSampler(8, degree, 0.75, seed=1, pool=pool)
        counts[pool] = torch.zeros(len(degree))
        distinct = []
        for _ in range(2000):
            src, dst = sampler._generate(graph, eids, FORWARD)
            assert torch.equal(src, graph.find_edges(eids, etype=FORWARD)[0].repeat_interleave(8))
            distinct.append(len(torch.unique(dst)))
            counts[pool] += torch.bincount(dst, minlength=len(degree))
        if pool is None:
            assert min(distinct) > 12  # 1,600 independent draws reach nearly every one of the 16 subreddits
        else:
            assert max(distinct) <= pool
        frequency = counts[pool] / counts[pool].sum()
        assert (frequency - expected).abs().sum() / 2 < 0.03, pool  # total variation distance


def test_the_negative_pool_is_configured_through_the_asset_and_checked():
    from zipp_assets.encoder.assets import EncoderTrainingConfig
    from zipp_assets.encoder.train import popularity_negatives

    config = EncoderTrainingConfig(negative_pool=512).train_config()
    assert config.negative_pool == 512
    assert EncoderTrainingConfig().train_config().negative_pool is None
    for bad in ({"negative_pool": 0}, {"negatives": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dataclasses.replace(FAST, **bad)

    class Degrees:
        subreddit_degree = torch.ones(10)

    assert popularity_negatives(Degrees, dataclasses.replace(FAST, negative_pool=3)).pool == 3


def test_training_with_a_negative_pool_learns(graph_data):
    config = dataclasses.replace(FAST, hidden=32, batch_size=64, epochs=6, patience=5, negative_pool=16)
    result = train(graph_data, config)
    assert result.history[-1]["link_loss"] < result.history[0]["link_loss"]
    z, _ = infer(result.model, graph_data.message_graph(), graph_data)
    from zipp_assets.encoder.evaluate import embedding_scorer

    ours = link_scores(embedding_scorer(z["user"], z["subreddit"]), graph_data, graph_data.edges["test"])
    popular = link_scores(popularity_scorer(graph_data), graph_data, graph_data.edges["test"])
    assert ours.auc.mean() > popular.auc.mean()
