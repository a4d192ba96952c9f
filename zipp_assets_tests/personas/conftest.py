import shutil

import pytest


@pytest.fixture(scope="session")
def embedded_lake(encoder_lake, graph_data, tmp_path_factory):
    import dataclasses

    from zipp_assets.encoder.inference import embed_users_to_lake
    from zipp_assets.encoder.train import TrainConfig, train

    lake_dir = tmp_path_factory.mktemp("persona_lake") / "lake"
    shutil.copytree(encoder_lake, lake_dir)
    config = TrainConfig(hidden=16, heads=2, fanouts=(5, 5), batch_size=256, epochs=1, negatives=4, max_batches_per_epoch=2)
    model = train(graph_data, dataclasses.replace(config, min_epochs=1)).model
    embed_users_to_lake(model, graph_data.message_graph(), graph_data, lake_dir, top_k=5)
    return lake_dir
