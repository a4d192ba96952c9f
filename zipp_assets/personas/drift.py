"""Persona drift: per re-mining, the share of users whose persona changed and which attributes moved."""

from __future__ import annotations

from pathlib import Path

from zipp_assets import lake
from zipp_assets.personas.schema import EDITABLE_FIELDS
from zipp_assets.personas.verbalize import CHANGES, PERSONAS


def drift_by_remining(lake_dir: Path) -> list[dict]:
    """One row per re-mining (oldest first): users in the lake, re-verbalized, new, changed, and for
    each persona field how many users' values moved."""
    if not lake.table_exists(lake_dir, CHANGES):
        return []
    users = lake.read_table(lake_dir, PERSONAS, columns=["user_id"]).num_rows
    rows: dict[str, dict] = {}
    for change in lake.read_table(lake_dir, CHANGES).to_pylist():
        row = rows.setdefault(change["remining_id"], {
            "remining_id": change["remining_id"], "mined_utc": change["mined_utc"], "users": users,
            "reverbalized": 0, "new": 0, "changed": 0, **{f"moved_{f}": 0 for f in EDITABLE_FIELDS}})
        row["mined_utc"] = max(row["mined_utc"], change["mined_utc"])
        row["reverbalized"] += 1
        row["new"] += change["status"] == "new"
        row["changed"] += change["status"] == "changed"
        for field in change["changed_fields"]:
            row[f"moved_{field}"] += 1
    out = sorted(rows.values(), key=lambda r: r["mined_utc"])
    for row in out:
        previous = row["users"] - row["new"]
        row["changed_share"] = row["changed"] / previous if previous else 0.0
    return out
