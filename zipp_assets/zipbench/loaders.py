"""Loaders for external benchmark files on disk, so real benchmarks run without code changes.

Three kinds of file, each read into a pyarrow Table with a fixed schema:

- `load_generation_histories`: ZIPBench's released rows, Civitai generation records linked to a
  Reddit account. Input fields: `prompt`, `negativePrompt`, `url`, `seed`, `steps`, `sampler`,
  `cfgScale`, `width`, `height`, `civitai_username`, `reddit_username`. Required: prompt and
  reddit_username. Output columns are their snake_case names (negative_prompt, cfg_scale, ...).
- `load_prompt_histories`: prompt histories per user, as in the PIP dataset of Tailored Visions
  (Chen et al. 2024): a user id, a prompt, an optional timestamp (ISO 8601 text, or epoch seconds).
  Accepted column names: user id = user_id, user, uid, username, author; prompt = prompt, text,
  query, caption; timestamp = timestamp, time, created_at, created, date, datetime.
- `load_preference_pairs`: per-user preference pairs with optional demographics (Rapidata-style):
  user_id (or user, uid, annotator_id, rater_id, username), prompt, image_a (or image1), image_b
  (or image2), preferred ("a", "b" or "tie"; or preference, choice, winner), and optional age_band
  (or age_group), gender, locale (or country), profession (or occupation). Image fields are paths or
  URLs kept as untrusted strings: nothing here opens or fetches them.

Column names match ignoring case, '_', '-' and spaces (cfgScale = cfg_scale); other columns are
ignored; a row naming one field twice (user and user_id) is a bad row. The format comes from the
extension: .jsonl/.ndjson (one object a line), .json (an array of objects), .csv (a header row;
empty cells are missing), .parquet.

Values are coerced strictly: integers are ints, integral floats or digit strings (7.5 steps is
bad), sizes and steps are positive, numbers are finite. Text has control characters removed
(newlines and tabs become spaces) and is stripped and capped in length. User names and ids must be
letters, digits, '_' or '-' (at most 128): a name is never a path. A leading "u/" is dropped.

A bad row raises `BenchmarkFileError` naming the file, the 1-based row (the line, for JSONL), the
field and what was expected. With `on_bad_row="skip"` the loader returns (rows, rejected): the bad
rows with their reasons as a second table, never a silent drop. A file that cannot be read as a
whole (missing, unknown extension, empty, a JSON or CSV file that is not UTF-8 or does not parse)
always raises.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, overload

import pyarrow as pa
import pyarrow.parquet as pq

OnBadRow = Literal["raise", "skip"]
EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
PROMPT_CAP = 4000  # characters; longer prompts are cut
URL_CAP = 2048
LABEL_CAP = 128  # sampler names, demographic values
RAW_CAP = 500  # of a rejected row's raw text kept in the rejected table
MAX_SIZE = 1 << 16  # pixels; anything larger is garbage, not an image size
INT64_MAX = (1 << 63) - 1
USER_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
# C0/C1 controls and the bidirectional overrides that can disguise text; newlines and tabs become spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACE_CONTROL = re.compile(r"[\t\n\r]")
_INTEGER = re.compile(r"[+-]?\d+")


class BenchmarkFileError(ValueError):
    """A benchmark file, or one of its rows, that cannot be read as the loader expects."""

    def __init__(self, path: Path, problem: str, *, row: int | None = None, field: str | None = None,
                 row_word: str = "row"):
        self.path, self.problem, self.row, self.field = Path(path), problem, row, field
        where = str(path)
        if row is not None:
            where += f", {row_word} {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


class _BadValue(Exception):
    """Raised by a field parser with what was expected; the loader adds file, row and field."""


class _BadRow(Exception):
    """A row that cannot be used: the field at fault (None for the row as a whole) and the reason."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


# --- values ------------------------------------------------------------------------------------

def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", str: "text"}.get(type(value), type(value).__name__)


def clean_text(value: str, cap: int) -> str:
    """Control characters removed (newlines and tabs become spaces), stripped, at most `cap` characters."""
    return _CONTROL.sub("", _SPACE_CONTROL.sub(" ", value)).strip()[:cap]


def _text(cap: int) -> Callable[[object], str | None]:
    def parse(value: object) -> str | None:
        if not isinstance(value, str):
            raise _BadValue(f"expected text, got {_type_name(value)} {_shown(value)}")
        return clean_text(value, cap) or None
    return parse


def _user_name(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # numeric user ids
    if not isinstance(value, str):
        raise _BadValue(f"expected a user name or id, got {_type_name(value)} {_shown(value)}")
    name = value.strip()
    for prefix in ("/u/", "u/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if not name:
        return None
    if not USER_NAME.fullmatch(name):
        raise _BadValue(f"expected a user name (1-128 letters, digits, '_' or '-'), got {_shown(value)}")
    return name


def _integer(minimum: int, maximum: int = INT64_MAX) -> Callable[[object], int | None]:
    def parse(value: object) -> int | None:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            number = int(value.strip())
        elif isinstance(value, str) and not value.strip():
            return None
        if number is None:
            raise _BadValue(f"expected an integer, got {_type_name(value)} {_shown(value)}")
        if not minimum <= number <= maximum:
            raise _BadValue(f"expected an integer within {minimum}..{maximum}, got {number}")
        return number
    return parse


def _number(minimum: float) -> Callable[[object], float | None]:
    def parse(value: object) -> float | None:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and value.strip():
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        elif isinstance(value, str):
            return None
        if number is None or not math.isfinite(number):
            raise _BadValue(f"expected a finite number, got {_type_name(value)} {_shown(value)}")
        if number < minimum:
            raise _BadValue(f"expected a number >= {minimum}, got {number}")
        return number
    return parse


def _choice(options: tuple[str, ...]) -> Callable[[object], str | None]:
    def parse(value: object) -> str | None:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        if isinstance(value, str) and not value.strip():
            return None
        raise _BadValue(f"expected one of {', '.join(map(repr, options))}, got {_shown(value)}")
    return parse


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, datetime):  # Parquet timestamps
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and not value.strip():
        return None
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            except ValueError:
                moment = None
            if moment is not None:
                return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds < 32503680000:  # before year 3000
        raise _BadValue(f"expected an ISO 8601 time or epoch seconds, got {_type_name(value)} {_shown(value)}")
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


# --- fields and schemas ------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    name: str  # the output column
    aliases: tuple[str, ...]  # accepted input names, compared by `_key`
    parse: Callable[[object], object]
    type: pa.DataType
    required: bool = False


def _key(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).lower()


def _schema(fields: tuple[Field, ...]) -> pa.Schema:
    return pa.schema([pa.field("source_row", pa.int64(), nullable=False)]
                     + [pa.field(f.name, f.type, nullable=not f.required) for f in fields])


GENERATION_FIELDS = (
    Field("prompt", ("prompt",), _text(PROMPT_CAP), pa.string(), required=True),
    Field("negative_prompt", ("negativePrompt",), _text(PROMPT_CAP), pa.string()),
    Field("url", ("url",), _text(URL_CAP), pa.string()),
    Field("seed", ("seed",), _integer(0), pa.int64()),
    Field("steps", ("steps",), _integer(1, 10_000), pa.int32()),
    Field("sampler", ("sampler",), _text(LABEL_CAP), pa.string()),
    Field("cfg_scale", ("cfgScale", "cfg"), _number(0.0), pa.float64()),
    Field("width", ("width",), _integer(1, MAX_SIZE), pa.int32()),
    Field("height", ("height",), _integer(1, MAX_SIZE), pa.int32()),
    Field("civitai_username", ("civitai_username",), _user_name, pa.string()),
    Field("reddit_username", ("reddit_username",), _user_name, pa.string(), required=True),
)
PROMPT_HISTORY_FIELDS = (
    Field("user_id", ("user_id", "user", "uid", "username", "author"), _user_name, pa.string(), required=True),
    Field("prompt", ("prompt", "text", "query", "caption"), _text(PROMPT_CAP), pa.string(), required=True),
    Field("timestamp", ("timestamp", "time", "created_at", "created", "date", "datetime"), _timestamp,
          pa.timestamp("us", tz="UTC")),
)
PREFERENCE_FIELDS = (
    Field("user_id", ("user_id", "user", "uid", "annotator_id", "rater_id", "username"), _user_name, pa.string(),
          required=True),
    Field("prompt", ("prompt", "text", "caption"), _text(PROMPT_CAP), pa.string(), required=True),
    Field("image_a", ("image_a", "image1"), _text(URL_CAP), pa.string(), required=True),
    Field("image_b", ("image_b", "image2"), _text(URL_CAP), pa.string(), required=True),
    Field("preferred", ("preferred", "preference", "choice", "winner"), _choice(("a", "b", "tie")), pa.string(),
          required=True),
    Field("age_band", ("age_band", "age_group"), _text(LABEL_CAP), pa.string()),
    Field("gender", ("gender",), _text(LABEL_CAP), pa.string()),
    Field("locale", ("locale", "country"), _text(LABEL_CAP), pa.string()),
    Field("profession", ("profession", "occupation"), _text(LABEL_CAP), pa.string()),
)
GENERATION_SCHEMA = _schema(GENERATION_FIELDS)
PROMPT_HISTORY_SCHEMA = _schema(PROMPT_HISTORY_FIELDS)
PREFERENCE_SCHEMA = _schema(PREFERENCE_FIELDS)
REJECTED_SCHEMA = pa.schema([
    pa.field("source_row", pa.int64(), nullable=False),  # 1-based row, or line for JSONL
    pa.field("field", pa.string()),  # the field at fault, null when the row as a whole is
    pa.field("reason", pa.string(), nullable=False),
    pa.field("raw", pa.string()),  # the row as read, cleaned and cut to RAW_CAP characters
])


def _pairs_differ(row: dict) -> tuple[str, str] | None:
    if row["image_a"] == row["image_b"]:
        return "image_b", "expected a different image from image_a, got the same one"
    return None


# --- reading records ---------------------------------------------------------------------------

@dataclass
class _Unreadable:
    """A row that is not an object: its reason and raw text."""

    reason: str
    raw: str


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BenchmarkFileError(path, f"expected UTF-8 text, found byte 0x{data[exc.start]:02x}", row=line,
                                 row_word="line") from None


def _jsonl_records(path: Path, data: bytes) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, _Unreadable(f"expected UTF-8 text, found byte 0x{line[exc.start]:02x}",
                                      line.decode("utf-8", "replace"))
            continue
        try:
            yield number, json.loads(text)
        except ValueError as exc:
            yield number, _Unreadable(f"expected a JSON object, got malformed JSON ({exc})", text)


def _json_records(path: Path, data: bytes) -> Iterator[tuple[int, object]]:
    try:
        records = json.loads(_decode(path, data))
    except json.JSONDecodeError as exc:
        raise BenchmarkFileError(path, f"expected a JSON array of objects, got malformed JSON ({exc.msg} at column "
                                       f"{exc.colno})", row=exc.lineno, row_word="line") from None
    if not isinstance(records, list):
        raise BenchmarkFileError(path, f"expected a JSON array of objects, got {_type_name(records)}")
    yield from enumerate(records, start=1)


def _csv_records(path: Path, data: bytes) -> Iterator[tuple[int, object]]:
    reader = csv.reader(io.StringIO(_decode(path, data), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        keys = [_key(name) for name in header]
        duplicates = sorted({name for name, key in zip(header, keys) if keys.count(key) > 1})
        if duplicates:
            raise BenchmarkFileError(path, f"expected distinct column names, got {duplicates} in the header", row=1,
                                     row_word="line")
        for number, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header):
                yield number, _Unreadable(f"expected at most {len(header)} cells, as in the header, got {len(cells)}",
                                          ",".join(cells))
                continue
            # Empty cells are missing values.
            yield number, {name: cell for name, cell in zip(header, cells) if cell.strip()}
    except csv.Error as exc:
        raise BenchmarkFileError(path, f"expected CSV, got {exc}", row=reader.line_num, row_word="line") from None


def _parquet_records(path: Path, data: bytes) -> Iterator[tuple[int, object]]:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise BenchmarkFileError(path, f"expected a Parquet file, got {exc}") from None
    yield from enumerate(table.to_pylist(), start=1)


READERS = {".jsonl": _jsonl_records, ".ndjson": _jsonl_records, ".json": _json_records, ".csv": _csv_records,
           ".parquet": _parquet_records}


def _raw_text(record: object) -> str:
    text = record if isinstance(record, str) else json.dumps(record, default=str, ensure_ascii=False)
    return clean_text(text, RAW_CAP)


def _row(record: object, fields: tuple[Field, ...]) -> dict:
    """The typed row; _BadRow for the first bad field."""
    if isinstance(record, _Unreadable):
        raise _BadRow(None, record.reason)
    if not isinstance(record, dict):
        raise _BadRow(None, f"expected an object, got {_type_name(record)} {_shown(record)}")
    present: dict[str, list[str]] = {}
    for name, value in record.items():
        if value is not None:
            present.setdefault(_key(str(name)), []).append(str(name))
    row = {}
    for spec in fields:
        names = [name for alias in spec.aliases for name in present.get(_key(alias), [])]
        if len(names) > 1:
            raise _BadRow(spec.name, f"expected one column for it, got {names}")
        try:
            value = spec.parse(record[names[0]]) if names else None
        except _BadValue as exc:
            raise _BadRow(spec.name, str(exc)) from None
        if value is None and spec.required:
            raise _BadRow(spec.name, "expected a value, got none (missing or empty)")
        row[spec.name] = value
    return row


def _load(path: str | Path, fields: tuple[Field, ...], schema: pa.Schema, on_bad_row: OnBadRow,
          check: Callable[[dict], tuple[str, str] | None] | None = None):
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', not {on_bad_row!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise BenchmarkFileError(path, f"unknown extension {suffix or '(none)'!r}: expected one of {', '.join(EXTENSIONS)}")
    if not path.is_file():
        raise BenchmarkFileError(path, "no such file" if not path.exists() else "expected a file, got a folder")
    data = path.read_bytes()
    row_word = "line" if suffix in (".jsonl", ".ndjson") else "row"
    rows: list[dict] = []
    rejected: list[dict] = []
    seen = 0
    for number, record in (READERS[suffix](path, data) if data.strip() else ()):
        seen += 1
        try:
            row = _row(record, fields)
            problem = check(row) if check else None
            if problem:
                raise _BadRow(*problem)
        except _BadRow as bad:
            if on_bad_row == "raise":
                raise BenchmarkFileError(path, bad.reason, row=number, field=bad.field, row_word=row_word) from None
            raw = record.raw if isinstance(record, _Unreadable) else record
            rejected.append({"source_row": number, "field": bad.field, "reason": bad.reason, "raw": _raw_text(raw)})
            continue
        rows.append({"source_row": number, **row})
    if not seen:
        raise BenchmarkFileError(path, "expected at least one row, got an empty file")
    table = pa.Table.from_pylist(rows, schema=schema)
    if on_bad_row == "raise":
        return table
    return table, pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA)


# --- the loaders -------------------------------------------------------------------------------

@overload
def load_generation_histories(path: str | Path, *, on_bad_row: Literal["raise"] = ...) -> pa.Table: ...
@overload
def load_generation_histories(path: str | Path, *, on_bad_row: Literal["skip"]) -> tuple[pa.Table, pa.Table]: ...
def load_generation_histories(path, *, on_bad_row="raise"):
    """ZIPBench rows (Civitai generation records linked to Reddit users) -> GENERATION_SCHEMA."""
    return _load(path, GENERATION_FIELDS, GENERATION_SCHEMA, on_bad_row)


@overload
def load_prompt_histories(path: str | Path, *, on_bad_row: Literal["raise"] = ...) -> pa.Table: ...
@overload
def load_prompt_histories(path: str | Path, *, on_bad_row: Literal["skip"]) -> tuple[pa.Table, pa.Table]: ...
def load_prompt_histories(path, *, on_bad_row="raise"):
    """PIP-style prompt histories (user id, prompt, optional timestamp) -> PROMPT_HISTORY_SCHEMA."""
    return _load(path, PROMPT_HISTORY_FIELDS, PROMPT_HISTORY_SCHEMA, on_bad_row)


@overload
def load_preference_pairs(path: str | Path, *, on_bad_row: Literal["raise"] = ...) -> pa.Table: ...
@overload
def load_preference_pairs(path: str | Path, *, on_bad_row: Literal["skip"]) -> tuple[pa.Table, pa.Table]: ...
def load_preference_pairs(path, *, on_bad_row="raise"):
    """Per-user preference pairs with optional demographics -> PREFERENCE_SCHEMA."""
    return _load(path, PREFERENCE_FIELDS, PREFERENCE_SCHEMA, on_bad_row, check=_pairs_differ)
