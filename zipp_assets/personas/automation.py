"""Re-mining personas as new months arrive, through Dagster's declarative automation.

    2nd of each month, 06:00 UTC (cron)   -> the month that just ended is ingested (reddit assets)
    (or the new_reddit_dumps sensor, or a backfill of any months)
    months landed and none in progress    -> one refresh: graph tables, image embeddings, visual
                                             profiles, every user embedded by the trained encoder (no
                                             retraining), evidence and personas of every shard, drift
    persona drift above ZIPP_RETRAIN_DRIFT -> persona_encoder retrained (an asset sensor reads the drift)

Conditions follow data, not runs: a refresh waits while any month is being ingested, so a backfill of
twelve months starts one refresh, not twelve; each asset is asked for once per landing. The sensor
that evaluates the conditions and the retraining sensor are off by default; turn them on in the UI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import dagster as dg

from zipp_assets.encoder.assets import REMINING_RUN_TAG
from zipp_assets.personas.drift import drift_by_remining
from zipp_assets.resources import ZippLake

MONTHLY_CRON = "0 6 2 * *"  # dumps of a month are published in the first days of the next
RETRAIN_DRIFT_ENV = "ZIPP_RETRAIN_DRIFT"

INGEST_THE_MONTH_THAT_ENDED = dg.AutomationCondition.on_cron(MONTHLY_CRON)
# Any upstream update since this asset was last requested or materialized, once nothing upstream is
# still running or backfilling. Retraining the encoder does not start a refresh by itself (the next
# month's refresh embeds users with the new checkpoint), so drift after a retraining cannot loop.
REFRESH_WHEN_MONTHS_LAND = (
    dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.assets("persona_encoder")).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh_when_months_land")

MONTHLY_INGESTION = ["reddit_comments", "reddit_comments_quarantine", "reddit_submissions",
                     "reddit_submissions_quarantine", "reddit_image_posts", "reddit_user_subreddit_edges"]
REFRESHED = ["users", "subreddits", "graph_edges", "image_embeddings", "user_visual_profiles", "user_embeddings",
             "user_top_subreddits", "persona_evidence", "personas", "persona_drift"]
AUTOMATION_CONDITIONS: dict[str, dg.AutomationCondition] = {
    **{key: INGEST_THE_MONTH_THAT_ENDED for key in MONTHLY_INGESTION},
    **{key: REFRESH_WHEN_MONTHS_LAND for key in REFRESHED},
}


def with_remining(assets: Sequence[dg.AssetsDefinition | dg.AssetSpec]) -> list:
    """The assets with their re-mining conditions; the others unchanged."""
    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        condition = AUTOMATION_CONDITIONS.get(spec.key.to_user_string())
        return spec.replace_attributes(automation_condition=condition) if condition else spec

    return [dg.map_asset_specs(attach, [a])[0] for a in assets]


remining_sensor = dg.AutomationConditionSensorDefinition(
    "persona_remining",
    target=dg.AssetSelection.keys(*AUTOMATION_CONDITIONS),
    run_tags={REMINING_RUN_TAG: "true"},
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Ingests the month that just ended on the 2nd of each month, and re-mines personas once "
                "whenever months have landed (a backfill of many months included).",
)
encoder_retrain_job = dg.define_asset_job(
    "persona_encoder_retrain", selection=dg.AssetSelection.assets("persona_encoder"),
    description="Retrain the encoder; requested when persona drift passes ZIPP_RETRAIN_DRIFT.")


def retrain_drift_bound(environ: Mapping[str, str] | None = None) -> float:
    """The drift past which the encoder is retrained: ZIPP_RETRAIN_DRIFT, a share in [0, 1], default 0.3
    (0 retrains after any change; 1 never)."""
    env = os.environ if environ is None else environ
    raw = env.get(RETRAIN_DRIFT_ENV, "0.3")
    try:
        bound = float(raw)
    except ValueError:
        raise ValueError(f"{RETRAIN_DRIFT_ENV} must be a share in [0, 1], got {raw!r}") from None
    if not 0.0 <= bound <= 1.0:  # NaN fails this too
        raise ValueError(f"{RETRAIN_DRIFT_ENV} must be a share in [0, 1], got {raw!r}")
    return bound


def retraining_request(lake_dir, drift_event_id: str, bound: float) -> dg.RunRequest | dg.SkipReason:
    """Retrain the encoder only when the latest re-mining changed more than `bound` of the personas."""
    rows = drift_by_remining(lake_dir)
    if not rows or rows[-1]["changed_share"] <= bound:
        share = f"{rows[-1]['changed_share']:.3f}" if rows else "none yet"
        return dg.SkipReason(f"persona drift {share} within {bound}")
    return dg.RunRequest(run_key=f"retrain:{drift_event_id}",
                         tags={"zipp/reason": f"persona drift {rows[-1]['changed_share']:.3f} > {bound}"})


@dg.asset_sensor(asset_key=dg.AssetKey("persona_drift"), job=encoder_retrain_job,
                 default_status=dg.DefaultSensorStatus.STOPPED,
                 description="Retrains persona_encoder when a re-mining changed more than ZIPP_RETRAIN_DRIFT "
                             "(default 0.3) of the personas.")
def retrain_when_personas_drift(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, lake: ZippLake):
    return retraining_request(lake.settings.lake_dir, asset_event.run_id, retrain_drift_bound())


remining_sensors = [remining_sensor, retrain_when_personas_drift]
remining_jobs = [encoder_retrain_job]
