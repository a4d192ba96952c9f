"""What a file holds, found from its bytes, not its name: rows as Python objects, numbered.

- JSON Lines (one JSON value a line) whatever the extension (.jsonl, .txt, none, a user id...): a
  file whose first value starts with `{` and whose first line is a whole JSON value.
- A JSON array of objects (the first byte `[`).
- Parquet (the magic bytes PAR1), read in batches and only the columns a format asks for, so image
  bytes (Pick-a-Pic's jpg_0/jpg_1) are never loaded for a table.
- CSV or TSV, by the extension .csv / .tsv / .tab (a header row; empty cells are missing).
- Any of the text kinds gzip-compressed (the magic bytes 1f 8b).

A file that is none of these, is empty, or breaks as a whole (one pretty-printed JSON object, an array
that does not parse, a CSV with a repeated column name, text that is not UTF-8 in a JSON array or
CSV) raises `BenchmarkFileError` naming the file and, where there is one, the line. One bad line of a
JSON Lines file is that row's problem, not the file's: it comes back as an `Unreadable` row.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_MAGIC, GZIP_MAGIC = b"PAR1", b"\x1f\x8b"
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
PEEK_ROWS = 200  # rows read for the columns a file has (union of their keys)
BATCH_ROWS = 2048
# Files in a folder that are not data: skipped and listed, never read as rows.
NOT_DATA_SUFFIXES = frozenset({".md", ".txt.md", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".zip", ".tar",
                               ".py", ".yaml", ".yml", ".lock", ".gitattributes", ".html", ".pdf", ".sh"})


class BenchmarkFileError(ValueError):
    """A benchmark file, or one of its rows, that cannot be read as the loader expects."""

    def __init__(self, path: Path | str, problem: str, *, row: int | None = None, field: str | None = None,
                 row_word: str = "row"):
        self.path, self.problem, self.row, self.field = Path(path), problem, row, field
        where = str(path)
        if row is not None:
            where += f", {row_word} {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


@dataclass
class Unreadable:
    """A row that could not be read as JSON or UTF-8: the reason and its raw text."""

    reason: str
    raw: str
    kind: str = "malformed JSON"


@dataclass
class Container:
    path: Path
    kind: str  # "JSON Lines", "JSON array", "CSV", "TSV", "Parquet"; " (gzip)" appended when compressed
    row_word: str  # "line" for JSON Lines, else "row"
    columns: list[str]  # names seen in the first rows (Parquet: the schema)
    _rows: Callable[[Callable[[str], bool] | None], Iterator[tuple[int, object]]] = field(repr=False)

    def rows(self, wanted: Callable[[str], bool] | None = None) -> Iterator[tuple[int, object]]:
        """(number, row) in file order; `wanted(column)` narrows the columns read where that saves work."""
        return self._rows(wanted)


def _open_bytes(path: Path, gzipped: bool):
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _head(path: Path, gzipped: bool, size: int = 65536) -> bytes:
    try:
        with _open_bytes(path, gzipped) as handle:
            return handle.read(size)
    except (OSError, EOFError) as exc:
        raise BenchmarkFileError(path, f"expected a readable file, got {exc}") from None


def _decode_line(line: bytes, first: bool) -> str | Unreadable:
    try:
        return line.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        return Unreadable(f"expected UTF-8 text, found byte 0x{line[exc.start]:02x}", line.decode("utf-8", "replace"),
                          "not UTF-8")


def _jsonl_rows(path: Path, gzipped: bool) -> Iterator[tuple[int, object]]:
    with _open_bytes(path, gzipped) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            text = _decode_line(line, number == 1)
            if isinstance(text, Unreadable):
                yield number, text
                continue
            try:
                yield number, json.loads(text)
            except ValueError as exc:
                yield number, Unreadable(f"expected a JSON object, got malformed JSON ({exc})", text)


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BenchmarkFileError(path, f"expected UTF-8 text, found byte 0x{data[exc.start]:02x}", row=line,
                                 row_word="line") from None


def _read_all(path: Path, gzipped: bool) -> bytes:
    with _open_bytes(path, gzipped) as handle:
        return handle.read()


def _json_array(path: Path, gzipped: bool) -> list:
    try:
        records = json.loads(_decode(path, _read_all(path, gzipped)))
    except json.JSONDecodeError as exc:
        raise BenchmarkFileError(path, f"expected a JSON array of objects, got malformed JSON ({exc.msg} at column "
                                       f"{exc.colno})", row=exc.lineno, row_word="line") from None
    if not isinstance(records, list):
        raise BenchmarkFileError(path, f"expected a JSON array of objects, got {type(records).__name__}")
    return records


def _csv_rows(path: Path, gzipped: bool, delimiter: str) -> tuple[list[str], Iterator[tuple[int, object]]]:
    text = _decode(path, _read_all(path, gzipped))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BenchmarkFileError(path, f"expected CSV, got {exc}", row=1, row_word="line") from None
    if header is None:
        return [], iter(())
    keys = [column_key(name) for name in header]
    duplicates = sorted({name for name, key in zip(header, keys) if keys.count(key) > 1})
    if duplicates:
        raise BenchmarkFileError(path, f"expected distinct column names, got {duplicates} in the header", row=1,
                                 row_word="line")

    def rows() -> Iterator[tuple[int, object]]:
        try:
            for number, cells in enumerate(reader, start=1):
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) > len(header):
                    yield number, Unreadable(f"expected at most {len(header)} cells, as in the header, got "
                                             f"{len(cells)}", delimiter.join(cells), "too many cells")
                    continue
                yield number, {name: cell for name, cell in zip(header, cells) if cell.strip()}
        except csv.Error as exc:
            raise BenchmarkFileError(path, f"expected CSV, got {exc}", row=reader.line_num, row_word="line") from None

    return header, rows()


_KEY_DROPS = str.maketrans("", "", "_-. ")


@functools.lru_cache(maxsize=4096)
def _column_key(name: str) -> str:
    return name.lower().translate(_KEY_DROPS)


def column_key(name: str) -> str:
    """Column names compare ignoring case, '_', '-', '.' and spaces: cfgScale = cfg_scale."""
    return _column_key(name if isinstance(name, str) else str(name))


def _keys_of(rows: Iterator[tuple[int, object]]) -> list[str]:
    names: dict[str, None] = {}
    for count, (_, row) in enumerate(rows):
        if isinstance(row, dict):
            names.update(dict.fromkeys(map(str, row)))
        if count + 1 >= PEEK_ROWS:
            break
    return list(names)


def open_container(path: Path) -> Container:
    """The container of one file, from its bytes (and for CSV/TSV its extension)."""
    path = Path(path)
    if not path.exists():
        raise BenchmarkFileError(path, "no such file")
    if not path.is_file():
        raise BenchmarkFileError(path, "expected a file, got a folder")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    gzipped = magic[:2] == GZIP_MAGIC
    suffixes = [s.lower() for s in path.suffixes]
    if gzipped and suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    note = " (gzip)" if gzipped else ""
    if magic == PARQUET_MAGIC:
        try:
            parquet = pq.ParquetFile(path)
            columns = list(parquet.schema_arrow.names)
            total = parquet.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise BenchmarkFileError(path, f"expected a Parquet file, got {exc}") from None
        if total == 0:
            raise BenchmarkFileError(path, "expected at least one row, got an empty file")

        def parquet_rows(wanted):
            chosen = [c for c in columns if wanted is None or wanted(c)] or columns[:1]
            number = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=chosen):
                for row in batch.to_pylist():
                    number += 1
                    yield number, row

        return Container(path, "Parquet", "row", columns, parquet_rows)
    head = _head(path, gzipped)
    if head[:2] == GZIP_MAGIC:
        raise BenchmarkFileError(path, "expected one layer of gzip, got a gzip file inside a gzip file")
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped:
        raise BenchmarkFileError(path, "expected at least one row, got an empty file")
    if suffix in CSV_SUFFIXES:
        delimiter = CSV_SUFFIXES[suffix]
        header, _ = _csv_rows(path, gzipped, delimiter)
        kind = "TSV" if delimiter == "\t" else "CSV"
        return Container(path, kind + note, "row", header, lambda wanted: _csv_rows(path, gzipped, delimiter)[1])
    if stripped[:1] == b"[":
        records = _json_array(path, gzipped)
        if not records:
            raise BenchmarkFileError(path, "expected at least one row, got an empty file")
        return Container(path, "JSON array" + note, "row", _keys_of(enumerate(records, start=1)),
                         lambda wanted: enumerate(records, start=1))
    if stripped[:1] == b"{":
        first_line = stripped.split(b"\n", 1)[0]
        try:
            json.loads(first_line.decode("utf-8", "replace"))
            whole_line = True
        except ValueError:
            whole_line = False
        if not whole_line:
            # Not a row a line: maybe one pretty-printed JSON object, which is no table of rows.
            try:
                whole = json.loads(_read_all(path, gzipped).decode("utf-8-sig"))
            except (ValueError, UnicodeDecodeError):
                whole = None
            if isinstance(whole, dict):
                keys = ", ".join(list(map(str, whole))[:8])
                raise BenchmarkFileError(path, "expected JSON Lines (one object a line) or a JSON array of objects, "
                                               f"got one JSON object (keys: {keys})")
        return Container(path, "JSON Lines" + note, "line", _keys_of(_jsonl_rows(path, gzipped)),
                         lambda wanted: _jsonl_rows(path, gzipped))
    start = stripped[:24].decode("utf-8", "replace")
    raise BenchmarkFileError(path, "expected JSON Lines, a JSON array, Parquet, or CSV/TSV named .csv/.tsv; "
                                   f"the file starts with {start!r}")


def data_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files to read, files skipped as not data) under a folder, recursively, in name order; hidden files
    and folders (.git, .cache) are neither."""
    folder = Path(folder)
    read, skipped = [], []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in NOT_DATA_SUFFIXES or path.name.lower() in ("readme", "license", "licence"):
            skipped.append(path)
        else:
            read.append(path)
    return read, skipped
