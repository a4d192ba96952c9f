import dagster as dg

from zipp_assets import lake
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.personas.assets import persona_assets
from zipp_assets.personas.evidence import EVIDENCE
from zipp_assets.personas.shards import SHARD_KEYS
from zipp_assets.resources import ZippLake


def test_evidence_asset_writes_its_shard_and_reports_tokens(embedded_lake, tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")  # the key the lake was built with
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "lake").symlink_to(embedded_lake)
    resources = {"lake": ZippLake(data_dir=str(data_dir)), "image_encoder": ImageEncoderResource()}
    result = dg.materialize(persona_assets, resources=resources, partition_key=SHARD_KEYS[3],
                            run_config={"ops": {EVIDENCE: {"config": {"token_budget": 512}}}},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    metadata = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    rows = lake.read_table(embedded_lake, EVIDENCE, [{"shard": SHARD_KEYS[3]}]).to_pylist()
    assert metadata["users"].value == len(rows) > 0 and metadata["shards"].value == 1
    assert metadata["tokens_max"].value <= 512 and metadata["tokens_are_approximate"].value is True
    assert "approximate" in metadata["token_counter"].value
    assert "pixel-stats" in metadata["visual_descriptor_source"].value
    assert rows[0]["user_id"] in metadata["sample"].value
