"""The Dagster wiring, run in process on the tiny world."""

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from zipp_assets import lake
from zipp_assets.definitions import defs
from zipp_assets.reddit.assets import reddit_assets
from zipp_assets.reddit.sensors import SETTLE_SECONDS, months_to_request, new_reddit_dumps, scan_dumps
from zipp_assets.resources import ZippLake


@pytest.fixture
def data_dir(tiny_world, tmp_path) -> Path:
    (tmp_path / "raw").symlink_to(tiny_world / "raw")
    return tmp_path


def _materialize(data_dir, month, max_fraction=0.01, selection=None):
    return dg.materialize(
        reddit_assets,
        partition_key=month,
        resources={"lake": ZippLake(data_dir=str(data_dir), quarantine_max_fraction=max_fraction)},
        instance=dg.DagsterInstance.ephemeral(),
        selection=selection,
        raise_on_error=False,
    )


def test_definitions_load_with_monthly_partitions_from_2005():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= {"users", "subreddits", "graph_edges"}
    assert {k for k in keys if k.startswith("reddit_")} == {"reddit_comments", "reddit_comments_quarantine", "reddit_submissions", "reddit_submissions_quarantine",
                    "reddit_image_posts", "reddit_user_subreddit_edges"}
    partitions = graph.get(dg.AssetKey("reddit_comments")).partitions_def.get_partition_keys()
    assert partitions[0] == "2005-06" and len(partitions) > 240


def test_month_materializes_with_metadata_and_passing_checks(data_dir):
    result = _materialize(data_dir, "2018-01")
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {(c.asset_key.to_user_string(), c.check_name) for c in checks} >= {
        ("reddit_comments", "columns_and_types"), ("reddit_comments", "unique_ids"), ("reddit_comments", "quarantine_fraction"),
        ("reddit_user_subreddit_edges", "unique_user_subreddit"),
    }
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    by_key = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()
              for m in [m.event_specific_data.materialization]}
    comments = by_key["reddit_comments"].metadata
    assert comments["rows_in"].value == comments["rows_out"].value + comments["quarantined"].value > 500
    assert comments["rows_per_second"].value > 0 and comments["seconds"].value > 0
    assert "data:image/png;base64," in by_key["reddit_user_subreddit_edges"].metadata["degree_plot"].value
    assert lake.partition_exists(data_dir / "lake", "reddit_user_subreddit_edges", {"month": "2018-01"})
    # Each materialization names the Delta versions it wrote and read.
    edges = by_key["reddit_user_subreddit_edges"].metadata
    assert edges["lake_versions_written"].value == {"reddit_user_subreddit_edges": lake.open_table(
        data_dir / "lake", "reddit_user_subreddit_edges").version}
    assert set(edges["lake_versions_read"].value) == {"reddit_comments", "reddit_comments_quarantine",
                                                      "reddit_submissions", "reddit_submissions_quarantine"}


def test_quarantine_over_threshold_blocks_downstream(data_dir):
    result = _materialize(data_dir, "2017-12", max_fraction=0.0)
    fraction = [c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine_fraction"]
    assert fraction and not all(c.passed for c in fraction)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "reddit_user_subreddit_edges" not in materialized


def test_missing_month_fails_with_the_file_names(data_dir):
    result = _materialize(data_dir, "2016-03", selection=["reddit_comments", "reddit_comments_quarantine"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.event_specific_data.error.message + str(failure.event_specific_data.user_failure_data)
    assert "RC_2016-03.zst" in message and "comments/RC_2016-03.zst" in message


def test_sensor_requests_complete_settled_months_once(tmp_path):
    assert new_reddit_dumps.default_status == dg.DefaultSensorStatus.STOPPED
    reddit = tmp_path / "raw" / "reddit"
    reddit.mkdir(parents=True)
    for name in ("RC_2019-01.zst", "RS_2019-01.zst", "RC_2019-02.zst", ".RS_2019-02.zst.partial", "notes.txt"):
        (reddit / name).write_bytes(b"x")
    old = time.time() - SETTLE_SECONDS - 5
    for path in reddit.iterdir():
        os.utime(path, (old, old))
    scanned = scan_dumps(reddit)
    assert set(scanned) == {"2019-01", "2019-02"}
    ready, waiting = months_to_request(scanned, {}, {"2019-01", "2019-02"}, time.time_ns())
    assert list(ready) == ["2019-01"] and any("2019-02: only RC_2019-02.zst" in w for w in waiting)
    assert months_to_request(scanned, ready, {"2019-01"}, time.time_ns())[0] == {}  # already requested

    context = dg.build_sensor_context(resources={"lake": ZippLake(data_dir=str(tmp_path))})
    requests = new_reddit_dumps(context)
    assert [r.partition_key for r in requests] == ["2019-01"]
    assert isinstance(new_reddit_dumps(dg.build_sensor_context(cursor=context.cursor, resources={"lake": ZippLake(data_dir=str(tmp_path))})), dg.SkipReason)
    (reddit / "RC_2019-01.zst").write_bytes(b"new content")  # a re-downloaded file is noticed...
    os.utime(reddit / "RC_2019-01.zst", (old, old))
    again = new_reddit_dumps(dg.build_sensor_context(cursor=context.cursor, resources={"lake": ZippLake(data_dir=str(tmp_path))}))
    assert [r.partition_key for r in again] == ["2019-01"]


def test_a_range_run_that_fails_records_the_months_it_wrote(data_dir):
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        reddit_assets,
        selection=["reddit_comments", "reddit_comments_quarantine"],
        resources={"lake": ZippLake(data_dir=str(data_dir), quarantine_max_fraction=0.01)},
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: "2017-12", ASSET_PARTITION_RANGE_END_TAG: "2018-02"},  # no 2018-02 dump
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "RC_2018-02.zst" in str(failure.event_specific_data.error.message) + str(failure.event_specific_data.user_failure_data)
    # The months written before the failure are in the lake and known to Dagster as materialized.
    assert instance.get_materialized_partitions(dg.AssetKey("reddit_comments")) == {"2017-12", "2018-01"}
    assert lake.open_table(data_dir / "lake", "reddit_comments").partitions() == [{"month": "2017-12"}, {"month": "2018-01"}]
