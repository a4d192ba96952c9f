"""Materialization metadata that a person reads in the Dagster UI: tables, previews and plots."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pyarrow as pa


def markdown_table(rows: Sequence[Mapping[str, Any]], max_rows: int = 20, max_chars: int = 60) -> str:
    """A Markdown table of dict rows; cells are escaped and cut, since they may hold Reddit text."""
    if not rows:
        return "_(no rows)_"
    columns = list(rows[0].keys())

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        text = f"{value:,.4g}" if isinstance(value, float) else str(value)
        text = text.replace("|", "\\|").replace("\n", " ").replace("`", "'")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows[:max_rows]]
    if len(rows) > max_rows:
        lines.append(f"\n_{len(rows) - max_rows} more rows_")
    return "\n".join(lines)


def table_preview(table: pa.Table, rows: int = 5, columns: Sequence[str] | None = None) -> dg.MetadataValue:
    sample = table.select(list(columns)) if columns else table
    return dg.MetadataValue.md(markdown_table(sample.slice(0, rows).to_pylist()))


def png_markdown(figure) -> dg.MetadataValue:
    """Embed a matplotlib figure as an inline PNG in Markdown metadata (the UI renders it)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")


def new_figure(width: float = 6.0, height: float = 3.0, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(ncols=ncols, figsize=(width, height))


def lake_versions(activity, written: Sequence[str] | None = None) -> dict[str, dg.MetadataValue]:
    """The Delta versions of the lake tables a materialization read and wrote (`lake.recording()`):
    {table: version} each, a list where one table was read or written at several versions. Reading
    back a version the step wrote itself is not counted as reading; `written` limits the written
    tables to an asset's own."""
    def plain(versions: dict[str, set[int]]) -> dict:
        return {name: (sorted(v) if len(v) > 1 else next(iter(v))) for name, v in sorted(versions.items()) if v}

    read = {name: v - activity.written.get(name, set()) for name, v in activity.read.items()}
    own = {name: v for name, v in activity.written.items() if written is None or name in written}
    return {"lake_versions_read": dg.MetadataValue.json(plain(read)),
            "lake_versions_written": dg.MetadataValue.json(plain(own))}
