"""human_study_results through Dagster: materialized from the lake's votes; the sensor asks for it only
when votes arrived since it last asked."""

from datetime import datetime, timezone

import dagster as dg

from zipp_assets import lake
from zipp_assets.resources import ZippLake
from zipp_assets.studio.assets import RESULTS, human_study_results, human_study_votes_sensor, studio_assets
from zipp_assets.studio.storage import StudyStore

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record_votes(data_dir, sessions: dict[str, tuple[str, list[bool]]]) -> None:
    with StudyStore(data_dir / "lake", data_dir / "studio" / "journal") as store:
        for sid, (gender, wins) in sessions.items():
            store.save_session({"session_id": sid, "created_utc": NOW, "updated_utc": NOW, "n_prompts": len(wins),
                                "age_band": "25-34", "gender": gender, "country": "Chile"})
            for i, won in enumerate(wins):
                store.add_vote({"vote_id": f"{sid}-{i}", "session_id": sid, "comparison_index": i, "zipp_won": won,
                                "comparison": "zipp_0shot vs generic", "time_taken_ms": 900, "voted_utc": NOW,
                                "shown_utc": NOW})


def materialize(data_dir, instance=None):
    return dg.materialize(studio_assets, resources={"lake": ZippLake(data_dir=str(data_dir))},
                          selection=[RESULTS], instance=instance or dg.DagsterInstance.ephemeral())


def test_results_asset_and_sensor(tmp_path):
    data_dir = tmp_path / "data"
    resources = {"lake": ZippLake(data_dir=str(data_dir))}
    with dg.build_sensor_context(resources=resources) as context:
        assert isinstance(human_study_votes_sensor(context), dg.SkipReason)  # no votes: nothing to do
    empty = materialize(data_dir)
    assert empty.success and lake.read_table(data_dir / "lake", RESULTS).num_rows == 0
    record_votes(data_dir, {"a" * 32: ("female", [True] * 8 + [False] * 2), "b" * 32: ("male", [True, False, False])})
    with dg.build_sensor_context(resources=resources) as context:
        request = human_study_votes_sensor(context)
        assert isinstance(request, dg.RunRequest) and context.cursor == "13"
        assert isinstance(human_study_votes_sensor(context), dg.SkipReason)  # the same 13 votes again
    result = materialize(data_dir)
    metadata = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert metadata["votes"].value == 13 and metadata["participants"].value == 2
    assert metadata["win_rate"].value == round(9 / 13, 4) and "gender" in metadata["by_demographics"].value
    assert "human_study_results" in metadata["lake_versions_written"].value and metadata["lake_versions_read"].value
    rows = {(r["breakdown"], r["level"]): r for r in lake.read_table(data_dir / "lake", RESULTS).to_pylist()}
    assert rows[("gender", "female")]["zipp_wins"] == 8 and rows[("gender", "male")]["votes"] == 3
    assert 0 < rows[("all", "all")]["ci_low"] < 9 / 13 < rows[("all", "all")]["ci_high"] < 1
    assert human_study_results.key.path == [RESULTS]
