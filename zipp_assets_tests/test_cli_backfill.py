"""README's backfill command, run as a subprocess against a persistent instance on the tiny world."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from zipp_assets import lake

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_backfill_a_range_of_months_from_the_cli(tiny_world, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "raw").symlink_to(tiny_world / "raw")
    home = data / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "ZIPP_DATA_DIR": str(data), "DAGSTER_HOME": str(home), "ZIPP_QUARANTINE_MAX_FRACTION": "0.01"}
    command = [sys.executable, "-m", "dagster_dg_cli.cli", "launch", "--assets", "group:reddit",
               "-m", "zipp_assets.definitions", "--partition-range", "2017-12...2018-01"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SupersessionWarning" not in done.stdout + done.stderr  # dg launch, not the superseded command
    for dataset in ("reddit_comments", "reddit_submissions", "reddit_image_posts", "reddit_user_subreddit_edges"):
        assert lake.open_table(data / "lake", dataset).partitions() == [{"month": "2017-12"}, {"month": "2018-01"}]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for key in ("reddit_comments", "reddit_user_subreddit_edges"):
            assert instance.get_materialized_partitions(dg.AssetKey(key)) == {"2017-12", "2018-01"}
        records = instance.get_records_for_run(run_id=instance.get_runs()[0].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        evaluations = {(r.event_log_entry.dagster_event.event_specific_data.asset_key.to_user_string(),
                        r.event_log_entry.dagster_event.event_specific_data.check_name):
                       r.event_log_entry.dagster_event.event_specific_data.passed for r in records}
        assert len(evaluations) == 9 and all(evaluations.values()), evaluations

    # One month again, as README shows: the partition is replaced, not duplicated.
    before = lake.open_table(data / "lake", "reddit_comments")
    single = [*command[:-2], "--partition", "2018-01"]
    again = subprocess.run(single, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    after = lake.open_table(data / "lake", "reddit_comments")
    assert after.version == before.version + 1  # one commit replaced the month
    for month in ("2017-12", "2018-01"):
        assert after.read([{"month": month}]).num_rows == before.read([{"month": month}]).num_rows
