"""The concurrency tests' subject: one writer of a lake table, or one Dagster run, in its own process,
started beside others of its kind.

    python -m zipp_assets_tests.concurrency_driver lake ROOT BARRIER PARTIES TAG (MONTH|table)
    python -m zipp_assets_tests.concurrency_driver run DAGSTER_HOME BARRIER PARTIES MONTH
    python -m zipp_assets_tests.concurrency_driver backfill DAGSTER_HOME BARRIER PARTIES FIRST LAST
    python -m zipp_assets_tests.concurrency_driver sensor DAGSTER_HOME BARRIER PARTIES

BARRIER is a folder: before its first write into the lake, each process registers there and waits
(up to a minute) until PARTIES processes have, so they all write at once, every one of them having
already looked at the lake (no table yet, or the version it begins from). Each prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")

BARRIER_TIMEOUT_S = 60


def hold_first_write_at(barrier: Path, parties: int) -> None:
    """Make this process's first delta-rs write wait until `parties` processes have reached theirs."""
    import deltalake

    real_write = deltalake.write_deltalake
    waited = []

    def write_together(*args, **kwargs):
        if not waited:
            waited.append(True)
            (barrier / str(os.getpid())).touch()
            deadline = time.monotonic() + BARRIER_TIMEOUT_S
            while len(list(barrier.iterdir())) < parties and time.monotonic() < deadline:
                time.sleep(0.001)
        return real_write(*args, **kwargs)

    deltalake.write_deltalake = write_together


def write_in_lake(root: str, tag: int, where: str) -> dict:
    """Two rows, [10*tag, 10*tag+1], into a month of table `d` (`where` is the month), or as the
    whole table `w` (`where` is "table")."""
    import pyarrow as pa

    from zipp_assets import lake

    rows = pa.table({"x": pa.array([10 * tag, 10 * tag + 1], pa.int64())})
    build_id = 1000 + tag
    try:
        if where != "table":
            version = lake.write_partition(root, "d", rows, {"month": where}, build_id=build_id)
        else:
            version = lake.write_partition(root, "w", rows, build_id=build_id)
    except lake.ConcurrentWrite as error:
        return {"tag": tag, "build_id": build_id, "error": str(error)}
    return {"tag": tag, "build_id": build_id, "version": version}


def materialize_comments(month: str) -> dict:
    """One run of the comments ingestion for `month`, recorded in the instance at $DAGSTER_HOME."""
    import dagster as dg

    from zipp_assets.reddit.assets import reddit_comments
    from zipp_assets.resources import ZippLake

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([reddit_comments], partition_key=month, instance=instance,
                                resources={"lake": ZippLake.from_environment()}, raise_on_error=False)
        return _run_outcome(result)


def _run_outcome(result) -> dict:
    failure = None
    if not result.success:
        failure = "; ".join(_messages(e.event_specific_data.error) for e in result.all_events if e.is_step_failure)
    return {"run_id": result.run_id, "success": result.success, "error": failure}


def backfill_months(first: str, last: str) -> list[dict]:
    """The reddit group over a range of months as one run, as README's backfill command launches it
    (the assets' backfill policy is a single run), recorded in the instance at $DAGSTER_HOME."""
    import dagster as dg

    from zipp_assets.reddit.assets import reddit_assets
    from zipp_assets.resources import ZippLake

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(reddit_assets, instance=instance, resources={"lake": ZippLake.from_environment()},
                                tags={"dagster/asset_partition_range_start": first,
                                      "dagster/asset_partition_range_end": last,
                                      "dagster/backfill": "concurrency-test"},
                                raise_on_error=False)
        return [_run_outcome(result)]


def sensor_runs() -> list[dict]:
    """A first tick of the raw-dump sensor (no cursor yet) on the instance, and the runs it requests
    (the reddit group for each new month), each recorded in the instance with its run key."""
    import dagster as dg

    from zipp_assets.reddit.assets import reddit_assets
    from zipp_assets.reddit.sensors import new_reddit_dumps
    from zipp_assets.resources import ZippLake

    lake = ZippLake.from_environment()
    with dg.DagsterInstance.get() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"lake": lake})
        requests = new_reddit_dumps(context)
        assert isinstance(requests, list), requests  # the dumps are there and settled: the sensor fires
        return [_run_outcome(dg.materialize(reddit_assets, partition_key=request.partition_key, instance=instance,
                                            resources={"lake": lake}, raise_on_error=False,
                                            tags={"dagster/sensor_name": "new_reddit_dumps",
                                                  "dagster/run_key": request.run_key}))
                for request in requests]


def _messages(error) -> str:
    """A step's error and its causes (Dagster wraps the asset's exception)."""
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return " <- ".join(parts)


def main(argv: list[str]) -> None:
    command, target, barrier, parties, *rest = argv
    hold_first_write_at(Path(barrier), int(parties))
    if command == "lake":
        outcome = write_in_lake(target, int(rest[0]), rest[1])
    else:
        os.environ["DAGSTER_HOME"] = target
        if command == "run":
            outcome = materialize_comments(rest[0])
        elif command == "backfill":
            outcome = backfill_months(rest[0], rest[1])
        else:
            outcome = sensor_runs()
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
