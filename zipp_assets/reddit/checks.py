"""Data checks over written lake tables (plain functions; assets.py reports them to Dagster)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from zipp_assets import lake
from zipp_assets.reddit.ingest import dataset_name, quarantine_dataset_name


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def check_schema(actual: pa.Schema, expected: pa.Schema, label: str = "table",
                 partition_columns: Sequence[str] = ()) -> CheckOutcome:
    """The table version has exactly the expected columns, in order, with the expected types (the
    lake's partition columns aside)."""
    problems = []
    names = [n for n in actual.names if n in expected.names or n not in partition_columns]
    if names != expected.names:
        problems.append(f"{label}: columns {names} != {expected.names}")
    else:
        for want in expected:
            got = actual.field(want.name)
            if not got.type.equals(want.type):
                problems.append(f"{label}: `{want.name}` is {got.type}, expected {want.type}")
    return CheckOutcome(
        passed=not problems,
        description="columns and types match" if not problems else "; ".join(problems[:5]),
        metadata={"problems": len(problems)},
    )


def check_unique(rows, key: Sequence[str]) -> CheckOutcome:
    """No two rows share the key (DuckDB, out of core); `rows` is an Arrow table or dataset."""
    columns = ", ".join(f'"{c}"' for c in key)
    with duckdb.connect() as con:
        con.register("checked_rows", rows)
        rows, distinct = con.sql(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {columns} FROM checked_rows)) FROM checked_rows"
        ).fetchall()[0]
        examples = []
        if rows != distinct:
            examples = [
                r[0]
                for r in con.sql(
                    f"SELECT concat_ws('/', {columns}) FROM checked_rows GROUP BY {columns} HAVING count(*) > 1 LIMIT 5"
                ).fetchall()
            ]
    duplicates = rows - distinct
    return CheckOutcome(
        passed=duplicates == 0,
        description=f"{duplicates} rows repeat a key ({', '.join(key)})" if duplicates else f"{', '.join(key)} unique",
        metadata={"rows": rows, "duplicate_rows": duplicates, "examples": ", ".join(examples)},
    )


def check_quarantine_fraction(lines_in: int, quarantined: int, max_fraction: float) -> CheckOutcome:
    fraction = quarantined / lines_in if lines_in else 0.0
    return CheckOutcome(
        passed=fraction <= max_fraction,
        description=f"{quarantined} of {lines_in} lines quarantined ({fraction:.4%}; limit {max_fraction:.4%})",
        metadata={"lines_in": lines_in, "quarantined": quarantined, "fraction": fraction, "max_fraction": max_fraction},
    )


def check_quarantine_by_month(counts: Mapping[str, tuple[int, int]], max_fraction: float) -> CheckOutcome:
    """Each month on its own (`counts`: month -> (lines in, quarantined)): one month over the limit
    fails the check even when the range as a whole is under it."""
    outcomes = {month: check_quarantine_fraction(lines_in, quarantined, max_fraction)
                for month, (lines_in, quarantined) in sorted(counts.items())}
    over = [month for month, o in outcomes.items() if not o.passed]
    worst = max(outcomes, key=lambda m: outcomes[m].metadata["fraction"], default=None)
    if over:
        description = "; ".join(f"{month}: {outcomes[month].description}" for month in over[:5])
    elif worst is None:
        description = "no months"
    else:
        description = f"every month under the limit (highest {worst}: {outcomes[worst].description})"
    return CheckOutcome(
        passed=not over,
        description=description,
        metadata={"months_checked": len(outcomes), "months_over_limit": ", ".join(over),
                  "lines_in": sum(c[0] for c in counts.values()), "quarantined": sum(c[1] for c in counts.values()),
                  "highest_fraction": outcomes[worst].metadata["fraction"] if worst else 0.0, "max_fraction": max_fraction},
    )


def ingested_quarantine_counts(lake_dir: Path, kind: str, months: Sequence[str]) -> dict[str, tuple[int, int]]:
    """month -> (lines in, quarantined) as the lake holds them: every line of a dump is either a row
    or a quarantine row, and both come from one ingestion (checked by their build id)."""
    rows_name, quarantine_name = dataset_name(kind), quarantine_dataset_name(kind)
    tables = lake.open_tables(lake_dir, [rows_name, quarantine_name], [{"month": m} for m in months])
    counts = {}
    for month in months:
        rows = tables[rows_name].to_dataset([{"month": month}]).count_rows()
        quarantined = tables[quarantine_name].to_dataset([{"month": month}]).count_rows()
        counts[month] = (rows + quarantined, quarantined)
    return counts


def months_within_quarantine_limit(lake_dir: Path, kinds: Sequence[str], months: Sequence[str],
                                   max_fraction: float) -> tuple[list[str], dict[str, str]]:
    """The months whose ingested `kinds` are all within the quarantine limit, and the others with why.

    Read from the lake, so a month over the limit stays blocked in any later run, not only in the
    run that ingested it."""
    blocked: dict[str, list[str]] = {}
    for kind in kinds:
        for month, (lines_in, quarantined) in ingested_quarantine_counts(lake_dir, kind, months).items():
            outcome = check_quarantine_fraction(lines_in, quarantined, max_fraction)
            if not outcome.passed:
                blocked.setdefault(month, []).append(f"{kind}: {outcome.description}")
    return [m for m in months if m not in blocked], {m: "; ".join(why) for m, why in sorted(blocked.items())}


def merge_by_partition(outcomes: dict[str, CheckOutcome]) -> CheckOutcome:
    """One outcome for a run over several partitions: passes only if every partition passed."""
    failed = {key: o for key, o in outcomes.items() if not o.passed}
    if not failed:
        description = f"passed for {len(outcomes)} partition(s)"
    else:
        description = "; ".join(f"{key}: {o.description}" for key, o in sorted(failed.items())[:5])
    metadata: dict = {"partitions_checked": len(outcomes), "partitions_failed": ", ".join(sorted(failed))}
    for outcome in outcomes.values():
        for name, value in outcome.metadata.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metadata[name] = metadata.get(name, 0) + value
    return CheckOutcome(passed=not failed, description=description, metadata=metadata)
