from pathlib import Path

import pyarrow as pa

from zipp_assets import lake
from zipp_assets.maintenance import lake_vacuum_job
from zipp_assets.resources import ZippLake


def test_the_vacuum_job_removes_old_versions_files_and_keeps_the_current_version(tmp_path):
    root = tmp_path / "lake"
    lake.write_partition(root, "t", pa.table({"x": [1]}))
    old = [Path(f) for f in lake.open_table(root, "t").file_uris()]
    lake.write_partition(root, "t", pa.table({"x": [2]}))
    kept = ZippLake(data_dir=str(tmp_path), lake_retention_hours=168)
    assert lake_vacuum_job.execute_in_process(resources={"lake": kept}).success
    assert all(f.exists() for f in old)  # inside the retention: time travel to them still works
    # No writer runs in this test, so it may say the longest run is 0 hours.
    idle = ZippLake(data_dir=str(tmp_path), lake_retention_hours=0, longest_run_hours=0)
    result = lake_vacuum_job.execute_in_process(resources={"lake": idle})
    assert result.success and not any(f.exists() for f in old)
    metadata = result.events_for_node("vacuum_lake")
    assert any(e.event_type_value == "STEP_OUTPUT" and e.event_specific_data.metadata["files_removed"].value == 1
               for e in metadata)
    assert lake.read_table(root, "t")["x"].to_pylist() == [2]


def test_the_vacuum_job_refuses_a_retention_shorter_than_the_longest_run(tmp_path):
    root = tmp_path / "lake"
    lake.write_partition(root, "t", pa.table({"x": [1]}))
    old = [Path(f) for f in lake.open_table(root, "t").file_uris()]
    lake.write_partition(root, "t", pa.table({"x": [2]}))
    too_short = ZippLake(data_dir=str(tmp_path), lake_retention_hours=0)
    result = lake_vacuum_job.execute_in_process(resources={"lake": too_short}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "shorter than the longest run" in failure.event_specific_data.error.to_string()
    assert all(f.exists() for f in old)
