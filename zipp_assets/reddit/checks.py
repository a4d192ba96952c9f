"""Data checks over written lake files (plain functions; assets.py reports them to Dagster)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def check_schema(files: Sequence[Path | str], expected: pa.Schema) -> CheckOutcome:
    """Every file has exactly the expected columns, in order, with the expected types."""
    problems = []
    for path in files:
        actual = pq.read_schema(path)
        if actual.names != expected.names:
            problems.append(f"{Path(path).name}: columns {actual.names} != {expected.names}")
            continue
        for want in expected:
            got = actual.field(want.name)
            if not got.type.equals(want.type):
                problems.append(f"{Path(path).name}: `{want.name}` is {got.type}, expected {want.type}")
    return CheckOutcome(
        passed=not problems,
        description="columns and types match" if not problems else "; ".join(problems[:5]),
        metadata={"files_checked": len(files), "problems": len(problems)},
    )


def check_unique(files: Sequence[Path | str], key: Sequence[str]) -> CheckOutcome:
    """No two rows share the key (DuckDB, out of core)."""
    if not files:
        return CheckOutcome(True, "no files", {"rows": 0, "duplicate_rows": 0})
    columns = ", ".join(f'"{c}"' for c in key)
    with duckdb.connect() as con:
        rows, distinct = con.sql(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {columns} FROM read_parquet($f))) "
            "FROM read_parquet($f)",
            params={"f": [str(f) for f in files]},
        ).fetchall()[0]
        examples = []
        if rows != distinct:
            examples = [
                r[0]
                for r in con.sql(
                    f"SELECT concat_ws('/', {columns}) FROM read_parquet($f) GROUP BY {columns} "
                    "HAVING count(*) > 1 LIMIT 5",
                    params={"f": [str(f) for f in files]},
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
