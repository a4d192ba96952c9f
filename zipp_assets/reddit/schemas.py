"""Record types of the dumps (what is read) and Arrow schemas of the lake tables (what is written).

The record types name only the fields the pipeline uses; every other field of every era (dozens
on 2010s submissions, `_meta` in Arctic Shift files) is skipped by the decoder. Decoding is lax
where the dumps changed type between years: `created_utc` as a number or a numeric string, `edited`
as a bool or a timestamp, counts as numbers or numeric strings.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import pyarrow as pa

# Counts land in int64 columns: a value outside int64 (a corrupt or hostile line) fails decoding with
# a reason naming the field, so the line is quarantined instead of becoming NULL or failing the month.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class CommentRecord(msgspec.Struct, gc=False):
    id: str
    author: str
    subreddit: str
    created_utc: float
    author_fullname: str | None = None
    subreddit_id: str | None = None
    link_id: str | None = None
    parent_id: str | None = None
    body: str | None = None
    score: Int64 | None = None
    edited: bool | float | None = None
    distinguished: str | None = None


class SubmissionRecord(msgspec.Struct, gc=False):
    id: str
    author: str
    subreddit: str
    created_utc: float
    title: str
    author_fullname: str | None = None
    subreddit_id: str | None = None
    selftext: str | None = None
    url: str | None = None
    domain: str | None = None
    score: Int64 | None = None
    num_comments: Int64 | None = None
    over_18: bool | None = None
    is_self: bool | None = None
    post_hint: str | None = None
    is_gallery: bool | None = None
    crosspost_parent: str | None = None
    edited: bool | float | None = None
    # Nested structures are kept raw and decoded only for posts that may carry images.
    media_metadata: msgspec.Raw = msgspec.Raw(b"null")
    gallery_data: msgspec.Raw = msgspec.Raw(b"null")
    preview: msgspec.Raw = msgspec.Raw(b"null")
    crosspost_parent_list: msgspec.Raw = msgspec.Raw(b"null")


# Microseconds: what Parquet, DuckDB and polars all store natively (the dumps carry whole seconds).
TIMESTAMP = pa.timestamp("us", tz="UTC")

COMMENTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("link_id", pa.string()),
        ("parent_id", pa.string()),
        ("subreddit", pa.string()),
        ("subreddit_id", pa.string()),
        ("author", pa.string()),
        ("author_fullname", pa.string()),
        ("user_key", pa.string()),
        ("created_utc", TIMESTAMP),
        ("score", pa.int64()),
        ("edited", pa.bool_()),
        ("distinguished", pa.string()),
        ("body", pa.string()),
    ]
)

SUBMISSIONS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("subreddit", pa.string()),
        ("subreddit_id", pa.string()),
        ("author", pa.string()),
        ("author_fullname", pa.string()),
        ("user_key", pa.string()),
        ("created_utc", TIMESTAMP),
        ("title", pa.string()),
        ("selftext", pa.string()),
        ("url", pa.string()),
        ("domain", pa.string()),
        ("score", pa.int64()),
        ("num_comments", pa.int64()),
        ("over_18", pa.bool_()),
        ("is_self", pa.bool_()),
        ("post_hint", pa.string()),
        ("is_gallery", pa.bool_()),
        ("crosspost_parent", pa.string()),
        ("edited", pa.bool_()),
        ("image_urls", pa.list_(pa.string())),
        ("image_sources", pa.list_(pa.string())),
    ]
)

IMAGE_POSTS_SCHEMA = pa.schema(
    [
        ("post_id", pa.string()),
        ("user_key", pa.string()),
        ("subreddit", pa.string()),
        ("created_utc", TIMESTAMP),
        ("over_18", pa.bool_()),
        ("image_index", pa.int32()),
        ("image_url", pa.string()),
        ("image_source", pa.string()),
        ("url_key", pa.string()),
    ]
)

EDGES_SCHEMA = pa.schema(
    [
        ("user_key", pa.string()),
        ("subreddit", pa.string()),
        ("comment_count", pa.int64()),
        ("submission_count", pa.int64()),
        ("score_sum", pa.int64()),
        ("first_utc", TIMESTAMP),
        ("last_utc", TIMESTAMP),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("byte_offset", pa.int64()),
        ("reason", pa.string()),
        ("excerpt", pa.string()),
    ]
)

SCHEMAS = {
    "reddit_comments": COMMENTS_SCHEMA,
    "reddit_submissions": SUBMISSIONS_SCHEMA,
    "reddit_image_posts": IMAGE_POSTS_SCHEMA,
    "reddit_user_subreddit_edges": EDGES_SCHEMA,
    "reddit_comments_quarantine": QUARANTINE_SCHEMA,
    "reddit_submissions_quarantine": QUARANTINE_SCHEMA,
}
