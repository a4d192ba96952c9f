"""The Dagster wiring, run in process on the tiny world."""

import math
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from zipp_assets import lake
from zipp_assets.definitions import defs
from zipp_assets.reddit.assets import reddit_assets
from zipp_assets.reddit.dumps import iter_line_blocks
from zipp_assets.reddit.ingest import ingest_month
from zipp_assets.reddit.sensors import SETTLE_SECONDS, months_to_request, new_reddit_dumps, scan_dumps
from zipp_assets.resources import ZippLake
from zipp_assets_tests.conftest import TINY_MONTHS, write_dump


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


def _step_failures(result) -> dict[str, str]:
    return {e.step_key: str(e.event_specific_data.user_failure_data or e.event_specific_data.error.message)
            for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE}


def test_quarantine_over_threshold_blocks_downstream(data_dir):
    result = _materialize(data_dir, "2017-12", max_fraction=0.0)
    fraction = [c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine_fraction"]
    assert fraction and not all(c.passed for c in fraction)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "reddit_user_subreddit_edges" not in materialized
    assert "2017-12" in _step_failures(result)["reddit_user_subreddit_edges"]
    # Image posts read only submissions: built if and only if their month passed.
    submissions_passed = next(c.passed for c in fraction if c.asset_key.to_user_string() == "reddit_submissions")
    assert ("reddit_image_posts" in materialized) == submissions_passed


@pytest.fixture(scope="module")
def poisoned_range(tiny_world, tmp_path_factory):
    """The tiny world with junk lines added to both of 2017-12's dumps (about 6% of their lines), run
    as one range with a quarantine limit above each kind's fraction over the whole range but below
    2017-12's: summed over the range, the bad month would pass."""
    root = tmp_path_factory.mktemp("poisoned_range")
    reddit = root / "raw" / "reddit"
    shutil.copytree(tiny_world / "raw" / "reddit", reddit)
    for prefix in ("RC", "RS"):
        path = reddit / f"{prefix}_2017-12.zst"
        lines = [line for block in iter_line_blocks(path) for line in block.data.split(b"\n")]
        write_dump(path, lines + [b"not json at all"] * math.ceil(0.06 * len(lines)))
    scratch = root / "scratch_lake"
    reports = {(kind, month): ingest_month(scratch, reddit, kind, month)
               for kind in ("comments", "submissions") for month in TINY_MONTHS}
    limit = max(sum(reports[kind, m].quarantined for m in TINY_MONTHS) / sum(reports[kind, m].lines_in for m in TINY_MONTHS)
                for kind in ("comments", "submissions"))
    for kind in ("comments", "submissions"):
        assert reports[kind, "2017-12"].quarantine_fraction > limit >= reports[kind, "2018-01"].quarantine_fraction
    instance = dg.DagsterInstance.ephemeral()
    resources = {"lake": ZippLake(data_dir=str(root), quarantine_max_fraction=limit)}
    result = dg.materialize(reddit_assets, resources=resources, instance=instance, raise_on_error=False,
                            tags={ASSET_PARTITION_RANGE_START_TAG: "2017-12", ASSET_PARTITION_RANGE_END_TAG: "2018-01"})
    return root, instance, resources, result, limit


def test_a_month_over_the_limit_blocks_its_own_image_posts_and_edges_not_the_others(poisoned_range):
    root, instance, _, result, _ = poisoned_range
    assert not result.success
    failures = _step_failures(result)
    assert set(failures) == {"reddit_image_posts", "reddit_user_subreddit_edges"}
    assert all("refused, over the quarantine limit: 2017-12" in failures[step] for step in failures)
    for asset in ("reddit_comments", "reddit_submissions"):  # ingestion kept both months (the quarantine says why)
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"2017-12", "2018-01"}
    for asset in ("reddit_image_posts", "reddit_user_subreddit_edges"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"2018-01"}
        assert lake.open_table(root / "lake", asset).partitions() == [{"month": "2018-01"}]


def test_a_bad_month_cannot_hide_inside_a_good_range(poisoned_range):
    root, instance, resources, result, limit = poisoned_range
    evaluations = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()
                   if c.check_name == "quarantine_fraction"}
    assert set(evaluations) == {"reddit_comments", "reddit_submissions"}
    for evaluation in evaluations.values():
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        assert metadata["quarantined"] / metadata["lines_in"] <= limit  # the range as a whole is under the limit...
        assert not evaluation.passed and metadata["months_over_limit"] == "2017-12"  # ...its bad month still fails
        assert evaluation.description.startswith("2017-12: ")
    # A later run of the month alone is refused too: the block is read from the lake, not the run.
    again = dg.materialize(reddit_assets, selection=["reddit_user_subreddit_edges"], partition_key="2017-12",
                           resources=resources, instance=instance, raise_on_error=False)
    assert not again.success and "every month is over the quarantine limit: 2017-12" in _step_failures(again)["reddit_user_subreddit_edges"]
    assert lake.open_table(root / "lake", "reddit_user_subreddit_edges").partitions() == [{"month": "2018-01"}]


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
