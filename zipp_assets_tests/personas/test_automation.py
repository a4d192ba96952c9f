"""Re-mining through declarative automation, evaluated by Dagster's own evaluator over an instance:
months landing start one refresh, however many months a backfill brings."""

import time
from datetime import datetime, timezone

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from zipp_assets.definitions import defs
from zipp_assets.personas import automation
from zipp_assets.personas.automation import MONTHLY_INGESTION, REFRESHED, retrain_drift_bound, retraining_request
from zipp_assets.personas.shards import SHARD_KEYS

TWELVE_MONTHS = [f"{year}-{month:02d}" for year, month in [(2018, 12), *((2019, m) for m in range(1, 12))]]
MID_DECEMBER = datetime(2019, 12, 20, 12, tzinfo=timezone.utc)  # no cron tick between this test's ticks
UNPARTITIONED_REFRESH = [k for k in REFRESHED if k not in ("persona_evidence", "personas")]


def _tick(instance, cursor=None, when=MID_DECEMBER):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor, evaluation_time=when)


def _requested(result) -> dict[str, set]:
    return {key.to_user_string(): result.get_requested_partitions(key)
            for key in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(key)}


def _land(instance, months):
    for month in months:
        for key in MONTHLY_INGESTION:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=month))


def _refresh_once() -> dict[str, set]:
    """Everything re-mined, each shard once; persona_drift follows when the personas have landed
    (shards and the drift summary cannot share a run, so it is asked for on a later tick)."""
    return {**{key: {None} for key in UNPARTITIONED_REFRESH if key != "persona_drift"},
            "persona_evidence": set(SHARD_KEYS), "personas": set(SHARD_KEYS)}


def _refresh_lands(instance):
    """The refresh's runs write their assets, parents first."""
    for key in UNPARTITIONED_REFRESH:
        if key != "persona_drift":
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
    for key in ("persona_evidence", "personas"):
        for shard in SHARD_KEYS:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=shard))


def test_a_backfill_of_twelve_months_starts_one_refresh():
    with dg.instance_for_test() as instance:
        result = _tick(instance)
        assert result.total_requested == 0  # nothing has landed: nothing to refresh

        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="twelve", asset_graph=defs.resolve_asset_graph(), partition_names=TWELVE_MONTHS,
            asset_selection=[dg.AssetKey(k) for k in MONTHLY_INGESTION], backfill_timestamp=time.time(), tags={},
            dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None)
        instance.add_backfill(backfill)
        # Months land one by one while the backfill runs: each tick waits for the rest.
        for landed in (TWELVE_MONTHS[:1], TWELVE_MONTHS[1:6], TWELVE_MONTHS[6:]):
            _land(instance, landed)
            result = _tick(instance, result.cursor)
            assert result.total_requested == 0, _requested(result)

        instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
        result = _tick(instance, result.cursor)
        # One refresh: every re-mined asset once (each shard once), nothing ingested, no retraining.
        assert _requested(result) == _refresh_once()
        result = _tick(instance, result.cursor)
        assert result.total_requested == 0  # not again on the next tick
        _refresh_lands(instance)
        result = _tick(instance, result.cursor)
        assert _requested(result) == {"persona_drift": {None}}  # the summary, once; nothing refreshed twice
        assert _tick(instance, result.cursor).total_requested == 0


def test_each_landing_after_the_last_refresh_starts_one_more():
    with dg.instance_for_test() as instance:
        result = _tick(instance)
        _land(instance, TWELVE_MONTHS)  # twelve months from one run: no backfill to wait for
        result = _tick(instance, result.cursor)
        assert _requested(result) == _refresh_once()
        result = _tick(instance, result.cursor)
        _refresh_lands(instance)
        result = _tick(instance, result.cursor)
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="persona_drift"))
        result = _tick(instance, result.cursor)
        assert result.total_requested == 0
        _land(instance, ["2019-11"])  # a month again (its dumps were replaced)
        assert _requested(_tick(instance, result.cursor)) == _refresh_once()


def test_the_2nd_of_the_month_ingests_the_month_that_just_ended_then_re_mines_once():
    with dg.instance_for_test() as instance:
        result = _tick(instance, when=datetime(2019, 4, 2, 5, tzinfo=timezone.utc))
        assert result.total_requested == 0
        result = _tick(instance, result.cursor, when=datetime(2019, 4, 2, 6, 1, tzinfo=timezone.utc))
        assert _requested(result) == {key: {"2019-03"} for key in MONTHLY_INGESTION}
        _land(instance, ["2019-03"])
        result = _tick(instance, result.cursor, when=datetime(2019, 4, 2, 7, tzinfo=timezone.utc))
        assert _requested(result) == _refresh_once()
        later = _tick(instance, result.cursor, when=datetime(2019, 4, 2, 8, tzinfo=timezone.utc))
        assert later.total_requested == 0


@pytest.mark.parametrize("key", ["persona_encoder", "encoder_evaluation", "persona_fidelity", "zipbench_users"])
def test_training_evaluation_and_the_benchmark_are_never_started_by_automation(key):
    assert defs.resolve_asset_graph().get(dg.AssetKey(key)).automation_condition is None


def test_the_encoder_is_retrained_only_when_the_latest_re_mining_drifted_past_the_bound(tmp_path, monkeypatch):
    assert isinstance(retraining_request(tmp_path, "run1", 0.3), dg.SkipReason)  # no drift recorded yet
    drift = [{"changed_share": 0.5}, {"changed_share": 0.2}]
    monkeypatch.setattr(automation, "drift_by_remining", lambda lake_dir: drift)
    assert isinstance(retraining_request(tmp_path, "run2", 0.3), dg.SkipReason)  # only the latest counts
    drift.append({"changed_share": 0.45})
    request = retraining_request(tmp_path, "run3", 0.3)
    assert request.run_key == "retrain:run3" and request.tags["zipp/reason"] == "persona drift 0.450 > 0.3"
    sensor = automation.retrain_when_personas_drift
    assert sensor.asset_key == dg.AssetKey("persona_drift") and sensor.job_name == "persona_encoder_retrain"


def test_the_drift_bound_is_a_share_and_a_bad_one_names_the_variable():
    assert retrain_drift_bound({}) == 0.3
    assert retrain_drift_bound({"ZIPP_RETRAIN_DRIFT": "0.05"}) == 0.05
    for bad in ("lots", "1.5", "-0.1", "nan"):
        with pytest.raises(ValueError, match="ZIPP_RETRAIN_DRIFT must be a share in"):
            retrain_drift_bound({"ZIPP_RETRAIN_DRIFT": bad})
