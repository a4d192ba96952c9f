"""Benchmark files as they are published, read into the three tables ZIPBench uses.

`load(path, format=None)` reads a file or a folder of files (Hugging Face shards, PIP's one file per
user) in one of the published formats (`formats.FORMATS`: zipbench, civitai-images, pip, pickapic-v2,
rapidata), named or detected from the columns, into one table (`tables`): generation histories,
prompt histories with their split, or preference votes with each annotator's demographics. What a
file holds is found from its bytes, so JSON Lines is read whatever the extension (`containers`).

Nothing valid is dropped and nothing is dropped silently: every row is loaded, rejected (a bad value:
file, row, field and reason), skipped (valid, but nothing the benchmark can use, with the reason), or
a duplicate of an earlier record (with where that one is). A missing optional value (None, NaN, an
empty cell) is missing, not bad. What the loader had to decide is counted in `notes` (a seed of 2^53
or more read from a float keeps its value but has lost its low bits; an A1111 parameter block was
split off a negative prompt). A file that is not the format says so as a whole (`BenchmarkFileError`).

`python -m zipp_assets.zipbench.loaders inspect PATH [--format NAME] [--json]` reports all of it for a
file or folder before a backfill. Image fields are ids, paths or URLs kept as text: nothing here opens
or fetches them (`export-images` writes the image bytes a Parquet file carries into a folder).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import pyarrow as pa
import pyarrow.compute as pc

from zipp_assets.zipbench.loaders.containers import (
    BenchmarkFileError,
    Container,
    column_key,
    data_files,
    open_container,
)
from zipp_assets.zipbench.loaders.formats import FORMATS, FileContext, Format, detect
from zipp_assets.zipbench.loaders.tables import (
    DUPLICATES_SCHEMA,
    GENERATION_SCHEMA,
    GENERATIONS,
    PREFERENCE_SCHEMA,
    PREFERENCES,
    PROMPT_HISTORIES,
    PROMPT_HISTORY_SCHEMA,
    REJECTED_SCHEMA,
    SCHEMAS,
    SKIPPED_SCHEMA,
    TABLE_TITLES,
)
from zipp_assets.zipbench.loaders.values import clean_text

__all__ = [
    "BenchmarkFileError", "DUPLICATES_SCHEMA", "FORMATS", "GENERATIONS", "GENERATION_SCHEMA", "LoadResult",
    "PREFERENCES", "PREFERENCE_SCHEMA", "PROMPT_HISTORIES", "PROMPT_HISTORY_SCHEMA", "REJECTED_SCHEMA",
    "SKIPPED_SCHEMA", "TABLE_TITLES", "clean_text", "describe", "load", "load_generation_histories",
    "load_preference_pairs", "load_prompt_histories",
]

OnBadRow = Literal["raise", "skip"]


@dataclass
class LoadResult:
    path: Path
    format: Format
    detected: bool  # True: found from the columns; False: named by the caller
    table: pa.Table  # SCHEMAS[format.table]
    rejected: pa.Table  # REJECTED_SCHEMA
    skipped: pa.Table  # SKIPPED_SCHEMA
    duplicates: pa.Table  # DUPLICATES_SCHEMA
    notes: dict[str, int]  # what the loader decided, with how often
    files: list[dict]  # per file: file, container, status ("read" or "refused"), records, rows, ..., problem
    not_data: list[str] = field(default_factory=list)  # files in a folder skipped as not data (README.md, images)

    @property
    def kind(self) -> str:
        return self.format.table

    @property
    def records(self) -> int:
        return sum(f["records"] for f in self.files)


def _stem(path: Path) -> str:
    """A file's name up to its first dot: PIP's user id ('12345.jsonl' -> '12345')."""
    return path.name.split(".", 1)[0]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _columns_message(columns: list[str]) -> str:
    shown = ", ".join(columns[:24]) + (f", ... ({len(columns)} in all)" if len(columns) > 24 else "")
    return f"its columns: {shown}" if columns else "its first rows have no columns (they are not JSON objects)"


def _needs() -> str:
    return "; ".join(f"{f.name} needs {', '.join(f.required)}" + (f" and one of {'/'.join(f.any_of)}" if f.any_of
                                                                    else "") for f in FORMATS.values())


def load(path: str | Path, format: str | None = None, *, on_bad_row: OnBadRow = "skip",
         table: str | None = None) -> LoadResult:
    """Read a file or folder in one published format (named, or detected from the columns).

    on_bad_row="skip" (the default) keeps going past bad rows and reports them in `rejected`, and past a
    folder's unreadable files (in `files`); "raise" raises `BenchmarkFileError` for the first bad row
    or file, naming file, row and field. A single file that cannot be read as a whole, or is not the
    format, always raises; so does a folder none of whose files can be read. `table` (GENERATIONS,
    PROMPT_HISTORIES, PREFERENCES): a file whose format fills another table raises before any row is read."""
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', not {on_bad_row!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise BenchmarkFileError(path, "no such file or folder")
    folder = path.is_dir()
    if folder:
        files, not_data = data_files(path)
        if not files:
            raise BenchmarkFileError(path, "expected data files in the folder, got none"
                                     + (f" (skipped as not data: {', '.join(p.name for p in not_data[:5])})"
                                        if not_data else ""))
        root = path
    else:
        files, not_data, root = [path], [], path.parent
    reports: list[dict] = []
    opened: list[tuple[Path, Container]] = []

    def refuse(file: Path, problem: str, container: str = "", error: BenchmarkFileError | None = None) -> None:
        if not folder or on_bad_row == "raise":
            raise error or BenchmarkFileError(file, problem)
        reports.append({"file": _relative(file, root), "container": container, "row_word": "row",
                        "status": "refused", "records": 0,
                        "rows": 0, "rejected": 0, "skipped": 0, "duplicates": 0, "problem": problem})

    for file in files:
        try:
            opened.append((file, open_container(file)))
        except BenchmarkFileError as error:
            refuse(file, error.problem, error=error)
    if format is not None:
        chosen, detected = FORMATS[format], False
    else:
        found: dict[str, list[Path]] = {}
        for file, container in opened:
            matches = detect(container.columns)
            if len(matches) == 1:
                found.setdefault(matches[0].name, []).append(file)
        if not found:
            if not opened:
                raise BenchmarkFileError(path, "no file could be read: " + "; ".join(
                    f"{r['file']}: {r['problem']}" for r in reports[:3]))
            file, container = opened[0]
            raise BenchmarkFileError(file, f"not a file of any known format ({_needs()}); "
                                           f"{_columns_message(container.columns)}")
        if len(found) > 1:
            raise BenchmarkFileError(path, "files in different formats: " + "; ".join(
                f"{name}: {', '.join(_relative(p, root) for p in paths[:3])}" for name, paths in found.items())
                + "; load them apart, or name the format")
        chosen, detected = FORMATS[next(iter(found))], True
    if table is not None and chosen.table != table:
        raise BenchmarkFileError(path, f"expected {TABLE_TITLES[table]}, got a {chosen.name} file ({chosen.title}), "
                                       f"which holds {TABLE_TITLES[chosen.table]}")
    outcome = {"rows": [], "rejected": [], "skipped": [], "duplicates": []}
    notes: Counter[str] = Counter()
    seen: dict = {}
    for file, container in opened:
        missing = chosen.missing({column_key(c) for c in container.columns})
        if missing:
            refuse(file, f"not a {chosen.name} file ({chosen.title}): it lacks {', '.join(missing)}; "
                         f"{_columns_message(container.columns)}", container.kind)
            continue
        name = _relative(file, root)

        def error(row, field_name, reason, file=file, container=container):
            return BenchmarkFileError(file, reason, row=row, field=field_name, row_word=container.row_word)

        ctx = FileContext(source_file=name, format_name=chosen.name, row_word=container.row_word,
                          on_bad_row=on_bad_row, error=error, seen=seen)
        chosen.read(ctx, container.rows(chosen.wanted(container.columns)), _stem(file))
        for key in outcome:
            outcome[key] += getattr(ctx, key)
        notes.update(ctx.notes)
        reports.append({"file": name, "container": container.kind, "row_word": container.row_word,
                        "status": "read", "records": ctx.records,
                        "rows": len(ctx.rows), "rejected": len(ctx.rejected), "skipped": len(ctx.skipped),
                        "duplicates": len(ctx.duplicates), "problem": None})
    if not any(r["status"] == "read" for r in reports):
        raise BenchmarkFileError(path, "no file could be read as " + chosen.name + ": " + "; ".join(
            f"{r['file']}: {r['problem']}" for r in reports[:3]))
    reports.sort(key=lambda r: r["file"])
    return LoadResult(
        path=path, format=chosen, detected=detected,
        table=pa.Table.from_pylist(outcome["rows"], schema=SCHEMAS[chosen.table]),
        rejected=pa.Table.from_pylist(outcome["rejected"], schema=REJECTED_SCHEMA),
        skipped=pa.Table.from_pylist(outcome["skipped"], schema=SKIPPED_SCHEMA),
        duplicates=pa.Table.from_pylist(outcome["duplicates"], schema=DUPLICATES_SCHEMA),
        notes=dict(notes.most_common()), files=reports,
        not_data=[_relative(p, root) for p in not_data])


# --- one table at a time (the benchmark's own callers) --------------------------------------------

def _one_table(kind: str, path, on_bad_row: OnBadRow, format: str | None):
    result = load(path, format, on_bad_row=on_bad_row, table=kind)
    return result.table if on_bad_row == "raise" else (result.table, result.rejected)


@overload
def load_generation_histories(path: str | Path, *, on_bad_row: Literal["raise"] = ...,
                              format: str | None = ...) -> pa.Table: ...
@overload
def load_generation_histories(path: str | Path, *, on_bad_row: Literal["skip"],
                              format: str | None = ...) -> tuple[pa.Table, pa.Table]: ...
def load_generation_histories(path, *, on_bad_row="raise", format=None):
    """ZIP-Bench rows or Civitai image records -> GENERATION_SCHEMA (with the rejected rows when skipping)."""
    return _one_table(GENERATIONS, path, on_bad_row, format)


@overload
def load_prompt_histories(path: str | Path, *, on_bad_row: Literal["raise"] = ...,
                          format: str | None = ...) -> pa.Table: ...
@overload
def load_prompt_histories(path: str | Path, *, on_bad_row: Literal["skip"],
                          format: str | None = ...) -> tuple[pa.Table, pa.Table]: ...
def load_prompt_histories(path, *, on_bad_row="raise", format=None):
    """PIP's per-user files (a folder, or one file) -> PROMPT_HISTORY_SCHEMA, the split marked."""
    return _one_table(PROMPT_HISTORIES, path, on_bad_row, format)


@overload
def load_preference_pairs(path: str | Path, *, on_bad_row: Literal["raise"] = ...,
                          format: str | None = ...) -> pa.Table: ...
@overload
def load_preference_pairs(path: str | Path, *, on_bad_row: Literal["skip"],
                          format: str | None = ...) -> tuple[pa.Table, pa.Table]: ...
def load_preference_pairs(path, *, on_bad_row="raise", format=None):
    """Pick-a-Pic v2 or Rapidata -> PREFERENCE_SCHEMA, one row per human vote."""
    return _one_table(PREFERENCES, path, on_bad_row, format)


# --- what a table holds ----------------------------------------------------------------------------

def _distinct(table: pa.Table, column: str) -> int:
    values = table[column].drop_null()
    return len(pc.unique(values)) if len(values) else 0


def _count(table: pa.Table, column: str, value=None) -> int:
    values = table[column]
    if value is None:
        return len(values) - values.null_count
    return int(pc.sum(pc.equal(values, value)).as_py() or 0)


def describe(result: LoadResult) -> dict:
    """What the loaded table holds, in counts a user can check against the dataset's card."""
    table = result.table
    if result.kind == GENERATIONS:
        return {"rows": table.num_rows, "reddit_users": _distinct(table, "reddit_username"),
                "civitai_users": _distinct(table, "civitai_username"),
                "rows_without_reddit_user": table.num_rows - _count(table, "reddit_username"),
                "with_seed": _count(table, "seed"), "seeds_inexact": _count(table, "seed_exact", False),
                "with_negative_prompt": _count(table, "negative_prompt"), "with_size": _count(table, "width")}
    if result.kind == PROMPT_HISTORIES:
        return {"rows": table.num_rows, "users": _distinct(table, "user_id"),
                "train_rows": _count(table, "split", "train"),
                "test_rows": _count(table, "split", "test"), "with_short_prompt": _count(table, "short_prompt"),
                "test_rows_with_short_prompt": int(pc.sum(pc.and_(pc.equal(table["split"], "test"),
                                                                  pc.is_valid(table["short_prompt"]))).as_py() or 0)
                if table.num_rows else 0}
    return {"votes": table.num_rows, "pairs": _distinct(table, "pair_id"),
            "annotators": _distinct(table, "annotator_id"),
            "votes_a": _count(table, "preferred", "a"), "votes_b": _count(table, "preferred", "b"),
            "ties": _count(table, "preferred", "tie"), "with_age": _count(table, "age"),
            "with_gender": _count(table, "gender"), "with_country": _count(table, "country")}
