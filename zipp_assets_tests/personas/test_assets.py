import json

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
    from zipp_assets.llm.resources import LLMResource

    resources = {"lake": ZippLake(data_dir=str(data_dir)), "image_encoder": ImageEncoderResource(), "llm": LLMResource()}
    result = dg.materialize(persona_assets[:1], resources=resources, partition_key=SHARD_KEYS[3],
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
    # The Delta versions it read (one encoding run's attention, one graph build) and wrote.
    assert {"users", "subreddits", "graph_edges", "user_embeddings", "user_top_subreddits",
            "reddit_comments"} <= set(metadata["lake_versions_read"].value)
    assert metadata["lake_versions_written"].value == {EVIDENCE: lake.open_table(embedded_lake, EVIDENCE).version}


def test_personas_and_fidelity_assets_with_the_template_backend(embedded_lake, tiny_world, tmp_path, monkeypatch):
    from zipp_assets.llm.resources import LLMResource
    from zipp_assets.personas.__main__ import main as personas_cli
    from zipp_assets.personas.verbalize import PERSONAS

    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")
    data_dir = tmp_path / "data"
    (data_dir / "lake").mkdir(parents=True)
    import shutil

    shutil.copytree(embedded_lake, data_dir / "lake", dirs_exist_ok=True)
    (data_dir / "truth").symlink_to(tiny_world / "truth")
    resources = {"lake": ZippLake(data_dir=str(data_dir)), "image_encoder": ImageEncoderResource(), "llm": LLMResource()}
    instance = dg.DagsterInstance.ephemeral()
    evidence, personas, fidelity, _drift = persona_assets
    for shard in SHARD_KEYS:
        assert dg.materialize([evidence, personas], resources=resources, partition_key=shard, instance=instance).success
    result = dg.materialize([fidelity], resources=resources, instance=instance)
    assert result.success
    table = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata["table"].value
    # Every attribute gets a row and a verdict; which verdict is a measurement, not asserted (without the
    # world's words the template backend is informative on little: docs/phrasebooks.md).
    from zipp_assets.personas.fidelity import ATTRIBUTES

    assert all(f"| {a} |" in table for a in ATTRIBUTES) and table.count("the control") + table.count("informative") >= 8
    rows = lake.read_table(data_dir / "lake", PERSONAS).to_pylist()
    assert len(rows) == lake.read_table(data_dir / "lake", "users").num_rows and all(r["ok"] for r in rows)
    assert all(r["model"].startswith("template:") for r in rows)  # named as a template everywhere
    # An edit from the command line survives re-mining and is visible in the next materialization.
    monkeypatch.setenv("ZIPP_DATA_DIR", str(data_dir))
    user = rows[0]["user_id"]
    assert personas_cli(["edit", "--user", user, "--field", "locale", "--value", '"Reykjavik"', "--editor", "t"]) == 0
    assert personas_cli(["edit", "--user", user, "--field", "nope", "--value", "1", "--editor", "t"]) == 2
    from zipp_assets.personas.shards import shard_of

    again = dg.materialize([evidence, personas], resources=resources, partition_key=shard_of(user), instance=instance)
    metadata = [e.event_specific_data.materialization.metadata for e in again.get_asset_materialization_events()
                if e.asset_key.to_user_string() == PERSONAS][0]
    assert metadata["sent_to_llm"].value == 0 and metadata["unchanged_reused"].value > 0  # nothing changed
    assert user in metadata["sample_personas"].value and "Reykjavik" in metadata["sample_personas"].value
    checks = {c.check_name: c for c in again.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "schema_valid_rate": True, "no_identifiers": True, "no_instruction_like_comments": True, "claims_grounded": True}
    assert checks["claims_grounded"].metadata["checked"].value is False  # no encoder: says it did not run
    assert "make models" in checks["claims_grounded"].metadata["why_not"].value
    # With a sentence encoder where `make models` puts one (a tiny random BERT here), the check reads the
    # shard's personas and their evidence.
    from zipp_assets.llm.local_models import CHECKSUMS, MINILM_FOLDER, folder_checksums
    from zipp_assets_tests.personas.test_grounding import _tiny_bert

    folder = _tiny_bert(data_dir / "models" / MINILM_FOLDER)
    (folder / CHECKSUMS).write_text(json.dumps({"source": "test", "files": folder_checksums(folder)}))
    grounded = dg.materialize([personas], resources=resources, partition_key=shard_of(user), instance=instance)
    [check] = [c for c in grounded.get_asset_check_evaluations() if c.check_name == "claims_grounded"]
    assert check.metadata["checked"].value is True and check.metadata["encoder"].value == MINILM_FOLDER
    assert check.metadata["personas_checked"].value == metadata["users"].value > 0
    assert "| profession |" in check.metadata["claims_by_support"].value
    assert check.passed == (check.metadata["professions_flagged"].value == 0)
    (folder / "config.json").write_text("{}")  # a damaged encoder folder fails the step rather than guessing
    assert not dg.materialize([personas], resources=resources, partition_key=shard_of(user), instance=instance,
                              raise_on_error=False).success
