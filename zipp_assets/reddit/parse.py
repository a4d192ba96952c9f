"""Parse blocks of dump lines into typed Arrow tables, sending unusable lines to quarantine."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from zipp_assets.reddit.dumps import LineBlock
from zipp_assets.reddit.image_urls import extract_image_urls
from zipp_assets.reddit.schemas import (
    COMMENTS_SCHEMA,
    TIMESTAMP,
    QUARANTINE_SCHEMA,
    SUBMISSIONS_SCHEMA,
    CommentRecord,
    SubmissionRecord,
)

# Reddit's first post is from 2005-06; anything before is a broken timestamp, as is the far future.
MIN_CREATED_UTC = 1104537600  # 2005-01-01
MAX_CREATED_UTC = 4102444800  # 2100-01-01
EXCERPT_CHARS = 200
DELETED_AUTHORS = frozenset({"[deleted]", "[removed]", ""})


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

    def decode(self, line: bytes):
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
            return msgspec.convert(_scrub(obj), self.record_type, strict=False)


def _line_offsets(block: LineBlock, lines: list[bytes]) -> list[int]:
    return list(itertools.accumulate((len(line) + 1 for line in lines[:-1]), initial=block.first_offset))


def decode_block(
    block: LineBlock, decoder: RecordDecoder, file_name: str, quarantine: Quarantine
) -> tuple[list, list[int]]:
    """Decode every line of a block; return records and their line numbers, quarantining the rest."""
    lines = block.data.split(b"\n")
    records = []
    line_numbers = []
    bad: list[tuple[int, str]] = []
    decode = decoder.decode
    for index, line in enumerate(lines):
        try:
            records.append(decode(line))
            line_numbers.append(block.first_line + index)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            bad.append((index, "empty line" if not line.strip() else f"{type(exc).__name__}: {exc}"))
    if bad:
        offsets = _line_offsets(block, lines)
        for index, reason in bad:
            quarantine.add(file_name, block.first_line + index, offsets[index], reason, lines[index])
    return records, line_numbers


def _user_keys(authors: list[str], fullnames: list[str | None]) -> list[str | None]:
    """author_fullname when present, else the username; none for deleted authors."""
    return [
        (fullname or author) if author not in DELETED_AUTHORS else None
        for author, fullname in zip(authors, fullnames)
    ]


def _strip_prefix(values: list[str], prefix: str) -> pa.Array:
    return pc.replace_substring_regex(pa.array(values, pa.string()), f"^{prefix}", "")


def _plausible_time(value: float) -> bool:
    return math.isfinite(value) and MIN_CREATED_UTC <= value < MAX_CREATED_UTC


def _timestamps(values: list[float]) -> pa.Array:
    # Implausible values become 0 here; _row_problems quarantines those rows before writing.
    return pa.array([int(v) if _plausible_time(v) else 0 for v in values], pa.int64()).cast(TIMESTAMP)


def _row_problems(records: list, created: list[float]) -> list[tuple[int, str]]:
    """Rows that decoded but hold impossible values, with the reason."""
    problems = [
        (i, f"ValidationError: `created_utc` {value!r} is not a plausible creation time")
        for i, value in enumerate(created)
        if not _plausible_time(value)
    ]
    problems += [
        (i, "ValidationError: empty `id` or `subreddit`") for i, r in enumerate(records) if not r.id or not r.subreddit
    ]
    return problems


def _finish(
    columns: dict,
    schema: pa.Schema,
    problems: list[tuple[int, str]],
    line_numbers: list[int],
    block: LineBlock,
    file_name: str,
    quarantine: Quarantine,
) -> pa.Table:
    table = pa.table(columns, schema=schema)
    if not problems:
        return table
    reasons: dict[int, str] = {}
    for i, reason in problems:
        reasons.setdefault(i, reason)
    lines = block.data.split(b"\n")
    offsets = _line_offsets(block, lines)
    for i, reason in sorted(reasons.items()):
        index = line_numbers[i] - block.first_line
        quarantine.add(file_name, line_numbers[i], offsets[index], reason, lines[index])
    keep = pc.invert(pc.is_in(pa.array(range(table.num_rows)), pa.array(sorted(reasons))))
    return table.filter(keep)


def comments_table(
    block: LineBlock, file_name: str, quarantine: Quarantine, decoder: RecordDecoder | None = None
) -> pa.Table:
    records, line_numbers = decode_block(block, decoder or RecordDecoder(CommentRecord), file_name, quarantine)
    if not records:
        return COMMENTS_SCHEMA.empty_table()
    (ids, authors, subreddits, created, fullnames, subreddit_ids, link_ids, parent_ids, bodies, scores,
     edited, distinguished) = zip(*(msgspec.structs.astuple(r) for r in records))
    columns = {
        "id": _strip_prefix(ids, "t1_"),
        "link_id": link_ids,
        "parent_id": parent_ids,
        "subreddit": subreddits,
        "subreddit_id": subreddit_ids,
        "author": authors,
        "author_fullname": fullnames,
        "user_key": _user_keys(authors, fullnames),
        "created_utc": _timestamps(created),
        "score": scores,
        "edited": [bool(v) for v in edited],
        "distinguished": distinguished,
        "body": bodies,
    }
    problems = _row_problems(records, created)
    return _finish(columns, COMMENTS_SCHEMA, problems, line_numbers, block, file_name, quarantine)


_NULL = b"null"


def _post_images(record: SubmissionRecord) -> list[tuple[str, str]]:
    """Image URLs of one submission; nested JSON is decoded only when it can matter."""
    post: dict = {"url": record.url, "post_hint": record.post_hint, "is_self": record.is_self}
    may_have_images = False
    if bytes(record.media_metadata) != _NULL:
        post["media_metadata"] = msgspec.json.decode(record.media_metadata)
        post["gallery_data"] = msgspec.json.decode(record.gallery_data)
        may_have_images = True
    if record.post_hint == "image" and bytes(record.preview) != _NULL:
        post["preview"] = msgspec.json.decode(record.preview)
    if bytes(record.crosspost_parent_list) != _NULL:
        post["crosspost_parent_list"] = msgspec.json.decode(record.crosspost_parent_list)
        may_have_images = True
    if not may_have_images and not record.url and record.post_hint != "image":
        return []
    return extract_image_urls(post)


def submissions_table(
    block: LineBlock, file_name: str, quarantine: Quarantine, decoder: RecordDecoder | None = None
) -> pa.Table:
    records, line_numbers = decode_block(block, decoder or RecordDecoder(SubmissionRecord), file_name, quarantine)
    if not records:
        return SUBMISSIONS_SCHEMA.empty_table()
    r = records
    created = [x.created_utc for x in r]
    images = [_post_images(x) for x in r]
    authors = [x.author for x in r]
    fullnames = [x.author_fullname for x in r]
    columns = {
        "id": _strip_prefix([x.id for x in r], "t3_"),
        "subreddit": [x.subreddit for x in r],
        "subreddit_id": [x.subreddit_id for x in r],
        "author": authors,
        "author_fullname": fullnames,
        "user_key": _user_keys(authors, fullnames),
        "created_utc": _timestamps(created),
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
    problems = _row_problems(records, created)
    return _finish(columns, SUBMISSIONS_SCHEMA, problems, line_numbers, block, file_name, quarantine)


TABLE_BUILDERS: dict[str, tuple[Callable, type]] = {
    "comments": (comments_table, CommentRecord),
    "submissions": (submissions_table, SubmissionRecord),
}
