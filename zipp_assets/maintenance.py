"""Lake maintenance: vacuum, weekly, the files no table version younger than the lake's retention
(`ZippLake.lake_retention_hours`, ZIPP_LAKE_RETENTION_HOURS) needs, and files a killed writer left.
A retention shorter than the longest run (ZIPP_LONGEST_RUN_HOURS) is refused: it would delete the
files of a run that has not committed yet.

(No `from __future__ import annotations` here: Dagster reads the annotations at run time.)
"""

import dagster as dg

from zipp_assets import lake as lake_io
from zipp_assets.resources import ZippLake


@dg.op(description="Vacuum every Delta table of the lake with the configured retention.")
def vacuum_lake(context: dg.OpExecutionContext, lake: ZippLake) -> dg.Output:
    removed = lake_io.vacuum(lake.settings.lake_dir, lake.lake_retention_hours,
                             longest_run_hours=lake.longest_run_hours)
    for table, files in removed.items():
        if files:
            context.log.info(f"{table}: removed {len(files)} files")
    return dg.Output(None, metadata={
        "retention_hours": lake.lake_retention_hours,
        "tables": len(removed),
        "files_removed": sum(len(f) for f in removed.values()),
        "by_table": dg.MetadataValue.json({t: len(f) for t, f in removed.items() if f}),
    })


@dg.job(description="Remove lake files that no table version within the retention needs.")
def lake_vacuum_job():
    vacuum_lake()


lake_vacuum_schedule = dg.ScheduleDefinition(job=lake_vacuum_job, cron_schedule="0 3 * * 0",
                                             default_status=dg.DefaultScheduleStatus.RUNNING)
