"""Re-mining as the automation runs it (personas/automation.py): one more month arrives, only changed
users are re-verbalized."""

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from zipp_assets import lake
from zipp_assets.encoder.assets import REMINING_RUN_TAG, encoder_assets
from zipp_assets.graph.assets import graph_assets
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.llm.resources import LLMResource
from zipp_assets.personas.assets import persona_assets
from zipp_assets.personas.evidence import EVIDENCE
from zipp_assets.personas.shards import SHARD_KEYS
from zipp_assets.reddit.assets import reddit_assets
from zipp_assets.resources import ZippLake
from zipp_assets.simworld.world import WorldConfig, generate_world
from zipp_assets_tests.conftest import write_dump

SMALL = {"hidden": 16, "heads": 2, "fanouts": [5, 5], "batch_size": 128, "epochs": 2, "patience": 1, "min_epochs": 1,
         "negatives": 4}


def _metadata(result, key):
    return [e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == key][0]


@pytest.mark.slow
def test_a_new_month_re_verbalizes_only_users_whose_evidence_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_PSEUDONYM_KEY", "test-key")
    data_dir = tmp_path / "data"
    generate_world(WorldConfig(users=120, months=("2019-01", "2019-02"), seed=3), data_dir / "raw", data_dir / "truth")
    # The new month: in the synthetic world nearly everyone posts every month; on Reddit most users
    # do not. So March is written here with a handful of the world's people only.
    truth = pq.read_table(data_dir / "truth" / "users.parquet").to_pylist()[:8]
    start = 1551398400  # 2019-03-01
    comments = [json.dumps({"id": f"zz{i}", "author": t["author"], "author_fullname": t["author_fullname"],
                            "subreddit": "pics", "subreddit_id": "t5_2qh0u", "created_utc": start + 3600 * i,
                            "body": f"I work as a welder now, comment {i}.", "score": 5 + i, "link_id": "t3_x",
                            "parent_id": "t3_x"}).encode() for i, t in enumerate(truth) for _ in range(3)]
    posts = [json.dumps({"id": "zzp", "author": truth[0]["author"], "author_fullname": truth[0]["author_fullname"],
                         "subreddit": "pics", "subreddit_id": "t5_2qh0u", "created_utc": start, "title": "hello",
                         "over_18": False}).encode()]
    write_dump(data_dir / "raw" / "reddit" / "RC_2019-03.zst", [c.replace(b'"zz', f'"zz{k}'.encode(), 1)
                                                                 for k, c in enumerate(comments)])
    write_dump(data_dir / "raw" / "reddit" / "RS_2019-03.zst", posts)
    # A tiny world's few malformed lines are a larger share than real months' (the check's bound is for those).
    resources = {"lake": ZippLake(data_dir=str(data_dir), quarantine_max_fraction=0.01),
                 "image_encoder": ImageEncoderResource(), "llm": LLMResource()}
    instance = dg.DagsterInstance.ephemeral()
    persona_encoder, encode_users, _evaluation = encoder_assets
    evidence, personas, _fidelity, drift = persona_assets

    def mine(months, first: bool):
        for month in months:
            assert dg.materialize(reddit_assets, resources=resources, partition_key=month, instance=instance).success
        if first:
            run_config = {"ops": {"persona_encoder": {"config": SMALL},
                                  "encode_users": {"config": {"on_data_version_mismatch": "warn"}}}}
            refresh = [*graph_assets, persona_encoder, encode_users]
            assert dg.materialize(refresh, resources=resources, run_config=run_config, instance=instance).success
        else:  # as the persona_remining sensor launches it: its tag lets the older checkpoint embed the new month
            assert dg.materialize([*graph_assets, encode_users], resources=resources, instance=instance,
                                  tags={REMINING_RUN_TAG: "true"}).success
        results = [dg.materialize([evidence, personas], resources=resources, partition_key=s, instance=instance)
                   for s in SHARD_KEYS]
        assert all(r.success for r in results)
        return results

    mine(["2019-01", "2019-02"], first=True)
    lake_dir = data_dir / "lake"
    before = {r["user_id"]: r["evidence_hash"] for r in lake.read_table(lake_dir, EVIDENCE).to_pylist()}

    results = mine(["2019-03"], first=False)  # what the re-mining automation does when a month lands
    after = {r["user_id"]: r["evidence_hash"] for r in lake.read_table(lake_dir, EVIDENCE).to_pylist()}
    changed = {u for u in after if before.get(u) != after[u]}
    sent = sum(_metadata(r, "personas")["sent_to_llm"].value for r in results)
    reused = sum(_metadata(r, "personas")["unchanged_reused"].value for r in results)
    assert sent == len(changed) and reused == len(after) - len(changed)
    # The March posters, and users whose attention moved past a rounding step (new edges and a later
    # "newest" timestamp shift every user's edge features a little); most users' evidence stands still.
    assert 8 <= len(changed) < len(after) / 2
    summary = dg.materialize([drift], resources=resources, instance=instance)
    metadata = _metadata(summary, "persona_drift")
    assert metadata["reminings"].value == 2  # the first mining and the re-mining, each over every shard
    latest = lake.read_table(lake_dir, "persona_drift").to_pylist()[-1]
    assert latest["reverbalized"] == len(changed) and latest["new"] == len(set(after) - set(before))
    assert latest["changed"] == metadata["latest_changed"].value and 0 <= latest["changed_share"] <= 1

