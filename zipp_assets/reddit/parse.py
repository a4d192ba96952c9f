"""Parse blocks of dump lines into typed Arrow tables, sending unusable lines to quarantine."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import polars as pl
import pyarrow as pa

from zipp_assets.reddit.authors import DELETED_AUTHORS
from zipp_assets.reddit.dumps import MAX_LINE_BYTES, LineBlock
from zipp_assets.reddit.image_urls import extract_image_urls
from zipp_assets.reddit.schemas import (
    COMMENTS_SCHEMA,
    QUARANTINE_SCHEMA,
    SUBMISSIONS_SCHEMA,
    CommentRecord,
    SubmissionRecord,
)

# Reddit's first post is from 2005-06; anything before is a broken timestamp, as is the far future.
MIN_CREATED_UTC = 1104537600  # 2005-01-01
MAX_CREATED_UTC = 4102444800  # 2100-01-01
EXCERPT_CHARS = 200


@dataclass
class Quarantine:
    file: list[str] = field(default_factory=list)
    line: list[int] = field(default_factory=list)
    byte_offset: list[int] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    excerpt: list[str] = field(default_factory=list)

    def add(self, file: str, line: int, offset: int, reason: str, raw: bytes) -> None:
        self.file.append(file)
        self.line.append(line)
        self.byte_offset.append(offset)
        self.reason.append(reason)
        self.excerpt.append(raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_CHARS])

    def __len__(self) -> int:
        return len(self.line)

    def to_table(self) -> pa.Table:
        return pa.table(
            {name: getattr(self, name) for name in QUARANTINE_SCHEMA.names}, schema=QUARANTINE_SCHEMA
        )


def _scrub(value):
    """Replace lone surrogates (half an emoji cut by an old scraper) so the text encodes as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


class RecordDecoder:
    """Fast typed decoding with msgspec; a slower tolerant path for text the fast path rejects."""

    def __init__(self, record_type: type):
        self.record_type = record_type
        self._fast = msgspec.json.Decoder(record_type, strict=False)
        self.fast_decode = self._fast.decode
        # Nested JSON kept as `msgspec.Raw` (submissions' `preview`, `media_metadata`, ...): the
        # tolerant path re-encodes it, since `msgspec.convert` takes only bytes for a Raw field.
        self._raw_fields = [f.name for f in msgspec.structs.fields(record_type) if f.type is msgspec.Raw]

    def decode(self, line: bytes):
        """The typed record; raises msgspec.DecodeError / ValidationError with the reason."""
        try:
            return self._fast.decode(line)
        except msgspec.ValidationError:
            raise
        except (msgspec.DecodeError, UnicodeDecodeError) as fast_error:
            # Invalid UTF-8 inside a string or lone surrogate escapes: keep the record, repair the text.
            try:
                obj = json.loads(line.decode("utf-8", errors="replace"))
            except ValueError:
                raise fast_error from None
            if not isinstance(obj, dict):
                raise msgspec.ValidationError(f"Expected `object`, got `{type(obj).__name__}`") from None
            obj = _scrub(obj)
            for name in self._raw_fields:
                if name in obj:
                    obj[name] = msgspec.Raw(msgspec.json.encode(obj[name]))
            return msgspec.convert(obj, self.record_type, strict=False)


def _line_offsets(block: LineBlock, lines: list[bytes]) -> list[int]:
    return list(itertools.accumulate((len(line) + 1 for line in lines[:-1]), initial=block.first_offset))


@dataclass
class DecodedBlock:
    """The usable lines of a block and their typed records."""

    block: LineBlock
    lines: list[bytes]
    records: list
    indices: list[int]  # index into `lines` of each record


def decode_block(block: LineBlock, decoder: RecordDecoder, file_name: str, quarantine: Quarantine) -> DecodedBlock:
    """Decode and type-check every line of a block, quarantining the lines that cannot be used."""
    if block.too_long:  # one line the reader would not keep: only its length and first bytes are here
        quarantine.add(file_name, block.first_line, block.first_offset,
                       f"line too long (byte length {block.too_long:,}; the reader keeps lines of up to "
                       f"{MAX_LINE_BYTES:,} bytes)", block.data)
        return DecodedBlock(block, [], [], [])
    lines = block.data.split(b"\n")
    try:
        # Fast path for the usual block where every line is good: no per-line bookkeeping.
        fast = decoder.fast_decode
        records = [fast(line) for line in lines]
        return DecodedBlock(block, lines, records, list(range(len(lines))))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        pass
    records, indices = [], []
    bad: list[tuple[int, str]] = []
    decode = decoder.decode
    for index, line in enumerate(lines):
        try:
            record = decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            bad.append((index, "empty line" if not line.strip() else f"{type(exc).__name__}: {exc}"))
            continue
        records.append(record)
        indices.append(index)
    if bad:
        offsets = _line_offsets(block, lines)
        for index, reason in bad:
            quarantine.add(file_name, block.first_line + index, offsets[index], reason, lines[index])
    return DecodedBlock(block, lines, records, indices)


def _user_keys(authors: list[str], fullnames: list[str | None]) -> list[str | None]:
    """author_fullname when present, else the username; none for deleted authors."""
    return [
        (fullname or author) if author not in DELETED_AUTHORS else None
        for author, fullname in zip(authors, fullnames)
    ]


def _finalize(
    frame: pl.DataFrame, schema: pa.Schema, decoded: DecodedBlock, file_name: str, quarantine: Quarantine
) -> pa.Table:
    """Quarantine rows with impossible values, then cast to the lake schema.

    `frame` has one row per record of `decoded`, in order, with `created_utc` as float seconds. The
    checks run in polars: pyarrow's compute functions take Python scalars, and its first Python
    scalar imports pandas (0.75 s in each parse worker), which nothing else on this path needs.
    """
    created = pl.col("created_utc")
    plausible = (created.is_finite() & (created >= float(MIN_CREATED_UTC)) & (created < float(MAX_CREATED_UTC))).fill_null(False)
    nonempty = ((pl.col("id").str.len_bytes() > 0) & (pl.col("subreddit").str.len_bytes() > 0)).fill_null(False)
    checks = frame.select(plausible.alias("plausible"), (plausible & nonempty).alias("keep"))
    if not checks["keep"].all():
        offsets = _line_offsets(decoded.block, decoded.lines)
        bad_rows = checks.with_row_index("row").filter(~pl.col("keep"))
        created_values = frame["created_utc"].to_list()
        for row, was_plausible in bad_rows.select("row", "plausible").iter_rows():
            index = decoded.indices[row]
            if not was_plausible:
                reason = f"ValidationError: `created_utc` {created_values[row]!r} is not a plausible creation time"
            else:
                reason = "ValidationError: empty `id` or `subreddit`"
            quarantine.add(file_name, decoded.block.first_line + index, offsets[index], reason, decoded.lines[index])
        frame = frame.filter(checks["keep"])
    # Whole seconds, as the dumps mean them, stored as microseconds.
    frame = frame.with_columns((created.floor().cast(pl.Int64) * 1_000_000).cast(pl.Datetime("us", "UTC")))
    return frame.select(schema.names).to_arrow().cast(schema)


# --- comments ---------------------------------------------------------------------------------
# The typed records are re-encoded by msgspec as one compact JSON array holding only the fields
# kept (about 40% of the dump's bytes), which polars turns into Arrow columns in Rust: far cheaper
# than building Arrow arrays from Python objects, or than parsing the full dump lines a second time.
# The records are already type-checked and normalised (lax `created_utc`, repaired text), so the
# only field of mixed type left is `edited` (false, or the edit time).
_COMMENT_FRAME_SCHEMA = {name: pl.String for name in CommentRecord.__struct_fields__} | {
    "created_utc": pl.Float64,
    "score": pl.Int64,
}
_RECORD_ENCODER = msgspec.json.Encoder()
_FALSE_TEXTS = ["false", "0", "0.0"]


def comments_table(
    block: LineBlock, file_name: str, quarantine: Quarantine, decoder: RecordDecoder | None = None
) -> pa.Table:
    decoded = decode_block(block, decoder or RecordDecoder(CommentRecord), file_name, quarantine)
    return build_comments(decoded, file_name, quarantine)


def build_comments(decoded: DecodedBlock, file_name: str, quarantine: Quarantine) -> pa.Table:
    """Arrow columns of a decoded block of comments."""
    if not decoded.records:
        return COMMENTS_SCHEMA.empty_table()
    frame = pl.read_json(_RECORD_ENCODER.encode(decoded.records), schema=_COMMENT_FRAME_SCHEMA)
    frame = frame.select(
        pl.col("id").str.strip_prefix("t1_"),
        "link_id",
        "parent_id",
        "subreddit",
        "subreddit_id",
        "author",
        "author_fullname",
        pl.when(pl.col("author").is_in(list(DELETED_AUTHORS)))
        .then(None)
        .otherwise(pl.coalesce(pl.when(pl.col("author_fullname") != "").then("author_fullname"), "author"))
        .alias("user_key"),
        "created_utc",
        "score",
        (pl.col("edited").is_not_null() & ~pl.col("edited").is_in(_FALSE_TEXTS)).alias("edited"),
        "distinguished",
        "body",
    )
    return _finalize(frame, COMMENTS_SCHEMA, decoded, file_name, quarantine)


# --- submissions ------------------------------------------------------------------------------
_NULL = b"null"
_POLARS_TYPES = {pa.string(): pl.String, pa.int64(): pl.Int64, pa.float64(): pl.Float64, pa.bool_(): pl.Boolean}


def _polars_type(arrow_type: pa.DataType) -> pl.DataType:
    """The polars type of a lake column (`pl.from_arrow` would import pandas to find out)."""
    if pa.types.is_list(arrow_type):
        return pl.List(_polars_type(arrow_type.value_type))
    if pa.types.is_timestamp(arrow_type):
        return pl.Datetime(arrow_type.unit, arrow_type.tz)
    return _POLARS_TYPES[arrow_type]


# The lake's columns in polars' types, with the creation time still as float seconds.
_SUBMISSION_FRAME_SCHEMA = {f.name: _polars_type(f.type) for f in SUBMISSIONS_SCHEMA} | {"created_utc": pl.Float64}


def _post_images(record: SubmissionRecord) -> list[tuple[str, str]]:
    """Image URLs of one submission; nested JSON is decoded only when it can matter."""
    post: dict = {"url": record.url, "post_hint": record.post_hint, "is_self": record.is_self}
    if bytes(record.media_metadata) != _NULL:
        post["media_metadata"] = msgspec.json.decode(record.media_metadata)
        post["gallery_data"] = msgspec.json.decode(record.gallery_data)
    if record.post_hint == "image" and bytes(record.preview) != _NULL:
        post["preview"] = msgspec.json.decode(record.preview)
    if bytes(record.crosspost_parent_list) != _NULL:
        post["crosspost_parent_list"] = msgspec.json.decode(record.crosspost_parent_list)
    return extract_image_urls(post)


def submissions_table(
    block: LineBlock, file_name: str, quarantine: Quarantine, decoder: RecordDecoder | None = None
) -> pa.Table:
    decoded = decode_block(block, decoder or RecordDecoder(SubmissionRecord), file_name, quarantine)
    return build_submissions(decoded, file_name, quarantine)


def build_submissions(decoded: DecodedBlock, file_name: str, quarantine: Quarantine) -> pa.Table:
    """Submissions take the record path: image URLs need per-post logic over nested JSON."""
    if not decoded.records:
        return SUBMISSIONS_SCHEMA.empty_table()
    r = decoded.records
    images = [_post_images(x) for x in r]
    authors = [x.author for x in r]
    fullnames = [x.author_fullname for x in r]
    schema = SUBMISSIONS_SCHEMA
    columns = {
        "id": [x.id.removeprefix("t3_") for x in r],
        "subreddit": [x.subreddit for x in r],
        "subreddit_id": [x.subreddit_id for x in r],
        "author": authors,
        "author_fullname": fullnames,
        "user_key": _user_keys(authors, fullnames),
        "created_utc": [x.created_utc for x in r],
        "title": [x.title for x in r],
        "selftext": [x.selftext for x in r],
        "url": [x.url for x in r],
        "domain": [x.domain for x in r],
        "score": [x.score for x in r],
        "num_comments": [x.num_comments for x in r],
        "over_18": [x.over_18 for x in r],
        "is_self": [x.is_self for x in r],
        "post_hint": [x.post_hint for x in r],
        "is_gallery": [x.is_gallery for x in r],
        "crosspost_parent": [x.crosspost_parent for x in r],
        "edited": [bool(x.edited) for x in r],
        "image_urls": [[u for u, _ in pairs] for pairs in images],
        "image_sources": [[s for _, s in pairs] for pairs in images],
    }
    return _finalize(pl.DataFrame(columns, schema=_SUBMISSION_FRAME_SCHEMA), schema, decoded, file_name, quarantine)


# kind -> (record type, builder of a decoded block's table)
TABLE_BUILDERS: dict[str, tuple[type, Callable[[DecodedBlock, str, Quarantine], pa.Table]]] = {
    "comments": (CommentRecord, build_comments),
    "submissions": (SubmissionRecord, build_submissions),
}
