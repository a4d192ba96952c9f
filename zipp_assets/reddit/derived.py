"""Monthly tables derived from the ingested ones: image posts and user-subreddit edges."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from zipp_assets import lake
from zipp_assets.reddit.ingest import open_ingested
from zipp_assets.reddit.authors import is_person, person_filter_sql
from zipp_assets.reddit.image_urls import url_cache_key
from zipp_assets.reddit.schemas import EDGES_SCHEMA, IMAGE_POSTS_SCHEMA

BATCH_ROWS = 200_000


@dataclass
class DerivedReport:
    month: str
    rows_in: int
    rows_out: int
    seconds: float
    version: int  # the Delta version this month's commit made


def ingested_month(lake_dir: Path, kind: str, month: str) -> pads.Dataset:
    """The month of `reddit_<kind>`, after checking that it and its quarantine come from one ingestion
    (a month that was never ingested is an error, not an empty month)."""
    return open_ingested(lake_dir, kind, [month]).to_dataset([{"month": month}])


def build_image_posts(lake_dir: Path, month: str) -> DerivedReport:
    """One row per image of each submission by a person: what the image stages will fetch and embed."""
    started = time.perf_counter()
    columns = ["id", "user_key", "author", "subreddit", "created_utc", "over_18", "image_urls", "image_sources"]
    dataset = ingested_month(lake_dir, "submissions", month)
    rows_in = 0
    with lake.build(lake_dir) as together:
        folder = together.partition("reddit_image_posts", {"month": month})
        with lake.RotatingParquetWriter(folder, IMAGE_POSTS_SCHEMA) as writer:
            for batch in dataset.to_batches(columns=columns, batch_size=BATCH_ROWS):
                rows_in += batch.num_rows
                table = pa.Table.from_batches([batch])
                people = pc.and_(
                    pc.is_valid(table["user_key"]),
                    pc.greater(pc.list_value_length(table["image_urls"]), 0),
                )
                table = table.filter(pc.fill_null(people, False))
                table = table.filter(pa.array([is_person(a) for a in table["author"].to_pylist()], pa.bool_()))
                if table.num_rows == 0:
                    continue
                parents = pc.list_parent_indices(table["image_urls"])
                urls = pc.list_flatten(table["image_urls"])
                sources = pc.list_flatten(table["image_sources"])
                positions = _positions_within_lists(table["image_urls"])
                url_list = urls.to_pylist()
                writer.write(
                    pa.table(
                        {
                            "post_id": pc.take(table["id"], parents),
                            "user_key": pc.take(table["user_key"], parents),
                            "subreddit": pc.take(table["subreddit"], parents),
                            "created_utc": pc.take(table["created_utc"], parents),
                            "over_18": pc.fill_null(pc.take(table["over_18"], parents), False),
                            "image_index": pa.array(positions, pa.int32()),
                            "image_url": urls,
                            "image_source": sources,
                            "url_key": pa.array([url_cache_key(u) for u in url_list], pa.string()),
                        }
                    )
                )
    return DerivedReport(month, rows_in, writer.rows_written, time.perf_counter() - started,
                         together.versions["reddit_image_posts"])


def _positions_within_lists(lists: pa.ChunkedArray) -> list[int]:
    positions: list[int] = []
    for length in pc.list_value_length(lists).to_pylist():
        positions.extend(range(length or 0))
    return positions


def build_user_subreddit_edges(lake_dir: Path, month: str, memory_limit: str = "2GB") -> DerivedReport:
    """Per (user, subreddit): comments, submissions, score sum, first and last time, for people only.

    DuckDB aggregates out of core (spilling under `memory_limit`) and the result is streamed into
    the lake in batches, so a month of any size fits.
    """
    started = time.perf_counter()
    comments = ingested_month(lake_dir, "comments", month)
    submissions = ingested_month(lake_dir, "submissions", month)
    person = person_filter_sql("author")
    query = f"""
        WITH interactions AS (
            SELECT user_key, subreddit, 1 AS is_comment, coalesce(score, 0) AS score, created_utc
            FROM comments WHERE user_key IS NOT NULL AND {person}
            UNION ALL
            SELECT user_key, subreddit, 0 AS is_comment, coalesce(score, 0) AS score, created_utc
            FROM submissions WHERE user_key IS NOT NULL AND {person}
        )
        SELECT user_key, subreddit,
               sum(is_comment)::BIGINT AS comment_count,
               (count(*) - sum(is_comment))::BIGINT AS submission_count,
               sum(score)::BIGINT AS score_sum,
               min(created_utc) AS first_utc,
               max(created_utc) AS last_utc
        FROM interactions
        GROUP BY user_key, subreddit
        ORDER BY user_key, subreddit
    """
    rows_in = 0
    with lake.spilling_duckdb(memory_limit) as con:
        con.execute("SET preserve_insertion_order = false")
        con.register("comments", comments)
        con.register("submissions", submissions)
        rows_in = con.sql("SELECT (SELECT count(*) FROM comments) + (SELECT count(*) FROM submissions)").fetchall()[0][0]
        reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
        with lake.build(lake_dir) as together:
            folder = together.partition("reddit_user_subreddit_edges", {"month": month})
            with lake.RotatingParquetWriter(folder, EDGES_SCHEMA) as writer:
                for batch in reader:
                    writer.write(pa.Table.from_batches([batch]))
    return DerivedReport(month, rows_in, writer.rows_written, time.perf_counter() - started,
                         together.versions["reddit_user_subreddit_edges"])
