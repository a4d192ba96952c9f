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
    result = lake_vacuum_job.execute_in_process(resources={"lake": ZippLake(data_dir=str(tmp_path), lake_retention_hours=0)})
    assert result.success and not any(f.exists() for f in old)
    metadata = result.events_for_node("vacuum_lake")
    assert any(e.event_type_value == "STEP_OUTPUT" and e.event_specific_data.metadata["files_removed"].value == 1
               for e in metadata)
    assert lake.read_table(root, "t")["x"].to_pylist() == [2]
