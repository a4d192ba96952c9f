"""Data checks over written lake tables (plain functions; assets.py reports them to Dagster)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa


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
