"""Global graph tables over every ingested month: users, subreddits and featured, split edges.

DuckDB does the aggregation out of core (spilling under a memory limit), so a graph of tens of
millions of edges is built within a few GB. Users are pseudonymised here; no username leaves.
Activity is published coarse (docs/privacy.md): counts and scores in powers of two, times in whole
months. Exact counts or times, matched against the public dumps, name the person behind a pseudonym.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from zipp_assets import lake
from zipp_assets.graph.user_keys import canonical_key_sql, create_pseudonym_table, create_user_aliases
from zipp_assets.reddit.ingest import dataset_name, open_ingested

USERS_SCHEMA = pa.schema(
    [
        ("user_index", pa.int64()),
        ("user_id", pa.string()),
        ("subreddit_count", pa.int64()),
        ("comments_bin", pa.int64()),
        ("submissions_bin", pa.int64()),
        ("score_bin", pa.int64()),
        ("first_utc", pa.timestamp("us", tz="UTC")),
        ("last_utc", pa.timestamp("us", tz="UTC")),
        ("active_months", pa.int64()),
    ]
)
SUBREDDITS_SCHEMA = pa.schema(
    [
        ("subreddit_index", pa.int64()),
        ("subreddit", pa.string()),
        ("user_count", pa.int64()),
        ("comment_count", pa.int64()),
        ("submission_count", pa.int64()),
    ]
)
GRAPH_EDGES_SCHEMA = pa.schema(
    [
        ("user_index", pa.int64()),
        ("subreddit_index", pa.int64()),
        ("comments_bin", pa.int64()),
        ("submissions_bin", pa.int64()),
        ("score_bin", pa.int64()),
        ("active_months", pa.int64()),
        ("recency_months", pa.int64()),
        ("span_months", pa.int64()),
        ("split", pa.string()),
    ]
)
EDGE_FEATURES = ["comments_bin", "submissions_bin", "score_bin", "recency_months", "span_months"]


def count_bin_sql(column: str) -> str:
    """Power-of-two bin of a count: 0 -> 0, 1-2 -> 1, 3-6 -> 2, 7-14 -> 3, ... (floor(log2(1 + n)))."""
    return f"floor(log2(1 + {column}))::BIGINT"


def score_bin_sql(column: str) -> str:
    """The signed power-of-two bin of a score sum: sign(s) * floor(log2(1 + |s|))."""
    return f"(sign({column}) * floor(log2(1 + abs({column}))))::BIGINT"


def bin_floor(bins):
    """The smallest count (or, signed, score) each bin holds: 2^|b| - 1, with the bin's sign."""
    bins = np.asarray(bins, dtype=np.float64)
    return np.sign(bins) * (np.exp2(np.abs(bins)) - 1)


def describe_count_bin(bin_number: int) -> str:
    """The range of counts a bin holds, for text: 0 -> '0', 1 -> '1-2', 3 -> '7-14'."""
    low, high = 2**bin_number - 1, 2 ** (bin_number + 1) - 2
    return str(low) if low == high else f"{low}-{high}"


def month_number_sql(column: str) -> str:
    """Months since year 0 of a UTC timestamp (the connection's TimeZone must be UTC)."""
    return f"(12 * year({column}) + month({column}) - 1)"


# Each published per-pair column, from the pair's aggregates (comment_count, submission_count,
# score_sum, first_utc, last_utc, active_months) and $newest_month (the graph's newest month, as
# month_number_sql). The linkage attack (privacy/linkage.py) computes them from the public dumps
# with these same expressions: it measures what the published columns give away.
EDGE_COLUMNS_SQL = {
    "comments_bin": count_bin_sql("comment_count"),
    "submissions_bin": count_bin_sql("submission_count"),
    "score_bin": score_bin_sql("score_sum"),
    "active_months": "active_months",
    "recency_months": f"($newest_month - {month_number_sql('last_utc')})::BIGINT",
    "span_months": f"({month_number_sql('last_utc')} - {month_number_sql('first_utc')})::BIGINT",
}
SPLITS = ("train", "val", "test")
GRAPH_TABLES = ["users", "subreddits", "graph_edges"]  # written together under one build id


@dataclass(frozen=True)
class GraphConfig:
    min_user_interactions: int = 3  # comments + submissions over all months
    min_user_subreddits: int = 1
    min_subreddit_users: int = 3
    exclude_nsfw_only_users: bool = True  # users all of whose submissions are NSFW
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_edges_for_holdout: int = 4  # users with fewer edges keep all of them for training
    memory_limit: str = "2GB"
    # The edge query (two windows per user and the final sort) runs over ranges of users holding
    # about this many edges each: its sort spills one range, not the whole graph (at 200M edges the
    # single query spilled past 50 GB of disk with DuckDB at 8 GB).
    edges_per_query: int = 25_000_000

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
        if self.edges_per_query < 1:
            raise ValueError("edges_per_query must be at least 1")
        if self.min_edges_for_holdout < 2:
            raise ValueError("min_edges_for_holdout must be at least 2 (a user keeps one training edge)")


@dataclass
class GraphReport:
    months: list[str]
    users: int
    subreddits: int
    edges: int
    split_counts: dict[str, int]
    users_dropped: int
    seconds: float
    aliased_keys: int = 0  # author-keyed users merged into their author_fullname
    ambiguous_keys: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # table -> the Delta version written
    build_id: str = ""  # shared by the three tables

    def as_dict(self) -> dict:
        return asdict(self)


def monthly_edges(lake_dir: Path) -> tuple[lake.TableSnapshot, list[str]]:
    """The monthly edges at their current version and the months they cover. A month that is
    ingested (comments and submissions) but has no edges is an error: the graph would silently
    leave it out."""
    edges = lake.open_table(lake_dir, "reddit_user_subreddit_edges")
    months = sorted(p["month"] for p in edges.partitions())
    ingested = [open_ingested(lake_dir, kind) for kind in ("comments", "submissions")
                if lake.table_exists(lake_dir, dataset_name(kind))]
    candidates = {p["month"] for table in ingested for p in table.partitions()}
    missing = sorted(m for m in candidates if len(ingested) == 2 and all(t.has_partition({"month": m}) for t in ingested)
                     and not edges.has_partition({"month": m}))
    if missing:
        raise lake.PartitionNotFound(f"months {', '.join(missing)} are ingested but have no reddit_user_subreddit_edges "
                                     f"(version {edges.version}): materialize those edges first")
    if not months:
        raise FileNotFoundError(f"reddit_user_subreddit_edges (version {edges.version}) has no rows: ingest some months first")
    return edges, months


def build_graph_tables(lake_dir: Path, key: bytes, config: GraphConfig = GraphConfig()) -> GraphReport:
    """Write `users`, `subreddits` and `graph_edges`, under one build id, from every month of edges."""
    started = time.perf_counter()
    edges_by_month, months = monthly_edges(lake_dir)
    with lake.spilling_duckdb(config.memory_limit) as con, lake.build(lake_dir) as together:
        con.execute("SET preserve_insertion_order = false")
        con.register("monthly_edges", edges_by_month.to_dataset())
        con.register("all_submissions", open_ingested(lake_dir, "submissions").to_dataset())
        aliases = create_user_aliases(con, lake_dir)
        # One person, one user: author-keyed months are mapped onto the person's author_fullname
        # first, so months are counted as distinct months, not as rows per key.
        canonical, join = canonical_key_sql("e.user_key")
        # A month holds one row per (key, subreddit), so without aliases a pair's rows are its months.
        # count(DISTINCT month) per group is what made this step grow faster than the edges (6.3x the
        # time for 4x the edges from 5M to 20M, a third of all the time at 20M); with aliases two keys
        # can meet in one month, so their rows are merged per month first, then counted.
        source = (f"(SELECT {canonical} AS user_key, e.subreddit, e.month, sum(e.comment_count) AS comment_count, "
                  f"sum(e.submission_count) AS submission_count, sum(e.score_sum) AS score_sum, "
                  f"min(e.first_utc) AS first_utc, max(e.last_utc) AS last_utc "
                  f"FROM monthly_edges e {join} GROUP BY 1, 2, 3)"
                  if aliases["aliased_keys"] else "monthly_edges")
        con.sql(
            f"""
            CREATE TEMP TABLE pairs AS
            SELECT e.user_key, e.subreddit, sum(e.comment_count)::BIGINT AS comment_count,
                   sum(e.submission_count)::BIGINT AS submission_count, sum(e.score_sum)::BIGINT AS score_sum,
                   min(e.first_utc) AS first_utc, max(e.last_utc) AS last_utc,
                   count(*)::BIGINT AS active_months
            FROM {source} e
            GROUP BY e.user_key, e.subreddit
            """
        ).fetchall()
        con.sql(
            f"CREATE TEMP TABLE user_months AS SELECT {canonical} AS user_key, "
            f"count(DISTINCT e.month)::BIGINT AS active_months "
            f"FROM monthly_edges e {join} GROUP BY 1"
        ).fetchall()
        all_users = con.sql("SELECT count(DISTINCT user_key) FROM pairs").fetchall()[0][0]
        submitter, submitter_join = canonical_key_sql("sub.user_key")
        nsfw_filter = (
            f"AND user_key NOT IN (SELECT {submitter} FROM all_submissions sub {submitter_join} "
            "WHERE sub.user_key IS NOT NULL GROUP BY 1 HAVING bool_and(coalesce(sub.over_18, false)))"
            if config.exclude_nsfw_only_users
            else ""
        )
        # Users, then subreddits by the users kept, then users again by what is left.
        con.sql(
            f"""
            CREATE TEMP TABLE kept_pairs AS
            WITH users AS (
                SELECT user_key FROM pairs GROUP BY user_key
                HAVING sum(comment_count + submission_count) >= $min_inter AND count(*) >= $min_subs
            ),
            step1 AS (SELECT p.* FROM pairs p JOIN users USING (user_key) WHERE true {nsfw_filter}),
            subs AS (SELECT subreddit FROM step1 GROUP BY subreddit HAVING count(*) >= $min_sub_users),
            step2 AS (SELECT s.* FROM step1 s JOIN subs USING (subreddit)),
            users2 AS (
                SELECT user_key FROM step2 GROUP BY user_key
                HAVING sum(comment_count + submission_count) >= $min_inter AND count(*) >= $min_subs
            )
            SELECT s.* FROM step2 s JOIN users2 USING (user_key)
            """,
            params={
                "min_inter": config.min_user_interactions,
                "min_subs": config.min_user_subreddits,
                "min_sub_users": config.min_subreddit_users,
            },
        ).fetchall()
        # Nothing reads the unfiltered pairs again: their storage (spilled to disk at scale) goes now.
        con.execute("DROP TABLE pairs")
        create_pseudonym_table(con, "SELECT DISTINCT user_key FROM kept_pairs", key, "pseudonyms")
        con.sql(
            """
            CREATE TEMP TABLE user_index AS
            SELECT user_key, user_id, (row_number() OVER (ORDER BY user_id) - 1)::BIGINT AS user_index FROM pseudonyms
            """
        ).fetchall()
        con.sql(
            """
            CREATE TEMP TABLE subreddit_index AS
            SELECT subreddit, (row_number() OVER (ORDER BY subreddit) - 1)::BIGINT AS subreddit_index
            FROM (SELECT DISTINCT subreddit FROM kept_pairs)
            """
        ).fetchall()
        con.execute("SET TimeZone = 'UTC'")  # months of UTC timestamps, whatever the machine's zone
        newest_month = con.sql(f"SELECT {month_number_sql('max(last_utc)')} FROM kept_pairs").fetchall()[0][0]
        published = ",\n                   ".join(f"{sql} AS {name}" for name, sql in EDGE_COLUMNS_SQL.items())
        # The held-out split is a property of each (user, subreddit) pair: a hash bucket, so the
        # same links stay held out when the graph is rebuilt with more months. Each user keeps at
        # least its highest-hash link (the least likely to be held out) for training.
        edge_query = f"""
            WITH hashed AS (
                SELECT u.user_index, s.subreddit_index, p.comment_count, p.submission_count, p.score_sum,
                       p.active_months, p.first_utc, p.last_utc, md5(u.user_id || '/' || p.subreddit) AS link_hash
                FROM kept_pairs p JOIN user_index u USING (user_key) JOIN subreddit_index s USING (subreddit)
                WHERE u.user_index >= $first_user AND u.user_index < $stop_user
            ),
            featured AS (
                -- the user's highest hash by max() over the partition, not a row_number() ordered by hash:
                -- the same partition for both windows saves a sort of every edge (pairs are distinct,
                -- so their hashes are too)
                SELECT *, ('0x' || substr(link_hash, 1, 8))::BIGINT / 4294967296.0 AS bucket,
                       count(*) OVER (PARTITION BY user_index) AS degree,
                       max(link_hash) OVER (PARTITION BY user_index) AS highest_hash
                FROM hashed
            )
            SELECT user_index, subreddit_index,
                   {published},
                   CASE
                       WHEN degree < {config.min_edges_for_holdout} OR link_hash = highest_hash THEN 'train'
                       WHEN bucket < {config.test_fraction} THEN 'test'
                       WHEN bucket < {config.test_fraction + config.val_fraction} THEN 'val'
                       ELSE 'train'
                   END AS split
            FROM featured
            ORDER BY user_index, subreddit_index
            """
        # Every window is per user and the rows are ordered by user first, so ranges of users, in
        # order, give the single query's rows in its order.
        kept_edges, kept_users = con.sql("SELECT count(*), count(DISTINCT user_key) FROM kept_pairs").fetchall()[0]
        ranges = -(-kept_edges // config.edges_per_query) if kept_edges else 1
        bounds = [kept_users * i // ranges for i in range(ranges + 1)]
        split_counts = dict.fromkeys(SPLITS, 0)
        with lake.RotatingParquetWriter(together.partition("graph_edges"), GRAPH_EDGES_SCHEMA) as writer:
            for first_user, stop_user in itertools.pairwise(bounds):
                edges = con.sql(edge_query, params={"newest_month": newest_month, "first_user": first_user,
                                                    "stop_user": stop_user})
                for batch in edges.to_arrow_reader(500_000):
                    writer.write(pa.Table.from_batches([batch]))
                    for value, count in zip(*_value_counts(batch.column("split"))):
                        split_counts[value] += count
        # First and last activity only to the month (its first day, UTC), totals in power-of-two
        # bins: exact times or totals, joined with the public dumps, would name the person.
        users = con.sql(
            f"""
            SELECT u.user_index, u.user_id, count(*)::BIGINT AS subreddit_count,
                   {count_bin_sql('sum(p.comment_count)')} AS comments_bin,
                   {count_bin_sql('sum(p.submission_count)')} AS submissions_bin,
                   {score_bin_sql('sum(p.score_sum)')} AS score_bin, date_trunc('month', min(p.first_utc)) AS first_utc,
                   date_trunc('month', max(p.last_utc)) AS last_utc,
                   any_value(m.active_months) AS active_months
            FROM kept_pairs p JOIN user_index u USING (user_key) JOIN user_months m USING (user_key)
            GROUP BY u.user_index, u.user_id ORDER BY u.user_index
            """
        ).to_arrow_table()
        subreddits = con.sql(
            """
            SELECT s.subreddit_index, s.subreddit, count(*)::BIGINT AS user_count,
                   sum(p.comment_count)::BIGINT AS comment_count, sum(p.submission_count)::BIGINT AS submission_count
            FROM kept_pairs p JOIN subreddit_index s USING (subreddit)
            GROUP BY s.subreddit_index, s.subreddit ORDER BY s.subreddit_index
            """
        ).to_arrow_table()
        for dataset, table, schema in (("users", users, USERS_SCHEMA), ("subreddits", subreddits, SUBREDDITS_SCHEMA)):
            lake.write_table(together.partition(dataset), table.cast(schema), schema)
    # Committed: three commits under one build id (readers refuse a set whose ids differ).
    return GraphReport(
        months=months,
        users=users.num_rows,
        subreddits=subreddits.num_rows,
        edges=writer.rows_written,
        split_counts=split_counts,
        users_dropped=all_users - users.num_rows,
        seconds=time.perf_counter() - started,
        aliased_keys=aliases["aliased_keys"],
        ambiguous_keys=aliases["ambiguous_keys"],
        versions=together.versions,
        build_id=lake.format_build(together.build_id),
    )


def _value_counts(column: pa.ChunkedArray) -> tuple[list, list]:
    counts = column.value_counts()
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()
