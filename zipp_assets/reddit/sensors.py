"""A sensor that notices new dump files in the raw folder and requests their months."""


import hashlib
import json
import time
from pathlib import Path

import dagster as dg

from zipp_assets.partitions import monthly_partitions
from zipp_assets.reddit.assets import reddit_monthly_job
from zipp_assets.reddit.dumps import DUMP_NAME
from zipp_assets.resources import ZippLake

# A file modified more recently than this may still be copying in: wait for it to settle.
SETTLE_SECONDS = 60


def scan_dumps(reddit_dir: Path) -> dict[str, dict[str, list[int]]]:
    """month -> {file name: [size, mtime_ns]} for RC_/RS_YYYY-MM.zst in the folder and its kind folders."""
    found: dict[str, dict[str, list[int]]] = {}
    for folder in (reddit_dir, reddit_dir / "comments", reddit_dir / "submissions"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = DUMP_NAME.match(path.name)
            if match and path.is_file():
                stat = path.stat()
                found.setdefault(match["month"], {})[path.name] = [stat.st_size, stat.st_mtime_ns]
    return found


def months_to_request(
    scanned: dict[str, dict[str, list[int]]], seen: dict[str, str], valid_months: set[str], now_ns: int
) -> tuple[dict[str, str], list[str]]:
    """New or changed months whose RC_ and RS_ files are both present and settled; plus why others wait."""
    ready: dict[str, str] = {}
    waiting: list[str] = []
    for month, files in sorted(scanned.items()):
        if month not in valid_months:
            waiting.append(f"{month}: outside the monthly partitions")
            continue
        if len(files) < 2:
            waiting.append(f"{month}: only {', '.join(sorted(files))} so far")
            continue
        if any(now_ns - mtime < SETTLE_SECONDS * 1_000_000_000 for _, mtime in files.values()):
            waiting.append(f"{month}: still being written")
            continue
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
        if seen.get(month) != digest:
            ready[month] = digest
    return ready, waiting


@dg.sensor(
    job=reddit_monthly_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=300,
    description="Requests a month's ingestion when its RC_ and RS_ dumps appear (or change) in the raw folder.",
)
def new_reddit_dumps(context: dg.SensorEvaluationContext, lake: ZippLake):
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    scanned = scan_dumps(lake.settings.reddit_raw_dir)
    valid = set(monthly_partitions.get_partition_keys())
    ready, waiting = months_to_request(scanned, seen, valid, time.time_ns())
    if not ready:
        return dg.SkipReason("no new dumps" + (f"; waiting: {'; '.join(waiting[:10])}" if waiting else ""))
    seen.update(ready)
    context.update_cursor(json.dumps(seen, sort_keys=True))
    return [dg.RunRequest(run_key=f"{month}:{digest}", partition_key=month) for month, digest in sorted(ready.items())]
