"""graph_edges as the pipeline published it before docs/privacy.md: exact counts and score, and
times as float years from the newest second. Kept as the reference the coarse columns are measured
against (the linkage test, and bench/coarse_edge_features.py for the encoder's accuracy); never written
to the lake."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from zipp_assets import lake
from zipp_assets.graph.user_keys import canonical_key_sql, create_pseudonym_table, create_user_aliases

# Each exact column with the SQL the old graph/tables.py used, over a pair's aggregates.
EXACT_COLUMNS = {
    "comment_count": "comment_count", "submission_count": "submission_count", "score_sum": "score_sum",
    "active_months": "active_months",
    "recency_years": "((epoch($newest::TIMESTAMPTZ) - epoch(last_utc))::FLOAT / (365.25 * 86400))::FLOAT",
    "span_years": "((epoch(last_utc) - epoch(first_utc))::FLOAT / (365.25 * 86400))::FLOAT",
}


def exact_graph_edges(lake_dir: Path, key: bytes, users: pa.Table, subreddits: pa.Table) -> pa.Table:
    """The graph's (user_index, subreddit_index) pairs with the exact columns, rebuilt from the
    monthly edges (`key`: the pseudonym key the graph was built with, to find each user's index)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("monthly_edges", lake.open_table(lake_dir, "reddit_user_subreddit_edges").to_dataset())
        create_user_aliases(con, lake_dir)
        canonical, join = canonical_key_sql("e.user_key")
        con.sql(f"""CREATE TEMP TABLE pairs AS SELECT {canonical} AS user_key, e.subreddit,
                    sum(e.comment_count)::BIGINT AS comment_count, sum(e.submission_count)::BIGINT AS submission_count,
                    sum(e.score_sum)::BIGINT AS score_sum, min(e.first_utc) AS first_utc, max(e.last_utc) AS last_utc,
                    count(DISTINCT e.month)::BIGINT AS active_months
                    FROM monthly_edges e {join} GROUP BY 1, 2""").fetchall()
        create_pseudonym_table(con, "SELECT DISTINCT user_key FROM pairs", key, "pseudonyms")
        con.register("users", users.select(["user_index", "user_id"]))
        con.register("subreddits", subreddits.select(["subreddit_index", "subreddit"]))
        con.sql("""CREATE TEMP TABLE kept AS SELECT u.user_index, s.subreddit_index, p.* FROM pairs p
                   JOIN pseudonyms USING (user_key) JOIN users u USING (user_id) JOIN subreddits s USING (subreddit)""").fetchall()
        newest = con.sql("SELECT max(last_utc) FROM kept").fetchall()[0][0]
        columns = ", ".join(f"{sql} AS {name}" for name, sql in EXACT_COLUMNS.items())
        return con.sql(f"SELECT user_index, subreddit_index, {columns} FROM kept ORDER BY user_index, subreddit_index",
                       params={"newest": newest}).to_arrow_table()
