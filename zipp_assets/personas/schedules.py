"""Re-mining personas as new months arrive: a monthly schedule and a chain of run-status sensors.

    monthly schedule (or the new_reddit_dumps sensor)  -> reddit_monthly_job for the new month
    reddit_monthly_job succeeded  -> persona_refresh: graph tables, image embeddings, visual profiles,
                                     and every user embedded by the trained inductive encoder
                                     (no retraining; a data-version change is a warning here)
    persona_refresh succeeded     -> persona_shards: evidence and personas for every shard in one run
                                     (only users whose evidence changed are sent to the LLM)
    persona_shards succeeded      -> persona_drift; and persona_encoder retraining when the share of
                                     personas that changed passes ZIPP_RETRAIN_DRIFT (default 0.3)
The schedule and the sensors are off by default; turn them on in the UI (the daemon runs them).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import dagster as dg

from zipp_assets.partitions import monthly_partitions
from zipp_assets.personas.drift import drift_by_remining
from zipp_assets.personas.shards import SHARD_KEYS, shard_partitions
from zipp_assets.reddit.assets import reddit_monthly_job
from zipp_assets.resources import ZippLake

persona_refresh_job = dg.define_asset_job(
    "persona_refresh",
    selection=dg.AssetSelection.groups("graph") | dg.AssetSelection.assets("user_embeddings", "user_top_subreddits"),
    config={"ops": {"encode_users": {"config": {"on_data_version_mismatch": "warn"}}}},
    description="Refresh the graph over every month and embed every user with the trained encoder (no retraining).",
)
persona_shards_job = dg.define_asset_job(
    "persona_shards", selection=dg.AssetSelection.assets("persona_evidence", "personas"),
    partitions_def=shard_partitions, description="Evidence and personas of user shards (re-verbalizing changed users).",
)
persona_drift_job = dg.define_asset_job("persona_drift_job", selection=dg.AssetSelection.assets("persona_drift"))
encoder_retrain_job = dg.define_asset_job(
    "persona_encoder_retrain", selection=dg.AssetSelection.assets("persona_encoder"),
    description="Retrain the encoder; requested when persona drift passes ZIPP_RETRAIN_DRIFT.")
ALL_SHARDS = {"dagster/asset_partition_range_start": SHARD_KEYS[0], "dagster/asset_partition_range_end": SHARD_KEYS[-1]}


@dg.schedule(cron_schedule="0 6 2 * *", job=reddit_monthly_job, default_status=dg.DefaultScheduleStatus.STOPPED,
             description="On the 2nd of each month: ingest the month that just ended, which starts re-mining.")
def monthly_persona_remining(context: dg.ScheduleEvaluationContext):
    now = context.scheduled_execution_time or datetime.now(timezone.utc)
    month = (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")  # the month that just ended
    if not monthly_partitions.has_partition_key(month):
        return dg.SkipReason(f"{month} is not a partition of {monthly_partitions}")
    return dg.RunRequest(run_key=f"remine:{month}", partition_key=month)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[reddit_monthly_job],
                      request_job=persona_refresh_job, default_status=dg.DefaultSensorStatus.STOPPED)
def refresh_after_ingestion(context: dg.RunStatusSensorContext):
    return dg.RunRequest(run_key=f"refresh:{context.dagster_run.run_id}")


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[persona_refresh_job],
                      request_job=persona_shards_job, default_status=dg.DefaultSensorStatus.STOPPED)
def personas_after_refresh(context: dg.RunStatusSensorContext):
    return dg.RunRequest(run_key=f"personas:{context.dagster_run.run_id}", tags=ALL_SHARDS)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[persona_shards_job],
                      request_jobs=[persona_drift_job, encoder_retrain_job],
                      default_status=dg.DefaultSensorStatus.STOPPED)
def drift_after_personas(context: dg.RunStatusSensorContext, lake: ZippLake):
    return after_personas(lake.settings.lake_dir, context.dagster_run.run_id,
                          float(os.environ.get("ZIPP_RETRAIN_DRIFT", "0.3")))


def after_personas(lake_dir, run_id: str, bound: float) -> list[dg.RunRequest]:
    """Drift is always summarised; the encoder is retrained only when the latest re-mining changed
    more than `bound` of the personas."""
    requests = [dg.RunRequest(run_key=f"drift:{run_id}", job_name=persona_drift_job.name)]
    rows = drift_by_remining(lake_dir)
    if rows and rows[-1]["changed_share"] > bound:
        requests.append(dg.RunRequest(run_key=f"retrain:{run_id}", job_name=encoder_retrain_job.name,
                                      tags={"zipp/reason": f"persona drift {rows[-1]['changed_share']:.3f} > {bound}"}))
    return requests


remining_jobs = [persona_refresh_job, persona_shards_job, persona_drift_job, encoder_retrain_job]
remining_schedules = [monthly_persona_remining]
remining_sensors = [refresh_after_ingestion, personas_after_refresh, drift_after_personas]
