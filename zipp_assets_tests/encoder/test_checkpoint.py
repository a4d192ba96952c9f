import dataclasses
import json

import pytest
import torch

from zipp_assets.encoder.checkpoint import (
    DataVersionMismatch,
    check_data_version,
    data_of,
    data_version,
    encoder_for_graph,
    latest_checkpoint,
    load_encoder,
    save_checkpoint,
)
from zipp_assets.encoder.data import load_graph_data
from zipp_assets.encoder.train import TrainConfig, config_dict, infer, train
from zipp_assets.imaging.encoders import PixelStatsEncoder

FAST = TrainConfig(hidden=16, heads=2, fanouts=(5, 5), batch_size=256, epochs=1, patience=1, min_epochs=1, negatives=4,
                   max_batches_per_epoch=3)


@pytest.fixture(scope="module")
def saved(graph_data, encoder_lake, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    result = train(graph_data, FAST)
    folder = save_checkpoint(models, result.model, config_dict(FAST), {"m": 1}, data_of(graph_data, "x"),
                             graph_data.subreddit_names, graph_data.normalization, PixelStatsEncoder.name,
                             graph_data.content_versions)
    return models, folder, result


def test_a_checkpoint_rebuilds_itself_without_the_graph(saved):
    models, folder, result = saved
    assert latest_checkpoint(models) == folder
    checkpoint = load_encoder(folder)  # no GraphData anywhere
    for (name, a), b in zip(result.model.state_dict().items(), checkpoint.model.state_dict().values()):
        assert torch.equal(a, b), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == result.model.config and config["image_align_active"] is True
    assert config["model"]["visual_dim"] > 0 and config["training"]["hidden"] == 16
    assert {"model.safetensors", "config.json", "normalization.json", "subreddits.json", "metrics.json",
            "data_version.json"} <= {p.name for p in folder.iterdir()}
    with pytest.raises(FileNotFoundError, match="persona_encoder"):
        latest_checkpoint(models / "empty")


def test_new_users_are_embedded_with_the_training_normalisation(saved, graph_data, encoder_lake):
    _, folder, result = saved
    checkpoint = load_encoder(folder)
    assert checkpoint.normalization == graph_data.normalization
    again = load_graph_data(encoder_lake, PixelStatsEncoder.name, normalization=checkpoint.normalization)
    assert torch.equal(again.user_features, graph_data.user_features)
    # A later graph whose activity statistics differ is standardised with the saved statistics, not
    # with its own: the same raw activity maps to the same input.
    shifted = dataclasses.replace(checkpoint.normalization,
                                  user_mean=[m + 1.0 for m in checkpoint.normalization.user_mean])
    moved = load_graph_data(encoder_lake, PixelStatsEncoder.name, normalization=shifted)
    assert not torch.allclose(moved.user_features, graph_data.user_features)
    z_checkpoint, _ = infer(encoder_for_graph(checkpoint, graph_data.subreddit_names), graph_data.message_graph(), again)
    z_trained, _ = infer(result.model, graph_data.message_graph(), graph_data)
    assert torch.allclose(z_checkpoint["user"], z_trained["user"], atol=1e-5)


def test_subreddits_are_remapped_by_name(saved, graph_data):
    _, folder, result = saved
    checkpoint = load_encoder(folder)
    names = ["000newsub", *graph_data.subreddit_names]  # months later a new subreddit sorts first
    moved = encoder_for_graph(checkpoint, names)
    old = result.model.subreddit_in.weight
    assert torch.equal(moved.subreddit_in.weight[1:], old)
    assert torch.allclose(moved.subreddit_in.weight[0], old.mean(0))


def test_embedding_on_other_data_is_refused_or_warned(saved, caplog, graph_data):
    _, folder, _ = saved
    checkpoint = load_encoder(folder)
    assert checkpoint.table_versions == graph_data.content_versions
    assert set(checkpoint.table_versions) == {"users", "subreddits", "graph_edges", "user_visual_profiles"}
    assert check_data_version(checkpoint, checkpoint.data_version) is None
    moved = {**checkpoint.table_versions, "graph_edges": checkpoint.table_versions["graph_edges"] + 3}
    with pytest.raises(DataVersionMismatch, match=r"graph_edges \d+ -> \d+"):
        check_data_version(checkpoint, "fedcba9876543210", current_tables=moved)
    with pytest.raises(DataVersionMismatch, match=checkpoint.data_version) as error:
        check_data_version(checkpoint, "0123456789abcdef")
    assert "0123456789abcdef" in str(error.value)
    message = check_data_version(checkpoint, "0123456789abcdef", on_mismatch="warn")
    assert "0123456789abcdef" in message and "0123456789abcdef" in caplog.text
    with pytest.raises(ValueError, match="on_mismatch"):
        check_data_version(checkpoint, "x", on_mismatch="ignore")


def test_a_checkpoint_without_model_arguments_is_refused(saved, tmp_path):
    _, folder, _ = saved
    old = tmp_path / "old"
    old.mkdir()
    for path in folder.iterdir():
        (old / path.name).write_bytes(path.read_bytes())
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps(config["training"]))
    with pytest.raises(ValueError, match="retrain"):
        load_encoder(old)


def test_the_data_version_follows_new_commits_of_the_graph_and_profiles_not_vacuum(encoder_lake, tmp_path):
    import shutil

    from zipp_assets import lake
    from zipp_assets.graph.visual import PROFILES, encoder_slug

    copy = tmp_path / "lake"
    shutil.copytree(encoder_lake, copy)
    before = data_version(copy, "x")
    assert data_version(copy, "y") != before
    assert data_version(copy, "x") == data_of(load_graph_data(copy, PixelStatsEncoder.name), "x")
    lake.vacuum(copy, retention_hours=0, longest_run_hours=0)  # two commits of its own, no rows changed
    assert data_version(copy, "x") == before
    partition = {"encoder": encoder_slug(PixelStatsEncoder.name)}
    lake.write_partition(copy, PROFILES, lake.read_table(copy, PROFILES, [partition]), partition,
                         build_id=lake.open_table(copy, "users").build_id())  # the same rows, a new commit
    assert data_version(copy, "x") != before


def test_profiles_of_another_graph_build_are_refused(encoder_lake, tmp_path):
    import shutil

    from zipp_assets import lake
    from zipp_assets.graph.visual import PROFILES, encoder_slug

    copy = tmp_path / "lake"
    shutil.copytree(encoder_lake, copy)
    partition = {"encoder": encoder_slug(PixelStatsEncoder.name)}
    lake.write_partition(copy, PROFILES, lake.read_table(copy, PROFILES, [partition]), partition)  # a new build id
    with pytest.raises(lake.BuildMismatch, match="user_visual_profiles .* has build .* but users"):
        load_graph_data(copy, PixelStatsEncoder.name)
