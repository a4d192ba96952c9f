import dagster as dg

from zipp_assets.encoder.assets import encoder_assets
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.resources import ZippLake

SMALL = {"hidden": 16, "heads": 2, "fanouts": [5, 5], "batch_size": 64, "epochs": 2, "patience": 1, "min_epochs": 1, "negatives": 4}


def test_encoder_assets_train_encode_and_evaluate(encoder_lake, tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")  # the key the encoder_lake was built with
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "lake").symlink_to(encoder_lake)
    (data_dir / "truth").symlink_to(tiny_world / "truth")
    resources = {"lake": ZippLake(data_dir=str(data_dir)), "image_encoder": ImageEncoderResource()}
    run_config = {"ops": {"persona_encoder": {"config": SMALL}}}  # the evaluation reuses the checkpoint's config
    result = dg.materialize(encoder_assets, resources=resources, run_config=run_config,
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    metadata = {m.asset_key.to_user_string(): m.metadata for m in
                (e.event_specific_data.materialization for e in result.get_asset_materialization_events())}
    assert (data_dir / "models" / "persona_encoder" / "LATEST").is_file()
    assert metadata["persona_encoder"]["epochs_run"].value == 2
    assert metadata["persona_encoder"]["image_align_active"].value is True
    assert metadata["user_embeddings"]["data_version_matches"].value is True
    # The checkpoint's data version is the Delta versions it was trained on, recorded in the checkpoint and
    # in the metadata; every materialization names the versions it read and wrote.
    trained_on = metadata["persona_encoder"]["trained_on_table_versions"].value
    assert set(trained_on) == {"users", "subreddits", "graph_edges", "user_visual_profiles"}
    assert metadata["persona_encoder"]["lake_versions_read"].value.keys() == trained_on.keys()
    assert set(metadata["user_embeddings"]["lake_versions_written"].value) == {"user_embeddings"}
    assert set(metadata["encoder_evaluation"]["lake_versions_written"].value) == {"encoder_evaluation"}
    assert not list((data_dir / "models" / "persona_encoder" / ".training").glob("*"))  # resume state cleared
    assert "data:image/png;base64," in metadata["persona_encoder"]["curves"].value
    assert metadata["user_embeddings"]["users"].value > 50
    table = metadata["encoder_evaluation"]["table"].value
    for row in ("GAT + ImageAlign (ours)", "GAT without ImageAlign", "GAT without edge features", "GraphSAGE + ImageAlign",
                "GraphSAGE", "popularity", "TF-IDF over subreddits", "unseen users (inductive)"):
        assert row in table
    assert metadata["encoder_evaluation"]["planted_truth"].value is True
    # Every row shows its interval, and each non-ours row says where ours stands against it.
    assert table.count(" [") >= 8 and any(v in table for v in ("(ahead)", "(tied)", "(behind)"))
    assert "TF-IDF, unseen users" in table
